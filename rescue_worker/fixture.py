"""Test fixtures: a real rescue worker on oslo.messaging's fake transport.

For conductor developers and for this project's own tests::

    worker = self.useFixture(RescueWorkerFixture())          # testtools
    events = self.useFixture(
        NotificationCapture(worker.notification_transport))

or, with pytest, ``with RescueWorkerFixture() as worker: ...``.

The worker is the same ``RescueWorker`` the daemon runs, reading a real
configuration file, with a real token file, journal and root directory under a
temporary directory; only the transport is in memory (``fake://``), so the
conductor's client must use ``worker.transport`` and
``worker.notification_transport``.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid

import fixtures
import oslo_messaging

from rescue_worker import payloads
from rescue_worker import rpc
from rescue_worker import sandbox
from rescue_worker import service

DEFAULT_TIMEOUT = 10.0


@dataclasses.dataclass(frozen=True)
class Notification:
    priority: str
    publisher_id: str
    event_type: str
    payload: dict
    ctxt: dict

    @property
    def data(self) -> dict:
        """The payload's ``rescue_worker_object.data``."""
        return payloads.payload_data(self.payload)


class NotificationCapture(fixtures.Fixture):
    """Collects every notification published on ``transport``.

    ``wait_for`` blocks until a matching notification arrives (or raises
    ``TimeoutError``), so tests never sleep.
    """

    def __init__(self, transport: oslo_messaging.Transport,
                 topics: tuple[str, ...] = ('notifications',)) -> None:
        super().__init__()
        self.transport = transport
        self.topics = topics
        self.notifications: list[Notification] = []
        self._cond = threading.Condition()

    def _setUp(self) -> None:
        listener = oslo_messaging.get_notification_listener(
            self.transport, [oslo_messaging.Target(topic=t)
                             for t in self.topics],
            [self], serializer=oslo_messaging.NoOpSerializer(),
            # Our own pool: several captures each see every notification.
            pool='capture-%s' % uuid.uuid4().hex)
        listener.start()
        self.addCleanup(listener.wait)
        self.addCleanup(listener.stop)

    def _record(self, priority, ctxt, publisher_id, event_type, payload):
        with self._cond:
            self.notifications.append(Notification(
                priority, publisher_id, event_type, payload, ctxt))
            self._cond.notify_all()

    def info(self, ctxt, publisher_id, event_type, payload, metadata):
        self._record('INFO', ctxt, publisher_id, event_type, payload)

    def error(self, ctxt, publisher_id, event_type, payload, metadata):
        self._record('ERROR', ctxt, publisher_id, event_type, payload)

    def warn(self, ctxt, publisher_id, event_type, payload, metadata):
        self._record('WARN', ctxt, publisher_id, event_type, payload)

    # -- queries -----------------------------------------------------------

    def matching(self, event_type: str | None = None,
                 request_id: str | None = None,
                 node_id: str | None = None) -> list[Notification]:
        def keep(n: Notification) -> bool:
            if event_type is not None and n.event_type != event_type:
                return False
            try:
                data = n.data
            except (KeyError, TypeError):
                return request_id is None and node_id is None
            if request_id is not None and data.get('request_id') != \
                    request_id:
                return False
            return node_id is None or data.get('node_id') == node_id

        with self._cond:
            return [n for n in self.notifications if keep(n)]

    def wait_for(self, event_type: str | tuple[str, ...],
                 request_id: str | None = None, node_id: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT) -> Notification:
        """The first notification of ``event_type`` (one of, if a tuple)
        for the request or node given."""
        types = (event_type,) if isinstance(event_type, str) else event_type
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for n in self.matching(None, request_id, node_id):
                    if n.event_type in types:
                        return n
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        'no %s notification (request %s, node %s) within '
                        '%.1f s; got %s' % (
                            '/'.join(types), request_id, node_id, timeout,
                            [n.event_type for n in self.notifications]))
                self._cond.wait(remaining)

    def wait_until(self, predicate, timeout: float = DEFAULT_TIMEOUT,
                   what: str = 'condition') -> None:
        """Block until ``predicate()`` holds, re-checked on each arrival."""
        with self._cond:
            if not self._cond.wait_for(predicate, timeout):
                raise TimeoutError('%s not met within %.1f s' %
                                   (what, timeout))

    def wait_for_outcome(self, request_id: str,
                         timeout: float = DEFAULT_TIMEOUT) -> Notification:
        """The ``end`` or ``error`` notification of ``request_id``."""
        return self.wait_for((payloads.EVENT_END, payloads.EVENT_ERROR),
                             request_id=request_id, timeout=timeout)


class RescueWorkerFixture(fixtures.Fixture):
    """A started rescue worker for one node, on the fake transport.

    Keyword arguments become ``[rescue_worker]`` options in the worker's
    configuration file (for example ``steps='password'`` or
    ``require_hashed=True``). Attributes: ``node_id``, ``token``,
    ``root_dir``, ``state_dir``, ``config_file``, ``token_file``, ``conf``,
    ``worker``, ``transport``, ``notification_transport``.
    """

    def __init__(self, node_id: str | None = None, start: bool = True,
                 transport_url: str = 'fake://', **options) -> None:
        super().__init__()
        self._node_args = dict(node_id=node_id, transport_url=transport_url,
                               **options)
        self.start_worker = start
        self.worker: service.RescueWorker | None = None
        self._runner: threading.Thread | None = None

    def _setUp(self) -> None:
        base_dir = self.useFixture(fixtures.TempDir()).path
        self.node = sandbox.SandboxNode(base_dir, **self._node_args).create()
        for name in ('node_id', 'token', 'base_dir', 'root_dir', 'state_dir',
                     'token_file', 'config_file'):
            setattr(self, name, getattr(self.node, name))
        self.conf = self.node.load_config()
        self.transport = rpc.get_rpc_transport(self.conf)
        self.notification_transport = rpc.get_notification_transport(
            self.conf)
        # Cleaning up a fake transport empties the in-memory broker, so
        # nothing leaks from one test into the next.
        self.addCleanup(self.transport.cleanup)
        self.addCleanup(self.notification_transport.cleanup)
        if self.start_worker:
            self.start()

    def start(self) -> service.RescueWorker:
        """Start (or restart) the worker; returns once it consumes."""
        self.worker = service.RescueWorker(
            self.conf, rpc_transport=self.transport,
            notification_transport=self.notification_transport,
            cmdline_path=self.node.cmdline_file)
        worker = self.worker
        worker.start()
        self._runner = threading.Thread(
            target=self._serve, args=(worker,), daemon=True,
            name='rescue-worker-%s' % self.node_id)
        self._runner.start()
        self.addCleanup(self.stop)
        return worker

    @staticmethod
    def _serve(worker: service.RescueWorker) -> None:
        worker.wait_for_stop_request()
        worker.stop()

    def stop(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Stop the worker as SIGTERM would, and wait until it has."""
        if self.worker is None:
            return
        self.worker.request_stop(service.STOP_REQUESTED)
        if not self.worker.stopped.wait(timeout):
            raise TimeoutError('worker %s did not stop within %.1f s' %
                               (self.node_id, timeout))

    def lose_next_casts(self, count: int = 1) -> None:
        """Make the worker drop the next ``count`` finalize_rescue messages.

        That is what a real worker does with a cast it had taken off the
        queue when it crashed (the rabbit driver acks before the endpoint
        runs): a conductor's re-cast logic can be tested against it.
        """
        endpoint = self.worker.endpoint
        real = type(endpoint).finalize_rescue.__get__(endpoint)
        lost = []
        lock = threading.Lock()

        def finalize_rescue(ctxt, **kwargs):
            with lock:
                drop = len(lost) < count
                if drop:
                    lost.append(ctxt)
            if drop:
                return None
            return real(ctxt, **kwargs)

        endpoint.finalize_rescue = finalize_rescue
        self.lost_casts = lost

    def rpc_client(self, timeout: int = 30) -> oslo_messaging.RPCClient:
        """A plain oslo.messaging client addressed to this worker."""
        target = oslo_messaging.Target(topic=self.conf.rescue_worker.topic,
                                       server=self.node_id, version='1.0')
        return oslo_messaging.get_rpc_client(self.transport, target,
                                             timeout=timeout)
