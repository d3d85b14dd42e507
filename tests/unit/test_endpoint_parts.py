"""RescueEndpoint built directly from its parts (real journal and lockdown
in a temporary directory, fake steps and notifications): what it answers,
what it journals, when it locks down. The same contract over fake:// is in
test_endpoint.py."""

import logging
import os
import threading

import pytest

from rescue_worker import agent_token
from rescue_worker import endpoint as rw_endpoint
from rescue_worker import errors
from rescue_worker import journal as rw_journal
from rescue_worker import lockdown as rw_lockdown
from rescue_worker import payloads
from rescue_worker import pipeline
from tests.unit import helpers
from tests.unit.parts import FakeNotifications
from tests.unit.parts import RecordingStep

TOKEN = 't' * 40
PASSWORD = 'correct horse battery staple'


class Parts:
    def __init__(self, tmp_path, steps=None, fail_outcomes=0):
        self.state_dir = str(tmp_path / 'state')
        self.secret = tmp_path / 'rescue-worker.conf'
        self.secret.write_text('[DEFAULT]\ntransport_url = rabbit://u:p@h/\n')
        self.journal = rw_journal.Journal(self.state_dir)
        self.steps = steps or [RecordingStep('password')]
        self.notifications = FakeNotifications(fail_outcomes)
        self.stop_requests = []
        self.stopping = threading.Event()
        self.lockdown = rw_lockdown.Lockdown(
            state_dir=self.state_dir, scrub_paths=[str(self.secret)],
            scrub_journal=self.journal.scrub,
            request_stop=lambda: self.stop_requests.append(True))
        self.endpoint = rw_endpoint.RescueEndpoint(
            node_id='node-1', username='rescue',
            token_check=agent_token.TokenCheck(TOKEN), journal=self.journal,
            pipeline=pipeline.Pipeline(self.steps, 'rescue'),
            notifications=self.notifications, lockdown=self.lockdown,
            stopping=self.stopping, outcome_retry_timeout=5.0)

    def finalize(self, request_id='req-1', **kwargs):
        kwargs.setdefault('rescue_password', PASSWORD)
        kwargs.setdefault('agent_token', TOKEN)
        return self.endpoint.finalize_rescue({'request_id': request_id},
                                             **kwargs)


@pytest.fixture
def parts(tmp_path):
    return Parts(tmp_path)


def test_success_publishes_start_and_end_then_locks_down(parts):
    data = parts.finalize()

    assert data['error'] is None
    assert parts.notifications.events() == [payloads.EVENT_START,
                                            payloads.EVENT_END]
    assert parts.lockdown.engaged
    assert parts.stop_requests == [True]
    assert not parts.secret.exists()
    assert os.path.exists(parts.lockdown.marker.path)


def test_after_lockdown_a_new_request_is_not_run(parts):
    parts.finalize('req-1')

    data = parts.finalize('req-2', rescue_password='another password')

    assert data['error']['code'] == errors.INTERNAL
    assert 'locked down' in data['error']['message']
    assert len(parts.steps[0].runs) == 1
    assert parts.journal.get('req-2') is None


def test_a_failed_rescue_does_not_lock_down(tmp_path):
    parts = Parts(tmp_path, steps=[RecordingStep('password'), RecordingStep(
        'account', fail_with=errors.ACCOUNT_FAILED)])

    data = parts.finalize()

    assert data['error']['code'] == errors.ACCOUNT_FAILED
    assert parts.notifications.events()[-1] == payloads.EVENT_ERROR
    assert not parts.lockdown.engaged
    assert parts.secret.exists()


def test_a_wrong_token_changes_nothing_on_disk(parts, tmp_path):
    before = helpers.snapshot(str(tmp_path))

    data = parts.finalize(agent_token='x' * 40)

    assert data['error']['code'] == errors.UNAUTHORIZED
    assert helpers.snapshot(str(tmp_path)) == before
    assert parts.notifications.events() == [payloads.EVENT_ERROR]


def test_the_same_request_again_is_a_replay_not_a_run(parts):
    parts.endpoint._lockdown = None  # keep serving, as exit_after_rescue=0
    first = parts.finalize('req-1')

    again = parts.finalize('req-1')

    assert len(parts.steps[0].runs) == 1
    assert again == dict(first, replayed=True)


def test_an_outcome_the_broker_missed_is_published_again_before_lockdown(
        tmp_path, monkeypatch):
    monkeypatch.setattr(rw_endpoint, 'PUBLISH_RETRY_DELAY', 0.01)
    parts = Parts(tmp_path, fail_outcomes=2)

    parts.finalize()

    assert parts.notifications.events() == [payloads.EVENT_START,
                                            payloads.EVENT_END]
    assert parts.journal.get('req-1').notified
    assert parts.lockdown.engaged


def test_stopping_while_the_outcome_is_unpublished_leaves_it_journaled(
        tmp_path, monkeypatch):
    monkeypatch.setattr(rw_endpoint, 'PUBLISH_RETRY_DELAY', 0.01)
    parts = Parts(tmp_path, fail_outcomes=1000)
    parts.stopping.set()

    parts.finalize()

    record = parts.journal.get('req-1')
    assert record.ended and not record.notified
    assert not parts.lockdown.engaged


def test_a_journal_that_cannot_be_written_is_answered_not_silent(
        parts, monkeypatch, caplog):
    def full(*args, **kwargs):
        raise OSError(28, 'No space left on device')
    monkeypatch.setattr(parts.journal, 'record_request', full)

    with caplog.at_level(logging.ERROR):
        data = parts.finalize()

    assert data['error']['code'] == errors.INTERNAL
    assert parts.journal.path in data['error']['message']
    assert 'No space left' in data['error']['message']
    assert parts.notifications.events() == [payloads.EVENT_ERROR]
    assert parts.steps[0].runs == []
    assert PASSWORD not in caplog.text


def test_the_worker_keeps_serving_after_a_journal_failure(parts,
                                                          monkeypatch):
    real = parts.journal.record_request
    calls = []

    def full_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise OSError(5, 'Input/output error')
        return real(*args, **kwargs)
    monkeypatch.setattr(parts.journal, 'record_request', full_once)

    parts.finalize('req-1')
    data = parts.finalize('req-2')

    assert data['error'] is None


def test_the_journal_keeps_what_check_handed_on(tmp_path):
    parts = Parts(tmp_path, steps=[RecordingStep(
        'password', replace_password='$6$rounds=5000$salt$hash')])
    parts.endpoint._lockdown = None

    parts.finalize()

    with open(parts.journal._file('req-1')) as f:
        on_disk = f.read()
    assert PASSWORD not in on_disk
    assert parts.steps[0].runs[0].hashed is True


def test_only_the_hash_reaches_the_journal(parts):
    parts.endpoint._lockdown = None

    parts.finalize()

    with open(parts.journal._file('req-1')) as f:
        on_disk = f.read()
    assert PASSWORD not in on_disk


def test_a_plaintext_password_with_no_step_to_hash_it_is_refused(
        tmp_path):
    parts = Parts(tmp_path, steps=[RecordingStep('account')])

    data = parts.finalize()

    assert data['error']['code'] == errors.PLAINTEXT_REFUSED
    assert '"password" to [rescue_worker] steps' in data['error']['message']
    assert parts.journal.get('req-1') is None


def test_recover_runs_an_interrupted_request_again(parts):
    parts.journal.record_request('req-9', {'rescue_password': PASSWORD,
                                           'hashed': False})

    [outcome] = parts.endpoint.recover()

    assert outcome.request_id == 'req-9' and outcome.succeeded
    assert parts.notifications.events() == [payloads.EVENT_START,
                                            payloads.EVENT_END]


def test_get_status_reports_the_contract_fields(parts):
    status = parts.endpoint.get_status({}, agent_token=TOKEN)

    assert status['state'] == 'waiting'
    assert status['rpc_api_version'] == '1.0'
    assert set(status) == {'node_id', 'state', 'last_request_id',
                           'rpc_api_version', 'version'}
