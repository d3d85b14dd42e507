"""The tenant network keeper: runs after lockdown, with no RPC.

The conductor moves the node's ports from the rescuing network to the tenant
network only after ``end``, usually without a link flap, so the leases just
taken point at the wrong network. The keeper renews every leased interface
every ``tenant_renew_interval`` seconds, for up to ``tenant_renew_period``,
and stops early once each one holds a lease from a server other than the one
it had on the rescuing network.

Renewals start every ``interval`` seconds, counted from the start of the
previous one (a renewal that takes a while does not push the next one
back), and each one that its old server does not answer looks for a new
server at once (``base.DhcpBackend.renew``): the tenant network's addresses
are there within ``interval`` + ``base.RENEW_ANSWER_WAIT`` + about 1 s of
the flip.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from concurrent import futures

from rescue_worker.network import base

LOG = logging.getLogger(__name__)

MOVED = 'moved'          # every interface leases from a new server
PERIOD_OVER = 'period_over'
STOPPED = 'stopped'      # asked to stop (SIGTERM)
NOTHING_TO_DO = 'nothing_to_do'


def renew_timeout(dhcp_timeout: float, interval: float) -> float:
    """Seconds one renewal of one interface may take: no longer than a
    lease may take (``dhcp_timeout``) nor, as a rule, than the interval,
    but long enough for the old server's answer (``RENEW_ANSWER_WAIT``)
    and then a new server's."""
    return max(min(dhcp_timeout, interval), 2 * base.RENEW_ANSWER_WAIT)


class TenantNetworkKeeper:
    def __init__(self, backend: base.DhcpBackend, interfaces: Sequence[str],
                 interval: float, period: float, renew_timeout: float,
                 stop_event: threading.Event | None = None) -> None:
        self.backend = backend
        self.interfaces = list(interfaces)
        self.interval = interval
        self.period = period
        self.renew_timeout = renew_timeout
        self.stop_event = stop_event or threading.Event()
        #: interface -> the rescuing network's DHCP server
        self.rescuing_servers: dict[str, str | None] = {}
        self.renewals = 0

    def current_servers(self) -> dict[str, str | None]:
        return {name: self.backend.lease_server(name)
                for name in self.interfaces}

    def moved(self, servers: dict[str, str | None]) -> bool:
        return all(servers[name] is not None
                   and servers[name] != self.rescuing_servers[name]
                   for name in self.interfaces)

    def _renew_all(self) -> None:
        with futures.ThreadPoolExecutor(
                max_workers=len(self.interfaces)) as pool:
            statuses = dict(zip(self.interfaces, pool.map(
                lambda name: self.backend.renew(name, self.renew_timeout),
                self.interfaces), strict=True))
        self.renewals += 1
        LOG.debug('Renewal %d: %s', self.renewals, statuses)

    def run(self) -> str:
        """Keep renewing until moved, the period is over, or stopped."""
        if not self.interfaces or self.period <= 0:
            return NOTHING_TO_DO
        self.rescuing_servers = self.current_servers()
        LOG.info('Keeping the tenant network for up to %d s: renewing %s '
                 'every %d s until their DHCP server is no longer the '
                 'rescuing network\'s (%s)', self.period,
                 ', '.join(self.interfaces), self.interval,
                 ', '.join('%s: %s' % item
                           for item in self.rescuing_servers.items()))
        started = time.monotonic()
        deadline = started + self.period
        next_renewal = started + self.interval
        while True:
            now = time.monotonic()
            remaining = deadline - now
            if remaining <= 0:
                LOG.info('Tenant network keeper: period over after %d '
                         'renewal(s); leases as they are', self.renewals)
                return PERIOD_OVER
            if self.stop_event.wait(min(max(next_renewal - now, 0.0),
                                        remaining)):
                return STOPPED
            # Every interval from the start of the last renewal, however
            # long that one took.
            next_renewal = time.monotonic() + self.interval
            self._renew_all()
            servers = self.current_servers()
            if self.moved(servers):
                LOG.info('Tenant network reached: %s', ', '.join(
                    '%s leases from %s' % item for item in servers.items()))
                return MOVED
