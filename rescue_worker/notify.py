"""Emission of the worker's notifications, and knowing when one failed.

The payloads themselves are in ``payloads``. The context sent with a
notification is built here from the request id alone: the caller's context
may hold its own credentials and is never echoed back onto the bus.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator

import oslo_messaging

from rescue_worker import payloads
from rescue_worker import rpc

LOG = logging.getLogger(__name__)

# The event types and payload helpers lived here before payloads.py; the
# names stay importable for consumers that use them.
EVENT_READY = payloads.EVENT_READY
EVENT_STOPPED = payloads.EVENT_STOPPED
EVENT_START = payloads.EVENT_START
EVENT_END = payloads.EVENT_END
EVENT_ERROR = payloads.EVENT_ERROR
OBJECT_NAMESPACE = payloads.OBJECT_NAMESPACE
payload_data = payloads.payload_data


class NotificationNotSent(Exception):
    """The broker did not take a notification (connection retries spent)."""


class _SendFailures(rpc.DriverLogWatch):
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
        super().__init__()
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
        self.attach()
        for name in self.LOGGERS:
            if not logging.getLogger(name).isEnabledFor(logging.ERROR):
                LOG.warning('Logging for %s is set above ERROR, so a '
                            'notification the broker did not take goes '
                            'unnoticed (and an outcome may never reach the '
                            'conductor): set it to ERROR or lower in '
                            'default_log_levels', name)


_SEND_FAILURES = _SendFailures()


class _RequestContext(dict):
    """The context published with a notification: the request id only.

    oslo.messaging replaces a plain dict context with ``{}`` and asks any
    other object for ``redacted_copy()``; nothing here needs redacting.
    """

    def redacted_copy(self) -> dict:
        return dict(self)


class Notifications:
    """Publishes the worker's events for one node, each authenticated with
    the node's token (``payloads.event_mac``)."""

    def __init__(self, notifier: oslo_messaging.Notifier,
                 publisher_id: str, token: str | None) -> None:
        self._notifier = notifier
        self._publisher_id = publisher_id
        self._token = token
        _SEND_FAILURES.install()

    def __repr__(self) -> str:
        return '<Notifications %s>' % self._publisher_id

    @staticmethod
    def _ctxt(payload: payloads.FinalizeRescuePayload) -> dict:
        return _RequestContext(request_id=payload.request_id)

    def _envelope(self, payload: payloads.Payload, event_type: str) -> dict:
        return payload.envelope(event_type, self._publisher_id, self._token)

    def ready(self, payload: payloads.WorkerPayload) -> None:
        self._notifier.info({}, EVENT_READY,
                            self._envelope(payload, EVENT_READY))

    def stopped(self, payload: payloads.WorkerPayload) -> None:
        self._notifier.info({}, EVENT_STOPPED,
                            self._envelope(payload, EVENT_STOPPED))

    def start(self, payload: payloads.FinalizeRescuePayload) -> None:
        self._notifier.info(self._ctxt(payload), EVENT_START,
                            self._envelope(payload, EVENT_START))

    def outcome(self, payload: payloads.FinalizeRescuePayload) -> None:
        """``end`` if the payload carries no error, else ``error``.

        :raises NotificationNotSent: the broker did not take it.
        """
        send = (self._notifier.info if payload.succeeded
                else self._notifier.error)
        event_type = payload.event_type
        with _SEND_FAILURES.watch():
            send(self._ctxt(payload), event_type,
                 self._envelope(payload, event_type))
