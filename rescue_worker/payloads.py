"""The notification payloads of the wire contract, typed and versioned.

Each payload is a dataclass with its own ``VERSION``; ``envelope()`` gives the
dict that goes on the bus, the same shape for every event::

    {"rescue_worker_object.name": "FinalizeRescuePayload",
     "rescue_worker_object.namespace": "rescue_worker",
     "rescue_worker_object.version": "1.1",
     "rescue_worker_object.data": {...},
     "rescue_worker_object.mac": "<hex HMAC-SHA256>" or null}

The ``mac`` authenticates the event: the HMAC-SHA256, keyed with the node's
token, of the canonical JSON of ``{"event_type", "publisher_id", "data"}``
(``event_mac``); consumers that know the token check it with ``authentic``
and treat a mismatch as never received.

Nested reports (one per step, one per interface) are plain dicts inside
``data``; they carry a version of their own so that a change to them bumps
the payload that holds them (``tests/unit/test_payloads.py`` keeps the
fingerprints). To add a field: add it with a default, bump ``VERSION`` (minor
for an addition), update the fingerprint, and say so in the release notes.

Nothing here imports oslo.messaging: conductors, the worker and the journal
share these types.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
from typing import Any
from typing import ClassVar

OBJECT_NAMESPACE = 'rescue_worker'
_KEY = OBJECT_NAMESPACE + '_object.'
NAME_KEY = _KEY + 'name'
NAMESPACE_KEY = _KEY + 'namespace'
VERSION_KEY = _KEY + 'version'
DATA_KEY = _KEY + 'data'
#: the HMAC-SHA256 of the event, keyed with the node's token (1.1)
MAC_KEY = _KEY + 'mac'

EVENT_READY = 'rescue_worker.worker.ready'
EVENT_STOPPED = 'rescue_worker.worker.stopped'
EVENT_START = 'rescue_worker.finalize_rescue.start'
EVENT_END = 'rescue_worker.finalize_rescue.end'
EVENT_ERROR = 'rescue_worker.finalize_rescue.error'

# The "status" of a step report.
STEP_DONE = 'done'
STEP_FAILED = 'failed'
STEP_SKIPPED = 'skipped'
STEP_STATUSES = (STEP_DONE, STEP_FAILED, STEP_SKIPPED)

# The "dhcp" status of an interface report.
DHCP_LEASED = 'leased'          # a DHCP lease is held now
DHCP_CONFIGURED = 'configured'  # persistent config written, a daemon leases
DHCP_NO_CARRIER = 'no_carrier'  # no link; not tried
DHCP_SKIPPED = 'skipped'        # reported only (a passive backend)
DHCP_FAILED = 'failed'          # tried, got nothing
DHCP_STATUSES = (DHCP_LEASED, DHCP_CONFIGURED, DHCP_NO_CARRIER,
                 DHCP_SKIPPED, DHCP_FAILED)
#: the statuses that make the network step succeed
DHCP_SUCCESSFUL = frozenset({DHCP_LEASED, DHCP_CONFIGURED})


def _items(cls: type) -> dict:
    """Field metadata for a list of nested reports of type ``cls``."""
    return {'items': cls}


class _Versioned:
    """A versioned record that converts to and from the dict on the wire."""

    VERSION: ClassVar[str]

    def __post_init__(self) -> None:
        # Nested reports may be given as the dicts the wire carries (a
        # step plug-in's, an older journal's); they are typed from here on.
        for field in dataclasses.fields(self):
            item_type = field.metadata.get('items')
            value = getattr(self, field.name)
            if item_type is not None and value is not None:
                object.__setattr__(self, field.name, [
                    item if isinstance(item, item_type)
                    else item_type.from_data(item) for item in value])

    def to_data(self) -> dict[str, Any]:
        return {field.name: _primitive(getattr(self, field.name))
                for field in dataclasses.fields(self)}

    @classmethod
    def from_data(cls, data: dict[str, Any]):
        """Rebuild from ``to_data()`` output (a journal record, a received
        notification); keys this version does not know are ignored."""
        kwargs = {}
        for field in dataclasses.fields(cls):
            if field.name not in data:
                continue
            kwargs[field.name] = data[field.name]
        return cls(**kwargs)

    @classmethod
    def fingerprint(cls) -> str:
        """``VERSION-<hash of the field names and types>``: changes when a
        field does, so that a test can insist the version changes too."""
        parts = []
        for field in dataclasses.fields(cls):
            item_type = field.metadata.get('items')
            parts.append('%s:%s:%s' % (
                field.name, field.type,
                item_type.fingerprint() if item_type else ''))
        digest = hashlib.sha256(';'.join(parts).encode('utf-8'))
        return '%s-%s' % (cls.VERSION, digest.hexdigest()[:16])


def _primitive(value: Any) -> Any:
    if isinstance(value, _Versioned):
        return value.to_data()
    if isinstance(value, (list, tuple)):
        return [_primitive(item) for item in value]
    if isinstance(value, float):
        # Durations in milliseconds; microseconds are plenty.
        return round(value, 3)
    return value


@dataclasses.dataclass(frozen=True)
class StepReport(_Versioned):
    """How one step of a run went."""

    VERSION: ClassVar[str] = '1.0'

    name: str
    status: str
    duration_ms: float = 0.0
    detail: str = ''


@dataclasses.dataclass(frozen=True)
class InterfaceReport(_Versioned):
    """One interface the network step saw, and the addresses it ended
    with."""

    VERSION: ClassVar[str] = '1.0'

    name: str
    mac: str | None
    dhcp: str
    ipv4: list[str] = dataclasses.field(default_factory=list)
    ipv6: list[str] = dataclasses.field(default_factory=list)


class Payload(_Versioned):
    """A notification payload: one of the envelope's named objects."""

    NAME: ClassVar[str]

    def envelope(self, event_type: str, publisher_id: str,
                 token: str | None) -> dict[str, Any]:
        """The envelope for the bus, authenticated with the node's token
        (``mac`` is None without one)."""
        data = self.to_data()
        return {NAME_KEY: self.NAME,
                NAMESPACE_KEY: OBJECT_NAMESPACE,
                VERSION_KEY: self.VERSION,
                DATA_KEY: data,
                MAC_KEY: event_mac(event_type, publisher_id, data, token)}


def event_mac(event_type: str, publisher_id: str, data: dict[str, Any],
              token: str | None) -> str | None:
    """The ``mac`` of an event: anyone may publish notifications on the
    broker, so only a key the node and its conductor share tells a node's
    own outcome from a forgery (another node's tenant, say)."""
    if token is None:
        return None
    message = json.dumps({'event_type': event_type,
                          'publisher_id': publisher_id, 'data': data},
                         sort_keys=True, separators=(',', ':'),
                         ensure_ascii=True)
    return hmac.new(token.encode('utf-8'), message.encode('ascii'),
                    hashlib.sha256).hexdigest()


def authentic(event_type: str, publisher_id: str, payload: dict[str, Any],
              token: str) -> bool:
    """Whether a received envelope carries the right ``mac`` for
    ``token``; a missing or malformed one is not authentic."""
    try:
        expected = event_mac(event_type, publisher_id, payload[DATA_KEY],
                             token)
        mac = payload.get(MAC_KEY)
    except (KeyError, TypeError, AttributeError, ValueError):
        return False
    return isinstance(mac, str) and hmac.compare_digest(mac, expected)


@dataclasses.dataclass(frozen=True)
class FinalizeRescuePayload(Payload):
    """``finalize_rescue.start``, ``.end`` and ``.error``: one request.

    ``error`` is None for ``start`` and ``end``, else ``{"code",
    "message"}`` with a code of ``rescue_worker.errors``.
    """

    NAME: ClassVar[str] = 'FinalizeRescuePayload'
    # 1.1: the envelope's mac
    VERSION: ClassVar[str] = '1.1'

    node_id: str
    request_id: str
    replayed: bool = False
    username: str | None = None
    hash_scheme: str | None = None
    steps: list[StepReport] = dataclasses.field(
        default_factory=list, metadata=_items(StepReport))
    interfaces: list[InterfaceReport] = dataclasses.field(
        default_factory=list, metadata=_items(InterfaceReport))
    duration_ms: float = 0.0
    error: dict[str, str] | None = None

    @property
    def succeeded(self) -> bool:
        return self.error is None

    @property
    def event_type(self) -> str:
        """``end`` or ``error``, for an outcome (``start`` is sent as
        such)."""
        return EVENT_END if self.error is None else EVENT_ERROR

    def replay(self) -> FinalizeRescuePayload:
        """The same outcome, marked as sent again without a new run."""
        return dataclasses.replace(self, replayed=True)


@dataclasses.dataclass(frozen=True)
class WorkerPayload(Payload):
    """``worker.ready`` and ``worker.stopped``: one worker's life."""

    NAME: ClassVar[str] = 'WorkerPayload'
    # 1.1: the envelope's mac
    VERSION: ClassVar[str] = '1.1'

    node_id: str
    state: str
    topic: str
    version: str
    rpc_api_version: str
    reason: str | None = None


#: every payload and report, by name (what the fingerprint test walks)
ALL = {cls.__name__: cls for cls in (FinalizeRescuePayload, WorkerPayload,
                                     StepReport, InterfaceReport)}


def payload_data(payload: dict[str, Any]) -> dict[str, Any]:
    """The ``data`` of a received envelope."""
    return payload[DATA_KEY]
