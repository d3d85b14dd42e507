"""Interfaces as the worker sees them: listed by netifaces, their MAC type
and carrier read from sysfs, addresses read back, links brought up."""

import json
import os
import subprocess
import sys

import pytest

from rescue_worker.network import interfaces
from tests.unit.network import fakes


@pytest.fixture
def node(tmp_path):
    return fakes.FakeNode(str(tmp_path))


# -- listing -----------------------------------------------------------------

def test_interfaces_are_listed_in_the_kernels_order_with_mac_and_mac_type(
        node):
    node.add('lo', mac='00:00:00:00:00:00')
    node.add('eth0', mac='52:54:00:AB:CD:EF', addr_assign_type=0)
    node.add('veth1', mac='ae:12:00:00:00:01', addr_assign_type=1)
    node.add('tun0', mac='', addr_assign_type=None)

    listed = interfaces.list_interfaces(node.netifaces, node.sysfs)

    assert listed == [
        interfaces.Interface('lo', '00:00:00:00:00:00', 0),
        interfaces.Interface('eth0', '52:54:00:ab:cd:ef', 0),
        interfaces.Interface('veth1', 'ae:12:00:00:00:01', 1),
        interfaces.Interface('tun0', '', None),
    ]
    assert [i.permanent_mac for i in listed] == [True, True, False, None]


def test_an_interface_that_vanished_after_listing_has_no_mac(node):
    node.add('eth0')
    node.netifaces.interfaces = lambda: ['eth0', 'gone0']

    listed = interfaces.list_interfaces(node.netifaces, node.sysfs)

    assert listed[1] == interfaces.Interface('gone0', '', None)


def test_the_real_netifaces_lists_loopback():
    # The default arguments are the real module and /sys.
    names = [i.name for i in interfaces.list_interfaces()]

    assert 'lo' in names


# -- skip rules ---------------------------------------------------------------

def iface(name, addr_assign_type=0):
    return interfaces.Interface(name, '52:54:00:00:00:01', addr_assign_type)


@pytest.mark.parametrize('name, patterns, reason', [
    ('lo', ['lo'], 'skip_interfaces'),
    ('eth0', ['lo'], None),
    ('docker0', ['lo', 'docker*'], 'skip_interfaces'),
    ('virbr0', [' virbr? '], 'skip_interfaces'),
    ('virbr10', ['virbr?'], None),
    ('ETH0', ['eth*'], None),
    ('eth0', [], None),
    ('eth0', [''], None),
])
def test_names_matching_a_glob_of_skip_interfaces_are_skipped(
        name, patterns, reason):
    assert interfaces.skip_reason(iface(name), patterns, False) == reason


@pytest.mark.parametrize('addr_assign_type, skipped', [
    (0, False), (1, True), (2, True), (3, True), (None, False)])
def test_with_skip_generated_mac_only_permanent_or_unknown_macs_are_kept(
        addr_assign_type, skipped):
    reason = interfaces.skip_reason(iface('eth0', addr_assign_type), [],
                                    True)

    assert reason == ('skip_generated_mac' if skipped else None)


def test_without_skip_generated_mac_the_mac_type_does_not_matter():
    assert interfaces.skip_reason(iface('eth0', 1), [], False) is None


def test_a_name_pattern_is_named_before_the_mac_type():
    reason = interfaces.skip_reason(iface('lo', 1), ['lo'], True)

    assert reason == 'skip_interfaces'


# -- carrier -----------------------------------------------------------------

def test_carrier_is_read_from_sysfs(node):
    node.add('eth0', carrier=True)
    node.add('eth1', carrier=False)
    node.add('eth2', carrier=None)   # link down: unreadable

    assert interfaces.has_carrier('eth0', node.sysfs)
    assert not interfaces.has_carrier('eth1', node.sysfs)
    assert not interfaces.has_carrier('eth2', node.sysfs)
    assert not interfaces.has_carrier('nothere', node.sysfs)


class FakeTime:
    """A clock that only moves when slept on; sleeping can run hooks."""

    def __init__(self):
        self.now = 100.0
        self.hooks = {}

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds
        for at, hook in list(self.hooks.items()):
            if self.now >= at:
                del self.hooks[at]
                hook()


def test_watch_carrier_yields_interfaces_as_their_carrier_comes(node):
    node.add('eth0', carrier=True)
    node.add('eth1', carrier=False)
    node.add('eth2', carrier=False)
    fake = FakeTime()
    fake.hooks[101.0] = lambda: node.set_carrier('eth2', True)

    batches = list(interfaces.watch_carrier(
        ['eth0', 'eth1', 'eth2'], 3.0, node.sysfs, 0.5, fake.clock,
        fake.sleep))

    assert batches == [['eth0'], ['eth2']]
    assert fake.now == pytest.approx(103.0)


def test_watch_carrier_ends_at_once_when_every_carrier_is_there(node):
    node.add('eth0', carrier=True)
    node.add('eth1', carrier=True)
    fake = FakeTime()

    batches = list(interfaces.watch_carrier(
        ['eth0', 'eth1'], 10.0, node.sysfs, 0.5, fake.clock, fake.sleep))

    assert batches == [['eth0', 'eth1']]
    assert fake.now == 100.0


def test_watch_carrier_never_sleeps_past_its_bound(node):
    node.add('eth0', carrier=False)
    fake = FakeTime()

    assert list(interfaces.watch_carrier(
        ['eth0'], 1.25, node.sysfs, 1.0, fake.clock, fake.sleep)) == []
    assert fake.now == pytest.approx(101.25)


# -- addresses ----------------------------------------------------------------

def test_addresses_are_ipv4_and_global_ipv6_only(node):
    node.add('eth0', ipv4=['198.18.1.100', '198.18.1.101'],
             ipv6=['fe80::1%eth0', '2001:db8::1', 'fd00::2', '::1',
                   'ff02::1', 'not an address'])

    assert interfaces.addresses('eth0', node.netifaces) == (
        ['198.18.1.100', '198.18.1.101'], ['2001:db8::1', 'fd00::2'])


def test_an_interface_without_addresses_or_gone_has_none(node):
    node.add('eth0')

    assert interfaces.addresses('eth0', node.netifaces) == ([], [])
    assert interfaces.addresses('gone0', node.netifaces) == ([], [])


# -- bringing a link up ------------------------------------------------------

class Runner:
    def __init__(self, returncode=0, stderr='', error=None):
        self.returncode = returncode
        self.stderr = stderr
        self.error = error
        self.argv = None

    def __call__(self, argv, **kwargs):
        self.argv = argv
        self.kwargs = kwargs
        if self.error is not None:
            raise self.error
        return subprocess.CompletedProcess(argv, self.returncode, '',
                                           self.stderr)


def test_ip_runs_without_the_workers_environment(tmp_path, monkeypatch):
    # A real child: an "ip" first on the PATH that writes its environment.
    seen = tmp_path / 'environ.json'
    fake_ip = tmp_path / 'ip'
    fake_ip.write_text('#!%s\nimport json, os\njson.dump(dict(os.environ), '
                       'open(%r, "w"))\n' % (sys.executable, str(seen)))
    fake_ip.chmod(0o700)
    monkeypatch.setenv('PATH', '%s:%s' % (tmp_path, os.environ['PATH']))
    monkeypatch.setenv(*fakes.WORKER_ONLY_VARIABLE)

    interfaces.set_link_up('eth0')

    assert json.loads(seen.read_text()) == {'PATH': os.environ['PATH'],
                                            'LC_ALL': 'C'}


def test_a_link_is_brought_up_with_ip_link_and_a_bound():
    runner = Runner()

    interfaces.set_link_up('eth0', runner)

    assert runner.argv == ['ip', 'link', 'set', 'eth0', 'up']
    assert runner.kwargs['timeout'] == interfaces.LINK_UP_TIMEOUT


def test_a_link_that_will_not_come_up_raises_with_ips_message():
    runner = Runner(2, 'Cannot find device "eth9"\n')

    with pytest.raises(interfaces.LinkError) as info:
        interfaces.set_link_up('eth9', runner)

    assert str(info.value) == ('ip link set eth9 up failed: Cannot find '
                               'device "eth9"')


@pytest.mark.parametrize('error', [
    FileNotFoundError(2, 'No such file or directory'),
    subprocess.TimeoutExpired(['ip'], 10)])
def test_ip_missing_or_hanging_raises_a_link_error(error):
    with pytest.raises(interfaces.LinkError) as info:
        interfaces.set_link_up('eth0', Runner(error=error))

    assert str(info.value).startswith('ip link set eth0 up failed: ')
