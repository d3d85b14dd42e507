"""The network step: which interfaces it configures and what it reports.

Every interface the configuration does not skip is brought up, waits for
its carrier and is handed to the DHCP backend; each one is reported with
its MAC, status and addresses. The step fails only when no interface got a
lease or a configuration, and with ``dhcp_backend = none`` never.

The node here is fake (netifaces and sysfs, see ``tests.unit.network.
fakes``), and so is the backend unless a test says otherwise.
"""

import os

import pytest
from oslo_config import cfg

from rescue_worker import conf as rw_conf
from rescue_worker import errors
from rescue_worker import payloads
from rescue_worker import pipeline
from rescue_worker.network import base
from rescue_worker.network import interfaces as net_interfaces
from rescue_worker.steps import network
from tests.unit.network import fakes

MAC0 = '52:54:00:00:00:10'
MAC1 = '52:54:00:00:00:11'
MAC2 = '52:54:00:00:00:12'
# Before any test shortens it.
CARRIER_TIMEOUT = network.CARRIER_TIMEOUT


@pytest.fixture
def conf(tmp_path):
    conf = cfg.ConfigOpts()
    rw_conf.register_opts(conf)
    configure(conf, root_dir=str(tmp_path / 'root'),
              state_dir=str(tmp_path / 'state'), dhcp_timeout=5)
    return conf


@pytest.fixture(autouse=True)
def short_carrier_wait(monkeypatch):
    """An uncabled interface is given up on after 0.2 s, not 10."""
    monkeypatch.setattr(network, 'CARRIER_TIMEOUT', 0.2)


def configure(conf, **overrides):
    for name, value in overrides.items():
        conf.set_override(name, value, group=rw_conf.GROUP)


@pytest.fixture
def node(tmp_path):
    """lo, and eth0/eth1 with a permanent MAC and a cable."""
    node = fakes.FakeNode(str(tmp_path))
    node.add('lo', mac='00:00:00:00:00:00', ipv4=['127.0.0.1'],
             ipv6=['::1'])
    node.add('eth0', mac=MAC0)
    node.add('eth1', mac=MAC1)
    return node


class Links:
    """``ip link set <if> up``, faked: records the call and, when the
    interface is cabled, gives it a carrier as the kernel would."""

    def __init__(self, node, cabled=('eth0', 'eth1', 'eth2')):
        self.node = node
        self.cabled = set(cabled)
        self.failing = {}
        self.raised = []

    def __call__(self, name):
        self.raised.append(name)
        if name in self.failing:
            raise net_interfaces.LinkError(self.failing[name])
        self.node.set_carrier(name, name in self.cabled)


@pytest.fixture
def links(node):
    return Links(node)


def make_step(conf, node, links, backend):
    return network.NetworkStep(conf, netifaces_module=node.netifaces,
                               sysfs=node.sysfs, backend=backend,
                               link_up=links, poll_interval=0.01)


def run(step):
    state = pipeline.RescueState(username='rescue')
    detail = step.run(pipeline.RescueRequest('req-1', 'pw'), state)
    return state, detail


def failure(step):
    state = pipeline.RescueState(username='rescue')
    with pytest.raises(errors.RescueError) as info:
        step.run(pipeline.RescueRequest('req-1', 'pw'), state)
    return state, info.value


def on_the_wire(state):
    """``state.interfaces`` as the notification carries them."""
    return [entry.to_data() for entry in state.interfaces]


def by_name(state):
    return {entry['name']: entry for entry in on_the_wire(state)}


# -- what is configured and reported ----------------------------------------

def test_the_step_is_registered_as_network(conf):
    step = network.NetworkStep(conf)

    assert step.name == 'network'
    assert isinstance(step, pipeline.Step)


def test_each_interface_is_reported_with_mac_status_and_addresses(
        conf, node, links):
    backend = fakes.FakeBackend(node, addresses={'eth0': '198.18.1.100',
                                                 'eth1': '198.18.2.100'})

    state, detail = run(make_step(conf, node, links, backend))

    assert state.interfaces == [
        payloads.InterfaceReport(name='eth0', mac=MAC0, dhcp='leased',
                                 ipv4=['198.18.1.100'], ipv6=[]),
        payloads.InterfaceReport(name='eth1', mac=MAC1, dhcp='leased',
                                 ipv4=['198.18.2.100'], ipv6=[]),
    ]
    assert on_the_wire(state) == [
        {'name': 'eth0', 'mac': MAC0, 'dhcp': 'leased',
         'ipv4': ['198.18.1.100'], 'ipv6': []},
        {'name': 'eth1', 'mac': MAC1, 'dhcp': 'leased',
         'ipv4': ['198.18.2.100'], 'ipv6': []},
    ]
    assert detail == ('eth0 leased, eth1 leased; 1 skipped by '
                      'configuration: lo (skip_interfaces)')


def test_every_link_is_brought_up_and_handed_to_the_backend_with_the_timeout(
        conf, node, links):
    configure(conf, dhcp_timeout=7)
    backend = fakes.FakeBackend(node)

    run(make_step(conf, node, links, backend))

    assert links.raised == ['eth0', 'eth1']
    assert sorted(backend.configured) == ['eth0', 'eth1']
    assert {timeout for _, timeout in backend.calls} == {7.0}


def test_only_global_ipv6_addresses_are_reported(conf, node, links, tmp_path):
    node.add('eth2', mac=MAC2, ipv6=['fe80::1%eth2', '2001:db8::5',
                                     'fd00::7'])

    state, _ = run(make_step(conf, node, links, fakes.FakeBackend(node)))

    assert by_name(state)['eth2']['ipv6'] == ['2001:db8::5', 'fd00::7']


def test_an_interface_with_only_an_ipv6_address_counts_as_leased(
        conf, node, links):
    # What the dhclient and udhcpc backends report for an IPv6-only
    # network: leased, no IPv4.
    backend = fakes.FakeBackend(node, addresses={'eth0': '2001:db8:2::5'},
                                results={'eth1': payloads.DHCP_FAILED})

    state, detail = run(make_step(conf, node, links, backend))

    assert by_name(state)['eth0'] == {
        'name': 'eth0', 'mac': MAC0, 'dhcp': 'leased', 'ipv4': [],
        'ipv6': ['2001:db8:2::5']}
    assert detail.startswith('eth0 leased, eth1 failed')


# -- skip rules ------------------------------------------------------------

def test_interfaces_skipped_by_name_are_left_alone_and_not_reported(
        conf, node, links):
    node.add('docker0', mac=MAC2)
    configure(conf, skip_interfaces=['lo', 'docker*', 'virbr?'])
    backend = fakes.FakeBackend(node)

    state, detail = run(make_step(conf, node, links, backend))

    assert [entry.name for entry in state.interfaces] == ['eth0', 'eth1']
    assert 'docker0' not in links.raised
    assert 'docker0' not in backend.configured
    assert detail.endswith('2 skipped by configuration: lo, docker0 '
                           '(skip_interfaces)')


def test_lo_is_configured_when_removed_from_skip_interfaces(conf, node,
                                                            links):
    configure(conf, skip_interfaces=[])
    links.cabled.add('lo')

    state, _ = run(make_step(conf, node, links, fakes.FakeBackend(node)))

    assert [entry.name for entry in state.interfaces] == ['lo', 'eth0',
                                                             'eth1']


@pytest.mark.parametrize('addr_assign_type', [1, 2, 3])
def test_an_interface_whose_mac_is_not_permanent_is_skipped(
        conf, node, links, addr_assign_type):
    node.add('veth9', mac=MAC2, addr_assign_type=addr_assign_type)
    links.cabled.add('veth9')
    backend = fakes.FakeBackend(node)

    state, detail = run(make_step(conf, node, links, backend))

    assert 'veth9' not in by_name(state)
    assert 'veth9' not in links.raised
    assert 'veth9 (skip_generated_mac: MAC not permanent)' in detail


def test_generated_macs_are_kept_when_skip_generated_mac_is_off(
        conf, node, links):
    configure(conf, skip_generated_mac=False)
    node.add('veth9', mac=MAC2, addr_assign_type=1)
    links.cabled.add('veth9')

    state, _ = run(make_step(conf, node, links, fakes.FakeBackend(node)))

    assert by_name(state)['veth9']['dhcp'] == 'leased'


def test_an_interface_whose_kernel_does_not_tell_the_mac_type_is_kept(
        conf, node, links):
    node.add('eth2', mac=MAC2, addr_assign_type=None)

    state, _ = run(make_step(conf, node, links, fakes.FakeBackend(node)))

    assert by_name(state)['eth2']['dhcp'] == 'leased'


# -- carrier -----------------------------------------------------------------

def test_an_interface_without_carrier_is_reported_not_configured(
        conf, node, links):
    node.add('eth2', mac=MAC2)
    links.cabled.discard('eth2')
    backend = fakes.FakeBackend(node)

    state, detail = run(make_step(conf, node, links, backend))

    assert by_name(state)['eth2'] == {'name': 'eth2', 'mac': MAC2,
                                      'dhcp': 'no_carrier', 'ipv4': [],
                                      'ipv6': []}
    assert 'eth2' not in backend.configured
    assert detail.startswith('eth0 leased, eth1 leased, eth2 no_carrier;')


def test_the_carrier_wait_is_ten_seconds_or_dhcp_timeout_if_shorter(
        conf, node, links, monkeypatch):
    # As long as diskimage-builder's dhcp-all-interfaces gives a NIC.
    assert CARRIER_TIMEOUT == 10.0
    monkeypatch.setattr(network, 'CARRIER_TIMEOUT', CARRIER_TIMEOUT)
    waits = []
    real = net_interfaces.watch_carrier

    def watch_carrier(names, timeout, *args, **kwargs):
        waits.append(timeout)
        return real(names, timeout, *args, **kwargs)

    monkeypatch.setattr(net_interfaces, 'watch_carrier', watch_carrier)
    step = make_step(conf, node, links, fakes.FakeBackend(node))

    for dhcp_timeout in (30, 10, 3):
        configure(conf, dhcp_timeout=dhcp_timeout)
        run(step)

    assert waits == [10.0, 10.0, 3.0]


def test_an_interface_whose_carrier_comes_later_is_configured_then(
        conf, node, links):
    # eth1's cable is plugged while eth0 is being configured: eth0 must
    # not wait for it, and eth1 is still configured.
    links.cabled.discard('eth1')
    backend = fakes.FakeBackend(
        node, on_configure=lambda names: node.set_carrier('eth1', True))

    state, _ = run(make_step(conf, node, links, backend))

    assert [names for names, _ in backend.calls] == [['eth0'], ['eth1']]
    assert by_name(state)['eth1']['dhcp'] == 'leased'


# -- success and failure ------------------------------------------------------

def test_one_interface_leased_is_enough(conf, node, links):
    backend = fakes.FakeBackend(node, results={'eth1': payloads.DHCP_FAILED})

    state, detail = run(make_step(conf, node, links, backend))

    assert by_name(state)['eth0']['dhcp'] == 'leased'
    assert by_name(state)['eth1']['dhcp'] == 'failed'
    assert detail.startswith('eth0 leased, eth1 failed')


def test_it_fails_when_no_interface_got_a_lease_and_says_what_to_check(
        conf, node, links):
    node.add('eth2', mac=MAC2)
    links.cabled.discard('eth2')
    backend = fakes.FakeBackend(node, results={'eth0': payloads.DHCP_FAILED,
                                               'eth1': payloads.DHCP_FAILED})

    state, exc = failure(make_step(conf, node, links, backend))

    assert exc.code == errors.NETWORK_FAILED
    assert exc.message == (
        'no interface got a DHCP lease or configuration (eth0 failed, '
        'eth1 failed, eth2 no_carrier): fake: nothing answered on eth0, '
        'eth1; no carrier on eth2 within 0.2 s; check the cabling and that '
        'the switch ports are enabled; skipped by configuration: lo '
        '(skip_interfaces)')
    # The report is there all the same.
    assert [(e.name, e.dhcp) for e in state.interfaces] == [
        ('eth0', 'failed'), ('eth1', 'failed'), ('eth2', 'no_carrier')]


def test_it_fails_when_no_interface_has_a_carrier(conf, node, links):
    links.cabled.clear()
    backend = fakes.FakeBackend(node)

    state, exc = failure(make_step(conf, node, links, backend))

    assert exc.code == errors.NETWORK_FAILED
    assert 'no carrier on eth0, eth1 within 0.2 s' in exc.message
    assert backend.calls == []
    assert {e.dhcp for e in state.interfaces} == {'no_carrier'}


def test_a_configured_interface_counts_as_success(conf, node, links):
    backend = fakes.FakeBackend(node,
                                results={'eth0': payloads.DHCP_CONFIGURED,
                                         'eth1': payloads.DHCP_FAILED})

    state, _ = run(make_step(conf, node, links, backend))

    assert by_name(state)['eth0']['dhcp'] == 'configured'


def test_a_link_that_cannot_be_brought_up_is_failed_and_named(
        conf, node, links):
    links.failing['eth1'] = 'ip link set eth1 up failed: No such device'
    backend = fakes.FakeBackend(node, results={'eth0': payloads.DHCP_FAILED})

    state, exc = failure(make_step(conf, node, links, backend))

    assert by_name(state)['eth1']['dhcp'] == 'failed'
    assert 'eth1' not in backend.configured
    assert ('could not bring up eth1 (ip link set eth1 up failed: No such '
            'device)') in exc.message


def test_a_backend_that_cannot_work_fails_the_step_with_its_message(
        conf, node, links):
    backend = fakes.FakeBackend(node, error=base.BackendError(
        'dhclient is not installed'))

    state, exc = failure(make_step(conf, node, links, backend))

    assert exc.code == errors.NETWORK_FAILED
    assert 'dhclient is not installed' in exc.message
    assert {e.dhcp for e in state.interfaces} == {'failed'}


def test_an_unexpected_backend_error_fails_the_interfaces_not_the_worker(
        conf, node, links):
    backend = fakes.FakeBackend(node, error=RuntimeError('bug'))

    state, exc = failure(make_step(conf, node, links, backend))

    assert exc.code == errors.NETWORK_FAILED
    assert 'the fake backend failed unexpectedly' in exc.message
    assert {e.dhcp for e in state.interfaces} == {'failed'}


def test_it_fails_when_the_configuration_skips_every_interface(
        conf, node, links):
    configure(conf, skip_interfaces=['*'])

    state, exc = failure(make_step(conf, node, links,
                                   fakes.FakeBackend(node)))

    assert state.interfaces == []
    assert exc.code == errors.NETWORK_FAILED
    assert exc.message == (
        'no network interface to configure: all were skipped by '
        'configuration: lo, eth0, eth1 (skip_interfaces); adjust '
        '[rescue_worker] skip_interfaces or skip_generated_mac')


def test_it_fails_when_the_node_has_no_interface(conf, tmp_path, links):
    empty = fakes.FakeNode(str(tmp_path / 'empty'))

    _, exc = failure(make_step(conf, empty, Links(empty),
                               fakes.FakeBackend(empty)))

    assert exc.message.startswith('no network interface found')


# -- dhcp_backend = none ------------------------------------------------------

def test_backend_none_reports_every_interface_as_skipped_and_touches_nothing(
        conf, node, links):
    configure(conf, dhcp_backend='none')
    node.set_ipv4('eth0', '198.18.9.9')

    state, detail = run(make_step(conf, node, links, None))

    assert on_the_wire(state) == [
        {'name': 'eth0', 'mac': MAC0, 'dhcp': 'skipped',
         'ipv4': ['198.18.9.9'], 'ipv6': []},
        {'name': 'eth1', 'mac': MAC1, 'dhcp': 'skipped', 'ipv4': [],
         'ipv6': []},
    ]
    assert links.raised == []
    assert detail == ('dhcp_backend = none: reported eth0, eth1 without '
                      'configuring; 1 skipped by configuration: lo '
                      '(skip_interfaces)')


@pytest.mark.parametrize('skip', [['lo'], ['*']])
def test_backend_none_never_fails(conf, node, links, skip):
    configure(conf, dhcp_backend='none', skip_interfaces=skip)
    links.cabled.clear()

    run(make_step(conf, node, links, None))


def test_backend_none_never_fails_on_a_node_without_interfaces(conf,
                                                               tmp_path):
    configure(conf, dhcp_backend='none')
    empty = fakes.FakeNode(str(tmp_path / 'empty'))

    state, detail = run(make_step(conf, empty, Links(empty), None))

    assert state.interfaces == []
    assert detail == 'dhcp_backend = none: reported no interface without ' \
        'configuring'


# -- the backend comes from dhcp_backend ------------------------------------

def test_backend_networkd_writes_a_network_file_per_interface(
        conf, node, links, tmp_path):
    configure(conf, dhcp_backend='networkd')
    node.add('eth2', mac=MAC2)
    links.cabled.discard('eth2')

    state, detail = run(make_step(conf, node, links, None))

    directory = tmp_path / 'root' / 'etc' / 'systemd' / 'network'
    assert sorted(os.listdir(directory)) == ['50-rescue-eth0.network',
                                             '50-rescue-eth1.network']
    assert [(e.name, e.dhcp) for e in state.interfaces] == [
        ('eth0', 'configured'), ('eth1', 'configured'),
        ('eth2', 'no_carrier')]
