"""Fakes for building the worker's parts directly in unit tests (the first
level; the whole worker on fake:// is the second)."""

import dataclasses
import threading

from rescue_worker import errors
from rescue_worker import notify
from rescue_worker import payloads
from rescue_worker import pipeline

FAKE_HASH = '$6$rounds=5000$fakesalt$fakehash'


class RecordingStep(pipeline.Step):
    """A step that records its runs and does what it is told."""

    def __init__(self, name, fail_with=None, raise_=None, detail='ok',
                 replace_password=None):
        self.name = name
        self.fail_with = fail_with
        self.raise_ = raise_
        self.detail = detail
        self.replace_password = replace_password
        self.runs = []

    def check(self, request):
        if self.replace_password is not None:
            return pipeline.RescueRequest(request.request_id,
                                          self.replace_password, True)
        if self.name == 'password' and not request.hashed:
            # As the real password step does: only a hash is journaled.
            return dataclasses.replace(request,
                                       password_hash=FAKE_HASH)
        return None

    def run(self, request, state):
        self.runs.append(request)
        if self.fail_with is not None:
            raise errors.RescueError(self.fail_with, 'told to fail')
        if self.raise_ is not None:
            raise self.raise_
        return self.detail


class FakeNotifications:
    """Stands in for ``notify.Notifications``: records what was sent;
    ``fail_outcomes`` sends of an outcome fail as a broker away would."""

    def __init__(self, fail_outcomes=0):
        self.sent = []
        self.fail_outcomes = fail_outcomes
        self.changed = threading.Condition()

    def _record(self, event_type, payload):
        with self.changed:
            self.sent.append((event_type, payload))
            self.changed.notify_all()

    def ready(self, payload):
        self._record(payloads.EVENT_READY, payload)

    def stopped(self, payload):
        self._record(payloads.EVENT_STOPPED, payload)

    def start(self, payload):
        self._record(payloads.EVENT_START, payload)

    def outcome(self, payload):
        if self.fail_outcomes:
            self.fail_outcomes -= 1
            raise notify.NotificationNotSent()
        self._record(payload.event_type, payload)

    def events(self):
        return [event for event, _ in self.sent]

    def last(self, event_type):
        return [p for e, p in self.sent if e == event_type][-1]
