"""The ``dhclient`` backend: ISC dhclient leases now, one per interface.

For each interface, in parallel::

    dhclient -1 -v -pf <state_dir>/dhcp/dhclient-<if>.pid \\
        -lf <state_dir>/dhcp/dhclient-<if>.leases \\
        -cf <state_dir>/dhcp/dhclient-<if>.conf <if>

``-1`` makes dhclient try once: it exits 2 when no server answered within
the ``timeout`` of its configuration file, or binds the lease (the system's
``dhclient-script`` puts the address, routes and resolver in place) and
goes to the background to renew it; the pid file then names that daemon.
The configuration file is the image's ``/etc/dhcp/dhclient.conf`` (so the
options it requests stay as the image builder chose) followed by the
rescue's bounds: ``timeout <dhcp_timeout>;`` and a ``reboot`` time of at
most 10 s (dhclient's default) for asking again for a recorded lease.
dhclient's output goes to ``dhclient-<if>.log`` beside it.

Renewing (the tenant network keeper): a second ``dhclient -1`` on the same
files does not replace the daemon (both would then run), so ``renew`` first
stops the daemon with SIGTERM, which leaves the address in place, and then
runs dhclient again. That one asks for its recorded address (INIT-REBOOT):
on the same network the server acknowledges it at once, so the address
never goes away. After the port moved to another network an authoritative
server there refuses it at once (dnsmasq: "wrong network") and dhclient
discovers; but neutron's dnsmasq is not authoritative: it ignores the
request, and dhclient would ask again for 1 to 10 s (its ``reboot`` time
and retransmission back-off, whole seconds) before discovering. So a
renewal not bound within ``base.RENEW_ANSWER_WAIT`` is given up: the
recorded lease gets an expired copy (as ``dhclient -r`` records a
released one) and dhclient runs once more; it discovers at once, and its
script replaces the old address with the new network's. The DHCPDISCOVER
still names the old address as a hint (RFC 2131 4.4.1 allows it); a server
of another network offers one of its own. No link flap is needed.

IPv6 (``[rescue_worker] ipv6``, see ``rescue_worker.network.ipv6``): beside
each IPv4 lease, the interface takes router advertisements; where the
router asks for DHCPv6 (the "managed" flag), ``dhclient -6 -1`` runs on
files of its own (``dhclient6-<if>.pid``, ``.leases``, ``.conf``,
``.log``), bounded the same way ("Max retransmission duration exceeded",
exit 2, when no server answers). Renewing restarts it as for IPv4: it
confirms its address, or solicits anew on another network.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import signal
import subprocess
import threading
import time

from oslo_config import cfg

from rescue_worker import atomic
from rescue_worker import payloads
from rescue_worker.network import base
from rescue_worker.network import dhcp_client
from rescue_worker.network import interfaces as net_interfaces
from rescue_worker.network import ipv6 as net_ipv6
from rescue_worker.network import leases
from rescue_worker.network import processes

LOG = logging.getLogger(__name__)

EXECUTABLE = 'dhclient'
BASE_CONFIG = '/etc/dhcp/dhclient.conf'

#: what is requested when the image has no dhclient.conf of its own
#: (Debian's default request list)
DEFAULT_CONFIG = """\
option rfc3442-classless-static-routes code 121 = array of unsigned integer 8;
send host-name = gethostname();
request subnet-mask, broadcast-address, time-offset, routers,
        domain-name, domain-name-servers, domain-search, host-name,
        interface-mtu, rfc3442-classless-static-routes, ntp-servers;
"""

#: dhclient's own default time for asking again for a recorded lease
MAX_REBOOT = 10

#: seconds between a renewal's first DHCPDISCOVER and the next (dhclient
#: counts whole seconds; its default is 3)
RENEW_INITIAL_INTERVAL = 1

#: seconds past dhclient's own bounds before it is killed: its script
#: runs (and pings the router when trying a recorded lease) after them
GRACE = 10.0

#: seconds a daemon gets to end on SIGTERM before SIGKILL
STOP_TIMEOUT = 5.0

#: seconds a bound dhclient's daemon gets to write its pid file
DAEMON_TIMEOUT = 2.0

#: seconds between two looks at whether to give up on dhclient
GIVE_UP_POLL = 0.1


def reboot_time(timeout: int) -> int:
    """Seconds to ask for a recorded lease before discovering anew."""
    return min(MAX_REBOOT, max(1, timeout // 3))


def dhclient_config(base_config: str, timeout: int,
                    renewal: bool = False) -> str:
    """The configuration file for a run bounded by ``timeout`` seconds.

    A renewal asks for its recorded lease once (``reboot 0``: the backend
    gives it ``base.RENEW_ANSWER_WAIT``, then has it discover), and once
    discovering it asks again every second or so (``initial-interval
    1``), not after 3 s: a tenant network's server that comes up just
    after the flip is found at once.
    """
    if renewal:
        bounds = 'timeout %d;\nreboot 0;\ninitial-interval %d;\n' % (
            timeout, RENEW_INITIAL_INTERVAL)
    else:
        bounds = 'timeout %d;\nreboot %d;\n' % (timeout,
                                                 reboot_time(timeout))
    return ('# Written by rescue-worker: the image\'s dhclient.conf, then '
            'the bounds of the rescue.\n%s\n\n%s' % (
                base_config.rstrip('\n'), bounds))


@dataclasses.dataclass(frozen=True)
class Paths:
    """The files of one interface's dhclient."""

    pid: str
    leases: str
    config: str
    log: str


def _log_no_lease(name: str, interface: str, code: int | None,
                  elapsed: float, bound: float, log: str,
                  given_up: bool) -> None:
    """Say why a dhclient run on ``interface`` ended without a lease."""
    if code is None and given_up:
        LOG.info('%s on %s given up after %.1f s', name, interface, elapsed)
    elif code is None:
        LOG.warning('%s on %s was still running after %.0f s and was '
                    'killed; see %s', name, interface, bound, log)
    else:
        LOG.warning('%s got no lease on %s in %.1f s (exit code %d); see %s',
                    name, interface, elapsed, code, log)


class DhclientBackend(dhcp_client.DhcpClientBackend):
    """Lease now with ISC dhclient, interfaces in parallel."""

    name = 'dhclient'
    install_hint = 'ISC dhclient (Debian: isc-dhcp-client)'

    def __init__(self, state_dir: str, executable: str = EXECUTABLE,
                 base_config: str = BASE_CONFIG, ipv6: bool = False,
                 autoconf: net_ipv6.Autoconf | None = None) -> None:
        super().__init__(state_dir, ipv6, autoconf)
        self.executable = executable
        self.base_config = base_config

    @classmethod
    def from_conf(cls, conf: cfg.ConfigOpts) -> DhclientBackend:
        return cls(conf.rescue_worker.state_dir, ipv6=conf.rescue_worker.ipv6)

    # -- files -----------------------------------------------------------

    def paths(self, interface: str, family: int = 4) -> Paths:
        stem = os.path.join(self.directory, '%s-%s' % (
            'dhclient' if family == 4 else 'dhclient6',
            net_interfaces.checked_name(interface)))
        return Paths(pid=stem + '.pid', leases=stem + '.leases',
                     config=stem + '.conf', log=stem + '.log')

    def _prepare(self, interface: str, timeout: int, family: int = 4,
                 renewal: bool = False) -> Paths:
        paths = self.paths(interface, family)
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        try:
            with open(self.base_config, encoding='utf-8') as f:
                base_config = f.read()
        except FileNotFoundError:
            base_config = DEFAULT_CONFIG
        atomic.write_atomically(
            paths.config,
            dhclient_config(base_config, timeout, renewal).encode(),
            mode=0o644)
        return paths

    # -- the backend interface -------------------------------------------

    def lease_server(self, interface: str) -> str | None:
        """The IPv4 lease's server; for an interface with IPv6 only, the
        DHCPv6 server (its DUID) or else the advertising router."""
        lease = leases.newest(self.paths(interface).leases, interface)
        if lease is not None:
            return lease.server
        if self.autoconf is None:
            return None
        lease6 = leases.newest6(self.paths(interface, 6).leases, interface)
        if lease6 is not None and lease6.server:
            return lease6.server
        return self.autoconf.recorded_router(interface)

    def stop(self, interface: str) -> None:
        for family in (4, 6):
            self._stop(interface, family)

    def _stop(self, interface: str, family: int) -> None:
        pid = self._daemon_pid(interface, family)
        if pid is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            if processes.wait_gone(pid, STOP_TIMEOUT):
                return
        LOG.warning('dhclient (pid %d) on %s did not end', pid, interface)

    def release(self, interface: str, timeout: float) -> None:
        program = self._program()
        paths = self._prepare(interface, _whole_seconds(timeout))
        self._run(program, ['-r'], interface, paths, timeout + GRACE)
        paths6 = self.paths(interface, 6)
        if os.path.exists(paths6.leases):
            paths6 = self._prepare(interface, _whole_seconds(timeout), 6)
            self._run(program, ['-6', '-r'], interface, paths6,
                      timeout + GRACE)

    # -- running dhclient --------------------------------------------------

    def _lease(self, program: str, interface: str, timeout: float,
               family: int, renew: bool,
               give_up: threading.Event | None = None) -> str:
        seconds = _whole_seconds(timeout)
        # A daemon from an earlier lease would go on beside the new one.
        self._stop(interface, family)
        paths = self._prepare(interface, seconds, family, renewal=renew)
        bound = seconds + reboot_time(seconds) + GRACE
        options = ['-1'] if family == 4 else ['-6', '-1']
        name = 'dhclient' if family == 4 else 'dhclient -6'
        started = time.monotonic()
        if (renew and family == 4 and
                leases.newest(paths.leases, interface) is not None):
            status = self._renew_recorded(program, options, interface,
                                          paths, give_up)
            if status is not None:
                return status
        code = self._run(program, options, interface, paths, bound,
                         give_up)
        elapsed = time.monotonic() - started
        if code == 0:
            LOG.info('%s leased on %s in %.1f s', name, interface, elapsed)
            self._wait_for_daemon(interface, family)
            return payloads.DHCP_LEASED
        given_up = give_up is not None and give_up.is_set()
        _log_no_lease(name, interface, code, elapsed, bound, paths.log,
                      given_up)
        return payloads.DHCP_FAILED

    def _renew_recorded(self, program: str, options: list[str],
                        interface: str, paths: Paths,
                        give_up: threading.Event | None) -> str | None:
        """Ask for the recorded lease, for ``base.RENEW_ANSWER_WAIT``: its
        status when that settles it, else None with the lease made one to
        discover anew for."""
        started = time.monotonic()
        code = self._run(program, options, interface, paths,
                         base.RENEW_ANSWER_WAIT, give_up)
        if code == 0:
            LOG.info('dhclient leased on %s in %.1f s (asked for its '
                     'recorded lease)', interface, time.monotonic() - started)
            self._wait_for_daemon(interface, 4)
            return payloads.DHCP_LEASED
        if give_up is not None and give_up.is_set():
            return payloads.DHCP_FAILED
        self._discover_anew(interface, paths)
        return None

    def _discover_anew(self, interface: str, paths: Paths) -> None:
        """After a renewal nobody answered in time: dhclient is to
        discover at once, not ask for the recorded lease again."""
        LOG.info('No answer to the renewal of %s from %s within %s s: '
                 'looking for a DHCP server anew', interface,
                 self.lease_server(interface) or 'its server',
                 base.format_seconds(base.RENEW_ANSWER_WAIT))
        # A daemon that bound just as the renewal was given up on.
        self._stop(interface, 4)
        # Recorded as expired, the lease is still the one dhclient's
        # script replaces, but no longer one it asks for.
        leases.expire_newest(paths.leases, interface)

    def _run(self, program: str, options: list[str], interface: str,
             paths: Paths, bound: float,
             give_up: threading.Event | None = None) -> int | None:
        """Run dhclient; its exit code, or None when killed at ``bound``
        or once ``give_up`` is set."""
        argv = [program, *options, '-v', '-pf', paths.pid, '-lf',
                paths.leases, '-cf', paths.config, interface]
        # A bound daemon leaves the session (setsid) before the session
        # is killed on a timeout.
        process = processes.start_logged(argv, paths.log)
        deadline = time.monotonic() + bound
        while True:
            remaining = deadline - time.monotonic()
            if give_up is not None:
                remaining = min(remaining, GIVE_UP_POLL)
            try:
                return process.wait(max(remaining, 0.0))
            except subprocess.TimeoutExpired:
                if time.monotonic() >= deadline or (
                        give_up is not None and give_up.is_set()):
                    break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return None

    def _wait_for_daemon(self, interface: str, family: int = 4) -> None:
        """Wait (bounded) until the daemon wrote its pid file.

        dhclient writes it in the background process after the foreground
        one exited, so right after a lease it may not be there yet; the
        next ``stop`` or ``renew`` needs it to find the daemon.
        """
        deadline = time.monotonic() + DAEMON_TIMEOUT
        while self._daemon_pid(interface, family) is None:
            if time.monotonic() >= deadline:
                LOG.warning('dhclient on %s wrote no pid file in %.0f s',
                            interface, DAEMON_TIMEOUT)
                return
            time.sleep(0.02)

    def _daemon_pid(self, interface: str, family: int = 4) -> int | None:
        """The running dhclient that uses this interface's pid file."""
        return dhcp_client.running_client(self.paths(interface, family).pid,
                                          'dhclient')


def _whole_seconds(timeout: float) -> int:
    return max(1, math.ceil(timeout))
