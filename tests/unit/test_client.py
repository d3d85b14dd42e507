"""RescueWorkerClient and CompletionWaiter against a real worker on fake://."""

import uuid

import oslo_messaging
import pytest
from passlib.hash import sha512_crypt

from rescue_worker import client as rw_client
from rescue_worker import contract
from rescue_worker import errors
from rescue_worker import passwords
from rescue_worker import payloads
from rescue_worker.fixture import NotificationCapture
from rescue_worker.fixture import RescueWorkerFixture

PASSWORD = 'conductor side password'


@pytest.fixture
def worker():
    with RescueWorkerFixture(exit_after_rescue=False) as fixture:
        yield fixture


@pytest.fixture
def client(worker):
    return rw_client.RescueWorkerClient(worker.transport, hash_rounds=5000)


@pytest.fixture
def waiter(worker):
    with rw_client.CompletionWaiter(worker.notification_transport) as waiter:
        yield waiter


def test_finalize_returns_the_request_id_and_the_waiter_its_outcome(
        worker, client, waiter):
    request_id = client.finalize_rescue({}, worker.node_id, PASSWORD,
                                        agent_token=worker.token)

    outcome = waiter.wait([request_id], timeout=30, client=client)[request_id]
    assert request_id.startswith('req-')
    assert outcome.status == rw_client.ENDED
    assert outcome.succeeded
    assert outcome.started
    assert outcome.casts == 1
    assert outcome.node_id == worker.node_id
    assert outcome.data['request_id'] == request_id


def test_the_password_is_hashed_before_it_is_sent(worker, client, waiter):
    with NotificationCapture(worker.notification_transport) as events:
        request_id = client.finalize_rescue({}, worker.node_id, PASSWORD,
                                            agent_token=worker.token)
        waiter.wait([request_id], timeout=30)

        end = events.wait_for(payloads.EVENT_END, request_id=request_id)
    # The worker was handed a hash, so its password step only vetted one.
    [password_step] = [s for s in end.data['steps']
                       if s['name'] == 'password']
    assert password_step['detail'] == 'accepted a sha512_crypt hash'
    assert PASSWORD not in str(client._sent)


def test_a_default_client_hashes_at_a_cost_the_worker_accepts(worker,
                                                               waiter):
    # The only test here at passlib's default cost (a fraction of a second).
    client = rw_client.RescueWorkerClient(worker.transport)
    with NotificationCapture(worker.notification_transport) as events:
        request_id = client.finalize_rescue({}, worker.node_id, PASSWORD,
                                            agent_token=worker.token)

        assert waiter.wait([request_id], timeout=30)[request_id].succeeded
        end = events.wait_for(payloads.EVENT_END, request_id=request_id)
    [password_step] = [s for s in end.data['steps']
                       if s['name'] == 'password']
    assert password_step['detail'] == 'accepted a sha512_crypt hash'
    sent = client._sent[request_id].kwargs['rescue_password']
    assert sha512_crypt.from_string(sent).rounds == \
        sha512_crypt.default_rounds


@pytest.mark.parametrize('scheme,rounds', [('sha512_crypt', 10 ** 9),
                                           ('bcrypt', 31)])
def test_a_client_never_hashes_above_what_a_worker_accepts(worker, scheme,
                                                           rounds):
    with pytest.raises(ValueError) as raised:
        rw_client.RescueWorkerClient(worker.transport, hash_scheme=scheme,
                                     hash_rounds=rounds)

    assert 'cap' in str(raised.value)


def test_hash_password_hashes_as_finalize_does(worker):
    client = rw_client.RescueWorkerClient(worker.transport,
                                          hash_scheme='bcrypt',
                                          hash_rounds=4)

    hashed = client.hash_password(PASSWORD)

    assert passwords.identify_hash(hashed, ['bcrypt']) == 'bcrypt'
    assert passwords.verify_password(PASSWORD, hashed)
    with pytest.raises(errors.RescueError):
        client.hash_password('')


def test_the_names_of_the_old_places_still_import():
    # Conductors written before contract.py and ERRORED existed.
    assert rw_client.DEFAULT_TOPIC == contract.DEFAULT_TOPIC
    assert rw_client.RPC_API_VERSION == contract.RPC_API_VERSION
    assert rw_client.FAILED == rw_client.ERRORED


def test_context_request_id_is_kept(worker, client, waiter):
    request_id = 'req-%s' % uuid.uuid4()

    returned = client.finalize_rescue({'request_id': request_id},
                                      worker.node_id, PASSWORD,
                                      agent_token=worker.token)

    assert returned == request_id
    assert waiter.wait([request_id], timeout=30)[request_id].succeeded


def test_refusal_comes_back_as_an_error_outcome(worker, client, waiter):
    request_id = client.finalize_rescue({}, worker.node_id, PASSWORD,
                                        agent_token='w' * 64)

    outcome = waiter.wait([request_id], timeout=30)[request_id]
    assert outcome.status == rw_client.ERRORED == 'error'
    assert outcome.error['code'] == 'unauthorized'
    assert not outcome.started


def test_a_lost_cast_is_cast_again_and_runs_once(worker, client, waiter):
    worker.lose_next_casts(1)
    with NotificationCapture(worker.notification_transport) as events:
        request_id = client.finalize_rescue({}, worker.node_id, PASSWORD,
                                            agent_token=worker.token)

        outcome = waiter.wait([request_id], timeout=30, client=client,
                              start_timeout=1.0)[request_id]

        assert outcome.succeeded
        # At least the lost cast and one more; a loaded machine may need a
        # third, which the worker's journal then answers as a replay.
        assert outcome.casts >= 2
        assert len(worker.lost_casts) == 1
        # This capture listens apart from the waiter: let it catch up.
        events.wait_for(payloads.EVENT_END, request_id=request_id)
        assert len(events.matching(payloads.EVENT_START, request_id)) == 1


def test_no_recast_once_the_request_started(worker, client, waiter):
    request_id = client.finalize_rescue({}, worker.node_id, PASSWORD,
                                        agent_token=worker.token)

    outcome = waiter.wait([request_id], timeout=30, client=client,
                          start_timeout=30)[request_id]

    assert outcome.casts == 1


def test_an_unanswered_request_times_out_after_max_casts(worker, client,
                                                         waiter):
    worker.lose_next_casts(5)
    request_id = client.finalize_rescue({}, worker.node_id, PASSWORD,
                                        agent_token=worker.token)

    outcome = waiter.wait([request_id], timeout=3, client=client,
                          start_timeout=0.2, max_casts=3)[request_id]

    assert outcome.status == rw_client.TIMED_OUT
    assert outcome.casts == 3
    assert outcome.error['code'] == 'timeout'


def test_many_requests_are_waited_for_together(worker, client, waiter):
    ids = [client.finalize_rescue({}, worker.node_id, 'pw-%d' % i,
                                  agent_token=worker.token)
           for i in range(3)]

    outcomes = waiter.wait(ids, timeout=60, client=client)

    assert sorted(outcomes) == sorted(ids)
    assert all(o.succeeded for o in outcomes.values())


def test_prehashed_password_is_sent_as_is(worker, client, waiter):
    hashed = sha512_crypt.using(rounds=5000).hash('given hash')

    request_id = client.finalize_rescue({}, worker.node_id, hashed,
                                        hashed=True, agent_token=worker.token)

    assert client._sent[request_id].kwargs['rescue_password'] == hashed
    assert waiter.wait([request_id], timeout=30)[request_id].succeeded


def test_get_status_is_a_call(worker, client):
    status = client.get_status(worker.node_id, agent_token=worker.token)

    assert status['node_id'] == worker.node_id
    assert status['state'] == 'waiting'


def test_version_cap_below_the_api_refuses_to_send(worker):
    client = rw_client.RescueWorkerClient(worker.transport,
                                          version_cap='0.9')

    with pytest.raises(Exception) as raised:
        client.get_status(worker.node_id, agent_token=worker.token)
    assert 'version' in str(raised.value).lower()


class NoQueueYet:
    """The worker's queue is missing for the next ``count`` casts (a node
    still booting, or a worker not yet reconnected after a broker
    restart): the broker returns them as unroutable."""

    def __init__(self, transport, count):
        self.count = count
        self._send = transport._send
        transport._send = self

    def __call__(self, target, ctxt, message, *args, **kwargs):
        if self.count:
            self.count -= 1
            raise oslo_messaging.MessageUndeliverable(
                Exception('NO_ROUTE'), target.exchange, target.topic,
                message)
        return self._send(target, ctxt, message, *args, **kwargs)


def test_a_request_whose_queue_appears_late_is_cast_until_it_runs(
        worker, client, waiter):
    missing = NoQueueYet(worker.transport, 2)
    with NotificationCapture(worker.notification_transport) as events:
        with pytest.raises(rw_client.WorkerNotListening) as raised:
            client.finalize_rescue({}, worker.node_id, PASSWORD,
                                   agent_token=worker.token)
        request_id = raised.value.request_id

        outcome = waiter.wait([request_id], timeout=30, client=client,
                              start_timeout=0.1, max_casts=5)[request_id]

        assert missing.count == 0
        assert outcome.succeeded
        # Two casts found no queue and the third ran it; a loaded machine
        # may take longer than 0.1 s to start it and cast a fourth, which
        # the worker's journal then answers as a replay.
        assert outcome.casts >= 3
        events.wait_for(payloads.EVENT_END, request_id=request_id)
        assert len(events.matching(payloads.EVENT_START, request_id)) == 1


def test_a_request_whose_last_cast_finds_no_queue_is_not_listening(
        worker, client, waiter):
    NoQueueYet(worker.transport, 10)
    with pytest.raises(rw_client.WorkerNotListening) as raised:
        client.finalize_rescue({}, worker.node_id, PASSWORD,
                               agent_token=worker.token)
    request_id = raised.value.request_id

    outcome = waiter.wait([request_id], timeout=30, client=client,
                          start_timeout=0.1, max_casts=3)[request_id]

    assert outcome.status == rw_client.NOT_LISTENING
    assert outcome.casts == 3


def test_a_node_without_a_queue_is_named_as_unknown(worker, client):
    NoQueueYet(worker.transport, 1)

    with pytest.raises(rw_client.WorkerNotListening) as raised:
        client.finalize_rescue({}, 'node-nobody-booted', PASSWORD,
                               agent_token=worker.token)

    assert str(raised.value).startswith(
        'no worker listens for node node-nobody-booted (its queue does not '
        'exist)')
    assert client.not_listening(raised.value.request_id)


def test_not_listening_until_a_recast_finds_the_queue(worker, client):
    NoQueueYet(worker.transport, 1)
    with pytest.raises(rw_client.WorkerNotListening) as raised:
        client.finalize_rescue({}, worker.node_id, PASSWORD,
                               agent_token=worker.token)
    request_id = raised.value.request_id

    client.recast(request_id)

    assert not client.not_listening(request_id)
    assert not client.not_listening('req-never-sent')


def test_a_timeout_before_the_recast_of_an_unheard_cast_is_not_listening(
        worker, client, waiter):
    # The first cast found no queue and --timeout ends before the first
    # re-cast: nothing was ever on its way, so "no outcome in time" would
    # send the operator looking at the wrong thing.
    NoQueueYet(worker.transport, 1)
    with pytest.raises(rw_client.WorkerNotListening) as raised:
        client.finalize_rescue({}, worker.node_id, PASSWORD,
                               agent_token=worker.token)
    request_id = raised.value.request_id

    outcome = waiter.wait([request_id], timeout=0.2, client=client,
                          start_timeout=30)[request_id]

    assert outcome.status == rw_client.NOT_LISTENING
    assert outcome.casts == 1
    assert outcome.node_id == worker.node_id
    assert outcome.error == {
        'code': rw_client.NOT_LISTENING,
        'message': rw_client.not_listening_message(worker.node_id)}
    assert 'no worker listens for node %s' % worker.node_id in \
        outcome.error['message']


def test_a_lost_cast_that_found_its_queue_times_out(worker, client, waiter):
    worker.lose_next_casts(1)
    request_id = client.finalize_rescue({}, worker.node_id, PASSWORD,
                                        agent_token=worker.token)

    outcome = waiter.wait([request_id], timeout=0.2, client=client,
                          start_timeout=30)[request_id]

    assert outcome.status == rw_client.TIMED_OUT
    assert outcome.node_id == worker.node_id


# -- authenticated outcomes ------------------------------------------------

def _publish(worker, event_type, data, token, publisher_node=None):
    """Publish as any holder of a broker account could: a node's own
    notifier, or a forger's."""
    publisher_id = 'rescue-worker.%s' % (publisher_node or worker.node_id)
    notifier = oslo_messaging.Notifier(
        worker.notification_transport, publisher_id=publisher_id,
        driver='messagingv2', topics=['notifications'],
        serializer=oslo_messaging.NoOpSerializer())
    payload = payloads.FinalizeRescuePayload.from_data(data).envelope(
        event_type, publisher_id, token)
    send = notifier.error if event_type == payloads.EVENT_ERROR \
        else notifier.info
    send({}, event_type, payload)


def _end_data(node_id, request_id):
    return payloads.FinalizeRescuePayload(
        node_id=node_id, request_id=request_id, username='rescue').to_data()


def test_an_end_signed_with_another_token_is_ignored_and_counted(worker):
    request_id = 'req-%s' % uuid.uuid4()
    with rw_client.CompletionWaiter(
            worker.notification_transport,
            node_tokens={worker.node_id: worker.token}) as waiter:
        _publish(worker, payloads.EVENT_END,
                 _end_data(worker.node_id, request_id), 'x' * 64)

        outcome = waiter.wait([request_id], timeout=2)[request_id]
        assert outcome.status == rw_client.TIMED_OUT
        assert waiter.forgeries == 1

        _publish(worker, payloads.EVENT_END,
                 _end_data(worker.node_id, request_id), worker.token)
        outcome = waiter.wait([request_id], timeout=30)[request_id]
    assert outcome.status == rw_client.ENDED
    assert waiter.forgeries == 1


def test_an_unsigned_end_for_a_node_with_a_token_is_ignored(worker):
    request_id = 'req-%s' % uuid.uuid4()
    with rw_client.CompletionWaiter(
            worker.notification_transport,
            node_tokens={worker.node_id: worker.token}) as waiter:
        _publish(worker, payloads.EVENT_END,
                 _end_data(worker.node_id, request_id), None)

        outcome = waiter.wait([request_id], timeout=2)[request_id]
    assert outcome.status == rw_client.TIMED_OUT
    assert waiter.forgeries == 1


def test_another_nodes_tenant_cannot_end_a_request_the_client_cast(
        worker, client, waiter):
    # Another node's tenant holds that node's broker account and token,
    # and learns the request id: it forges an error for our request,
    # naming its own node, before the worker is even cast to.
    request_id = 'req-%s' % uuid.uuid4()
    _publish(worker, payloads.EVENT_ERROR, dict(
        _end_data('node-of-the-forger', request_id),
        error={'code': 'internal', 'message': 'forged'}),
        'f' * 64, publisher_node='node-of-the-forger')
    waiter.wait([request_id], timeout=1)

    client.finalize_rescue({}, worker.node_id, PASSWORD,
                           agent_token=worker.token, request_id=request_id)
    outcome = waiter.wait([request_id], timeout=30, client=client)[
        request_id]

    assert outcome.status == rw_client.ENDED
    assert outcome.node_id == worker.node_id
    assert waiter.forgeries == 1


def test_without_a_token_the_waiter_takes_what_comes(worker):
    request_id = 'req-%s' % uuid.uuid4()
    with rw_client.CompletionWaiter(worker.notification_transport) as waiter:
        _publish(worker, payloads.EVENT_END,
                 _end_data(worker.node_id, request_id), None)

        outcome = waiter.wait([request_id], timeout=30)[request_id]
    assert outcome.status == rw_client.ENDED
    assert waiter.forgeries == 0
