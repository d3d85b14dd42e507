"""The payloads of the wire contract: one envelope, versioned fields.

The fingerprints pin each payload's fields to its version, as ironic's
``expected_object_fingerprints`` do: change a field and this test fails
until the version (and then the fingerprint) changes too.
"""

import dataclasses

import pytest

from rescue_worker import payloads

EXPECTED_FINGERPRINTS = {
    'FinalizeRescuePayload': '1.1-098d2ce3e36b8b00',
    'WorkerPayload': '1.1-450b39f26974d9e3',
    'StepReport': '1.0-f4b7e3083fc74394',
    'InterfaceReport': '1.0-013482f1dbb55a7e',
}


def _outcome(**fields):
    fields.setdefault('node_id', 'node-1')
    fields.setdefault('request_id', 'req-1')
    return payloads.FinalizeRescuePayload(**fields)


@pytest.mark.parametrize('name', sorted(payloads.ALL))
def test_fields_match_the_version(name):
    assert payloads.ALL[name].fingerprint() == EXPECTED_FINGERPRINTS[name], (
        '%s changed its fields: bump its VERSION (and that of every '
        'payload holding it), then update EXPECTED_FINGERPRINTS' % name)


def test_every_payload_has_an_expected_fingerprint():
    assert set(EXPECTED_FINGERPRINTS) == set(payloads.ALL)


def test_a_new_field_changes_the_fingerprint():
    @dataclasses.dataclass(frozen=True)
    class Grown(payloads.StepReport):
        exit_code: int = 0

    assert Grown.fingerprint() != payloads.StepReport.fingerprint()


def test_a_nested_report_change_changes_the_holder_fingerprint(monkeypatch):
    before = payloads.FinalizeRescuePayload.fingerprint()
    monkeypatch.setattr(payloads.StepReport, 'fingerprint',
                        classmethod(lambda cls: '1.1-other'))

    assert payloads.FinalizeRescuePayload.fingerprint() != before


TOKEN = 'k' * 40
PUBLISHER = 'rescue-worker.node-1'


def test_envelope_is_the_contract_shape():
    envelope = _outcome().envelope(payloads.EVENT_END, PUBLISHER, None)

    assert envelope == {
        'rescue_worker_object.name': 'FinalizeRescuePayload',
        'rescue_worker_object.namespace': 'rescue_worker',
        'rescue_worker_object.version': '1.1',
        'rescue_worker_object.data': {
            'node_id': 'node-1', 'request_id': 'req-1', 'replayed': False,
            'username': None, 'hash_scheme': None, 'steps': [],
            'interfaces': [], 'duration_ms': 0.0, 'error': None},
        'rescue_worker_object.mac': None}


def test_the_mac_is_the_hmac_of_the_canonical_event():
    import hashlib
    import hmac
    import json
    envelope = _outcome().envelope(payloads.EVENT_END, PUBLISHER, TOKEN)
    canonical = json.dumps(
        {'event_type': payloads.EVENT_END, 'publisher_id': PUBLISHER,
         'data': envelope['rescue_worker_object.data']},
        sort_keys=True, separators=(',', ':'), ensure_ascii=True)

    assert envelope['rescue_worker_object.mac'] == hmac.new(
        TOKEN.encode(), canonical.encode(), hashlib.sha256).hexdigest()


def test_an_envelope_from_the_node_is_authentic():
    envelope = _outcome().envelope(payloads.EVENT_END, PUBLISHER, TOKEN)

    assert payloads.authentic(payloads.EVENT_END, PUBLISHER, envelope, TOKEN)


@pytest.mark.parametrize('forge', [
    lambda e: e['rescue_worker_object.data'].update(request_id='req-2'),
    lambda e: e.update({'rescue_worker_object.mac': None}),
    lambda e: e.pop('rescue_worker_object.mac'),
    lambda e: e.update({'rescue_worker_object.mac': 'f' * 64}),
    lambda e: e.pop('rescue_worker_object.data'),
])
def test_a_changed_or_unsigned_envelope_is_not_authentic(forge):
    envelope = _outcome().envelope(payloads.EVENT_END, PUBLISHER, TOKEN)
    forge(envelope)

    assert not payloads.authentic(payloads.EVENT_END, PUBLISHER, envelope,
                                  TOKEN)


def test_another_event_type_or_publisher_is_not_authentic():
    envelope = _outcome().envelope(payloads.EVENT_ERROR, PUBLISHER, TOKEN)

    assert not payloads.authentic(payloads.EVENT_END, PUBLISHER, envelope,
                                  TOKEN)
    assert not payloads.authentic(payloads.EVENT_ERROR,
                                  'rescue-worker.node-2', envelope, TOKEN)


def test_another_nodes_token_is_not_authentic():
    envelope = _outcome().envelope(payloads.EVENT_END, PUBLISHER, 'o' * 40)

    assert not payloads.authentic(payloads.EVENT_END, PUBLISHER, envelope,
                                  TOKEN)


def test_worker_payload_envelope_names_its_object():
    envelope = payloads.WorkerPayload(
        node_id='n', state='waiting', topic='rescue_worker', version='1',
        rpc_api_version='1.0').envelope(payloads.EVENT_READY, PUBLISHER,
                                        None)

    assert envelope['rescue_worker_object.name'] == 'WorkerPayload'
    assert payloads.payload_data(envelope) == {
        'node_id': 'n', 'state': 'waiting', 'topic': 'rescue_worker',
        'version': '1', 'rpc_api_version': '1.0', 'reason': None}


def test_nested_reports_serialize_to_the_wire_keys():
    data = _outcome(
        steps=[payloads.StepReport('account', payloads.STEP_DONE, 3.14159,
                                   'created user rescue')],
        interfaces=[payloads.InterfaceReport(
            'eth0', '52:54:00:12:34:56', payloads.DHCP_LEASED,
            ['198.18.0.57'], [])]).to_data()

    assert data['steps'] == [{'name': 'account', 'status': 'done',
                              'duration_ms': 3.142,
                              'detail': 'created user rescue'}]
    assert data['interfaces'] == [{'name': 'eth0',
                                   'mac': '52:54:00:12:34:56',
                                   'dhcp': 'leased',
                                   'ipv4': ['198.18.0.57'], 'ipv6': []}]


def test_data_round_trips():
    outcome = _outcome(
        username='rescue', hash_scheme='bcrypt', duration_ms=41.7,
        steps=[payloads.StepReport('verify', payloads.STEP_FAILED, 1.0,
                                   'x')],
        interfaces=[payloads.InterfaceReport('eth1', None,
                                             payloads.DHCP_NO_CARRIER)],
        error={'code': 'verify_failed', 'message': 'x'})

    assert payloads.FinalizeRescuePayload.from_data(outcome.to_data()) == \
        outcome


def test_reports_given_as_wire_dicts_are_typed():
    outcome = _outcome(interfaces=[{'name': 'eth0', 'mac': None,
                                    'dhcp': 'configured', 'ipv4': [],
                                    'ipv6': []}])

    [interface] = outcome.interfaces
    assert isinstance(interface, payloads.InterfaceReport)
    assert interface.dhcp == payloads.DHCP_CONFIGURED


def test_keys_a_newer_version_added_are_ignored_when_read():
    data = dict(_outcome().to_data(), added_in_2_0='x')

    assert payloads.FinalizeRescuePayload.from_data(data) == _outcome()


def test_an_outcome_with_an_error_is_an_error_event():
    assert _outcome().event_type == payloads.EVENT_END
    assert _outcome(error={'code': 'internal', 'message': 'm'}).event_type \
        == payloads.EVENT_ERROR


def test_replay_marks_only_replayed():
    outcome = _outcome(duration_ms=12.5)

    replay = outcome.replay()

    assert replay.replayed is True
    assert dataclasses.replace(replay, replayed=False) == outcome
