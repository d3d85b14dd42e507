"""Versioned notification payloads and their emission (DESIGN.md section 3).

Every event carries the same envelope, so a consumer parses one shape and
checks one version. The context sent with a notification is built here from
the request id alone: the caller's context may hold its own credentials and is
never echoed back onto the bus.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator

import oslo_messaging

LOG = logging.getLogger(__name__)

from rescue_worker.payloads import EVENT_END  # noqa: F401
from rescue_worker.payloads import EVENT_ERROR  # noqa: F401
from rescue_worker.payloads import EVENT_READY  # noqa: F401
from rescue_worker.payloads import EVENT_START  # noqa: F401
from rescue_worker.payloads import EVENT_STOPPED  # noqa: F401
from rescue_worker.payloads import OBJECT_NAMESPACE  # noqa: F401
from rescue_worker.payloads import payload_data  # noqa: F401

PAYLOAD_VERSION = '1.0'
FINALIZE_PAYLOAD = 'FinalizeRescuePayload'
WORKER_PAYLOAD = 'WorkerPayload'
_KEY = OBJECT_NAMESPACE + '_object.'


class NotificationNotSent(Exception):
    """The broker did not take a notification (connection retries spent)."""


class _SendFailures(logging.Handler):
    """Turns oslo.messaging's logged send failures into a flag.

    oslo.messaging's notifier never raises: when a send fails it logs an
    error and returns as if it had sent (documented in
    ``oslo_messaging.notify.messaging``). A worker must know, or it would
    record an ``end`` as published that no conductor will ever see. The
    messaging drivers (``messagingv2``, ``messaging``) and the notifier log
    in the sending thread, so a thread-local flag tells the sender. (The
    Kafka driver sends in the background; its failures are not seen.)
    """

    LOGGERS = ('oslo_messaging.notify.messaging',
               'oslo_messaging.notify.notifier')

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self._local = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(self._local, 'watching', False):
            self._local.failed = True

    @contextlib.contextmanager
    def watch(self) -> Iterator[None]:
        """Raise NotificationNotSent if a send inside failed."""
        self._local.watching, self._local.failed = True, False
        try:
            yield
        finally:
            self._local.watching = False
        if self._local.failed:
            raise NotificationNotSent()

    def install(self) -> None:
        for name in self.LOGGERS:
            logger = logging.getLogger(name)
            if self not in logger.handlers:
                logger.addHandler(self)
            if not logger.isEnabledFor(logging.ERROR):
                LOG.warning('Logging for %s is set above ERROR, so a '
                            'notification the broker did not take goes '
                            'unnoticed (and an outcome may never reach the '
                            'conductor): set it to ERROR or lower in '
                            'default_log_levels', name)


_SEND_FAILURES = _SendFailures()


def envelope(name: str, data: dict) -> dict:
    return {_KEY + 'name': name,
            _KEY + 'namespace': OBJECT_NAMESPACE,
            _KEY + 'version': PAYLOAD_VERSION,
            _KEY + 'data': data}


def finalize_data(*, node_id: str, request_id: str, username: str,
                  hash_scheme: str | None = None,
                  steps: list[dict] | None = None,
                  interfaces: list[dict] | None = None,
                  duration_ms: float = 0.0,
                  error: dict | None = None,
                  replayed: bool = False) -> dict:
    return {'node_id': node_id,
            'request_id': request_id,
            'replayed': replayed,
            'username': username,
            'hash_scheme': hash_scheme,
            'steps': list(steps or []),
            'interfaces': list(interfaces or []),
            'duration_ms': round(duration_ms, 3),
            'error': error}


def worker_data(*, node_id: str, state: str, topic: str, version: str,
                rpc_api_version: str, reason: str | None = None) -> dict:
    return {'node_id': node_id, 'state': state, 'topic': topic,
            'version': version, 'rpc_api_version': rpc_api_version,
            'reason': reason}


class _RequestContext(dict):
    """The context published with a notification: the request id only.

    oslo.messaging replaces a plain dict context with ``{}`` and asks any
    other object for ``redacted_copy()``; nothing here needs redacting.
    """

    def redacted_copy(self) -> dict:
        return dict(self)


class Notifications:
    """Publishes the worker's events for one node."""

    def __init__(self, notifier: oslo_messaging.Notifier) -> None:
        self._notifier = notifier
        _SEND_FAILURES.install()

    def _ctxt(self, data: dict) -> dict:
        request_id = data.get('request_id')
        return _RequestContext(request_id=request_id) if request_id else {}

    def ready(self, data: dict) -> None:
        self._notifier.info({}, EVENT_READY, envelope(WORKER_PAYLOAD, data))

    def stopped(self, data: dict) -> None:
        self._notifier.info({}, EVENT_STOPPED, envelope(WORKER_PAYLOAD, data))

    def start(self, data: dict) -> None:
        self._notifier.info(self._ctxt(data), EVENT_START,
                            envelope(FINALIZE_PAYLOAD, data))

    def outcome(self, data: dict) -> None:
        """``end`` if the data carries no error, else ``error``.

        :raises NotificationNotSent: the broker did not take it.
        """
        payload = envelope(FINALIZE_PAYLOAD, data)
        with _SEND_FAILURES.watch():
            if data.get('error') is None:
                self._notifier.info(self._ctxt(data), EVENT_END, payload)
            else:
                self._notifier.error(self._ctxt(data), EVENT_ERROR, payload)
