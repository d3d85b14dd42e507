"""Versioned notification payloads and their emission (DESIGN.md section 3).

Every event carries the same envelope, so a consumer parses one shape and
checks one version. The context sent with a notification is built here from
the request id alone: the caller's context may hold its own credentials and is
never echoed back onto the bus.
"""

from __future__ import annotations

import logging

import oslo_messaging

LOG = logging.getLogger(__name__)

OBJECT_NAMESPACE = 'rescue_worker'
PAYLOAD_VERSION = '1.0'
FINALIZE_PAYLOAD = 'FinalizeRescuePayload'
WORKER_PAYLOAD = 'WorkerPayload'

EVENT_READY = 'rescue_worker.worker.ready'
EVENT_STOPPED = 'rescue_worker.worker.stopped'
EVENT_START = 'rescue_worker.finalize_rescue.start'
EVENT_END = 'rescue_worker.finalize_rescue.end'
EVENT_ERROR = 'rescue_worker.finalize_rescue.error'

_KEY = OBJECT_NAMESPACE + '_object.'


def envelope(name: str, data: dict) -> dict:
    return {_KEY + 'name': name,
            _KEY + 'namespace': OBJECT_NAMESPACE,
            _KEY + 'version': PAYLOAD_VERSION,
            _KEY + 'data': data}


def payload_data(payload: dict) -> dict:
    """The ``data`` of an envelope (for consumers of notifications)."""
    return payload[_KEY + 'data']


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
        """``end`` if the data carries no error, else ``error``."""
        payload = envelope(FINALIZE_PAYLOAD, data)
        if data.get('error') is None:
            self._notifier.info(self._ctxt(data), EVENT_END, payload)
        else:
            self._notifier.error(self._ctxt(data), EVENT_ERROR, payload)
