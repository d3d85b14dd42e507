"""The on-disk record of requests and their outcomes, under ``state_dir``.

oslo.messaging acknowledges a cast before the endpoint runs, so the journal is
what makes a request survive a crash: it is written (fsync) before any step
runs, and on start the worker finishes whatever it shows unfinished. It is
also the idempotency table: a ``request_id`` seen before is answered from it.

One JSON file per request, named by a digest of the request id so that any id
a conductor sends is a safe file name. The secret arguments are kept only
while a request runs; the outcome replaces them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import threading
import time

from rescue_worker import atomic

LOG = logging.getLogger(__name__)

RUNNING = 'running'
ENDED = 'ended'

_SUFFIX = '.json'


@dataclasses.dataclass
class JournalRecord:
    request_id: str
    seq: int
    status: str
    received_at: float
    # The request's arguments while it runs: they hold the password.
    request: dict | None = dataclasses.field(default=None, repr=False)
    outcome: dict | None = None
    notified: bool = False

    @property
    def ended(self) -> bool:
        return self.status == ENDED


_FIELD_TYPES = {'request_id': str, 'seq': int, 'status': str,
                'received_at': (int, float), 'request': (dict, type(None)),
                'outcome': (dict, type(None)), 'notified': bool}


def _parse_record(raw: object) -> JournalRecord:
    if not isinstance(raw, dict) or set(raw) != set(_FIELD_TYPES):
        raise ValueError('not a journal record')
    for key, kind in _FIELD_TYPES.items():
        if not isinstance(raw[key], kind):
            raise ValueError('field %s has the wrong type' % key)
    if raw['status'] not in (RUNNING, ENDED):
        raise ValueError('unknown status')
    if raw['status'] == ENDED and raw['outcome'] is None:
        raise ValueError('ended without an outcome')
    return JournalRecord(**raw)


class Journal:
    """Request records in ``<state_dir>/journal``, each file mode 0600."""

    def __init__(self, state_dir: str) -> None:
        self.path = os.path.join(state_dir, 'journal')
        os.makedirs(self.path, mode=0o700, exist_ok=True)
        os.chmod(state_dir, 0o700)
        os.chmod(self.path, 0o700)
        self._lock = threading.Lock()
        self._records: dict[str, JournalRecord] = {}
        self._load()

    def _file(self, request_id: str) -> str:
        digest = hashlib.sha256(request_id.encode('utf-8')).hexdigest()
        return os.path.join(self.path, digest + _SUFFIX)

    def _load(self) -> None:
        for name in sorted(os.listdir(self.path)):
            full = os.path.join(self.path, name)
            if name.startswith('.') and name.endswith('.tmp'):
                # A write that crashed before its rename: the record it was
                # replacing is still whole beside it.
                os.unlink(full)
                continue
            if not name.endswith(_SUFFIX):
                continue
            try:
                with open(full, encoding='utf-8') as f:
                    record = _parse_record(json.load(f))
            except (OSError, ValueError, TypeError) as exc:
                LOG.error('Journal file %s is unreadable (%s); moving it '
                          'aside (*.corrupt) and going on without it', full,
                          type(exc).__name__)
                # Kept for the operator until lockdown scrubs it: it may
                # hold a password.
                os.rename(full, '%s.%d.corrupt' % (full, time.time_ns()))
                continue
            self._records[record.request_id] = record

    def _write(self, record: JournalRecord) -> None:
        # Not dataclasses.asdict: it deep-copies the outcome first, which
        # was most of the journal's cost (doc/source/performance.rst).
        data = json.dumps({field: getattr(record, field)
                           for field in _FIELD_TYPES}, sort_keys=True)
        atomic.write_atomically(self._file(record.request_id),
                                data.encode('utf-8'), mode=0o600)
        self._records[record.request_id] = record

    def get(self, request_id: str) -> JournalRecord | None:
        with self._lock:
            return self._records.get(request_id)

    def last(self) -> JournalRecord | None:
        with self._lock:
            if not self._records:
                return None
            return max(self._records.values(), key=lambda r: r.seq)

    def unfinished(self) -> list[JournalRecord]:
        """Records a crash interrupted, oldest first: still running, or
        ended but the outcome never published."""
        with self._lock:
            return sorted((r for r in self._records.values()
                           if not r.ended or not r.notified),
                          key=lambda r: r.seq)

    def record_request(self, request_id: str, request: dict) -> JournalRecord:
        """Durably note that ``request_id`` is about to run."""
        with self._lock:
            seq = max((r.seq for r in self._records.values()), default=0) + 1
            record = JournalRecord(request_id=request_id, seq=seq,
                                   status=RUNNING, received_at=time.time(),
                                   request=dict(request))
            self._write(record)
            return record

    def record_outcome(self, request_id: str, outcome: dict) -> None:
        """Durably store the outcome, dropping the request's secrets."""
        with self._lock:
            record = dataclasses.replace(self._records[request_id],
                                         status=ENDED, request=None,
                                         outcome=outcome, notified=False)
            self._write(record)

    def mark_notified(self, request_id: str) -> None:
        with self._lock:
            record = dataclasses.replace(self._records[request_id],
                                         notified=True)
            self._write(record)

    def scrub(self) -> int:
        """Drop every request's arguments (lockdown); returns how many."""
        with self._lock:
            scrubbed = 0
            for name in os.listdir(self.path):
                if name.endswith('.corrupt'):
                    atomic.remove_durably(os.path.join(self.path, name))
                    scrubbed += 1
            for record in list(self._records.values()):
                if record.request is not None:
                    self._write(dataclasses.replace(record, request=None))
                    scrubbed += 1
            return scrubbed
