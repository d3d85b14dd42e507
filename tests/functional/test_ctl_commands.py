"""rescue-worker-ctl status and watch against a worker process on RabbitMQ."""

import json
import os
import subprocess
import sys
import uuid

from tests.functional.conftest import transport_url

CTL = os.path.join(os.path.dirname(sys.executable), 'rescue-worker-ctl')


def test_status_prints_the_worker_state(started_worker, tmp_path):
    worker = started_worker()

    result = subprocess.run(
        [CTL, 'status', worker.node_id, '--token-file', worker.token_file,
         '--transport-url', transport_url()],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)

    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status['node_id'] == worker.node_id
    assert status['state'] == 'waiting'
    assert worker.token not in result.stdout + result.stderr


def test_watch_json_prints_a_rescue_as_it_happens(bus, started_worker,
                                                  secrets_used, tmp_path):
    worker = started_worker()
    password = 'watched %s' % uuid.uuid4()
    secrets_used.append(password)
    watcher = subprocess.Popen(
        [CTL, 'watch', '--json', '--node', worker.node_id, '--count', '3',
         '--timeout', '120', '--transport-url', transport_url()],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        stdin=subprocess.DEVNULL)
    try:
        # The watcher says so once its queue exists.
        assert watcher.stderr.readline().startswith('watching ')
        request_id = 'req-%s' % uuid.uuid4()
        bus.client(worker.node_id).cast(
            {'request_id': request_id}, 'finalize_rescue',
            rescue_password=password, agent_token=worker.token)
        out, err = watcher.communicate(timeout=180)
    finally:
        watcher.kill()

    assert watcher.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    events = [line['event_type'] for line in lines]
    assert events[-3:] == ['rescue_worker.finalize_rescue.start',
                           'rescue_worker.finalize_rescue.end',
                           'rescue_worker.worker.stopped']
    assert all(line['data']['node_id'] == worker.node_id for line in lines)
    assert password not in out
