"""IPv6 beside IPv4: router advertisements read off the wire, the kernel's
settings and addresses, and how long an interface waits for what.

No socket, no /proc of the machine: a fake solicitor answers (or not) on a
fake clock, and /proc/net/if_inet6 and /proc/sys/net/ipv6/conf are files in
the test's directory. The real ones are exercised by ``tests/e2e``.
"""

import ipaddress
import json
import struct
import threading
import time

import pytest

from rescue_worker import payloads
from rescue_worker.network import ipv6

ROUTER = 'fe80::1'


def prefix_option(prefix, flags=ipv6.PREFIX_ON_LINK | ipv6.PREFIX_AUTONOMOUS,
                  valid=86400, preferred=14400):
    network = ipaddress.ip_network(prefix)
    return (bytes([ipv6.OPTION_PREFIX, 4, network.prefixlen, flags]) +
            struct.pack('!III', valid, preferred, 0) +
            network.network_address.packed)


def advertisement(managed=False, other=False, lifetime=1800, options=b''):
    flags = (ipv6.RA_MANAGED if managed else 0) | (ipv6.RA_OTHER if other
                                                   else 0)
    return (bytes([ipv6.ICMPV6_ROUTER_ADVERTISEMENT, 0, 0, 0, 64, flags]) +
            struct.pack('!HII', lifetime, 0, 0) + options)


# -- parsing ------------------------------------------------------------------

def test_a_slaac_advertisement():
    data = advertisement(options=(
        prefix_option('2001:db8:2::/64') +
        bytes([ipv6.OPTION_MTU, 1, 0, 0]) + struct.pack('!I', 1400) +
        bytes([1, 1, 2, 0, 0, 0, 0, 1])))  # source link-layer address

    ra = ipv6.parse_router_advertisement(data, 'fe80::1%eth0')

    assert ra.router == ROUTER
    assert (ra.managed, ra.other, ra.router_lifetime, ra.mtu) == (
        False, False, 1800, 1400)
    assert ra.slaac_prefixes == [ipaddress.ip_network('2001:db8:2::/64')]
    assert ra.describe() == 'router fe80::1, SLAAC on 2001:db8:2::/64'


def test_a_managed_advertisement_forms_no_address():
    data = advertisement(managed=True, other=True, options=prefix_option(
        '2001:db8:1::/64', flags=ipv6.PREFIX_ON_LINK))

    ra = ipv6.parse_router_advertisement(data, ROUTER)

    assert (ra.managed, ra.other) == (True, True)
    [prefix] = ra.prefixes
    assert prefix.on_link and not prefix.autonomous
    assert ra.slaac_prefixes == []
    assert ra.describe() == 'router fe80::1, managed (DHCPv6)'


@pytest.mark.parametrize('option', [
    prefix_option('2001:db8:3::/48'),          # not a /64
    prefix_option('2001:db8:4::/64', valid=0),  # withdrawn
])
def test_prefixes_the_kernel_forms_no_address_from_are_left_out(option):
    ra = ipv6.parse_router_advertisement(advertisement(options=option),
                                         ROUTER)

    assert len(ra.prefixes) == 1
    assert ra.slaac_prefixes == []


@pytest.mark.parametrize('data', [
    b'',
    advertisement()[:15],
    bytes([ipv6.ICMPV6_ROUTER_SOLICITATION]) + advertisement()[1:],
    advertisement(options=bytes([3, 0, 0, 0, 0, 0, 0, 0])),  # zero length
    advertisement(options=bytes([3, 4]) + bytes(6)),          # truncated
])
def test_anything_else_is_no_advertisement(data):
    assert ipv6.parse_router_advertisement(data, ROUTER) is None


# -- the kernel's side --------------------------------------------------------

IF_INET6 = '''\
00000000000000000000000000000001 01 80 10 80       lo
fe800000000000004866171ffece0b18 02 40 20 80     eth0
20010db8000100000000000000000100 02 80 00 00     eth0
20010db8000200004866171ffece0b18 02 40 00 40     eth0
fe80000000000000d0abd7fffedb622c 03 40 20 c0     eth1
'''


def test_addresses_are_read_with_their_scope_and_flags(tmp_path):
    path = tmp_path / 'if_inet6'
    path.write_text(IF_INET6)

    found = ipv6.read_addresses('eth0', str(path))

    assert [(str(a.address), a.prefixlen, a.is_global, a.usable)
            for a in found] == [
        ('fe80::4866:171f:fece:b18', 64, False, True),
        ('2001:db8:1::100', 128, True, True),
        ('2001:db8:2:0:4866:171f:fece:b18', 64, True, False),  # tentative
    ]
    assert ipv6.usable_global('eth0', str(path)) == ['2001:db8:1::100']
    assert ipv6.usable_global('eth1', str(path)) == []
    assert ipv6.read_addresses('eth0', str(tmp_path / 'none')) == []


@pytest.fixture
def proc_sys(tmp_path):
    directory = tmp_path / 'conf' / 'eth0'
    directory.mkdir(parents=True)
    for name, value in (('disable_ipv6', '1'), ('accept_ra', '0'),
                        ('autoconf', '1')):
        (directory / name).write_text(value + '\n')
    return tmp_path / 'conf'


def test_enable_has_the_kernel_take_advertisements(proc_sys):
    ipv6.enable('eth0', str(proc_sys))

    assert {name: (proc_sys / 'eth0' / name).read_text().strip()
            for name in ('disable_ipv6', 'accept_ra', 'autoconf')} == {
        'disable_ipv6': '0', 'accept_ra': '2', 'autoconf': '1'}


def test_without_ipv6_in_the_kernel_enable_says_so(proc_sys):
    with pytest.raises(ipv6.Ipv6Unavailable) as info:
        ipv6.enable('eth9', str(proc_sys))

    assert 'the kernel has no IPv6 for eth9' in str(info.value)


# -- Autoconf -----------------------------------------------------------------

class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


class FakeSolicitor:
    """Answers with ``advertisement`` at ``answer_at`` (fake clock), if
    ever; ``send`` fails until ``ready_at`` (link-local tentative)."""

    def __init__(self, clock, advertisement=None, answer_at=None,
                 ready_at=None, on_send=None):
        self.clock = clock
        self.advertisement = advertisement
        self.answer_at = answer_at
        self.ready_at = ready_at
        self.on_send = on_send
        self.sent = []
        self.closed = False

    def __call__(self, interface):
        self.interface = interface
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.closed = True

    def send(self):
        if self.ready_at is not None and self.clock() < self.ready_at:
            return False
        self.sent.append(self.clock())
        if self.on_send is not None:
            self.on_send()
        return True

    def receive(self, timeout):
        if self.answer_at is not None and \
                self.clock() + timeout >= self.answer_at:
            self.clock.now = max(self.clock(), self.answer_at)
            return ipv6.parse_router_advertisement(self.advertisement,
                                                   ROUTER)
        self.clock.now += timeout
        return None


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def if_inet6(tmp_path):
    path = tmp_path / 'if_inet6'
    path.write_text('fe800000000000004866171ffece0b18 02 40 20 80     eth0\n')
    return path


def make_autoconf(tmp_path, proc_sys, if_inet6, clock, solicitor):
    return ipv6.Autoconf(state_dir=str(tmp_path / 'state'),
                         proc_sys=str(proc_sys), if_inet6=str(if_inet6),
                         solicitor=solicitor, clock=clock,
                         sleep=clock.sleep)


def leased_ipv4():
    progress = ipv6.Ipv4Progress()
    progress.finish(True)
    return progress


def test_on_a_network_without_router_a_leased_interface_waits_briefly(
        tmp_path, proc_sys, if_inet6, clock):
    solicitor = FakeSolicitor(clock, ready_at=1001.0)
    autoconf = make_autoconf(tmp_path, proc_sys, if_inet6, clock, solicitor)

    outcome = autoconf.run('eth0', 30, leased_ipv4(), None)

    assert outcome.advertisement is None and not outcome.leased
    # The first solicitation once the link-local address was usable, a
    # second after 1 s; given up RA_REPLY_WAIT after the first.
    assert solicitor.sent == pytest.approx([1001.0, 1002.0])
    assert clock() == pytest.approx(1001.0 + ipv6.RA_REPLY_WAIT)
    assert solicitor.closed
    assert outcome.describe() == 'no router advertisement'


def test_without_ipv4_it_waits_for_a_router_until_the_timeout(
        tmp_path, proc_sys, if_inet6, clock):
    solicitor = FakeSolicitor(clock)
    autoconf = make_autoconf(tmp_path, proc_sys, if_inet6, clock, solicitor)

    outcome = autoconf.run('eth0', 12, ipv6.Ipv4Progress(), None)

    assert outcome.advertisement is None
    assert clock() == pytest.approx(1012.0)
    # Solicitations at 0 and 1 s, then every 4 s.
    assert solicitor.sent == pytest.approx([1000.0, 1001.0, 1005.0,
                                            1009.0])


def test_a_leased_interface_whose_link_local_never_gets_usable_gives_up(
        tmp_path, proc_sys, if_inet6, clock):
    solicitor = FakeSolicitor(clock, ready_at=2000.0)
    autoconf = make_autoconf(tmp_path, proc_sys, if_inet6, clock, solicitor)

    outcome = autoconf.run('eth0', 30, leased_ipv4(), None)

    assert outcome.advertisement is None and solicitor.sent == []
    assert clock() == pytest.approx(1000.0 + ipv6.LINK_LOCAL_WAIT, abs=0.2)


def test_slaac_waits_until_the_kernels_address_is_usable(
        tmp_path, proc_sys, if_inet6, clock):
    ra = advertisement(options=prefix_option('2001:db8:2::/64'))
    solicitor = FakeSolicitor(clock, ra, answer_at=1000.5)
    autoconf = make_autoconf(tmp_path, proc_sys, if_inet6, clock, solicitor)
    tentative = '20010db8000200004866171ffece0b18 02 40 00 40     eth0\n'
    usable = tentative.replace(' 40     eth0', ' 00     eth0')
    steps = iter([tentative, tentative, usable])

    def sleep(seconds):
        clock.sleep(seconds)
        if_inet6.write_text(if_inet6.read_text().split('\n')[0] + '\n' +
                            next(steps, usable))

    autoconf.sleep = sleep

    outcome = autoconf.run('eth0', 30, ipv6.Ipv4Progress(), None)

    assert outcome.addresses == ['2001:db8:2:0:4866:171f:fece:b18']
    assert outcome.leased and outcome.dhcpv6 is None
    assert outcome.describe() == ('router fe80::1, SLAAC on 2001:db8:2::/64: '
                                  '2001:db8:2:0:4866:171f:fece:b18')
    # The router is recorded for the keeper.
    assert autoconf.recorded_router('eth0') == ROUTER
    with open(autoconf.router_file('eth0')) as f:
        assert json.load(f)['prefixes'] == ['2001:db8:2::/64']
    assert {name: (proc_sys / 'eth0' / name).read_text().strip()
            for name in ('disable_ipv6', 'accept_ra')} == {
        'disable_ipv6': '0', 'accept_ra': '2'}


def test_managed_runs_the_dhcpv6_client_with_the_time_left(
        tmp_path, proc_sys, if_inet6, clock):
    ra = advertisement(managed=True, options=prefix_option(
        '2001:db8:1::/64', flags=ipv6.PREFIX_ON_LINK))
    solicitor = FakeSolicitor(clock, ra, answer_at=1002.0)
    autoconf = make_autoconf(tmp_path, proc_sys, if_inet6, clock, solicitor)
    calls = []

    def dhcpv6(interface, seconds):
        calls.append((interface, seconds))
        with open(if_inet6, 'a') as f:
            f.write('20010db8000100000000000000000100 02 80 00 00     eth0\n')
        return payloads.DHCP_LEASED, None

    outcome = autoconf.run('eth0', 30, ipv6.Ipv4Progress(), dhcpv6)

    assert calls == [('eth0', pytest.approx(28.0))]
    assert outcome.dhcpv6 == payloads.DHCP_LEASED
    assert outcome.addresses == ['2001:db8:1::100']


def test_managed_without_a_dhcpv6_client_says_so(tmp_path, proc_sys,
                                                 if_inet6, clock):
    ra = advertisement(managed=True)
    solicitor = FakeSolicitor(clock, ra, answer_at=1000.0)
    autoconf = make_autoconf(tmp_path, proc_sys, if_inet6, clock, solicitor)

    outcome = autoconf.run('eth0', 30, ipv6.Ipv4Progress(),
                           lambda name, seconds: (payloads.DHCP_FAILED,
                                                  'udhcpc6 is missing'))

    assert not outcome.leased
    assert outcome.describe() == ('router fe80::1, managed (DHCPv6), DHCPv6 '
                                  'failed: no address (udhcpc6 is missing)')


def test_without_ipv6_in_the_kernel_the_interface_goes_on_without(
        tmp_path, proc_sys, if_inet6, clock):
    autoconf = make_autoconf(tmp_path, proc_sys, if_inet6, clock,
                             FakeSolicitor(clock))

    outcome = autoconf.run('eth9', 30, ipv6.Ipv4Progress(), None)

    assert not outcome.leased
    assert 'the kernel has no IPv6 for eth9' in outcome.problem


def test_a_socket_that_cannot_be_opened_is_no_ipv6(tmp_path, proc_sys,
                                                   if_inet6, clock):
    def refuse(interface):
        raise PermissionError(1, 'Operation not permitted')

    autoconf = make_autoconf(tmp_path, proc_sys, if_inet6, clock, refuse)

    outcome = autoconf.run('eth0', 30, ipv6.Ipv4Progress(), None)

    assert outcome.problem == '[Errno 1] Operation not permitted'


# -- IPv4 and IPv6 side by side ----------------------------------------------

class StubAutoconf:
    def __init__(self, outcome=None, error=None, wait=None):
        self.outcome = outcome or ipv6.AutoconfResult()
        self.error = error
        self.wait = wait
        self.progress = None

    def run(self, interface, timeout, progress, dhcpv6):
        self.progress = progress
        if self.wait is not None:
            self.wait.wait(5)
        if self.error is not None:
            raise self.error
        return self.outcome


def test_without_autoconf_only_ipv4_runs():
    events = []

    status, outcome = ipv6.configure_interface(
        'eth0', 5,
        lambda give_up: events.append(give_up) or payloads.DHCP_LEASED,
        None, None)

    assert (status, outcome) == (payloads.DHCP_LEASED, None)
    assert not events[0].is_set()


@pytest.mark.parametrize('status4, addresses, expected', [
    (payloads.DHCP_LEASED, [], payloads.DHCP_LEASED),
    (payloads.DHCP_FAILED, ['2001:db8:2::5'], payloads.DHCP_LEASED),
    (payloads.DHCP_FAILED, [], payloads.DHCP_FAILED),
])
def test_an_interface_is_leased_when_either_family_got_an_address(
        status4, addresses, expected):
    autoconf = StubAutoconf(ipv6.AutoconfResult(addresses=addresses))

    status, outcome = ipv6.configure_interface(
        'eth0', 5, lambda give_up: status4, autoconf, None)

    assert status == expected
    assert outcome.addresses == addresses
    assert autoconf.progress.done
    assert autoconf.progress.leased == (status4 == payloads.DHCP_LEASED)


def test_ipv4_is_given_up_once_ipv6_is_there_and_it_had_its_grace(
        monkeypatch):
    monkeypatch.setattr(ipv6, 'IPV4_GRACE', 0.2)
    autoconf = StubAutoconf(ipv6.AutoconfResult(addresses=['2001:db8:2::5']))
    given_up = []

    def lease4(give_up):
        started = time.monotonic()
        assert give_up.wait(5), 'never given up'
        given_up.append(time.monotonic() - started)
        return payloads.DHCP_FAILED

    status, _ = ipv6.configure_interface('eth0', 30, lease4, autoconf, None)

    assert status == payloads.DHCP_LEASED
    assert 0.1 < given_up[0] < 2


def test_an_unexpected_ipv6_error_leaves_ipv4_as_it_is():
    autoconf = StubAutoconf(error=RuntimeError('boom'))

    status, outcome = ipv6.configure_interface(
        'eth0', 5, lambda give_up: payloads.DHCP_LEASED, autoconf, None)

    assert status == payloads.DHCP_LEASED
    assert outcome.problem == 'IPv6 failed unexpectedly: boom'


def test_ipv4_and_ipv6_run_at_the_same_time():
    both = threading.Barrier(2, timeout=5)
    autoconf = StubAutoconf(ipv6.AutoconfResult(addresses=['2001:db8:2::5']))
    autoconf.run = lambda *args: both.wait() is not None and \
        ipv6.AutoconfResult(addresses=['2001:db8:2::5'])

    status, _ = ipv6.configure_interface(
        'eth0', 5,
        lambda give_up: both.wait() is not None and payloads.DHCP_LEASED,
        autoconf, None)

    assert status == payloads.DHCP_LEASED


def test_the_hint_names_what_ipv6_came_to_per_interface():
    assert ipv6.hint(['eth0', 'eth1'], {'eth1': 'router fe80::1: no '
                                                'address'}) == (
        'eth0: no router advertisement; eth1: router fe80::1: no address')
