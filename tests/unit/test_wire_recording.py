"""The wire contract stays byte for byte what it was for the same inputs.

A real worker on ``fake://`` handles fixed requests; every notification it
publishes for them is compared with a recording made before the code behind
it was restructured. Only what differs between any two runs is normalized:
durations, the temporary root directory and the worker's version. A change
here is a change of the contract: bump the payload's version and record
again on purpose (``RECORD_WIRE=1``), never to make the test pass. (Recorded
again once, for payload version 1.1: the envelope's ``mac``, checked here
against the node's token.)
"""

import json
import os

import pytest

from rescue_worker import payloads
from rescue_worker.fixture import NotificationCapture
from rescue_worker.fixture import RescueWorkerFixture

HERE = os.path.dirname(__file__)
RECORDING = os.path.join(HERE, 'wire', 'finalize_rescue.json')
NODE_ID = '9b2f4a3e-wire-contract'
PASSWORD = 'correct horse battery staple'
MD5_HASH = '$1$saltsalt$2vnaRpHa6Jxjz5n83ok8Z0'


def _normalize(value, root_dir):
    if isinstance(value, dict):
        return {key: (0.0 if key == 'duration_ms' else
                      '<version>' if key == 'version' else
                      # It covers the durations: checked, then normalized.
                      '<mac>' if key == payloads.MAC_KEY and item else
                      _normalize(item, root_dir))
                for key, item in value.items()}
    if isinstance(value, list):
        return [_normalize(item, root_dir) for item in value]
    if isinstance(value, str):
        return value.replace(root_dir, '<root>')
    return value


def _wire(fixture, capture, request_ids):
    wanted = set(request_ids)
    seen = [n for n in capture.notifications
            if n.event_type != payloads.EVENT_READY
            and n.data.get('request_id') in wanted]
    for n in seen:
        assert payloads.authentic(n.event_type, n.publisher_id, n.payload,
                                  fixture.token)
    return json.dumps(
        [_normalize({'priority': n.priority, 'publisher_id': n.publisher_id,
                     'event_type': n.event_type, 'ctxt': n.ctxt,
                     'payload': n.payload}, fixture.root_dir)
         for n in seen], sort_keys=True, indent=1) + '\n'


@pytest.fixture
def worker():
    with RescueWorkerFixture(
            node_id=NODE_ID, steps='password,account,verify',
            exit_after_rescue=False) as fixture:
        yield fixture


def test_notifications_for_fixed_requests_match_the_recording(worker):
    client = worker.rpc_client()
    with NotificationCapture(worker.notification_transport) as capture:
        capture.wait_for(payloads.EVENT_READY, node_id=NODE_ID)
        client.cast({'request_id': 'req-wire-1'}, 'finalize_rescue',
                    rescue_password=PASSWORD, agent_token=worker.token)
        capture.wait_for_outcome('req-wire-1')
        client.cast({'request_id': 'req-wire-2'}, 'finalize_rescue',
                    rescue_password=MD5_HASH, hashed=True,
                    agent_token=worker.token)
        capture.wait_for_outcome('req-wire-2')
        client.cast({'request_id': 'req-wire-1'}, 'finalize_rescue',
                    rescue_password=PASSWORD, agent_token=worker.token)
        capture.wait_until(
            lambda: len(capture.matching(payloads.EVENT_END,
                                         request_id='req-wire-1')) == 2,
            what='the replayed end of req-wire-1')
        wire = _wire(worker, capture, ['req-wire-1', 'req-wire-2'])

    if os.environ.get('RECORD_WIRE'):
        with open(RECORDING, 'w') as f:
            f.write(wire)
    with open(RECORDING) as f:
        assert wire == f.read()
