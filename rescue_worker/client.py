"""The conductor's side: cast ``finalize_rescue``, wait for the outcome,
re-cast what was lost.

Delivery is end to end (doc/reliability.rst): the rabbit driver acks a cast
before the worker runs it and drops a cast to a queue that does not exist. So
the client casts with the mandatory flag (a missing queue raises
``WorkerNotListening`` at once), and ``CompletionWaiter`` re-casts a request
whose ``start`` did not come in time; the worker's journal makes a re-cast of
the same ``request_id`` harmless.

Usage::

    client = RescueWorkerClient(transport)
    with CompletionWaiter(notification_transport) as waiter:
        request_id = client.finalize_rescue({}, node_id, password,
                                            agent_token=token)
        [outcome] = waiter.wait([request_id], client=client).values()
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import uuid
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping

import oslo_messaging

from rescue_worker import contract
from rescue_worker import passwords
from rescue_worker import payloads

LOG = logging.getLogger(__name__)

# Importable from here as before; both ends of the wire take them from
# contract.
DEFAULT_TOPIC = contract.DEFAULT_TOPIC
RPC_API_VERSION = contract.RPC_API_VERSION

# The status of an Outcome.
ENDED = 'end'             # the worker published finalize_rescue.end
ERRORED = 'error'         # ... finalize_rescue.error
TIMED_OUT = 'timeout'     # neither came in time
NOT_LISTENING = 'not_listening'  # the last cast found no worker's queue
# Deprecated alias of ERRORED, kept for conductors that use it: everywhere
# else in the project "failed" is the string 'failed' (the worker state,
# a step's status), which this status never was.
FAILED = ERRORED


# The Outcome status of each outcome notification.
_OUTCOME_STATUS = {payloads.EVENT_END: ENDED, payloads.EVENT_ERROR: ERRORED}


def not_listening_message(node_id: str | None) -> str:
    """What to tell an operator about a node whose queue does not exist."""
    return ('no worker listens for %s (its queue does not exist): check '
            'that the node booted the rescue ramdisk and wait for its '
            'worker.ready notification; a node already rescued has no '
            'worker any more' % ('node %s' % node_id if node_id
                                 else 'the node'))


class WorkerNotListening(Exception):
    """No worker consumes the node's queue: not booted yet, already locked
    down after a rescue, or (transient queues) not reconnected yet after a
    broker restart.

    ``request_id`` names the request the client keeps: hand it to
    ``CompletionWaiter.wait`` with the client and it is cast again.
    """

    def __init__(self, node_id: str, request_id: str | None = None) -> None:
        super().__init__(not_listening_message(node_id))
        self.node_id = node_id
        self.request_id = request_id


@dataclasses.dataclass
class _Sent:
    node_id: str
    ctxt: dict
    kwargs: dict = dataclasses.field(repr=False)
    casts: int = 1
    # The last cast found no queue: nothing of it is on its way.
    unheard: bool = False


@dataclasses.dataclass
class _Received:
    """One notification as the waiter got it; ``verdict`` says whether
    its ``mac`` was found right (None: not decided yet)."""

    event_type: str
    publisher_id: str
    payload: dict = dataclasses.field(repr=False)
    data: dict = dataclasses.field(repr=False)
    verdict: bool | None = None


@dataclasses.dataclass
class Outcome:
    """How one request ended, as the waiter saw it."""

    request_id: str
    node_id: str | None
    status: str  # ENDED, ERRORED, TIMED_OUT or NOT_LISTENING
    data: dict | None = None
    started: bool = False
    casts: int = 1

    @property
    def succeeded(self) -> bool:
        return self.status == ENDED

    @property
    def error(self) -> dict | None:
        if self.status == TIMED_OUT:
            return {'code': TIMED_OUT,
                    'message': 'no outcome notification in time'}
        if self.status == NOT_LISTENING:
            return {'code': NOT_LISTENING,
                    'message': not_listening_message(self.node_id)}
        return self.data.get('error') if self.data else None


@dataclasses.dataclass(eq=False)
class RescueWorkerClient:
    """Casts to rescue workers, one node per ``server``.

    ``retry`` is the connection retries per message (None retries for
    ever). A plaintext password is hashed here with ``hash_scheme`` at
    ``hash_rounds`` (None: passlib's default cost); rounds above what a
    worker accepts by default are refused at once with ``ValueError``, as
    is an unsupported scheme.
    """

    transport: oslo_messaging.Transport
    topic: str = DEFAULT_TOPIC
    exchange: str = contract.CONTROL_EXCHANGE
    version_cap: str = RPC_API_VERSION
    timeout: int = 60
    hash_scheme: str = passwords.DEFAULT_SCHEME
    hash_rounds: int | None = None
    retry: int | None = None
    _lock: threading.Lock = dataclasses.field(
        default_factory=threading.Lock, init=False, repr=False)
    # What each request needs to be cast again, by request id.
    _sent: dict[str, _Sent] = dataclasses.field(
        default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        passwords.check_cost(self.hash_scheme, self.hash_rounds)

    def _client(self, node_id: str) -> oslo_messaging.RPCClient:
        target = oslo_messaging.Target(topic=self.topic, server=node_id,
                                       exchange=self.exchange,
                                       version=RPC_API_VERSION)
        return oslo_messaging.get_rpc_client(
            self.transport, target, version_cap=self.version_cap,
            timeout=self.timeout, retry=self.retry,
            transport_options=oslo_messaging.TransportOptions(
                at_least_once=True))

    def finalize_rescue(self, context: dict | None, node_id: str,
                        password: str, *, agent_token: str | None = None,
                        hashed: bool = False, hash_on_client: bool = True,
                        request_id: str | None = None) -> str:
        """Cast ``finalize_rescue`` to ``node_id``; return the request id.

        A plaintext password is hashed here by default, so no plaintext
        crosses the broker. The request id comes from ``request_id``, the
        context's ``request_id`` or a new ``req-<uuid>``.

        :raises WorkerNotListening: the node's queue does not exist; the
            request is kept for re-casting (``exc.request_id``).
        :raises RescueError: the password cannot be hashed
            (``invalid_password``).
        """
        ctxt = dict(context or {})
        request_id = request_id or ctxt.get('request_id') or \
            'req-%s' % uuid.uuid4()
        ctxt['request_id'] = request_id
        if not hashed and hash_on_client:
            password = self.hash_password(password)
            hashed = True
        kwargs = {'rescue_password': password, 'hashed': hashed,
                  'agent_token': agent_token}
        with self._lock:
            self._sent[request_id] = _Sent(node_id, ctxt, kwargs)
        self._cast(request_id)
        return request_id

    def hash_password(self, password: str) -> str:
        """``password`` hashed as ``finalize_rescue`` hashes it here.

        To cast one hash to many nodes (``hashed=True``): a hash is slow
        to make on purpose.

        :raises RescueError: ``invalid_password``.
        """
        return passwords.hash_password(password, self.hash_scheme,
                                       self.hash_rounds)

    def recast(self, request_id: str) -> None:
        """Send the same request again (same ``request_id``)."""
        with self._lock:
            self._sent[request_id].casts += 1
        self._cast(request_id)

    def casts(self, request_id: str) -> int:
        with self._lock:
            return self._sent[request_id].casts

    def sent_to(self, request_id: str) -> tuple[str, str | None] | None:
        """The node a request was cast to and the token it carried, or
        None for a request this client did not send (or forgot)."""
        with self._lock:
            sent = self._sent.get(request_id)
            if sent is None:
                return None
            return sent.node_id, sent.kwargs.get('agent_token')

    def not_listening(self, request_id: str) -> bool:
        """Whether the last cast of a request found no worker's queue (so
        no copy of it waits for a worker); False for a request this client
        did not send (or forgot)."""
        with self._lock:
            sent = self._sent.get(request_id)
            return sent is not None and sent.unheard

    def forget(self, request_id: str) -> None:
        """Drop what is kept for re-casting (it holds the hash)."""
        with self._lock:
            self._sent.pop(request_id, None)

    def _cast(self, request_id: str) -> None:
        with self._lock:
            sent = self._sent[request_id]
        try:
            self._client(sent.node_id).cast(sent.ctxt, 'finalize_rescue',
                                            **sent.kwargs)
        except oslo_messaging.MessageUndeliverable:
            with self._lock:
                sent.unheard = True
            raise WorkerNotListening(sent.node_id, request_id) from None
        with self._lock:
            sent.unheard = False

    def get_status(self, node_id: str, agent_token: str | None = None
                   ) -> dict:
        """The worker's state, as a call."""
        return self._client(node_id).call({}, 'get_status',
                                          agent_token=agent_token)


class CompletionWaiter:
    """Listens to the workers' notifications and waits for outcomes.

    Start it before casting, so that no notification is missed. Each
    waiter has its own queue (``rescue-worker-waiter-<uuid>``), so any
    number of conductors can wait side by side.
    """

    def __init__(self, notification_transport: oslo_messaging.Transport,
                 exchange: str = contract.CONTROL_EXCHANGE,
                 topic: str = 'notifications',
                 on_notification: Callable[[str, dict], None] | None = None,
                 node_tokens: Mapping[str, str] | None = None) -> None:
        self.transport = notification_transport
        self.exchange = exchange
        self.topic = topic
        self.on_notification = on_notification
        #: node id -> token, for nodes whose notifications must carry the
        #: token's ``mac`` (requests cast by ``wait``'s client are checked
        #: with the token they were cast with)
        self.node_tokens = dict(node_tokens or {})
        #: notifications ignored because their ``mac`` was wrong: forged,
        #: or from a node whose token is not the one the conductor holds
        self.forgeries = 0
        self.pool = 'rescue-worker-waiter-%s' % uuid.uuid4().hex
        self._cond = threading.Condition()
        # request id -> the notifications received for it, in order;
        # which are authentic is decided when a token is known
        self._received: dict[str, list[_Received]] = {}
        self._client: RescueWorkerClient | None = None
        self._listener = None

    # -- listener life cycle -------------------------------------------------

    def start(self) -> CompletionWaiter:
        self._listener = oslo_messaging.get_notification_listener(
            self.transport,
            [oslo_messaging.Target(topic=self.topic, exchange=self.exchange)],
            [NotificationRelay(self._record)], pool=self.pool,
            serializer=oslo_messaging.NoOpSerializer())
        self._listener.start()
        return self

    def stop(self) -> None:
        if self._listener is not None:
            self._listener.stop()
            self._listener.wait()
            self._listener = None

    def __enter__(self) -> CompletionWaiter:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _record(self, publisher_id: str, event_type: str,
                payload: dict) -> None:
        try:
            data = payloads.payload_data(payload)
            request_id = data.get('request_id')
        except (KeyError, TypeError, AttributeError):
            return
        received = _Received(event_type, publisher_id, payload, data)
        with self._cond:
            self._received.setdefault(request_id, []).append(received)
            authentic = self._authentic(request_id, received)
            self._cond.notify_all()
        if self.on_notification is not None and authentic:
            self.on_notification(event_type, data)

    def _token(self, request_id: str, data: dict) -> str | None:
        sent = (self._client.sent_to(request_id)
                if self._client is not None else None)
        if sent is not None:
            # The node the request went to, not the one the data names:
            # a forger names whichever node it likes.
            return sent[1] or self.node_tokens.get(sent[0])
        return self.node_tokens.get(data.get('node_id'))

    def _authentic(self, request_id: str, received: _Received) -> bool:
        """Whether to believe ``received``; a forgery is counted and logged
        once. Called with the condition held."""
        if received.verdict is None:
            token = self._token(request_id, received.data)
            if token is None:
                # Nothing to check it with yet; decided again once the
                # request's client or the node's token is known.
                return True
            received.verdict = payloads.authentic(
                received.event_type, received.publisher_id,
                received.payload, token)
            if not received.verdict:
                self.forgeries += 1
                LOG.warning('Ignoring a %s notification for request %s '
                            'whose mac does not match the token of node '
                            '%s: forged, or the node has another token',
                            received.event_type, request_id,
                            received.data.get('node_id'))
        return received.verdict

    def _first(self, request_id: str, event_types) -> _Received | None:
        """The first authentic notification of ``event_types``."""
        for received in self._received.get(request_id, ()):
            if (received.event_type in event_types
                    and self._authentic(request_id, received)):
                return received
        return None

    def _has_outcome(self, request_id: str) -> bool:
        return self._first(request_id, _OUTCOME_STATUS) is not None

    def _has_started(self, request_id: str) -> bool:
        return self._first(request_id, (payloads.EVENT_START,)) is not None

    # -- waiting ------------------------------------------------------------

    def wait(self, request_ids: Iterable[str], timeout: float = 300.0,
             client: RescueWorkerClient | None = None,
             start_timeout: float = 30.0, max_casts: int = 3
             ) -> dict[str, Outcome]:
        """Wait for the ``end`` or ``error`` of every request.

        With ``client``, a request whose ``start`` has not come within
        ``start_timeout`` of its last cast is cast again, up to
        ``max_casts`` casts in all. A re-cast that finds no queue is
        tried again like a lost one (after a broker restart a worker
        re-declares its queue only when it reconnects); if the last cast
        finds none the request is ``NOT_LISTENING``, also when ``timeout``
        comes before its next re-cast. Returns every request's
        ``Outcome``; the others still open at ``timeout`` are
        ``TIMED_OUT``. An outcome no notification named a node for is
        named after the node the client cast it to.
        """
        pending = list(dict.fromkeys(request_ids))
        deadline = time.monotonic() + timeout
        recasts = _Recasts(client, pending, start_timeout, max_casts)
        with self._cond:
            if client is not None:
                self._client = client
            while True:
                open_ids = [rid for rid in pending
                            if not self._has_outcome(rid)
                            and rid not in recasts.unreachable]
                if not open_ids or time.monotonic() >= deadline:
                    break
                wakes = self._recast_unstarted(open_ids, recasts)
                next_wake = min([deadline, *wakes])
                self._cond.wait(max(0.0, next_wake - time.monotonic()))
            return {rid: self._outcome(rid, client,
                                       rid in recasts.unreachable)
                    for rid in pending}

    def _recast_unstarted(self, open_ids: list[str],
                          recasts: _Recasts) -> list[float]:
        """Cast again each of ``open_ids`` whose ``start`` is overdue and
        that has casts left; return when each of those is due next.

        Called with the condition held; it is released across the broker.
        """
        wakes = []
        for rid in open_ids:
            if self._has_started(rid) or not recasts.has_casts_left(rid):
                continue
            if recasts.overdue(rid):
                # Never hold the lock across the broker: a cast that waits
                # for a connection would stall every notification.
                self._cond.release()
                try:
                    recasts.recast(rid)
                finally:
                    self._cond.acquire()
            wakes.append(recasts.due(rid))
        return wakes

    def _outcome(self, request_id: str, client: RescueWorkerClient | None,
                 unreachable: bool = False) -> Outcome:
        casts = client.casts(request_id) if client is not None else 1
        start = self._first(request_id, (payloads.EVENT_START,))
        outcome = self._first(request_id, _OUTCOME_STATUS)
        if outcome is not None:
            return Outcome(request_id, outcome.data.get('node_id'),
                           _OUTCOME_STATUS[outcome.event_type], outcome.data,
                           start is not None, casts)
        if start is not None:
            node_id = start.data.get('node_id')
        else:
            sent = client.sent_to(request_id) if client is not None else None
            node_id = sent[0] if sent is not None else None
        if client is not None and client.not_listening(request_id):
            # Nothing of the request is on its way to a worker: waiting
            # longer would not have helped.
            unreachable = True
        return Outcome(request_id, node_id,
                       NOT_LISTENING if unreachable else TIMED_OUT,
                       None, start is not None, casts)


class _Recasts:
    """The re-casting of one ``CompletionWaiter.wait``: when each request
    was last cast, and which found no worker at their last cast.

    Without a client nothing is ever cast again.
    """

    def __init__(self, client: RescueWorkerClient | None,
                 request_ids: Iterable[str], start_timeout: float,
                 max_casts: int) -> None:
        self.client = client
        self.start_timeout = start_timeout
        self.max_casts = max_casts
        self.last_cast = dict.fromkeys(request_ids, time.monotonic())
        self.unreachable: set[str] = set()

    def has_casts_left(self, request_id: str) -> bool:
        return self.client is not None and \
            self.client.casts(request_id) < self.max_casts

    def due(self, request_id: str) -> float:
        """When the request is cast again if its start has not come."""
        return self.last_cast[request_id] + self.start_timeout

    def overdue(self, request_id: str) -> bool:
        return time.monotonic() >= self.due(request_id)

    def recast(self, request_id: str) -> None:
        """Cast again; a request whose last cast finds no queue is
        unreachable."""
        try:
            self.client.recast(request_id)
        except WorkerNotListening:
            if self.client.casts(request_id) >= self.max_casts:
                self.unreachable.add(request_id)
        self.last_cast[request_id] = time.monotonic()


class NotificationRelay:
    """An oslo.messaging notification endpoint that hands every INFO and
    ERROR notification (the priorities workers publish) to
    ``handle(publisher_id, event_type, payload)``."""

    def __init__(self, handle: Callable[[str, str, dict], None]) -> None:
        self._handle = handle

    def info(self, ctxt, publisher_id, event_type, payload, metadata):
        self._handle(publisher_id, event_type, payload)

    def error(self, ctxt, publisher_id, event_type, payload, metadata):
        self._handle(publisher_id, event_type, payload)
