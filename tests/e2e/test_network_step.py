"""The network step for real: dhclient against dnsmasq, in namespaces.

The node namespace has three NICs (veths): ``eth0`` and ``eth1`` on links
where dnsmasq serves 198.18.1.0/24 and 198.18.2.0/24, ``eth2`` on a link
whose far end is down (no carrier). The step runs inside the node
namespace, in a process of its own, with ``dhcp_backend = dhclient``; so do
the backend calls the network keeper makes after lockdown (``lease_server``,
``renew``), including across a tenant network flip: the far end gets
another subnet and DHCP server while the link stays up.

veth MACs are random (``addr_assign_type`` 1), so the step runs with
``skip_generated_mac = false`` except where that rule is the subject.

Needs root, ``ip``, ``dnsmasq``, ``dhclient`` (skipped otherwise; a failure
under ``CI=true``).
"""

import hashlib
import ipaddress
import json
import os
import pathlib
import socket
import subprocess
import sys
import threading

import pytest

from tests.e2e import netns

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
TIMEOUT = 5
TENANT_SUBNET = '198.19.1.0/24'

# Runs in the node namespace: one operation of the step or the backend,
# printing its outcome as JSON on the last line of stdout.
RUNNER = r'''
import json, logging, sys, time
from oslo_config import cfg
from rescue_worker import conf as rw_conf
from rescue_worker import errors, pipeline
from rescue_worker.network import base
from rescue_worker.steps import network

args = json.loads(sys.argv[1])
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
conf = cfg.ConfigOpts()
rw_conf.register_opts(conf)
for name, value in args['options'].items():
    conf.set_override(name, value, group=rw_conf.GROUP)
out = {}
started = time.monotonic()
if args['op'] == 'step':
    state = pipeline.RescueState(username='rescue')
    try:
        out['detail'] = network.NetworkStep(conf).run(
            pipeline.RescueRequest('req-e2e', 'unused'), state)
        out['error'] = None
    except errors.RescueError as exc:
        out['error'] = exc.as_dict()
    out['interfaces'] = state.interfaces
elif args['op'] == 'renew':
    out['status'] = base.get_backend(conf).renew(
        args['interface'], conf.rescue_worker.dhcp_timeout)
elif args['op'] == 'lease_server':
    out['server'] = base.get_backend(conf).lease_server(args['interface'])
out['elapsed'] = time.monotonic() - started
print(json.dumps(out))
'''


def host_resolver():
    """The host's resolver as it is now, to show it was never touched."""
    try:
        with open('/etc/resolv.conf', 'rb') as f:
            return hashlib.sha256(f.read()).hexdigest()
    except FileNotFoundError:
        return None


@pytest.fixture
def lab(tmp_path):
    netns.require()
    before = host_resolver()
    lab = netns.NetLab(tmp_path / 'lab')
    try:
        yield lab
    finally:
        lab.close()
    assert host_resolver() == before
    assert not os.path.exists(lab.node.etc_dir)


@pytest.fixture
def links(lab):
    return netns.rescuing_network(lab)


@pytest.fixture
def options(tmp_path):
    return {'dhcp_backend': 'dhclient', 'dhcp_timeout': TIMEOUT,
            'skip_generated_mac': False,
            'state_dir': str(tmp_path / 'state'),
            'root_dir': str(tmp_path / 'root')}


def in_node(lab, op, options, **args):
    """Run one operation in the node namespace; its JSON outcome."""
    result = lab.node.run(
        [sys.executable, '-c', RUNNER,
         json.dumps({'op': op, 'options': options, **args})],
        check=False, timeout=120, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    outcome['log'] = result.stderr
    return outcome


def statuses(outcome):
    return {entry['name']: entry['dhcp'] for entry in outcome['interfaces']}


def dhclient_daemons(lab, interface):
    """Pids of the dhclient processes in the node namespace that serve
    ``interface``."""
    found = []
    for pid in lab.node.pids():
        try:
            with open('/proc/%d/cmdline' % pid, 'rb') as f:
                argv = f.read().decode().split('\0')
        except OSError:
            continue
        if 'dhclient' in os.path.basename(argv[0]) and \
                argv[-2:-1] == [interface]:
            found.append(pid)
    return found


# -- the step -----------------------------------------------------------------

def test_wired_interfaces_are_leased_and_the_uncabled_one_has_no_carrier(
        lab, links, options, tmp_path):
    outcome = in_node(lab, 'step', options)

    assert outcome['error'] is None, outcome['log']
    assert statuses(outcome) == {'eth0': 'leased', 'eth1': 'leased',
                                 'eth2': 'no_carrier'}
    for entry in outcome['interfaces']:
        name = entry['name']
        assert entry['mac'] == lab.node.read_sys(name, 'address')
        # What the step read back is what the kernel has.
        assert entry['ipv4'] == lab.node.ipv4_addresses(name)
        assert entry['ipv6'] == []
        if name in ('eth0', 'eth1'):
            [address] = entry['ipv4']
            assert links[name].in_range(address), (address, name)
    assert outcome['detail'] == ('eth0 leased, eth1 leased, eth2 '
                                 'no_carrier; 1 skipped by configuration: '
                                 'lo (skip_interfaces)')
    # Lease and pid files live under state_dir.
    dhcp_dir = tmp_path / 'state' / 'dhcp'
    for name in ('eth0', 'eth1'):
        assert (dhcp_dir / ('dhclient-%s.leases' % name)).exists()
        assert len(dhclient_daemons(lab, name)) == 1


def test_with_generated_macs_skipped_every_veth_is_left_alone(
        lab, links, options):
    options['skip_generated_mac'] = True

    outcome = in_node(lab, 'step', options)

    assert outcome['interfaces'] == []
    assert outcome['error'] == {
        'code': 'network_failed',
        'message': 'no network interface to configure: all were skipped '
                   'by configuration: lo (skip_interfaces); eth0, eth1, '
                   'eth2 (skip_generated_mac: MAC not permanent); adjust '
                   '[rescue_worker] skip_interfaces or skip_generated_mac'}
    assert lab.node.ipv4_addresses('eth0') == []


def test_with_no_dhcp_server_the_step_fails_within_dhcp_timeout(
        lab, links, options):
    lab.stop_dhcp('eth0')
    lab.stop_dhcp('eth1')

    outcome = in_node(lab, 'step', options)

    assert outcome['error']['code'] == 'network_failed'
    message = outcome['error']['message']
    assert message.startswith(
        'no interface got a DHCP lease or configuration (eth0 failed, eth1 '
        'failed, eth2 no_carrier): no DHCP server answered on eth0, eth1 '
        'within 5 s; check that the rescuing network\'s DHCP server is '
        'running')
    assert 'no carrier on eth2 within 5 s' in message
    assert statuses(outcome) == {'eth0': 'failed', 'eth1': 'failed',
                                 'eth2': 'no_carrier'}
    # dhclient gives up a second or two after its timeout.
    assert outcome['elapsed'] < TIMEOUT + 4
    assert dhclient_daemons(lab, 'eth0') == []


def test_backend_none_reports_without_touching_anything(lab, links,
                                                        options):
    options['dhcp_backend'] = 'none'

    outcome = in_node(lab, 'step', options)

    assert outcome['error'] is None
    assert statuses(outcome) == {'eth0': 'skipped', 'eth1': 'skipped',
                                 'eth2': 'skipped'}
    assert lab.node.read_sys('eth0', 'operstate') == 'down'
    assert lab.node.pids() == []


# -- what the network keeper uses after lockdown -----------------------------

def test_lease_server_is_the_dhcp_server_that_leased(lab, links, options):
    in_node(lab, 'step', options)

    for name in ('eth0', 'eth1'):
        outcome = in_node(lab, 'lease_server', options, interface=name)
        assert outcome['server'] == links[name].server_address
    assert in_node(lab, 'lease_server', options,
                   interface='eth2')['server'] is None


def test_renew_on_the_same_network_keeps_the_address(lab, links, options):
    first = in_node(lab, 'step', options)
    address = [e for e in first['interfaces'] if e['name'] == 'eth0'][0][
        'ipv4']

    outcome = in_node(lab, 'renew', options, interface='eth0')

    assert outcome['status'] == 'leased'
    assert lab.node.ipv4_addresses('eth0') == address
    assert len(dhclient_daemons(lab, 'eth0')) == 1


@pytest.mark.parametrize('authoritative', [True, False],
                         ids=['authoritative', 'silent'])
def test_renew_after_the_tenant_network_flip_moves_to_the_tenant_network(
        lab, links, options, authoritative):
    # The tenant's DHCP server either refuses the rescuing address at once
    # (authoritative: DHCPNAK "wrong network") or ignores the request, and
    # dhclient discovers after its reboot time.
    in_node(lab, 'step', options)
    flaps = lab.node.read_sys('eth0', 'carrier_changes')
    tenant = lab.switch_network('eth0', TENANT_SUBNET,
                                authoritative=authoritative)

    outcome = in_node(lab, 'renew', options, interface='eth0')

    assert outcome['status'] == 'leased', outcome['log']
    [address] = lab.node.ipv4_addresses('eth0')
    assert links['eth0'].in_range(address)
    assert address.startswith('198.19.1.')
    server = in_node(lab, 'lease_server', options, interface='eth0')
    assert server['server'] == tenant.server_address == '198.19.1.1'
    # No link flap, and still a single dhclient on eth0.
    assert lab.node.read_sys('eth0', 'carrier_changes') == flaps
    assert len(dhclient_daemons(lab, 'eth0')) == 1
    # The other interface kept its rescuing lease.
    assert in_node(lab, 'lease_server', options,
                   interface='eth1')['server'] == '198.18.2.1'


def test_the_lab_leaves_nothing_behind(tmp_path):
    netns.require()
    lab = netns.NetLab(tmp_path / 'lab')
    netns.rescuing_network(lab)
    names = (lab.node.name, lab.server.name)

    lab.close()
    lab.close()

    listed = subprocess.run(['ip', 'netns', 'list'], capture_output=True,
                            text=True, check=True).stdout
    assert not any(name in listed for name in names)
    assert not os.path.exists(lab.node.etc_dir)
    assert not os.path.exists(lab.server.etc_dir)


def test_the_node_reaches_a_host_service_only_through_the_lab(tmp_path):
    # How a worker in the node namespace reaches its test broker.
    netns.require()
    with socket.create_server(('127.0.0.1', 0)) as service:
        port = service.getsockname()[1]

        def echo_once():
            connection, _ = service.accept()
            with connection:
                connection.sendall(connection.recv(64).upper())

        thread = threading.Thread(target=echo_once, daemon=True)
        thread.start()
        with netns.NetLab(tmp_path / 'lab') as lab:
            address, forwarded = lab.forward(port)
            host_if = lab.host_link.host_if
            assert ipaddress.ip_address(address) in netns.LAB_BLOCK
            reply = lab.node.run([sys.executable, '-c', (
                'import socket, sys\n'
                's = socket.create_connection((sys.argv[1], int(sys.argv[2])),'
                ' 10)\n'
                's.sendall(b"ping")\n'
                'print(s.recv(64).decode())\n'), address, str(forwarded)])
            assert reply.stdout.strip() == 'PING'
        thread.join(10)
    shown = subprocess.run(['ip', 'link', 'show', host_if],
                           capture_output=True, text=True)
    assert shown.returncode != 0
