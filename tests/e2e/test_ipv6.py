"""IPv6 tenant networks, for real: dnsmasq advertises and serves, the node
takes what each link offers.

The server namespace's dnsmasq sends router advertisements on two
IPv6-only links (no DHCPv4 anywhere, ``netns.ipv6_network``):

- ``eth0``, 2001:db8:1::/64: the "managed" flag, addresses from DHCPv6
  (2001:db8:1::100 to ::1ff), none by SLAAC;
- ``eth1``, 2001:db8:2::/64: SLAAC only (dnsmasq's ``ra-only``).

With ``dhclient`` (``dhclient -6`` for the managed link) each interface
ends with a global IPv6 address and counts as leased, though it has no
IPv4 lease; what the step and the ``end`` notification report is what
``ip -6 addr`` shows in the node namespace. Busybox's ``udhcpc`` takes the
SLAAC link; the managed one needs ``udhcpc6``, which Debian's busybox
lacks: there the interface fails and says why (with ``udhcpc6`` installed
it is expected to lease as well).

Needs root, ``ip``, ``dnsmasq``, ``dhclient``, ``udhcpc`` and, for the
whole rescue, RabbitMQ (``tox -e e2e``); skipped otherwise, a failure under
``CI=true``.
"""

import ipaddress
import os
import re
import shutil
import uuid

import pytest

from rescue_worker import sandbox
from tests.e2e import netns
from tests.e2e.test_network_step import in_node
from tests.e2e.test_network_step import statuses
from tests.functional.conftest import WorkerProcess
from tests.functional.conftest import transport_url
from tests.functional.conftest import wait_ready

TIMEOUT = 8
END = 'rescue_worker.finalize_rescue.end'
DHCPV6_PREFIX = ipaddress.ip_network('2001:db8:1::/64')
SLAAC_PREFIX = ipaddress.ip_network('2001:db8:2::/64')


def has_udhcpc6():
    return shutil.which('udhcpc6') is not None


@pytest.fixture
def lab(tmp_path):
    netns.require(('ip', 'dnsmasq', 'dhclient', 'udhcpc', 'unshare'))
    lab = netns.NetLab(tmp_path / 'lab')
    try:
        netns.ipv6_network(lab)
        yield lab
    finally:
        lab.close()


@pytest.fixture(params=['dhclient', 'udhcpc'])
def backend(request):
    return request.param


@pytest.fixture
def options(tmp_path, backend):
    return {'dhcp_backend': backend, 'dhcp_timeout': TIMEOUT,
            'skip_generated_mac': False,
            'state_dir': str(tmp_path / 'state'),
            'root_dir': str(tmp_path / 'root')}


def in_dhcpv6_range(lab, address):
    first, last = (ipaddress.ip_address(a)
                   for a in lab.links[netns.DHCPV6_LINK].dhcp_range6)
    return first <= ipaddress.ip_address(address) <= last


def duid_bytes(text):
    """dhclient writes 0:1:..., dnsmasq 00:01:...: the same bytes."""
    return [int(part, 16) for part in text.split(':')]


def assert_reported_as_the_kernel_has_them(lab, entries):
    for entry in entries:
        name = entry['name']
        assert entry['ipv4'] == [], entry
        assert sorted(entry['ipv6']) == sorted(
            lab.node.ipv6_addresses(name)), name
        # Past duplicate address detection: usable.
        assert lab.node.ipv6_addresses(name, 'global', 'tentative') == []


def test_each_link_gets_a_global_address_dhcpv6_or_slaac(lab, options,
                                                         backend):
    outcome = in_node(lab, 'step', options)

    assert outcome['error'] is None, outcome['log']
    entries = {entry['name']: entry for entry in outcome['interfaces']}
    assert sorted(entries) == ['eth0', 'eth1']
    assert_reported_as_the_kernel_has_them(lab, outcome['interfaces'])
    # SLAAC: an address in the advertised prefix, leased with no IPv4.
    [slaac] = entries[netns.SLAAC_LINK]['ipv6']
    assert ipaddress.ip_address(slaac) in SLAAC_PREFIX
    assert entries[netns.SLAAC_LINK]['dhcp'] == 'leased'
    managed = entries[netns.DHCPV6_LINK]
    if backend == 'dhclient' or has_udhcpc6():
        # DHCPv6: an address from the server's range, and no SLAAC one
        # (the prefix is not for autonomous configuration).
        assert managed['dhcp'] == 'leased', outcome['log']
        [leased] = managed['ipv6']
        assert in_dhcpv6_range(lab, leased), leased
        lab.dhcp[netns.DHCPV6_LINK].wait_for_log(
            'DHCPREPLY(s-eth0) %s' % leased, 5)
    else:
        assert managed == dict(managed, dhcp='failed', ipv6=[])
        assert ('the router asks for DHCPv6 and udhcpc6 is not installed'
                in outcome['log'])
    # DHCPv4 is not waited for beyond its grace once IPv6 is there.
    assert outcome['elapsed'] < TIMEOUT + 4


@pytest.mark.parametrize('backend', ['dhclient'])
def test_the_keeper_sees_the_dhcpv6_server_and_the_router(lab, options):
    in_node(lab, 'step', options)

    # eth0: the DUID of the DHCPv6 server that leased (dnsmasq's, as it
    # logs it: "option:  2 server-id  00:01:...").
    server = in_node(lab, 'lease_server', options,
                     interface=netns.DHCPV6_LINK)['server']
    [sent] = set(re.findall(r'server-id\s+([0-9a-f:]+)',
                            lab.dhcp[netns.DHCPV6_LINK].log()))
    assert duid_bytes(server) == duid_bytes(sent)
    # eth1 (SLAAC only): the router that advertised, by its link-local
    # address.
    router = in_node(lab, 'lease_server', options,
                     interface=netns.SLAAC_LINK)['server']
    assert router == lab.server.ipv6_addresses('s-eth1', 'link')[0]


@pytest.mark.parametrize('backend', ['dhclient'])
def test_renewing_an_ipv6_only_interface_keeps_its_address(lab, options):
    first = in_node(lab, 'step', options)
    before = {e['name']: e['ipv6'] for e in first['interfaces']}

    for name in (netns.DHCPV6_LINK, netns.SLAAC_LINK):
        outcome = in_node(lab, 'renew', options, interface=name)
        assert outcome['status'] == 'leased', outcome['log']
        assert lab.node.ipv6_addresses(name) == before[name]


def test_no_ipv6_router_and_no_dhcpv4_server_fails_within_dhcp_timeout(
        lab, options, backend):
    for name in list(lab.dhcp):
        lab.stop_dhcp(name)

    outcome = in_node(lab, 'step', options)

    assert outcome['error']['code'] == 'network_failed'
    assert statuses(outcome) == {'eth0': 'failed', 'eth1': 'failed'}
    assert ('IPv6: eth0: no router advertisement; eth1: no router '
            'advertisement') in outcome['error']['message']
    assert outcome['elapsed'] < TIMEOUT + 4


# -- the whole rescue ---------------------------------------------------------

def test_end_reports_a_global_ipv6_address_on_each_link(tmp_path, lab, bus):
    lab.node_url = netns.node_url(lab, transport_url())
    worker = WorkerProcess(
        tmp_path / 'node', lab.node_url, wrap=lab.node.argv,
        dhcp_backend='dhclient', dhcp_timeout=TIMEOUT,
        skip_interfaces='lo,mgmt*', skip_generated_mac=False,
        tenant_renew_period=0, steps='password,account,network,verify')
    sandbox.seed_root(worker.root_dir)
    try:
        worker.start()
        wait_ready(bus, worker)
        request_id = 'req-%s' % uuid.uuid4()
        password = 'tenant-login-%s' % uuid.uuid4()
        worker.secrets.append(password)
        bus.client(worker.node_id).cast(
            {'request_id': request_id}, 'finalize_rescue',
            rescue_password=password, agent_token=worker.token)

        [end] = bus.wait_for(END, request_id=request_id, timeout=120)

        interfaces = {entry['name']: entry for entry in end['interfaces']}
        assert sorted(interfaces) == ['eth0', 'eth1']
        assert {name: entry['dhcp'] for name, entry in interfaces.items()} \
            == {'eth0': 'leased', 'eth1': 'leased'}
        assert_reported_as_the_kernel_has_them(lab, end['interfaces'])
        [leased] = interfaces[netns.DHCPV6_LINK]['ipv6']
        assert in_dhcpv6_range(lab, leased)
        [slaac] = interfaces[netns.SLAAC_LINK]['ipv6']
        assert ipaddress.ip_address(slaac) in SLAAC_PREFIX
        assert [s['status'] for s in end['steps']] == ['done'] * 4
        # Locked down, the keeper has nothing to do (period 0): it exits.
        assert worker.wait(timeout=60) == 0
        assert not os.path.exists(worker.config_file)
    finally:
        worker.kill()
        logged = worker.logs()
        for secret in worker.secrets:
            assert secret not in logged
