"""The ``rescue-worker`` process when its broker cannot be used: it says
what is wrong in one line and exits, or stops when asked, instead of
retrying for ever where only SIGKILL reaches it."""

import signal
import socket
import urllib.parse

from tests.functional.conftest import WorkerProcess
from tests.functional.conftest import transport_url

EXIT_CONFIG = 2


def _with_password(url, password):
    parts = urllib.parse.urlsplit(url)
    netloc = '%s:%s@%s:%d' % (parts.username, password, parts.hostname,
                              parts.port)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _closed_port():
    """A loopback port nothing listens on (bound, never listened)."""
    sock = socket.socket()
    sock.bind(('127.0.0.1', 0))
    return sock


def _only_line_with(text, needle):
    lines = [line for line in text.splitlines() if needle in line]
    assert len(lines) == 1, lines
    return lines[0]


def test_wrong_broker_credentials_exit_2_with_one_line(tmp_path):
    url = _with_password(transport_url(), 'not-the-password-x9')
    worker = WorkerProcess(tmp_path / 'w', url)
    worker.secrets.append('not-the-password-x9')

    worker.start()

    assert worker.wait(timeout=60) == EXIT_CONFIG
    logged = worker.logs()
    line = _only_line_with(logged, 'Cannot start')
    assert 'refused the credentials of user' in line
    assert 'ConfigurationError' not in line  # said once, not twice
    assert urllib.parse.urlsplit(url).hostname in line
    assert 'Traceback' not in logged
    assert 'not-the-password-x9' not in logged


def test_sigterm_stops_a_worker_whose_broker_never_answers(tmp_path):
    with _closed_port() as sock:
        port = sock.getsockname()[1]
        url = 'rabbit://rescue:broker-pw-x7@127.0.0.1:%d/' % port
        worker = WorkerProcess(tmp_path / 'w', url)
        worker.start()
        # The worker says it is still trying (every 30 s): it is up, and
        # connecting, when SIGTERM comes.
        worker.wait_for_log('Still connecting to the broker at '
                            '127.0.0.1:%d' % port, timeout=90)

        worker.signal(signal.SIGTERM)

        assert worker.wait(timeout=30) == 0
    logged = worker.logs()
    assert 'before the broker at 127.0.0.1:%d answered' % port in logged
    assert 'broker-pw-x7' not in logged


def test_a_node_boots_from_its_kernel_command_line(bus, tmp_path,
                                                   secrets_used):
    # One image for every node: node id, broker URL and token come on the
    # kernel command line; the image's own file holds none of them.
    import uuid

    from tests.functional.conftest import wait_ready
    worker = WorkerProcess(tmp_path / 'w', transport_url())
    section = worker._parser['rescue_worker']
    del section['node_id']
    section['agent_token_file'] = str(tmp_path / 'no-token-file')
    del worker._parser['DEFAULT']['transport_url']
    worker.write_config()
    cmdline = tmp_path / 'cmdline'
    cmdline.write_text('BOOT_IMAGE=/vmlinuz ro rescue_worker.node_id=%s '
                       'rescue_worker.transport_url=%s '
                       'rescue_worker_token=%s quiet\n' % (
                           worker.node_id, transport_url(), worker.token))
    worker.extra_args = ['--kernel-cmdline', str(cmdline)]
    password = 'booted %s' % uuid.uuid4()
    secrets_used.append(password)

    worker.start()
    try:
        wait_ready(bus, worker)
        request_id = 'req-%s' % uuid.uuid4()
        bus.client(worker.node_id).cast(
            {'request_id': request_id}, 'finalize_rescue',
            rescue_password=password, agent_token=worker.token)
        [end] = bus.wait_for('rescue_worker.finalize_rescue.end',
                             request_id=request_id)
        assert end['error'] is None
        assert worker.wait(timeout=60) == 0
    finally:
        worker.kill()
    logged = worker.logs()
    assert 'node token came from the kernel command line' in logged
    assert 'broker URL (with its credentials) came from the kernel' in logged
