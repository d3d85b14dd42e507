"""rescue-worker-ctl against a broker that is not there, or that refuses
it: one line, exit status 3, within --timeout (oslo.messaging alone
would retry the connection for ever); and a worker's refusals on RabbitMQ
(a RemoteError there, not the worker's own exception)."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse

import pytest

from tests.functional.conftest import transport_url

CTL = os.path.join(os.path.dirname(sys.executable), 'rescue-worker-ctl')
TIMEOUT = 5
# --timeout plus what a loaded 2-core machine may need to start Python,
# import oslo.messaging and give up.
BOUND = TIMEOUT + 15
BROKER_PASSWORD = 'closed-port-secret'


@pytest.fixture
def closed_port():
    """A port on 127.0.0.1 that refuses connections: bound, so nobody
    else takes it, but not listening."""
    sock = socket.socket()
    sock.bind(('127.0.0.1', 0))
    yield sock.getsockname()[1]
    sock.close()


@pytest.fixture
def password_file(tmp_path):
    path = tmp_path / 'password'
    path.write_text('a rescue password\n')
    return str(path)


def run_ctl(*args, timeout=BOUND + 30):
    began = time.monotonic()
    result = subprocess.run([CTL, *args], capture_output=True, text=True,
                            timeout=timeout, stdin=subprocess.DEVNULL)
    return result, time.monotonic() - began


def assert_one_line(err):
    assert 'Traceback' not in err
    assert err.count('\n') == 1, err
    assert err.startswith('rescue-worker-ctl: ')


COMMANDS = {
    'status': ['status', 'node-1'],
    'watch': ['watch'],
    'finalize --wait': ['finalize', 'node-1', '--wait'],
    'finalize': ['finalize', 'node-1'],
}


@pytest.mark.parametrize('command', sorted(COMMANDS))
def test_a_closed_port_is_3_within_the_timeout(command, closed_port,
                                               password_file):
    url = 'rabbit://conductor:%s@127.0.0.1:%d/' % (BROKER_PASSWORD,
                                                  closed_port)
    extra = ['--password-file', password_file] \
        if command.startswith('finalize') else []

    result, took = run_ctl(*COMMANDS[command], *extra, '--timeout',
                           str(TIMEOUT), '--transport-url', url)

    assert result.returncode == 3, result.stderr
    assert took < BOUND
    assert_one_line(result.stderr)
    assert result.stderr.startswith(
        'rescue-worker-ctl: cannot reach the broker at 127.0.0.1:%d within '
        '%d s (' % (closed_port, TIMEOUT))
    assert 'Connection refused' in result.stderr
    assert BROKER_PASSWORD not in result.stdout + result.stderr


def test_a_demo_on_a_closed_port_is_3_within_the_timeout(closed_port):
    url = 'rabbit://conductor:%s@127.0.0.1:%d/' % (BROKER_PASSWORD,
                                                  closed_port)

    result, took = run_ctl('demo', '--nodes', '1', '--timeout', str(TIMEOUT),
                           '--transport-url', url)

    assert result.returncode == 3, result.stderr
    assert took < BOUND
    assert_one_line(result.stderr)
    assert 'cannot reach the broker at 127.0.0.1:%d' % closed_port in \
        result.stderr
    assert BROKER_PASSWORD not in result.stdout + result.stderr
    base = result.stdout.split('files under ', 1)[1].split()[0]
    assert not os.path.exists(base)


def _with_password(url, password):
    parts = urllib.parse.urlsplit(url)
    netloc = '%s:%s@%s' % (parts.username, password,
                           parts.netloc.rsplit('@', 1)[1])
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


@pytest.mark.parametrize('command', sorted(COMMANDS))
def test_refused_credentials_are_3_at_once(command, password_file):
    url = _with_password(transport_url(), 'wrong-broker-password')
    user = urllib.parse.urlsplit(url).username
    extra = ['--password-file', password_file] \
        if command.startswith('finalize') else []

    result, took = run_ctl(*COMMANDS[command], *extra, '--timeout', '60',
                           '--transport-url', url)

    assert result.returncode == 3, result.stderr
    # A refusal is not retried until the timeout: it cannot get better.
    assert took < 60
    assert_one_line(result.stderr)
    assert 'refused the credentials of user %s' % user in result.stderr
    assert 'wrong-broker-password' not in result.stdout + result.stderr


def test_status_with_the_wrong_token_is_the_workers_refusal(
        started_worker, tmp_path):
    worker = started_worker()
    wrong = tmp_path / 'wrong-token'
    wrong.write_text('w' * 43)

    result, _ = run_ctl('status', worker.node_id, '--token-file', str(wrong),
                        '--transport-url', transport_url())

    assert result.returncode == 5, result.stderr
    assert_one_line(result.stderr)
    assert result.stderr == (
        "rescue-worker-ctl: node %s refused: agent_token does not match "
        "this node's token; check that the conductor casts to the right "
        "node and holds its current token.\n" % worker.node_id)


def test_status_of_a_node_without_a_queue_is_5(bus):
    result, _ = run_ctl('status', 'node-never-booted', '--timeout', '30',
                        '--transport-url', transport_url())

    assert result.returncode == 5, result.stderr
    assert_one_line(result.stderr)
    assert result.stderr.startswith(
        'rescue-worker-ctl: no worker listens for node node-never-booted ')


def test_finalize_to_a_node_without_a_queue_is_5(bus, password_file):
    result, _ = run_ctl('finalize', 'node-never-booted', '--password-file',
                        password_file, '-f', 'json', '--transport-url',
                        transport_url())

    assert result.returncode == 5, result.stderr
    [cast] = json.loads(result.stdout)
    assert cast['status'] == 'not_listening'
    assert cast['error']['message'].startswith(
        'no worker listens for node node-never-booted')
