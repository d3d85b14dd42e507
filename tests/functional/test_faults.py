"""Faults on real parts: a RabbitMQ restart with 50 idle workers and with
requests in flight, a worker that reconnects late, and a worker SIGKILLed at
each point of a request.

The module starts its own RabbitMQ node (``broker.RabbitBroker``) so that it
can restart it; it never touches the node ``tox -e functional`` provides.
Every scenario counts what was sent, what the conductor's waiter saw end,
how often the steps completed and how many ``end`` notifications went out,
and logs the numbers (``broker.record``) for doc/source/reliability.rst.
"""

import os
import signal
import subprocess
import threading
import uuid

import pytest

from tests.functional import broker
from tests.functional.conftest import PLUGINS


@pytest.fixture(scope='module')
def rabbit():
    node = broker.RabbitBroker().start()
    yield node
    node.close()


@pytest.fixture
def witness(rabbit):
    witness = broker.Witness(broker.messaging_conf(rabbit.url))
    yield witness
    witness.close()


@pytest.fixture
def conductor(rabbit):
    conductor = broker.Conductor(broker.messaging_conf(rabbit.url))
    yield conductor
    conductor.close()


@pytest.fixture
def processes(tmp_path, rabbit):
    made = broker.ProcessSet(str(tmp_path), rabbit.url)
    yield made
    made.close()


@pytest.fixture
def durable(tmp_path, rabbit):
    """A vhost of its own where workers and conductor declare durable
    queues: a witness, a conductor, fleets and processes there."""
    url = rabbit.add_vhost('durable-%s' % uuid.uuid4().hex[:8])
    options = broker.DURABLE_OPTIONS
    conf = broker.messaging_conf(url, options)
    witness = broker.Witness(conf)
    conductor = broker.Conductor(conf)
    fleets = broker.FleetSet(str(tmp_path / 'durable'), url, options)
    made = broker.ProcessSet(str(tmp_path / 'durable'), url, options)
    yield witness, conductor, fleets, made
    made.close()
    fleets.close()
    conductor.close()
    witness.close()


def ends_and_replays(witness, request_ids):
    counts = witness.counts(request_ids)
    return ({r: counts[r].get('end', 0) for r in request_ids},
            {r: counts[r].get('replay', 0) for r in request_ids},
            counts)


def failed(outcomes):
    return {r: o.status for r, o in outcomes.items() if not o.succeeded}


# -- broker restart -----------------------------------------------------------

def test_broker_restart_with_50_idle_workers(rabbit, durable):
    # Durable queues: with oslo.messaging's default transient ones the
    # restart also deletes the waiter's own queue, and outcomes published
    # before its listener has reconnected never reach it; a worker that
    # has locked down cannot replay them (doc/source/reliability.rst, fault 7).
    witness, conductor, fleet, _ = durable
    workers = fleet(50)
    broker.wait_fleet_ready(witness, workers)

    away = rabbit.restart()
    request_ids = [conductor.cast(node.node_id, node.token)
                   for node in workers.nodes]
    outcomes = conductor.wait(request_ids)
    witness.settle(request_ids)

    runs = {r: workers.runs(r) for r in request_ids}
    ends, replays, counts = ends_and_replays(witness, request_ids)
    print(broker.record(
        'broker restart, 50 idle workers (durable queues)',
        'node restarted (new process) under 50 idle in-process workers, '
        'then 50 casts', request_ids, outcomes, runs, ends,
        witness=witness, replays=replays, broker_away_s=round(away, 1),
        not_listening_at_first_cast=len(
            conductor.not_listening_at_first_cast)))
    assert failed(outcomes) == {}
    assert runs == {r: 1 for r in request_ids}
    assert ends == {r: 1 for r in request_ids}, counts
    assert {r: workers.published(r) for r in request_ids} == runs


def test_recasts_reach_a_worker_that_reconnects_late(rabbit, witness,
                                                     conductor, processes):
    # Found by this test: the waiter gave a request up (not_listening) at
    # the first re-cast that found no queue, though after a restart a
    # worker declares its transient queue again only once it has
    # reconnected; and the first cast's WorkerNotListening did not say
    # which request the client had kept for re-casting.
    worker = processes()
    worker.start()
    broker.wait_process_ready(witness, worker)
    os.kill(worker.proc.pid, signal.SIGSTOP)  # cannot reconnect for now

    away = rabbit.restart()
    request_id = conductor.cast(worker.node_id, worker.token)
    assert conductor.not_listening_at_first_cast == [request_id]
    outcomes = {}
    waiting = threading.Thread(target=lambda: outcomes.update(
        conductor.wait([request_id], timeout=120, start_timeout=2)))
    waiting.start()
    assert conductor.client.recast_not_listening.wait(60)
    os.kill(worker.proc.pid, signal.SIGCONT)
    waiting.join(130)
    witness.settle([request_id])

    runs = {request_id: broker.completed_runs(worker, request_id)}
    ends, replays, counts = ends_and_replays(witness, [request_id])
    print(broker.record(
        'broker restart, worker reconnecting late',
        'node restarted while a worker was frozen (SIGSTOP); the cast and '
        'a re-cast found no queue', [request_id], outcomes, runs, ends,
        witness=witness, replays=replays, broker_away_s=round(away, 1)))
    assert outcomes[request_id].status == 'end', outcomes
    assert outcomes[request_id].casts > 2
    assert runs[request_id] == 1
    assert ends[request_id] == 1, counts


def test_broker_restart_with_requests_in_flight(rabbit, durable):
    # With transient queues a restart also deletes the notifications that
    # wait in them, and a worker that has locked down cannot answer a
    # re-cast with a replay: an "end" lost there is lost for good (see
    # doc/source/reliability.rst). Durable queues keep them.
    witness, conductor, fleet, processes = durable
    # Three workers hold a request inside a step (journaled, started), one
    # is frozen with a cast in its socket (delivered, not acked) and
    # thirty in-process workers are cast to just before the restart.
    gated = [processes(steps='password,gate,account,verify')
             for _ in range(3)]
    frozen = processes()
    for worker in gated + [frozen]:
        worker.start()
    workers = fleet(30)
    for worker in gated + [frozen]:
        broker.wait_process_ready(witness, worker)
    broker.wait_fleet_ready(witness, workers)

    gated_ids = [conductor.cast(w.node_id, w.token) for w in gated]
    for worker, request_id in zip(gated, gated_ids, strict=True):
        assert worker.wait_in_gate() == request_id
    os.kill(frozen.proc.pid, signal.SIGSTOP)
    frozen_id = conductor.cast(frozen.node_id, frozen.token)
    fleet_ids = [conductor.cast(node.node_id, node.token)
                 for node in workers.nodes]

    away = rabbit.restart()
    for worker in gated:
        worker.open_gate()
    os.kill(frozen.proc.pid, signal.SIGCONT)
    request_ids = gated_ids + [frozen_id] + fleet_ids
    outcomes = conductor.wait(request_ids)
    witness.settle(request_ids)

    runs = {r: workers.runs(r) for r in fleet_ids}
    for worker, request_id in zip(gated + [frozen],
                                  gated_ids + [frozen_id], strict=True):
        runs[request_id] = broker.completed_runs(worker, request_id)
    ends, replays, counts = ends_and_replays(witness, request_ids)
    print(broker.record(
        'broker restart, requests in flight (durable queues)',
        'node restarted with 3 requests inside a step, 1 in a frozen '
        "worker's socket and 30 just cast", request_ids, outcomes, runs,
        ends, witness=witness, replays=replays, broker_away_s=round(away, 1),
        not_listening_at_first_cast=len(
            conductor.not_listening_at_first_cast)))
    assert failed(outcomes) == {}
    assert runs == {r: 1 for r in request_ids}
    assert ends == {r: 1 for r in request_ids}, counts


# -- SIGKILL at each point of a request ---------------------------------------

DELIVERED = 'delivered, not acked (SIGSTOP, then SIGKILL)'

GATED_STEPS = {
    'journaled, before the first step': 'gate,password,account,verify',
    'between the password and account steps': 'password,gate,account,verify',
    'account written, before verify': 'password,account,gate,verify',
}

OUTCOME_JOURNALED = 'outcome journaled, before end is published'
END_PUBLISHED = 'end published, before the journal notes it'
MARKER_WRITTEN = 'lockdown marker written, before the scrub'

HOOKS = {
    # oslo.messaging acked the cast before dispatching it: a worker killed
    # here took the request and kept nothing of it.
    'acked, before the journal write':
        'rescue_worker.journal:Journal.record_request',
    OUTCOME_JOURNALED: 'rescue_worker.notify:Notifications.outcome',
    END_PUBLISHED: 'rescue_worker.journal:Journal.mark_notified',
    'end published and noted, before the lockdown marker':
        'rescue_worker.lockdown:LockdownMarker.write',
    MARKER_WRITTEN: 'rescue_worker.journal:Journal.scrub',
}

# The worker cannot tell these two apart: the outcome is journaled and its
# publication is not. Whatever it publishes on restart, the conductor must
# get an end, and never two that claim a first run. Found by this test
# (fixed in endpoint.py): recovery published the recorded outcome as a
# first run, so an end that had gone out was counted twice.
AMBIGUOUS = (OUTCOME_JOURNALED, END_PUBLISHED)

KILL_POINTS = [DELIVERED] + list(GATED_STEPS) + list(HOOKS)


def check_files_whole(root_dir, username='rescue'):
    """passwd, shadow and group parse; the account is in each once."""
    etc = os.path.join(root_dir, 'etc')
    tables = {}
    for name, count in (('passwd', 7), ('shadow', 9), ('group', 4)):
        with open(os.path.join(etc, name)) as f:
            text = f.read()
        assert text.endswith('\n'), name
        rows = [line.split(':') for line in text.splitlines()]
        assert all(len(row) == count for row in rows), (name, text)
        tables[name] = rows
    for name in ('passwd', 'shadow'):
        assert [row[0] for row in tables[name]].count(username) == 1, name
    [sudo] = [row for row in tables['group'] if row[0] == 'sudo']
    assert sudo[3].split(',').count(username) == 1, sudo
    sudoers = os.path.join(etc, 'sudoers.d', username)
    assert os.stat(sudoers).st_mode & 0o777 == 0o440
    assert [n for n in os.listdir(etc) if n.endswith('.tmp')] == []


@pytest.mark.parametrize('point', KILL_POINTS)
def test_sigkill_at_each_point_of_a_request(point, tmp_path, witness,
                                            conductor, processes):
    # Found by this test (fixed in service.py): killed after its end and
    # before the lockdown marker, a worker served again when restarted;
    # killed after the marker and before the scrub, it left the token and
    # the broker credentials on the node for good.
    steps = GATED_STEPS.get(point, broker.STEPS)
    hook = broker.HookGate(str(tmp_path), PLUGINS) if point in HOOKS \
        else None
    worker = processes(steps=steps,
                       wrap=hook.wrap(HOOKS[point]) if hook else None)
    worker.start()
    broker.wait_process_ready(witness, worker)

    if point == DELIVERED:
        os.kill(worker.proc.pid, signal.SIGSTOP)
    request_id = conductor.cast(worker.node_id, worker.token)
    if hook:
        assert hook.wait_entered() == HOOKS[point]
    elif point in GATED_STEPS:
        assert worker.wait_in_gate() == request_id
    worker.signal(signal.SIGKILL)
    assert worker.wait() == -signal.SIGKILL

    # Started again as systemd would (Restart=on-failure), unhooked.
    worker.wrap = list
    worker.start()
    if point in GATED_STEPS:
        # The journal shows the request unfinished: the new process runs
        # it again before it serves.
        assert worker.wait_in_gate() == request_id
        worker.open_gate()
    outcome = conductor.wait([request_id], timeout=120,
                             start_timeout=5)[request_id]
    # A rescued worker locks down and exits 0; every notification of the
    # request has gone out by then.
    try:
        status = worker.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail('the restarted worker did not lock down after the '
                    'rescue; it still serves')
    if point == MARKER_WRITTEN:
        # The new process finished the scrub and refused to serve.
        witness.settle([request_id])
    else:
        witness.wait_count(broker.STOPPED, 1, timeout=30,
                           node_id=worker.node_id)

    runs = {request_id: broker.completed_runs(worker, request_id)}
    ends, replays, counts = ends_and_replays(witness, [request_id])
    print(broker.record(
        'SIGKILL: %s' % point, 'worker SIGKILLed there, restarted',
        [request_id], {request_id: outcome}, runs, ends, witness=witness,
        replays=replays,
        started_runs=counts[request_id].get('start', 0)))
    assert outcome.succeeded, outcome
    assert status == 0
    assert runs[request_id] == 1
    if point in AMBIGUOUS:
        assert ends[request_id] <= 1, counts
        assert ends[request_id] + replays[request_id] >= 1, counts
    else:
        assert ends[request_id] == 1, counts
    check_files_whole(worker.root_dir)
    assert os.path.exists(os.path.join(worker.state_dir, 'rescued'))
    # Lockdown is complete: nothing secret stays on the node.
    assert not os.path.exists(worker.token_file)
    assert not os.path.exists(worker.config_file)


# -- SIGTERM while the end waits for the broker ----------------------------

def test_sigterm_while_the_end_waits_for_the_broker(rabbit, durable):
    # Found by the fail-closed review: the worker exited 0 here with the
    # token and the broker credentials on disk, and the unit never
    # restarted it. Now it exits 4 (Restart=on-failure starts it again),
    # and the restart publishes the end and locks down.
    witness, conductor, _, processes = durable
    worker = processes(steps='password,gate,account,verify',
                       notification_retry=0)
    worker.start()
    broker.wait_process_ready(witness, worker)
    request_id = conductor.cast(worker.node_id, worker.token)
    assert worker.wait_in_gate() == request_id

    node = rabbit.nodes[0]
    rabbit.driver.kill_node(node)
    try:
        worker.open_gate()
        worker.wait_for_log('did not reach the broker; publishing it again')
        worker.signal(signal.SIGTERM)
        status = worker.wait(timeout=120)
        # Not locked down: the secrets wait for the restart to finish.
        token_kept = os.path.exists(worker.token_file)
    finally:
        rabbit.driver.start_node(node)
    assert status == 4, worker.logs()[-3000:]
    assert token_kept

    worker.start()
    outcome = conductor.wait([request_id], timeout=120,
                             start_timeout=30)[request_id]
    assert worker.wait(timeout=60) == 0
    witness.settle([request_id])
    ends, replays, counts = ends_and_replays(witness, [request_id])
    print(broker.record(
        'SIGTERM while the end waits for the broker',
        'broker killed after the steps, SIGTERM during the re-publishing, '
        'broker and worker started again', [request_id],
        {request_id: outcome},
        {request_id: broker.completed_runs(worker, request_id)}, ends,
        witness=witness, replays=replays, exit_status=status))
    assert outcome.succeeded, outcome
    assert broker.completed_runs(worker, request_id) == 1
    assert ends[request_id] + replays[request_id] >= 1, counts
    assert ends[request_id] <= 1, counts
    assert not os.path.exists(worker.token_file)
    assert not os.path.exists(worker.config_file)
