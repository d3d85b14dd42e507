"""RescueWorker built with fake parts: its life cycle (ready, serving,
lockdown, stopped) without the real steps or a notifier. The whole worker
on fake:// is exercised by test_endpoint.py and test_fixture.py."""

import os
import threading

import oslo_messaging
import pytest

from rescue_worker import agent_token
from rescue_worker import contract
from rescue_worker import payloads
from rescue_worker import pipeline
from rescue_worker import rpc
from rescue_worker import sandbox
from rescue_worker import service
from tests.unit.parts import FakeNotifications
from tests.unit.parts import RecordingStep

TIMEOUT = 10.0


@pytest.fixture
def node(tmp_path):
    return sandbox.SandboxNode(str(tmp_path)).create()


@pytest.fixture
def transport(node):
    transport = rpc.get_rpc_transport(node.load_config())
    yield transport
    transport.cleanup()


def _worker(node, transport, **parts):
    parts.setdefault('pipeline', pipeline.Pipeline(
        [RecordingStep('password')], 'rescue'))
    parts.setdefault('notifications', FakeNotifications())
    return service.RescueWorker(node.load_config(), rpc_transport=transport,
                                cmdline_path=node.cmdline_file, **parts)


def _cast(node, transport, request_id, token):
    client = oslo_messaging.get_rpc_client(transport, oslo_messaging.Target(
        topic=contract.DEFAULT_TOPIC, server=node.node_id, version='1.0'))
    client.cast({'request_id': request_id}, 'finalize_rescue',
                rescue_password='a long enough password', agent_token=token)


def test_start_announces_ready_with_the_worker_payload(node, transport):
    worker = _worker(node, transport)

    worker.start()
    try:
        ready = worker.notifications.last(payloads.EVENT_READY)
        assert ready == payloads.WorkerPayload(
            node_id=node.node_id, state=contract.WAITING,
            topic=contract.DEFAULT_TOPIC, version=ready.version,
            rpc_api_version=contract.RPC_API_VERSION)
        assert worker.ready.is_set()
    finally:
        worker.request_stop()
        worker.stop()


def test_a_rescue_through_the_given_parts_locks_the_worker_down(
        node, transport):
    step = RecordingStep('password')
    worker = _worker(node, transport,
                     pipeline=pipeline.Pipeline([step], 'rescue'))
    worker.start()

    _cast(node, transport, 'req-1', node.token)

    assert worker.wait_for_stop_request(TIMEOUT)
    worker.stop()
    events = worker.notifications.events()
    assert events == [payloads.EVENT_READY, payloads.EVENT_START,
                      payloads.EVENT_END, payloads.EVENT_STOPPED]
    assert worker.notifications.last(payloads.EVENT_STOPPED).state == \
        contract.RESCUED
    assert worker.stop_reason == service.STOP_RESCUED
    assert not os.path.exists(node.token_file)
    assert not os.path.exists(node.config_file)
    assert len(step.runs) == 1


def test_a_given_token_check_replaces_the_token_file(node, transport):
    other = 'o' * 40
    worker = _worker(node, transport,
                     token_check=agent_token.TokenCheck(other))
    worker.start()

    _cast(node, transport, 'req-1', other)

    assert worker.wait_for_stop_request(TIMEOUT)
    worker.stop()
    assert worker.notifications.last(payloads.EVENT_END).request_id == \
        'req-1'


def test_a_worker_with_the_marker_refuses_to_start(node, transport):
    worker = _worker(node, transport)
    worker.lockdown.marker.write('req-0')

    with pytest.raises(service.lockdown.AlreadyRescued):
        _worker(node, transport)


def test_tls_private_keys_are_scrubbed_with_the_configuration(
        node, transport, tmp_path):
    key = tmp_path / 'client.key'
    key.write_text('-----BEGIN PRIVATE KEY-----\n')
    with open(node.config_file, 'a') as f:
        f.write('\n[oslo_messaging_rabbit]\nssl_key_file = %s\n' % key)
    worker = _worker(node, transport)

    assert str(key) in worker.scrub_paths()
    assert node.config_file in worker.scrub_paths()
    assert node.token_file in worker.scrub_paths()


class _WatchingNotifications(FakeNotifications):
    """Looks at the node when the ``end`` goes out: what could a tenant
    with the password do then, and what secrets were on disk?"""

    def __init__(self, node):
        super().__init__()
        self.node = node
        self.at_end = None

    def outcome(self, payload):
        from rescue_worker import accounts
        self.at_end = (accounts.is_locked(self.node.root_dir, 'rescue'),
                       os.path.exists(self.node.config_file))
        super().outcome(payload)


def test_the_account_opens_only_after_the_secrets_are_gone(node,
                                                           transport):
    from rescue_worker import accounts
    conf = node.load_config()
    conf.set_override('steps', ['password', 'account', 'verify'],
                      group='rescue_worker')
    notifications = _WatchingNotifications(node)
    worker = _worker(node, transport, notifications=notifications,
                     pipeline=pipeline.Pipeline.from_conf(conf))
    worker.start()

    _cast(node, transport, 'req-1', node.token)

    assert worker.wait_for_stop_request(TIMEOUT)
    worker.stop()
    # While the end went out the configuration was still there, and the
    # account was locked; after the lockdown it is the other way round.
    assert notifications.at_end == (True, True)
    assert not accounts.is_locked(node.root_dir, 'rescue')
    assert not os.path.exists(node.config_file)


def _stopped_with_the_outcome_unpublished(node, transport, monkeypatch):
    """A worker that rescued req-1 but could not publish its end, stopped
    by SIGTERM while it was publishing it again and again."""
    from rescue_worker import endpoint as rw_endpoint
    monkeypatch.setattr(rw_endpoint, 'PUBLISH_RETRY_DELAY', 0.01)
    broker_away = FakeNotifications(fail_outcomes=10 ** 6)
    worker = _worker(node, transport, notifications=broker_away)
    worker.start()
    with broker_away.changed:
        _cast(node, transport, 'req-1', node.token)
        assert broker_away.changed.wait_for(
            lambda: payloads.EVENT_START in broker_away.events(), TIMEOUT)
    worker.request_stop(service.STOP_SIGNAL)
    worker.stop()
    return worker


def test_sigterm_with_an_outcome_unpublished_exits_for_a_restart(
        node, transport, monkeypatch):
    worker = _stopped_with_the_outcome_unpublished(node, transport,
                                                   monkeypatch)

    assert worker.exit_status_after_stop() == \
        service.EXIT_OUTCOME_UNPUBLISHED
    # Not locked down: the restart publishes the end, then locks down.
    assert os.path.exists(node.token_file)
    restarted = _worker(node, transport)
    restarted.start()
    assert restarted.wait_for_stop_request(TIMEOUT)
    restarted.stop()
    assert restarted.notifications.last(payloads.EVENT_END).replayed
    assert not os.path.exists(node.token_file)


def test_sigterm_with_nothing_pending_exits_0(node, transport):
    worker = _worker(node, transport)
    worker.start()
    worker.request_stop(service.STOP_SIGNAL)
    worker.stop()

    assert worker.exit_status_after_stop() == 0


def test_an_unreachable_broker_leaves_the_worker_stoppable(tmp_path,
                                                           caplog):
    import logging
    import threading
    # Nothing listens on port 1 of loopback: oslo.messaging retries for
    # ever in the thread that connects.
    node = sandbox.SandboxNode(
        str(tmp_path), transport_url='rabbit://rescue:broker-pw@127.0.0.1:1/'
    ).create()
    worker = service.RescueWorker(node.load_config(),
                                  notifications=FakeNotifications(),
                                  cmdline_path=node.cmdline_file)
    worker.BROKER_REPORT_INTERVAL = 1.0
    warned = threading.Event()

    class _Watch(logging.Handler):
        def emit(self, record):
            if 'Still connecting' in record.getMessage():
                warned.set()
    watch = _Watch()
    logging.getLogger('rescue_worker.service').addHandler(watch)
    outcome = []

    def run():
        try:
            outcome.append(worker.run())
        except service.StartAbandoned as exc:
            outcome.append(exc)
    runner = threading.Thread(target=run, daemon=True)
    try:
        with caplog.at_level(logging.WARNING, logger='rescue_worker'):
            runner.start()
            assert warned.wait(TIMEOUT), 'no "still connecting" warning'
            worker.request_stop(service.STOP_SIGNAL)
            runner.join(TIMEOUT)
    finally:
        logging.getLogger('rescue_worker.service').removeHandler(watch)

    assert not runner.is_alive(), 'SIGTERM did not stop the start'
    [abandoned] = outcome
    assert isinstance(abandoned, service.StartAbandoned)
    assert '127.0.0.1:1' in caplog.text
    assert 'broker-pw' not in caplog.text and 'broker-pw' not in str(
        abandoned)


class _SeenEvent(threading.Event):
    """An Event that says when a waiter has seen it set."""

    def __init__(self):
        super().__init__()
        self.seen_set = threading.Event()

    def wait(self, timeout=None):
        result = super().wait(timeout)
        if result:
            self.seen_set.set()
        return result


def test_a_rescue_finished_at_start_stops_with_worker_stopped(
        node, transport, monkeypatch):
    # Found in CI: a restart finished a journaled request and locked down
    # while its start was still returning; the worker took that for a
    # start abandoned before the broker answered, exited without
    # worker.stopped and never became the tenant network keeper.
    _stopped_with_the_outcome_unpublished(node, transport, monkeypatch)
    restarted = _worker(node, transport)
    restarted._stop_requested = _SeenEvent()
    outcome = []
    ended = threading.Event()
    engage = restarted.lockdown.engage

    def engage_then_wait_for_the_main_loop(outcome_payload):
        # The lockdown asks the worker to stop; hold the start here until
        # the main loop has seen that, then give a wrongly abandoned run
        # the time to end before the start returns.
        engage(outcome_payload)
        assert restarted._stop_requested.seen_set.wait(TIMEOUT)
        ended.wait(1.0)
    restarted.lockdown.engage = engage_then_wait_for_the_main_loop

    def run():
        try:
            outcome.append(restarted.run())
        except service.StartAbandoned as exc:
            outcome.append(exc)
        ended.set()
    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    runner.join(TIMEOUT * 2)

    assert outcome == [0]
    assert restarted.notifications.last(payloads.EVENT_END).replayed
    stopped = restarted.notifications.last(payloads.EVENT_STOPPED)
    assert stopped.state == contract.RESCUED
    assert stopped.reason == service.STOP_RESCUED
