"""RPC API 1.x of the worker: argument checks, authentication, idempotency,
and the hand-off to the pipeline.

This module knows the wire contract and nothing of files: the journal, the
pipeline, the notifications and the lockdown are given to it.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid

import oslo_messaging

from rescue_worker import agent_token
from rescue_worker import contract
from rescue_worker import errors
from rescue_worker import journal as rw_journal
from rescue_worker import lockdown as rw_lockdown
from rescue_worker import notify
from rescue_worker import payloads
from rescue_worker import pipeline as rw_pipeline
from rescue_worker import version

LOG = logging.getLogger(__name__)

RPC_API_VERSION = contract.RPC_API_VERSION

MAX_PASSWORD_FIELD = 1024 * 1024  # type/size guard; the step checks 4096
MAX_REQUEST_ID = 255
#: seconds before an outcome the broker did not take is published again,
#: doubling up to the maximum
PUBLISH_RETRY_DELAY = 1.0
PUBLISH_RETRY_MAX_DELAY = 30.0
_ARGS = ('rescue_password', 'hashed', 'agent_token')


class _Missing:
    def __repr__(self) -> str:
        return '<missing>'


MISSING = _Missing()


class _RefusalLog:
    """Logs refusals, at most ``burst`` per ``window`` seconds.

    Whoever can publish to the broker can send refusals in a loop; the log
    on a ramdisk must not be what fills up.
    """

    def __init__(self, burst: int = 20, window: float = 60.0) -> None:
        self.burst, self.window = burst, window
        self._lock = threading.Lock()
        self._window_start = time.monotonic()
        self._count = 0
        self._suppressed = 0

    def warning(self, request_id: str, error: errors.RescueError) -> None:
        with self._lock:
            now = time.monotonic()
            if now - self._window_start >= self.window:
                if self._suppressed:
                    LOG.warning('%d more refused requests were not logged',
                                self._suppressed)
                self._window_start, self._count = now, 0
                self._suppressed = 0
            self._count += 1
            if self._count > self.burst:
                self._suppressed += 1
                return
        LOG.warning('Refused request %s: %s (%s)', request_id, error.code,
                    error.message)


def _describe_type(value: object) -> str:
    return 'None' if value is None else type(value).__name__


class RescueEndpoint:
    """Serves ``finalize_rescue`` and ``get_status`` for one node."""

    target = oslo_messaging.Target(version=RPC_API_VERSION)

    def __init__(self, *, node_id: str, username: str,
                 token_check: agent_token.TokenCheck,
                 journal: rw_journal.Journal,
                 pipeline: rw_pipeline.Pipeline,
                 notifications: notify.Notifications,
                 lockdown: rw_lockdown.Lockdown | None = None,
                 stopping: threading.Event | None = None,
                 outcome_retry_timeout: float = 600.0) -> None:
        self.node_id = node_id
        self.username = username
        self._token_check, self._journal = token_check, journal
        self._pipeline, self._notifications = pipeline, notifications
        # None: the worker keeps serving after a rescue
        # (exit_after_rescue = false).
        self._lockdown = lockdown
        # Set when the worker stops: an outcome still unpublished is then
        # left to the journal (published at the next start).
        self._stopping = stopping or threading.Event()
        self._outcome_retry_timeout = outcome_retry_timeout
        # One request at a time: the steps rewrite the same files.
        self._run_lock = threading.Lock()
        self._refusals = _RefusalLog()
        last = journal.last()
        self._last_request_id = last.request_id if last else None
        if last is None:
            self._state = contract.WAITING
        elif not last.ended:
            self._state = contract.RESCUING
        else:
            self._state = (contract.FAILED if last.outcome.get('error')
                           else contract.RESCUED)

    # -- RPC API -----------------------------------------------------------

    # ``ctxt`` is positional-only in both methods: the dispatcher passes it
    # by position, so an argument a publisher names "ctxt" (or "self") ends
    # up in ``unknown`` and is answered, instead of raising a TypeError in
    # the dispatcher that no one but the worker's log would see.
    @oslo_messaging.expected_exceptions(errors.RescueError)
    def get_status(self, ctxt, /, agent_token=None, **unknown) -> dict:
        self._token_check.verify(agent_token)
        return {'node_id': self.node_id,
                'state': self._state,
                'last_request_id': self._last_request_id,
                'rpc_api_version': contract.RPC_API_VERSION,
                'version': version.version_string()}

    def finalize_rescue(self, ctxt, /, rescue_password=MISSING,
                        hashed=False, agent_token=None, **unknown) -> dict:
        received = time.monotonic()
        request_id = None
        try:
            request_id = self._request_id(ctxt)
            self._token_check.verify(agent_token)
            request = self._parse(request_id, rescue_password, hashed,
                                  unknown)
            request = self._pipeline.check(request)
        except errors.RescueError as exc:
            request_id = request_id or _new_request_id()
            self._refusals.warning(request_id, exc)
            return self._answer_once(self._payload(
                request_id, received, error=exc.as_dict()))

        with self._run_lock:
            if self._lockdown is not None and self._lockdown.engaged:
                LOG.warning('Request %s arrived after lockdown began; it '
                            'is not run (the node is already rescued)',
                            request_id)
                return self._payload(request_id, received, error={
                    'code': errors.INTERNAL,
                    'message': 'the worker is locked down after a rescue; '
                               'reboot the node into the rescue ramdisk '
                               'to rescue it again'}).to_data()
            record = self._journal.get(request_id)
            if record is not None and record.ended:
                LOG.info('Request %s was already handled; publishing its '
                         'recorded outcome again', request_id)
                return self._answer_once(self._recorded(record))
            try:
                self._journal.record_request(request_id,
                                             request.journal_data())
            except OSError as exc:
                return self._answer_once(self._journal_failed(
                    request_id, received, exc))
            return self._run(request, received).to_data()

    # -- start-up recovery -------------------------------------------------

    def recover(self) -> list[payloads.FinalizeRescuePayload]:
        """Finish what the journal shows a crash interrupted.

        Called before the server starts consuming. Returns the outcomes.
        """
        outcomes = []
        with self._run_lock:
            for record in self._journal.unfinished():
                outcome = self._recover_one(record)
                if outcome is not None:
                    outcomes.append(outcome)
        return outcomes

    def _recover_one(self, record: rw_journal.JournalRecord
                     ) -> payloads.FinalizeRescuePayload | None:
        if record.ended:
            # The end may have gone out just before the crash: nothing is
            # re-run, so this is a replay, and a conductor counting first
            # runs never counts two.
            LOG.info('Request %s ended before a restart but its outcome '
                     'may not have been published; publishing it again',
                     record.request_id)
            outcome = self._recorded(record)
            self._publish_outcome(outcome)
            return outcome
        if record.request is None:
            # Scrubbed at a lockdown that this start ignores.
            LOG.error('Request %s was interrupted but its data is gone; '
                      'the conductor must send it again', record.request_id)
            return None
        LOG.info('Request %s was interrupted by a restart; running it '
                 'again', record.request_id)
        request = rw_pipeline.RescueRequest.from_journal(record.request_id,
                                                         record.request)
        return self._run(request, time.monotonic())

    # -- internals ---------------------------------------------------------

    def _payload(self, request_id: str, received: float,
                 **fields) -> payloads.FinalizeRescuePayload:
        return payloads.FinalizeRescuePayload(
            node_id=self.node_id, request_id=request_id,
            username=self.username,
            duration_ms=(time.monotonic() - received) * 1000.0, **fields)

    @staticmethod
    def _recorded(record: rw_journal.JournalRecord
                  ) -> payloads.FinalizeRescuePayload:
        return payloads.FinalizeRescuePayload.from_data(
            record.outcome).replay()

    def _journal_failed(self, request_id: str, received: float,
                        exc: OSError) -> payloads.FinalizeRescuePayload:
        LOG.error('Request %s: the journal in %s cannot be written (%s); '
                  'the request is not run', request_id, self._journal.path,
                  exc.strerror or type(exc).__name__)
        return self._payload(request_id, received, error={
            'code': errors.INTERNAL,
            'message': 'the worker cannot write its journal in %s (%s); '
                       'free space or fix that directory on the node, then '
                       'send the request again' % (
                           self._journal.path,
                           exc.strerror or type(exc).__name__)})

    def _request_id(self, ctxt) -> str:
        request_id = ctxt.get('request_id') if isinstance(ctxt, dict) \
            else None
        if request_id is None:
            return _new_request_id()
        if (not isinstance(request_id, str) or not request_id
                or len(request_id) > MAX_REQUEST_ID
                or not request_id.isprintable()
                or not request_id.isascii()):
            raise errors.RescueError(
                errors.INVALID_REQUEST,
                'the context request_id must be a printable ASCII string of '
                'at most %d characters, such as "req-<uuid>"; this request '
                'was given a new one' % MAX_REQUEST_ID)
        return request_id

    def _parse(self, request_id: str, rescue_password, hashed,
               unknown: dict) -> rw_pipeline.RescueRequest:
        if unknown:
            names = sorted(repr(str(k)[:64]) for k in unknown)[:5]
            raise errors.RescueError(
                errors.INVALID_REQUEST,
                'unexpected argument(s) %s; RPC API %s of finalize_rescue '
                'takes %s' % (', '.join(names), RPC_API_VERSION,
                              ', '.join(_ARGS)))
        if rescue_password is MISSING:
            raise errors.RescueError(
                errors.INVALID_REQUEST,
                'rescue_password is missing; send the password (or its '
                'crypt hash with hashed=true) as a string')
        if not isinstance(rescue_password, str):
            raise errors.RescueError(
                errors.INVALID_REQUEST,
                'rescue_password must be a string, not %s' %
                _describe_type(rescue_password))
        if not isinstance(hashed, bool):
            raise errors.RescueError(
                errors.INVALID_REQUEST,
                'hashed must be a boolean (true or false), not %s' %
                _describe_type(hashed))
        return rw_pipeline.RescueRequest(request_id=request_id,
                                         rescue_password=rescue_password,
                                         hashed=hashed)

    def _run(self, request: rw_pipeline.RescueRequest,
             received: float) -> payloads.FinalizeRescuePayload:
        self._state, self._last_request_id = (contract.RESCUING,
                                              request.request_id)
        LOG.info('Request %s: running steps %s', request.request_id,
                 ','.join(self._pipeline.step_names))
        self._notifications.start(self._payload(request.request_id,
                                                received))
        result = self._pipeline.run(request)
        outcome = self._payload(
            request.request_id, received,
            hash_scheme=result.state.hash_scheme, steps=result.steps,
            interfaces=result.state.interfaces,
            error=result.error.as_dict() if result.error else None)
        self._journal.record_outcome(request.request_id, outcome.to_data())
        self._state = (contract.RESCUED if result.succeeded
                       else contract.FAILED)
        if result.succeeded:
            LOG.info('Request %s: rescue succeeded in %.0f ms',
                     request.request_id, outcome.duration_ms)
        else:
            LOG.error('Request %s: rescue failed: %s (%s)',
                      request.request_id, result.error.code,
                      result.error.message)
        if (self._publish_outcome(outcome) and result.succeeded
                and self._lockdown is not None):
            self._lockdown.engage(outcome)
        return outcome

    def _publish_outcome(self,
                         outcome: payloads.FinalizeRescuePayload) -> bool:
        """Publish a journaled outcome until the broker takes it, then note
        it in the journal; for ``outcome_retry_timeout`` at most, so that a
        dead broker never holds the worker for ever. False if the worker
        stopped first (the next start publishes it)."""
        request_id = outcome.request_id
        give_up_at = time.monotonic() + self._outcome_retry_timeout
        delay = PUBLISH_RETRY_DELAY
        while True:
            try:
                self._notifications.outcome(outcome)
                break
            except notify.NotificationNotSent:
                pass
            # Locking down now would leave the conductor without the
            # outcome for good: no one would answer a re-cast.
            left = give_up_at - time.monotonic()
            if left <= 0:
                LOG.error('The outcome of request %s never reached the '
                          'broker in %d s; going on without it (the '
                          'conductor will time out on this request)',
                          request_id, self._outcome_retry_timeout)
                return True
            delay = min(delay, left)
            LOG.warning('The outcome of request %s did not reach the '
                        'broker; publishing it again in %.1f s',
                        request_id, delay)
            if self._stopping.wait(delay):
                LOG.error('Stopping with the outcome of request %s '
                          'unpublished; the next start publishes it',
                          request_id)
                return False
            delay = min(delay * 2, PUBLISH_RETRY_MAX_DELAY)
        self._journal.mark_notified(request_id)
        return True

    def _answer_once(self, outcome: payloads.FinalizeRescuePayload) -> dict:
        """Publish a refusal or a replay, once: neither is waiting in the
        journal, and the conductor's re-cast asks again. Returns the data
        a call gets."""
        try:
            self._notifications.outcome(outcome)
        except notify.NotificationNotSent:
            LOG.warning('The answer to request %s did not reach the broker; '
                        'a re-cast of it will be answered again',
                        outcome.request_id)
        return outcome.to_data()


def _new_request_id() -> str:
    return 'req-%s' % uuid.uuid4()
