"""The tenant network keeper: renew until the leases come from the tenant
network's DHCP server, for a bounded time."""

import threading
import types

import pytest

from rescue_worker import payloads
from rescue_worker.network import base
from rescue_worker.network import keeper


class SwitchingBackend(base.DhcpBackend):
    """Leases from the rescuing server until the ``switch_after``-th renewal,
    from the tenant server after it."""

    name = 'switching'

    def __init__(self, switch_after=None, tenant_for=('eth0', 'eth1')):
        self.switch_after = switch_after
        self.tenant_for = tenant_for
        self.renewed = []

    def configure(self, interfaces, timeout):
        return dict.fromkeys(interfaces, payloads.DHCP_LEASED)

    def renew(self, interface, timeout):
        self.renewed.append(interface)
        return payloads.DHCP_LEASED

    def lease_server(self, interface):
        rounds = self.renewed.count(interface)
        if (self.switch_after is not None and rounds >= self.switch_after
                and interface in self.tenant_for):
            return '198.19.0.1'
        return '198.18.0.1'


def make(backend, interfaces=('eth0', 'eth1'), period=30.0, stop=None):
    return keeper.TenantNetworkKeeper(backend, interfaces, interval=0.01,
                                      period=period, renew_timeout=1,
                                      stop_event=stop)


def test_stops_once_every_interface_leases_from_another_server():
    backend = SwitchingBackend(switch_after=2)

    result = make(backend).run()

    assert result == keeper.MOVED
    assert sorted(backend.renewed) == ['eth0', 'eth0', 'eth1', 'eth1']


def test_one_interface_still_on_the_rescuing_network_keeps_it_going():
    backend = SwitchingBackend(switch_after=1, tenant_for=('eth0',))

    result = make(backend, period=0.2).run()

    assert result == keeper.PERIOD_OVER
    assert backend.renewed.count('eth1') >= 1


def test_gives_up_when_the_period_is_over():
    backend = SwitchingBackend(switch_after=None)

    assert make(backend, period=0.1).run() == keeper.PERIOD_OVER


def test_a_stop_request_ends_it_at_once():
    stop = threading.Event()
    stop.set()
    backend = SwitchingBackend(switch_after=None)

    assert make(backend, stop=stop).run() == keeper.STOPPED
    assert backend.renewed == []


def test_nothing_to_keep_without_leased_interfaces_or_period():
    backend = SwitchingBackend(switch_after=1)

    assert make(backend, interfaces=()).run() == keeper.NOTHING_TO_DO
    assert make(backend, period=0).run() == keeper.NOTHING_TO_DO
    assert backend.renewed == []


def test_the_rescuing_servers_are_read_before_the_first_renewal():
    backend = SwitchingBackend(switch_after=1)
    keeper_ = make(backend)

    keeper_.run()

    assert keeper_.rescuing_servers == {'eth0': '198.18.0.1',
                                        'eth1': '198.18.0.1'}


class Clock:
    """Time that passes only when the keeper waits or a renewal takes it:
    ``monotonic`` for the keeper's module, ``wait`` for its stop event."""

    def __init__(self):
        self.now = 0.0

    def monotonic(self):
        return self.now

    def wait(self, timeout):
        self.now += timeout
        return False


class SlowBackend(SwitchingBackend):
    """Each renewal takes ``duration`` seconds of the clock."""

    def __init__(self, clock, duration, switch_after):
        super().__init__(switch_after=switch_after)
        self.clock = clock
        self.duration = duration
        self.started = []

    def renew(self, interface, timeout):
        if interface == 'eth0':
            self.started.append(self.clock.now)
            self.clock.now += self.duration
        return super().renew(interface, timeout)


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(keeper, 'time', types.SimpleNamespace(
        monotonic=clock.monotonic))
    return clock


def run_slow(clock, duration):
    backend = SlowBackend(clock, duration, switch_after=3)
    result = keeper.TenantNetworkKeeper(
        backend, ['eth0'], interval=10, period=600, renew_timeout=10,
        stop_event=clock).run()
    assert result == keeper.MOVED
    return backend.started


def test_renewals_start_every_interval_however_long_they_take(clock):
    # The tenant network comes within one interval of a flip, and the
    # renewal that finds it: a renewal taking 4 s does not push the next
    # one back by 4 s.
    assert run_slow(clock, 4) == [10, 20, 30]


def test_a_renewal_longer_than_the_interval_is_followed_at_once(clock):
    assert run_slow(clock, 12) == [10, 22, 34]


@pytest.mark.parametrize('dhcp_timeout, interval, expected', [
    (30, 10, 10),   # the defaults: a renewal takes at most the interval
    (8, 2, 2),
    (5, 10, 5),     # nor longer than a lease may take
    (30, 1, 2),     # but has room for the old server's answer, then a
                    # new server's
])
def test_a_renewal_may_take_the_interval_or_what_it_needs(
        dhcp_timeout, interval, expected):
    assert keeper.renew_timeout(dhcp_timeout, interval) == expected
    assert keeper.renew_timeout(dhcp_timeout, interval) >= \
        2 * base.RENEW_ANSWER_WAIT
