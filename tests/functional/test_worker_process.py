"""The ``rescue-worker`` process on a real RabbitMQ, driven by plain
oslo.messaging: readiness, casts, replays, SIGTERM, SIGKILL and recovery,
get_status, and no secret in any log line or notification."""

import os
import signal
import subprocess
import uuid

import pytest
from passlib.hash import sha512_crypt

from tests.functional.conftest import wait_ready

READY = 'rescue_worker.worker.ready'
START = 'rescue_worker.finalize_rescue.start'
END = 'rescue_worker.finalize_rescue.end'
ERROR = 'rescue_worker.finalize_rescue.error'
STOPPED = 'rescue_worker.worker.stopped'


def new_request_id():
    return 'req-%s' % uuid.uuid4()


def cast(bus, worker, request_id, **kwargs):
    kwargs.setdefault('agent_token', worker.token)
    bus.client(worker.node_id).cast({'request_id': request_id},
                                    'finalize_rescue', **kwargs)


def test_worker_announces_ready_and_ends_a_cast(bus, started_worker,
                                                secrets_used):
    password = 'functional-%s' % uuid.uuid4()
    secrets_used.append(password)
    worker = started_worker(exit_after_rescue=False)
    request_id = new_request_id()

    cast(bus, worker, request_id, rescue_password=password)

    [end] = bus.wait_for(END, request_id=request_id)
    assert end['node_id'] == worker.node_id
    assert end['error'] is None
    assert end['hash_scheme'] == 'sha512_crypt'
    assert [s['status'] for s in end['steps']] == ['done']
    assert len(bus.matching(START, request_id=request_id)) == 1


def test_prehashed_password_over_the_broker(bus, started_worker,
                                            secrets_used):
    hashed = sha512_crypt.using(rounds=5000).hash(str(uuid.uuid4()))
    secrets_used.extend([hashed, hashed.rsplit('$', 1)[1]])
    worker = started_worker(exit_after_rescue=False)
    request_id = new_request_id()

    cast(bus, worker, request_id, rescue_password=hashed, hashed=True)

    [end] = bus.wait_for(END, request_id=request_id)
    assert end['hash_scheme'] == 'sha512_crypt'


def test_bad_input_is_answered_with_an_error(bus, started_worker,
                                             secrets_used):
    worker = started_worker(exit_after_rescue=False)
    request_id = new_request_id()

    cast(bus, worker, request_id, rescue_password=42)

    [error] = bus.wait_for(ERROR, request_id=request_id)
    assert error['error']['code'] == 'invalid_request'
    assert os.listdir(os.path.join(worker.state_dir, 'journal')) == []


def test_same_request_id_twice_runs_the_steps_once(bus, started_worker,
                                                   secrets_used):
    password = 'functional-%s' % uuid.uuid4()
    secrets_used.append(password)
    worker = started_worker(exit_after_rescue=False,
                            steps='password,gate')
    request_id = new_request_id()

    cast(bus, worker, request_id, rescue_password=password)
    assert worker.wait_in_gate() == request_id
    worker.open_gate()
    bus.wait_for(END, request_id=request_id)
    cast(bus, worker, request_id, rescue_password=password)

    first, replay = bus.wait_for(END, request_id=request_id, count=2)
    assert (first['replayed'], replay['replayed']) == (False, True)
    assert replay['steps'] == first['steps']
    assert worker.gate_runs() == [request_id]
    assert len(bus.matching(START, request_id=request_id)) == 1


def test_get_status_as_a_call(bus, started_worker, secrets_used):
    password = 'functional-%s' % uuid.uuid4()
    secrets_used.append(password)
    worker = started_worker(exit_after_rescue=False)
    client = bus.client(worker.node_id)

    before = client.call({}, 'get_status', agent_token=worker.token)
    request_id = new_request_id()
    cast(bus, worker, request_id, rescue_password=password)
    bus.wait_for(END, request_id=request_id)
    after = client.call({}, 'get_status', agent_token=worker.token)

    assert before['state'] == 'waiting'
    assert before['node_id'] == worker.node_id
    assert before['rpc_api_version'] == '1.0'
    assert after['state'] == 'rescued'
    assert after['last_request_id'] == request_id


def test_sigterm_while_a_request_runs_ends_it_and_exits_0(
        bus, started_worker, secrets_used):
    password = 'functional-%s' % uuid.uuid4()
    secrets_used.append(password)
    worker = started_worker(exit_after_rescue=False,
                            steps='password,gate')
    request_id = new_request_id()
    cast(bus, worker, request_id, rescue_password=password)
    assert worker.wait_in_gate() == request_id

    worker.signal(signal.SIGTERM)
    with pytest.raises(subprocess.TimeoutExpired):
        worker.wait(timeout=1)  # still finishing the request
    worker.open_gate()

    assert worker.wait() == 0
    [end] = bus.matching(END, request_id=request_id)
    assert end['error'] is None
    [stopped] = bus.wait_for(STOPPED, node_id=worker.node_id)
    assert stopped['reason'] == 'signal'
    kinds = [kind for _, kind, payload, _ in bus.events
             if payload['rescue_worker_object.data'].get('node_id')
             == worker.node_id]
    assert kinds.index(END) < kinds.index(STOPPED)


def test_sigkill_after_journaling_is_finished_after_restart(
        bus, started_worker, secrets_used):
    password = 'functional-%s' % uuid.uuid4()
    secrets_used.append(password)
    worker = started_worker(exit_after_rescue=False,
                            steps='password,gate')
    request_id = new_request_id()
    cast(bus, worker, request_id, rescue_password=password)
    assert worker.wait_in_gate() == request_id

    worker.signal(signal.SIGKILL)
    assert worker.wait() == -signal.SIGKILL
    assert not bus.matching(END, request_id=request_id)
    worker.start()
    assert worker.wait_in_gate() == request_id
    worker.open_gate()

    [end] = bus.wait_for(END, request_id=request_id)
    assert end['error'] is None
    wait_ready(bus, worker)
    # Ready comes after recovery; by then no second end can follow.
    assert len(bus.matching(END, request_id=request_id)) == 1
    assert worker.gate_runs() == [request_id, request_id]


def test_rescue_locks_the_worker_down_and_it_exits_0(bus, started_worker,
                                                     secrets_used):
    password = 'functional-%s' % uuid.uuid4()
    secrets_used.append(password)
    worker = started_worker()
    request_id = new_request_id()

    cast(bus, worker, request_id, rescue_password=password)

    assert worker.wait() == 0
    bus.wait_for(END, request_id=request_id)
    [stopped] = bus.wait_for(STOPPED, node_id=worker.node_id)
    assert stopped['state'] == 'rescued'
    assert os.path.exists(os.path.join(worker.state_dir, 'rescued'))
    assert not os.path.exists(worker.token_file)
    assert not os.path.exists(worker.config_file)

    # Started again (with its config put back), it refuses to serve.
    worker.write_config()
    worker.start()
    assert worker.wait() == 0
    assert 'will not serve again' in worker.logs()
    assert len(bus.matching(READY, node_id=worker.node_id)) == 1


def test_worker_refuses_to_start_without_a_token(bus, make_worker):
    worker = make_worker()
    os.unlink(worker.token_file)

    worker.start()

    assert worker.wait() == 2
    assert 'No agent token' in worker.logs()
    assert not bus.matching(READY, node_id=worker.node_id)


def test_worker_refuses_a_readable_token_file(bus, make_worker):
    worker = make_worker()
    os.chmod(worker.token_file, 0o644)

    worker.start()

    assert worker.wait() == 2
    assert 'chmod 600' in worker.logs()
