"""RescueEndpoint: the RPC API 1.0 contract, on a real worker over fake://.

Each test talks to the worker the way a conductor does (a plain
oslo.messaging client casting to ``Target(topic, server=node_id)``) and
judges it by the notifications it publishes and by what is on disk.
"""

import json
import logging
import os
import threading
import uuid

import oslo_messaging
import pytest
from passlib.hash import md5_crypt
from passlib.hash import sha512_crypt

from rescue_worker import RescueError
from rescue_worker import endpoint as endpoint_module
from rescue_worker import journal as rw_journal
from rescue_worker import lockdown
from rescue_worker import notify
from rescue_worker import payloads
from rescue_worker import pipeline
from rescue_worker.fixture import NotificationCapture
from rescue_worker.fixture import RescueWorkerFixture
from tests.unit import helpers

PASSWORD = 'correct horse battery staple'
SHA512 = sha512_crypt.using(rounds=5000).hash('s3cret-hashed')
# A worker hashes a plaintext password at its cap when the cap is below
# passlib's default cost (656000 rounds: a quarter of a second a hash, and
# most tests here hash one or two). No test here is about the cost; SHA512
# above stays within this cap.
FAST = {'max_sha_crypt_rounds': 5000}


@pytest.fixture
def worker():
    with RescueWorkerFixture(**FAST, steps='password',
                             exit_after_rescue=False) as fixture:
        yield fixture


@pytest.fixture
def events(worker):
    with NotificationCapture(worker.notification_transport) as capture:
        capture.wait_for(notify.EVENT_READY, node_id=worker.node_id)
        yield capture


def cast(worker, request_id=None, ctxt=None, **kwargs):
    """Cast finalize_rescue as a conductor would; returns the request id."""
    request_id = request_id or 'req-%s' % uuid.uuid4()
    kwargs.setdefault('agent_token', worker.token)
    if ctxt is None:
        ctxt = {'request_id': request_id}
    worker.rpc_client().cast(ctxt, 'finalize_rescue', **kwargs)
    return request_id


# -- the happy path ----------------------------------------------------------

def test_valid_request_publishes_start_then_end(worker, events):
    request_id = cast(worker, rescue_password=PASSWORD)

    end = events.wait_for(notify.EVENT_END, request_id=request_id)
    kinds = [n.event_type for n in events.matching(request_id=request_id)]
    assert kinds == [notify.EVENT_START, notify.EVENT_END]
    assert end.priority == 'INFO'
    assert end.publisher_id == 'rescue-worker.%s' % worker.node_id
    assert end.ctxt.get('request_id') == request_id


def test_end_payload_is_the_versioned_envelope_with_every_field(worker,
                                                                events):
    request_id = cast(worker, rescue_password=PASSWORD)

    end = events.wait_for(notify.EVENT_END, request_id=request_id)
    assert end.payload['rescue_worker_object.name'] == \
        'FinalizeRescuePayload'
    assert end.payload['rescue_worker_object.namespace'] == 'rescue_worker'
    assert end.payload['rescue_worker_object.version'] == '1.1'
    assert payloads.authentic(end.event_type, end.publisher_id, end.payload,
                              worker.token)
    data = end.data
    assert set(data) == {'node_id', 'request_id', 'replayed', 'username',
                         'hash_scheme', 'steps', 'interfaces',
                         'duration_ms', 'error'}
    assert data['node_id'] == worker.node_id
    assert data['request_id'] == request_id
    assert data['replayed'] is False
    assert data['username'] == 'rescue'
    assert data['hash_scheme'] == 'sha512_crypt'
    assert data['error'] is None
    assert data['interfaces'] == []
    assert data['duration_ms'] > 0
    [step] = data['steps']
    assert step['name'] == 'password'
    assert step['status'] == 'done'
    assert step['duration_ms'] > 0
    assert set(step) == {'name', 'status', 'duration_ms', 'detail'}


def test_start_payload_names_the_request_before_any_step_ran(worker,
                                                             events):
    request_id = cast(worker, rescue_password=PASSWORD)

    start = events.wait_for(notify.EVENT_START, request_id=request_id)
    assert start.data['steps'] == []
    assert start.data['error'] is None


def test_prehashed_password_is_accepted_and_its_scheme_reported(worker,
                                                                events):
    request_id = cast(worker, rescue_password=SHA512, hashed=True)

    end = events.wait_for_outcome(request_id)
    assert end.event_type == notify.EVENT_END
    assert end.data['hash_scheme'] == 'sha512_crypt'


def test_a_call_returns_the_outcome_data(worker, events):
    request_id = 'req-%s' % uuid.uuid4()
    data = worker.rpc_client().call({'request_id': request_id},
                                    'finalize_rescue',
                                    rescue_password=PASSWORD,
                                    agent_token=worker.token)

    end = events.wait_for(notify.EVENT_END, request_id=request_id)
    assert data == end.data


def test_request_without_request_id_is_given_one(worker, events):
    worker.rpc_client().cast({}, 'finalize_rescue', rescue_password=PASSWORD,
                             agent_token=worker.token)

    end = events.wait_for(notify.EVENT_END, node_id=worker.node_id)
    assert end.data['request_id'].startswith('req-')
    uuid.UUID(end.data['request_id'][4:])


# -- idempotency -------------------------------------------------------------

def test_same_request_id_is_replayed_not_run_again(worker, events):
    request_id = cast(worker, rescue_password=PASSWORD)
    first = events.wait_for(notify.EVENT_END, request_id=request_id)

    cast(worker, request_id=request_id, rescue_password=PASSWORD)
    events.wait_until(
        lambda: len(events.matching(notify.EVENT_END, request_id)) == 2)

    ends = events.matching(notify.EVENT_END, request_id)
    assert [n.data['replayed'] for n in ends] == [False, True]
    assert dict(ends[1].data, replayed=False) == first.data
    assert len(events.matching(notify.EVENT_START, request_id)) == 1


def test_new_request_id_after_success_runs_the_steps_again(worker, events):
    first = cast(worker, rescue_password=PASSWORD)
    events.wait_for(notify.EVENT_END, request_id=first)

    second = cast(worker, rescue_password='a new password')

    end = events.wait_for(notify.EVENT_END, request_id=second)
    assert end.data['replayed'] is False
    assert events.matching(notify.EVENT_START, request_id=second)


# -- bad input ---------------------------------------------------------------

BAD_REQUESTS = {
    'missing password': ({}, 'invalid_request'),
    'password is an int': ({'rescue_password': 1234}, 'invalid_request'),
    'password is a list': ({'rescue_password': ['a']}, 'invalid_request'),
    'password is a dict': ({'rescue_password': {'a': 1}},
                           'invalid_request'),
    'password is None': ({'rescue_password': None}, 'invalid_request'),
    'hashed is a string': ({'rescue_password': PASSWORD, 'hashed': 'yes'},
                           'invalid_request'),
    'unknown argument': ({'rescue_password': PASSWORD, 'colour': 'red'},
                         'invalid_request'),
    'empty password': ({'rescue_password': ''}, 'invalid_password'),
    '4097 characters': ({'rescue_password': 'x' * 4097},
                        'invalid_password'),
    'NUL byte': ({'rescue_password': 'abc\x00def'}, 'invalid_password'),
    'MD5-crypt hash': ({'rescue_password': md5_crypt.hash('pw'),
                        'hashed': True}, 'invalid_hash'),
    'DES hash': ({'rescue_password': 'abJnggxhB/yWI', 'hashed': True},
                 'invalid_hash'),
    'garbage hash': ({'rescue_password': 'not a hash at all',
                      'hashed': True}, 'invalid_hash'),
    '$6$ hash with colon': ({'rescue_password': SHA512 + ':0:99999',
                             'hashed': True}, 'invalid_hash'),
    '$6$ hash with newline': ({'rescue_password': SHA512 + '\nroot::0:0',
                               'hashed': True}, 'invalid_hash'),
    'wrong token': ({'rescue_password': PASSWORD,
                     'agent_token': 'f' * 64}, 'unauthorized'),
    'missing token': ({'rescue_password': PASSWORD, 'agent_token': None},
                      'unauthorized'),
    'short token': ({'rescue_password': PASSWORD, 'agent_token': 'abc'},
                    'unauthorized'),
}


@pytest.mark.parametrize('kwargs,code', BAD_REQUESTS.values(),
                         ids=list(BAD_REQUESTS))
def test_bad_request_gets_one_error_and_changes_nothing(worker, events,
                                                        kwargs, code):
    before = helpers.snapshot(worker.state_dir, worker.root_dir)

    request_id = cast(worker, **kwargs)

    error = events.wait_for_outcome(request_id)
    assert error.event_type == notify.EVENT_ERROR
    assert error.priority == 'ERROR'
    assert error.data['error']['code'] == code
    assert error.data['error']['message']
    assert error.data['steps'] == []
    assert helpers.snapshot(worker.state_dir, worker.root_dir) == before
    # A later request is served, and by then nothing else came for this one.
    later = cast(worker, rescue_password=PASSWORD)
    events.wait_for(notify.EVENT_END, request_id=later)
    assert [n.event_type for n in events.matching(request_id=request_id)] \
        == [notify.EVENT_ERROR]


def test_plaintext_is_refused_when_hashes_are_required():
    with RescueWorkerFixture(**FAST, steps='password',
                             require_hashed=True) as worker, \
            NotificationCapture(worker.notification_transport) as events:
        before = helpers.snapshot(worker.state_dir, worker.root_dir)

        request_id = cast(worker, rescue_password=PASSWORD)

        error = events.wait_for_outcome(request_id)
        assert error.data['error']['code'] == 'plaintext_refused'
        assert 'hashed' in error.data['error']['message']
        assert helpers.snapshot(worker.state_dir, worker.root_dir) == before


def test_a_refused_request_is_refused_again_when_repeated(worker, events):
    request_id = cast(worker, rescue_password=PASSWORD, agent_token='x' * 64)
    events.wait_for(notify.EVENT_ERROR, request_id=request_id)

    cast(worker, request_id=request_id, rescue_password=PASSWORD,
         agent_token='x' * 64)
    events.wait_until(
        lambda: len(events.matching(notify.EVENT_ERROR, request_id)) == 2)

    assert not events.matching(notify.EVENT_START, request_id)
    assert all(n.data['replayed'] is False
               for n in events.matching(request_id=request_id))


def test_malformed_request_id_is_refused_with_a_fresh_one(worker, events):
    worker.rpc_client().cast({'request_id': 'bad\nid'}, 'finalize_rescue',
                             rescue_password=PASSWORD,
                             agent_token=worker.token)

    error = events.wait_for(notify.EVENT_ERROR, node_id=worker.node_id)
    assert error.data['error']['code'] == 'invalid_request'
    assert 'request_id' in error.data['error']['message']
    assert error.data['request_id'].startswith('req-')


# -- get_status --------------------------------------------------------------

def test_get_status_before_any_request(worker, events):
    status = worker.rpc_client().call({}, 'get_status',
                                      agent_token=worker.token)
    assert status['node_id'] == worker.node_id
    assert status['state'] == 'waiting'
    assert status['last_request_id'] is None
    assert status['rpc_api_version'] == '1.0'
    assert status['version']


def test_get_status_after_a_rescue(worker, events):
    request_id = cast(worker, rescue_password=PASSWORD)
    events.wait_for(notify.EVENT_END, request_id=request_id)

    status = worker.rpc_client().call({}, 'get_status',
                                      agent_token=worker.token)
    assert status['state'] == 'rescued'
    assert status['last_request_id'] == request_id


def test_get_status_needs_the_token(worker, events):
    # The fake driver raises the endpoint's exception itself; a real broker
    # hands the caller a RemoteError naming it.
    with pytest.raises((RescueError, oslo_messaging.RemoteError)) as raised:
        worker.rpc_client().call({}, 'get_status', agent_token='x' * 64)
    assert 'agent_token does not match' in str(raised.value)
    assert worker.token not in str(raised.value)


def test_private_methods_are_not_callable(worker, events):
    with pytest.raises(oslo_messaging.NoSuchMethod):
        worker.rpc_client().call({}, '_run', agent_token=worker.token)


# -- one at a time, crashes and shutdown -------------------------------------

class GatedStep(pipeline.Step):
    """A step that blocks until the test opens its gate."""

    name = 'gated'
    gate = threading.Event()
    running = threading.Semaphore(0)
    concurrent = 0
    most_concurrent = 0
    lock = threading.Lock()

    def run(self, request, state):
        cls = type(self)
        with cls.lock:
            cls.concurrent += 1
            cls.most_concurrent = max(cls.most_concurrent, cls.concurrent)
        cls.running.release()
        try:
            assert cls.gate.wait(10), 'gate never opened'
        finally:
            with cls.lock:
                cls.concurrent -= 1
        return 'gate passed'


@pytest.fixture
def gated_steps(monkeypatch):
    GatedStep.gate = threading.Event()
    GatedStep.running = threading.Semaphore(0)
    GatedStep.most_concurrent = GatedStep.concurrent = 0
    real_load = pipeline.load_step

    def load_step(name, conf):
        return GatedStep(conf) if name == 'gated' else real_load(name, conf)

    monkeypatch.setattr(pipeline, 'load_step', load_step)
    yield GatedStep
    GatedStep.gate.set()


def test_requests_run_one_at_a_time(gated_steps):
    with RescueWorkerFixture(**FAST, steps='password,gated',
                             exit_after_rescue=False) as worker, \
            NotificationCapture(worker.notification_transport) as events:
        first = cast(worker, rescue_password=PASSWORD)
        second = cast(worker, rescue_password=PASSWORD)
        assert gated_steps.running.acquire(timeout=10)
        # The second request waits: it has not started while the first runs.
        status = worker.rpc_client().call({}, 'get_status',
                                          agent_token=worker.token)
        assert status['state'] == 'rescuing'
        # The capture polls the transport: the first start may not be in
        # yet (it is published before the steps run, so it will come).
        events.wait_for(notify.EVENT_START, request_id=first)
        assert len(events.matching(notify.EVENT_START)) == 1
        assert not events.matching(notify.EVENT_START, request_id=second)

        gated_steps.gate.set()
        events.wait_for(notify.EVENT_END, request_id=first)
        events.wait_for(notify.EVENT_END, request_id=second)
        assert gated_steps.most_concurrent == 1


def test_stop_while_a_request_runs_finishes_it_first(gated_steps):
    with RescueWorkerFixture(**FAST, steps='password,gated',
                             exit_after_rescue=False) as worker, \
            NotificationCapture(worker.notification_transport) as events:
        request_id = cast(worker, rescue_password=PASSWORD)
        assert gated_steps.running.acquire(timeout=10)

        stopper = threading.Thread(target=worker.stop)
        stopper.start()
        assert not worker.worker.stopped.wait(0.2)
        gated_steps.gate.set()
        stopper.join(10)

        events.wait_for(notify.EVENT_STOPPED, node_id=worker.node_id)
        end = events.wait_for(notify.EVENT_END, request_id=request_id)
        assert end.data['error'] is None
        kinds = [n.event_type for n in events.matching(
            node_id=worker.node_id)]
        assert kinds.index(notify.EVENT_END) < \
            kinds.index(notify.EVENT_STOPPED)


def test_request_interrupted_by_a_crash_is_finished_on_start():
    with RescueWorkerFixture(**FAST, steps='password', start=False,
                             exit_after_rescue=False) as worker, \
            NotificationCapture(worker.notification_transport) as events:
        # What a worker killed right after journaling leaves behind.
        request_id = 'req-%s' % uuid.uuid4()
        rw_journal.Journal(worker.state_dir).record_request(
            request_id, {'rescue_password': PASSWORD, 'hashed': False})

        worker.start()

        end = events.wait_for(notify.EVENT_END, request_id=request_id)
        assert end.data['steps'][0]['status'] == 'done'
        events.wait_for(notify.EVENT_READY, node_id=worker.node_id)
        assert len(events.matching(notify.EVENT_END, request_id)) == 1
        record = rw_journal.Journal(worker.state_dir).get(request_id)
        assert record.ended and record.notified and record.request is None


def test_outcome_journaled_but_not_published_is_published_on_start():
    with RescueWorkerFixture(**FAST, steps='password', start=False,
                             exit_after_rescue=False) as worker, \
            NotificationCapture(worker.notification_transport) as events:
        request_id = 'req-%s' % uuid.uuid4()
        journal = rw_journal.Journal(worker.state_dir)
        journal.record_request(request_id, {'rescue_password': PASSWORD,
                                            'hashed': False})
        outcome = payloads.FinalizeRescuePayload(
            node_id=worker.node_id, request_id=request_id,
            username='rescue', hash_scheme='sha512_crypt').to_data()
        journal.record_outcome(request_id, outcome)

        worker.start()

        end = events.wait_for(notify.EVENT_END, request_id=request_id)
        # It may have gone out before the crash: a replay, not a first run.
        assert end.data == dict(outcome, replayed=True)
        events.wait_for(notify.EVENT_READY, node_id=worker.node_id)
        assert not events.matching(notify.EVENT_START, request_id)


# -- lockdown ----------------------------------------------------------------

def test_success_locks_the_worker_down():
    with RescueWorkerFixture(**FAST, steps='password') as worker, \
            NotificationCapture(worker.notification_transport) as events:
        request_id = cast(worker, rescue_password=PASSWORD)

        stopped = events.wait_for(notify.EVENT_STOPPED,
                                  node_id=worker.node_id)
        assert stopped.data['state'] == 'rescued'
        assert worker.worker.stopped.wait(10)
        kinds = [n.event_type for n in events.matching(
            node_id=worker.node_id)]
        assert kinds == [notify.EVENT_READY, notify.EVENT_START,
                         notify.EVENT_END, notify.EVENT_STOPPED]
        assert os.path.exists(os.path.join(worker.state_dir, 'rescued'))
        assert not os.path.exists(worker.token_file)
        assert not os.path.exists(worker.config_file)
        record = rw_journal.Journal(worker.state_dir).get(request_id)
        assert record.request is None

        with pytest.raises(lockdown.AlreadyRescued):
            worker.start()


class BrokerRefusesEnds:
    """The notification transport fails to send the first ``count``
    ``end`` notifications, as it does while a broker restarts (its
    connection retries spent); everything else goes out."""

    def __init__(self, transport, count):
        self.count = count
        self.refused = threading.Event()
        self._send = transport._send_notification
        transport._send_notification = self

    def __call__(self, target, ctxt, message, *args, **kwargs):
        if message.get('event_type') == notify.EVENT_END and self.count:
            self.count -= 1
            self.refused.set()
            raise ConnectionResetError('connection reset by peer')
        return self._send(target, ctxt, message, *args, **kwargs)


def test_an_end_the_broker_did_not_take_is_published_again_before_lockdown(
        monkeypatch):
    # oslo.messaging's notifier logs a failed send and returns as if it
    # had sent. Found by the fault suite: the worker then noted the end as
    # published and locked down, and the conductor never got it.
    monkeypatch.setattr(endpoint_module, 'PUBLISH_RETRY_DELAY', 0.05)
    with RescueWorkerFixture(**FAST, steps='password') as worker, \
            NotificationCapture(worker.notification_transport) as events:
        broker = BrokerRefusesEnds(worker.notification_transport, 2)
        request_id = cast(worker, rescue_password=PASSWORD)

        stopped = events.wait_for(notify.EVENT_STOPPED,
                                  node_id=worker.node_id)

        assert broker.refused.is_set() and broker.count == 0
        assert stopped.data['state'] == 'rescued'
        kinds = [n.event_type for n in events.matching(
            node_id=worker.node_id)]
        assert kinds == [notify.EVENT_READY, notify.EVENT_START,
                         notify.EVENT_END, notify.EVENT_STOPPED]
        assert rw_journal.Journal(worker.state_dir).get(request_id).notified


def test_a_stop_while_the_broker_is_away_leaves_the_end_to_the_next_start(
        monkeypatch):
    monkeypatch.setattr(endpoint_module, 'PUBLISH_RETRY_DELAY', 0.05)
    with RescueWorkerFixture(**FAST, steps='password',
                             exit_after_rescue=False) as worker, \
            NotificationCapture(worker.notification_transport) as events:
        broker = BrokerRefusesEnds(worker.notification_transport, 10 ** 6)
        request_id = cast(worker, rescue_password=PASSWORD)
        assert broker.refused.wait(30)

        worker.worker.request_stop()
        assert worker.worker.stopped.wait(30)
        record = rw_journal.Journal(worker.state_dir).get(request_id)
        assert record.ended and not record.notified

        broker.count = 0  # the broker is back
        worker.start()
        end = events.wait_for(notify.EVENT_END, request_id=request_id)
        assert end.data['replayed'] is True
        assert rw_journal.Journal(worker.state_dir).get(request_id).notified


def test_an_end_the_broker_never_takes_is_given_up_after_the_timeout(
        monkeypatch):
    # Bounded: a dead broker never keeps a rescued node from its lockdown.
    monkeypatch.setattr(endpoint_module, 'PUBLISH_RETRY_DELAY', 0.05)
    with RescueWorkerFixture(**FAST, steps='password',
                             outcome_retry_timeout=1) as worker, \
            NotificationCapture(worker.notification_transport) as events:
        broker = BrokerRefusesEnds(worker.notification_transport, 10 ** 6)
        request_id = cast(worker, rescue_password=PASSWORD)

        stopped = events.wait_for(notify.EVENT_STOPPED,
                                  node_id=worker.node_id)

        assert stopped.data['state'] == 'rescued'
        assert broker.refused.is_set()
        assert not events.matching(notify.EVENT_END, request_id)
        assert not rw_journal.Journal(worker.state_dir).get(
            request_id).notified


def test_a_notifier_log_level_that_hides_send_failures_is_reported(
        caplog):
    # The failures are seen through oslo.messaging's own ERROR records.
    hidden = logging.getLogger('oslo_messaging.notify.messaging')
    level = hidden.level
    hidden.setLevel(logging.CRITICAL)
    try:
        with caplog.at_level(logging.WARNING, logger='rescue_worker'), \
                RescueWorkerFixture(**FAST, steps='password'):
            pass
    finally:
        hidden.setLevel(level)

    assert any('oslo_messaging.notify.messaging is set above ERROR' in
               record.getMessage() for record in caplog.records)


def test_failure_does_not_lock_down(gated_steps, monkeypatch):
    def fail(self, request, state):
        raise RuntimeError('disk on fire: %s' % request.rescue_password)

    monkeypatch.setattr(GatedStep, 'run', fail)
    with RescueWorkerFixture(**FAST, steps='password,gated') as worker, \
            NotificationCapture(worker.notification_transport) as events:
        request_id = cast(worker, rescue_password=PASSWORD)

        error = events.wait_for_outcome(request_id)
        assert error.data['error']['code'] == 'internal'
        assert PASSWORD not in json.dumps(error.payload)
        assert [s['status'] for s in error.data['steps']] == \
            ['done', 'failed']
        assert not os.path.exists(os.path.join(worker.state_dir, 'rescued'))
        status = worker.rpc_client().call({}, 'get_status',
                                          agent_token=worker.token)
        assert status['state'] == 'failed'


# -- secrets -----------------------------------------------------------------

def test_no_secret_in_notifications_or_logs(worker, events, caplog):
    caplog.set_level('DEBUG')
    ok = cast(worker, rescue_password=PASSWORD)
    hashed = cast(worker, rescue_password=SHA512, hashed=True)
    bad = cast(worker, rescue_password=SHA512 + ':x', hashed=True)
    wrong = cast(worker, rescue_password=PASSWORD, agent_token=PASSWORD)
    for request_id in (ok, hashed, bad, wrong):
        events.wait_for_outcome(request_id)

    published = json.dumps([(n.ctxt, n.payload)
                            for n in events.notifications])
    logged = caplog.text
    for secret in (PASSWORD, SHA512, SHA512.rsplit('$', 1)[1],
                   worker.token):
        assert secret not in published
        assert secret not in logged
