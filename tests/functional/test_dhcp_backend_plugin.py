"""A DHCP backend from outside the package:
``rescue_worker_test_dhcp_backends`` (tests/functional/plugins) registers
``recording`` in the ``rescue_worker.dhcp_backends`` namespace, as an
operator's package would, and a real ``rescue-worker`` process configured
with ``dhcp_backend = recording`` uses it; one configured with a name
nobody installed does not start."""

import json
import os
import uuid

import netifaces

END = 'rescue_worker.finalize_rescue.end'
DHCP_TIMEOUT = 7


def test_the_worker_uses_a_backend_installed_from_outside_the_package(
        bus, started_worker, secrets_used):
    password = 'functional-%s' % uuid.uuid4()
    secrets_used.append(password)
    # Every interface, lo too: the plug-in is passive and touches none.
    worker = started_worker(exit_after_rescue=False, steps='password,network',
                            dhcp_backend='recording', skip_interfaces='',
                            skip_generated_mac=False,
                            dhcp_timeout=DHCP_TIMEOUT)
    request_id = 'req-%s' % uuid.uuid4()

    bus.client(worker.node_id).cast(
        {'request_id': request_id}, 'finalize_rescue',
        rescue_password=password, agent_token=worker.token)

    [end] = bus.wait_for(END, request_id=request_id)
    assert end['error'] is None
    names = [entry['name'] for entry in end['interfaces']]
    assert names == netifaces.interfaces()
    assert {entry['dhcp'] for entry in end['interfaces']} == {'configured'}
    with open(os.path.join(worker.state_dir,
                           'recording-backend.jsonl')) as f:
        calls = [json.loads(line) for line in f]
    assert calls == [{'interfaces': names, 'timeout': DHCP_TIMEOUT}]


def test_a_backend_nobody_installed_stops_the_worker_with_one_line(
        make_worker):
    worker = make_worker(steps='password,network',
                         dhcp_backend='not-installed')

    worker.start()

    assert worker.wait() == 2
    logged = worker.logs()
    [line] = [line for line in logged.splitlines() if 'Cannot start' in line]
    assert "Unknown DHCP backend 'not-installed'" in line
    assert 'install the package that provides it' in line
    assert 'Traceback' not in logged
