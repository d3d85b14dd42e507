"""The tenant network keeper: renew until the leases come from the tenant
network's DHCP server, for a bounded time."""

import threading

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
