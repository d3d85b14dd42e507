"""rescue-worker-ctl status and watch against a worker process on RabbitMQ."""

import json
import os
import subprocess
import sys
import uuid

from tests.functional.conftest import transport_url
from tests.functional.conftest import wait_ready

CTL = os.path.join(os.path.dirname(sys.executable), 'rescue-worker-ctl')


def test_status_prints_the_worker_state(started_worker, tmp_path):
    worker = started_worker()

    result = subprocess.run(
        [CTL, 'status', worker.node_id, '--token-file', worker.token_file,
         '--format', 'json', '--transport-url', transport_url()],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)

    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status['node_id'] == worker.node_id
    assert status['state'] == 'waiting'
    assert worker.token not in result.stdout + result.stderr


def watch_a_rescue(bus, worker, password, *extra, before_cast=None):
    """Run ``ctl watch --json --node N --count 3`` while the worker is
    rescued; returns its exit status, output and errors."""
    watcher = subprocess.Popen(
        [CTL, 'watch', '--json', '--node', worker.node_id, '--count', '3',
         '--timeout', '120', '--transport-url', transport_url(), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        stdin=subprocess.DEVNULL)
    try:
        # The watcher says so once its queue exists.
        assert watcher.stderr.readline().startswith('watching ')
        if before_cast is not None:
            before_cast()
        bus.client(worker.node_id).cast(
            {'request_id': 'req-%s' % uuid.uuid4()}, 'finalize_rescue',
            rescue_password=password, agent_token=worker.token)
        out, err = watcher.communicate(timeout=180)
    finally:
        watcher.kill()
    return watcher.returncode, out, err


def test_watch_json_prints_a_rescue_as_it_happens(bus, started_worker,
                                                  secrets_used, tmp_path):
    worker = started_worker()
    password = 'watched %s' % uuid.uuid4()
    secrets_used.append(password)
    returncode, out, err = watch_a_rescue(bus, worker, password)

    assert returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    events = [line['event_type'] for line in lines]
    assert events[-3:] == ['rescue_worker.finalize_rescue.start',
                           'rescue_worker.finalize_rescue.end',
                           'rescue_worker.worker.stopped']
    assert all(line['data']['node_id'] == worker.node_id for line in lines)
    assert password not in out


def test_finalize_wait_rescues_a_node_that_boots_after_the_cast(
        bus, make_worker, secrets_used, tmp_path):
    # The conductor often casts while the ramdisk still boots: the node's
    # queue does not exist yet. With --wait that is a lost cast, cast
    # again, not a failure.
    worker = make_worker()
    password_file = tmp_path / 'password'
    password = 'booting %s' % uuid.uuid4()
    secrets_used.append(password)
    password_file.write_text(password)
    ctl = subprocess.Popen(
        [CTL, 'finalize', worker.node_id, '--token-file', worker.token_file,
         '--password-file', str(password_file), '--wait',
         '--start-timeout', '10', '--timeout', '150',
         '--transport-url', transport_url()],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        stdin=subprocess.DEVNULL)
    try:
        assert ctl.stderr.readline().startswith(
            '%s: no worker listens for %s yet; casting again in 10 s (2 '
            'more casts at most within --timeout 150 s)' % (
                worker.node_id, worker.node_id))
        worker.start()
        wait_ready(bus, worker)
        out, err = ctl.communicate(timeout=180)
    finally:
        ctl.kill()

    assert ctl.returncode == 0, out + err
    [row] = [line.split() for line in out.splitlines()
             if line.startswith(worker.node_id)]
    assert row[1] == 'end'
    assert int(row[3]) >= 2  # the first cast found no queue
    assert '1 of 1 nodes rescued' in out
    [end] = bus.wait_for('rescue_worker.finalize_rescue.end',
                       node_id=worker.node_id)
    assert end['replayed'] is False


def _forge_end(node_id, request_id):
    """An end for ``node_id`` as another node's tenant could publish it:
    a real broker account, but not this node's token."""
    import oslo_messaging

    from rescue_worker import payloads
    from rescue_worker import rpc
    from tests.functional import broker
    # The workers' control exchange, as a conductor configures it.
    transport = rpc.get_notification_transport(
        broker.messaging_conf(transport_url()))
    try:
        publisher_id = 'rescue-worker.%s' % node_id
        notifier = oslo_messaging.Notifier(
            transport, publisher_id=publisher_id, driver='messagingv2',
            topics=['notifications'],
            serializer=oslo_messaging.NoOpSerializer())
        payload = payloads.FinalizeRescuePayload(
            node_id=node_id, request_id=request_id).envelope(
                payloads.EVENT_END, publisher_id, 'forger' * 8)
        notifier.info({}, payloads.EVENT_END, payload)
    finally:
        transport.cleanup()


def test_watch_with_the_token_shows_only_authentic_notifications(
        bus, started_worker, secrets_used, tmp_path):
    worker = started_worker()
    password = 'watched %s' % uuid.uuid4()
    secrets_used.append(password)
    returncode, out, err = watch_a_rescue(
        bus, worker, password, '--token-file', worker.token_file,
        before_cast=lambda: _forge_end(worker.node_id, 'req-forged'))

    assert returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line['event_type'] for line in lines] == [
        'rescue_worker.finalize_rescue.start',
        'rescue_worker.finalize_rescue.end',
        'rescue_worker.worker.stopped']
    assert 'req-forged' not in out
    assert 'ignored 1 notification(s) whose mac does not match' in err


def test_a_plain_finalize_prints_the_request_id_the_worker_runs(
        bus, started_worker, secrets_used, tmp_path):
    worker = started_worker()
    password = 'plain %s' % uuid.uuid4()
    secrets_used.append(password)

    result = subprocess.run(
        [CTL, 'finalize', worker.node_id, '--token-file', worker.token_file,
         '-f', 'json', '--transport-url', transport_url()],
        input=password + '\n', capture_output=True, text=True, timeout=120)

    assert result.returncode == 0, result.stderr
    [cast] = json.loads(result.stdout)
    assert cast['status'] == 'cast'
    [end] = bus.wait_for('rescue_worker.finalize_rescue.end',
                         request_id=cast['request_id'])
    assert end['node_id'] == worker.node_id
    assert password not in result.stdout + result.stderr


def test_finalize_wait_with_the_wrong_token_says_so_in_one_line(
        started_worker, tmp_path):
    # The worker refuses with an error whose mac is its own token's: the
    # waiter cannot tell it from a forgery, so the request times out, and
    # the one line says why no outcome was believed.
    worker = started_worker()
    wrong = tmp_path / 'wrong-token'
    wrong.write_text('w' * 43)

    result = subprocess.run(
        [CTL, 'finalize', worker.node_id, '--token-file', str(wrong),
         '--wait', '--timeout', '5', '--start-timeout', '30', '-f', 'json',
         '--transport-url', transport_url()],
        input='a password\n', capture_output=True, text=True, timeout=120)

    assert result.returncode == 4, result.stderr
    [outcome] = json.loads(result.stdout)
    assert outcome['status'] == 'timeout'
    assert result.stderr == (
        "ignored 1 notification(s) whose mac does not match the node's "
        "token (forged, or the token is not the node's)\n")
