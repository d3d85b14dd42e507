"""Pipeline: the configured steps in order, timed, stopping at the first
failure; built directly from step objects."""

import pytest

from rescue_worker import errors
from rescue_worker import payloads
from rescue_worker import pipeline
from tests.unit.parts import RecordingStep

REQUEST = pipeline.RescueRequest('req-1', 'hunter2-but-longer')


def _run(*steps):
    return pipeline.Pipeline(steps, username='rescue').run(REQUEST)


def test_steps_run_in_order_and_report_done():
    first, second = RecordingStep('first'), RecordingStep('second')

    result = _run(first, second)

    assert result.succeeded
    assert [(s.name, s.status) for s in result.steps] == [
        ('first', payloads.STEP_DONE), ('second', payloads.STEP_DONE)]
    assert first.runs == [REQUEST] and second.runs == [REQUEST]
    assert all(s.duration_ms >= 0 for s in result.steps)


def test_a_failed_step_stops_the_run_and_the_rest_are_skipped():
    after = RecordingStep('after')

    result = _run(RecordingStep('account', fail_with=errors.ACCOUNT_FAILED),
                  after)

    assert result.error.code == errors.ACCOUNT_FAILED
    assert [(s.name, s.status) for s in result.steps] == [
        ('account', payloads.STEP_FAILED), ('after', payloads.STEP_SKIPPED)]
    assert result.steps[0].detail == 'told to fail'
    assert after.runs == []


def test_an_unexpected_exception_is_internal_and_its_text_stays_out():
    result = _run(RecordingStep('buggy',
                                raise_=KeyError('hunter2-but-longer')))

    assert result.error.code == errors.INTERNAL
    assert 'hunter2' not in result.error.message
    assert 'KeyError' in result.error.message


def test_check_hands_on_the_request_a_step_replaced():
    steps = [RecordingStep('password', replace_password='$6$hashed'),
             RecordingStep('account')]

    checked = pipeline.Pipeline(steps, 'rescue').check(REQUEST)

    assert checked.rescue_password == '$6$hashed'
    assert checked.hashed is True
    assert checked.request_id == REQUEST.request_id


def test_check_keeps_a_hashed_request_no_step_replaces():
    hashed = pipeline.RescueRequest('req-1', '$6$x$y', hashed=True)

    checked = pipeline.Pipeline([RecordingStep('a')], 'rescue').check(
        hashed)

    assert checked is hashed


def test_check_refuses_a_plaintext_no_step_hashed():
    with pytest.raises(errors.RescueError) as raised:
        pipeline.Pipeline([RecordingStep('a')], 'rescue').check(REQUEST)

    assert raised.value.code == errors.PLAINTEXT_REFUSED


def test_the_journal_gets_the_hash_not_the_plaintext():
    checked = pipeline.Pipeline([RecordingStep('password')],
                                'rescue').check(REQUEST)

    assert checked.journal_data() == {'rescue_password': checked.password_hash,
                                      'hashed': True}
    assert 'hunter2' not in repr(checked)


def test_the_password_never_shows_in_a_request_repr():
    assert 'hunter2' not in repr(REQUEST)


def test_an_unknown_step_name_is_a_configuration_error(tmp_path):
    from oslo_config import cfg
    with pytest.raises(errors.ConfigurationError, match='no-such-step'):
        pipeline.load_step('no-such-step', cfg.ConfigOpts())
