"""The ``udhcpc`` backend: busybox's DHCP client, for images without
systemd (TinyIPA and the like).

For each interface, in parallel::

    udhcpc -f -i <if> -p <state_dir>/dhcp/udhcpc-<if>.pid \\
        -s <state_dir>/dhcp/udhcpc-script -t 0 -T 1 -O mtu -O staticroutes

It stays in the foreground (``-f``: one process, one pid, for good), sends
a DISCOVER every second until a server answers (``-t 0 -T 1``), and asks
for the MTU (option 26) and classless static routes (option 121) besides
its defaults. The worker waits, up to ``dhcp_timeout``, until the lease
script reports ``bound`` for that process; on time out it kills it
(``failed``). A bound udhcpc keeps running in a session of its own and
renews the lease (it outlives the worker). Its output goes to
``udhcpc-<if>.log``.

The lease script is the project's (``udhcpc-script.sh`` in this package,
copied to ``<state_dir>/dhcp/udhcpc-script`` so that it is executable
wherever the package is installed). It applies the address, the routes and
the MTU, writes the resolver to ``<root_dir>/etc/resolv.conf``, and records
the lease in ``udhcpc-<if>.lease`` (``serverid`` among it: the keeper's
``lease_server``). See the script for what it does on each event.

Renewing (the tenant network keeper): SIGUSR1 makes the running udhcpc
renew at once (a unicast REQUEST to its server). On the same network the
server answers within milliseconds and the script records ``renew``. After
the port moved to the tenant network nothing answers (the old server is
not on the link any more), so after ``RENEW_WAIT``
(``base.RENEW_ANSWER_WAIT``, 1 s) the udhcpc is stopped (SIGTERM: the
address stays) and a new one started, which discovers at once (without
``-r``: it asks for no address of its own) and finds the tenant network's
server within a second; its lease replaces the address. No link flap.

IPv6 (``[rescue_worker] ipv6``, see ``rescue_worker.network.ipv6``): router
advertisements (SLAAC) as with dhclient; where the router asks for DHCPv6,
``udhcpc6`` runs the same way when the image has it (Debian's busybox does
not: the interface then has only what SLAAC gives it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.resources
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Sequence

from oslo_config import cfg

from rescue_worker import atomic
from rescue_worker import payloads
from rescue_worker.network import base
from rescue_worker.network import dhcp_client
from rescue_worker.network import interfaces as net_interfaces
from rescue_worker.network import ipv6 as net_ipv6
from rescue_worker.network import processes

LOG = logging.getLogger(__name__)

EXECUTABLE = 'udhcpc'
EXECUTABLE6 = 'udhcpc6'
SCRIPT_RESOURCE = 'udhcpc-script.sh'
SCRIPT_NAME = 'udhcpc-script'

#: seconds between two DISCOVERs (``-T``)
DISCOVER_INTERVAL = 1
#: seconds a running udhcpc gets to answer a renewal (SIGUSR1) before it
#: is replaced by one that discovers (capped at half the renew timeout)
RENEW_WAIT = base.RENEW_ANSWER_WAIT
#: a udhcpc started anew by ``renew`` gets at least this long
MIN_LEASE_TIME = 2.0
#: seconds past the timeout given to the lease script to apply a lease
#: the server granted in time (it runs a dozen commands; on a loaded
#: machine that takes a while)
SCRIPT_GRACE = 10.0
#: seconds between two looks at the lease file
POLL_INTERVAL = 0.05
#: seconds a udhcpc gets to end on SIGTERM before SIGKILL
STOP_TIMEOUT = 5.0

BOUND_EVENTS = ('bound', 'renew')

# The udhcpc processes this worker started (pid -> process), so that one
# stopped by any backend instance is reaped.
_children: dict[int, subprocess.Popen] = {}
_children_lock = threading.Lock()


@dataclasses.dataclass(frozen=True)
class Paths:
    """The files of one interface's udhcpc (or udhcpc6)."""

    pid: str
    lease: str
    applied: str
    applying: str
    log: str


def read_state(path: str) -> dict[str, str]:
    """The ``key=value`` lines the lease script writes; {} when none."""
    state: dict[str, str] = {}
    try:
        with open(path, encoding='utf-8', errors='replace') as f:
            for line in f:
                key, sep, value = line.rstrip('\n').partition('=')
                if sep and key not in state:
                    state[key] = value
    except FileNotFoundError:
        pass
    return state


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None


class UdhcpcBackend(dhcp_client.DhcpClientBackend):
    """Lease now with busybox udhcpc, interfaces in parallel."""

    name = 'udhcpc'
    install_hint = "busybox's udhcpc (Debian: udhcpc)"

    def __init__(self, state_dir: str, root_dir: str = '/',
                 executable: str = EXECUTABLE,
                 executable6: str = EXECUTABLE6, ipv6: bool = False,
                 autoconf: net_ipv6.Autoconf | None = None) -> None:
        super().__init__(state_dir, ipv6, autoconf)
        self.root_dir = root_dir
        self.executable = executable
        self.executable6 = executable6
        self.script = os.path.join(self.directory, SCRIPT_NAME)

    @classmethod
    def from_conf(cls, conf: cfg.ConfigOpts) -> UdhcpcBackend:
        group = conf.rescue_worker
        return cls(group.state_dir, group.root_dir, ipv6=group.ipv6)

    # -- files -----------------------------------------------------------

    def paths(self, interface: str, family: int = 4) -> Paths:
        stem = os.path.join(self.directory, '%s-%s' % (
            EXECUTABLE if family == 4 else EXECUTABLE6,
            net_interfaces.checked_name(interface)))
        return Paths(pid=stem + '.pid', lease=stem + '.lease',
                     applied=stem + '.applied', applying=stem + '.applying',
                     log=stem + '.log')

    def _before_leasing(self) -> None:
        """Put the lease script where udhcpc runs it from (executable)."""
        try:
            data = importlib.resources.files(__package__).joinpath(
                SCRIPT_RESOURCE).read_bytes()
        except OSError as exc:
            raise base.BackendError(
                'the udhcpc lease script %s is missing from the '
                'rescue_worker package (%s); reinstall rescue-worker' % (
                    SCRIPT_RESOURCE, exc)) from exc
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        try:
            with open(self.script, 'rb') as f:
                current = f.read()
            if current == data and os.access(self.script, os.X_OK):
                return
        except FileNotFoundError:
            pass
        atomic.write_atomically(self.script, data, mode=0o700)

    def _program6(self, program: str) -> tuple[str | None, str | None]:
        program6 = shutil.which(self.executable6)
        if program6 is None:
            return None, (
                'the router asks for DHCPv6 and %s is not installed '
                '(busybox built with CONFIG_UDHCPC6)' % self.executable6)
        return program6, None

    # -- the backend interface -------------------------------------------

    def lease_server(self, interface: str) -> str | None:
        """The IPv4 lease's server (``serverid``); for an interface with
        IPv6 only, the DHCPv6 server or else the advertising router."""
        for family in (4, 6):
            server = self._held(interface, family).get('serverid')
            if server:
                return server
        if self.autoconf is not None:
            return self.autoconf.recorded_router(interface)
        return None

    def stop(self, interface: str) -> None:
        for family in (4, 6):
            self._stop(interface, family)

    def release(self, interface: str, timeout: float) -> None:
        """SIGUSR2: udhcpc sends a DHCPRELEASE and the script removes the
        address; then it is stopped."""
        for family in (4, 6):
            pid = self._daemon_pid(interface, family)
            if pid is None:
                continue
            paths = self.paths(interface, family)
            seq = _int(read_state(paths.lease).get('seq')) or 0
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGUSR2)
            self._wait_for_event(paths, pid, interface, seq, ('deconfig',),
                                 timeout)
            self._stop(interface, family)

    # -- leasing -------------------------------------------------------------

    def _lease(self, program: str, interface: str, timeout: float,
               family: int, renew: bool,
               give_up: threading.Event | None = None) -> str:
        paths = self.paths(interface, family)
        started = time.monotonic()
        pid = self._daemon_pid(interface, family) if renew else None
        if pid is not None:
            if self._signal_renew(paths, pid, interface, timeout):
                return payloads.DHCP_LEASED
            timeout = max(timeout - (time.monotonic() - started),
                          MIN_LEASE_TIME)
        # One udhcpc per interface: an earlier one (its address stays)
        # is replaced.
        self._stop(interface, family)
        process = self._start(program, interface, family, paths)
        return self._wait_for_lease(process, paths, interface,
                                    os.path.basename(program), started,
                                    timeout, give_up)

    def _start(self, program: str, interface: str, family: int,
               paths: Paths) -> subprocess.Popen:
        argv = [program, '-f', '-i', interface, '-p', paths.pid, '-s',
                self.script, '-t', '0', '-T', str(DISCOVER_INTERVAL)]
        if family == 4:
            argv += ['-O', 'mtu', '-O', 'staticroutes']
        # What the lease script needs to know besides the lease.
        process = processes.start_logged(
            argv, paths.log, RESCUE_WORKER_DHCP_DIR=self.directory,
            RESCUE_WORKER_ROOT_DIR=self.root_dir,
            RESCUE_WORKER_FAMILY=str(family))
        with _children_lock:
            _children[process.pid] = process
        return process

    def _wait_for_lease(self, process: subprocess.Popen, paths: Paths,
                        interface: str, name: str, started: float,
                        timeout: float,
                        give_up: threading.Event | None) -> str:
        """Until the script recorded a lease of ``process``, it ended, or
        it is given up on (``give_up``, or ``timeout`` from ``started``,
        longer while the script applies a lease that came in time)."""
        deadline = _ScriptDeadline(paths, process.pid, started + timeout,
                                   interface)
        while True:
            state = read_state(paths.lease)
            if (state.get('event') in BOUND_EVENTS and
                    _int(state.get('pid')) == process.pid):
                LOG.info('%s leased %s on %s from %s in %.1f s', name,
                         state.get('ip') or state.get('ipv6'), interface,
                         state.get('serverid') or 'a server',
                         time.monotonic() - started)
                return payloads.DHCP_LEASED
            if self._ended_or_given_up(process, paths, interface, name,
                                       started, give_up):
                return payloads.DHCP_FAILED
            if deadline.passed():
                LOG.warning('%s got no lease on %s in %s s; see %s', name,
                            interface, base.format_seconds(timeout),
                            paths.log)
                self._kill(process.pid)
                return payloads.DHCP_FAILED
            time.sleep(POLL_INTERVAL)

    def _ended_or_given_up(self, process: subprocess.Popen, paths: Paths,
                           interface: str, name: str, started: float,
                           give_up: threading.Event | None) -> bool:
        """Whether ``process`` ended without a lease, or was killed because
        ``give_up`` is set."""
        code = process.poll()
        if code is not None:
            LOG.warning('%s on %s ended with exit code %d before a lease; '
                        'see %s', name, interface, code, paths.log)
            _forget(process.pid)
            return True
        if give_up is not None and give_up.is_set():
            LOG.info('%s on %s given up after %.1f s', name, interface,
                     time.monotonic() - started)
            self._kill(process.pid)
            return True
        return False

    def _signal_renew(self, paths: Paths, pid: int, interface: str,
                      timeout: float) -> bool:
        """SIGUSR1 to the running udhcpc; whether its server answered."""
        state = read_state(paths.lease)
        seq = _int(state.get('seq')) or 0
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGUSR1)
        wait = min(RENEW_WAIT, timeout / 2)
        if self._wait_for_event(paths, pid, interface, seq,
                                BOUND_EVENTS, wait):
            LOG.info('udhcpc renewed the lease of %s', interface)
            return True
        LOG.info('No answer to the renewal of %s from %s within %s s: '
                 'looking for a DHCP server anew', interface,
                 state.get('serverid') or 'its server',
                 base.format_seconds(wait))
        return False

    def _wait_for_event(self, paths: Paths, pid: int, interface: str,
                        seq: int, events: Sequence[str],
                        timeout: float) -> bool:
        """Wait until the script recorded one of ``events`` for ``pid``
        after ``seq`` (longer while it is applying a lease of ``pid``)."""
        deadline = _ScriptDeadline(paths, pid, time.monotonic() + timeout,
                                   interface)
        while True:
            state = read_state(paths.lease)
            if ((_int(state.get('seq')) or 0) > seq and
                    state.get('event') in events and
                    _int(state.get('pid')) == pid):
                return True
            if deadline.passed():
                return False
            time.sleep(POLL_INTERVAL)

    def _held(self, interface: str, family: int) -> dict[str, str]:
        """The lease the script recorded last, if it still holds."""
        state = read_state(self.paths(interface, family).lease)
        if state.get('event') not in BOUND_EVENTS:
            return {}
        granted, seconds = _int(state.get('time')), _int(state.get('lease'))
        if (granted is not None and seconds is not None and
                granted + seconds <= time.time()):
            return {}
        return state

    # -- processes -----------------------------------------------------------

    def _stop(self, interface: str, family: int) -> None:
        pid = self._daemon_pid(interface, family)
        if pid is not None:
            self._kill(pid, signal.SIGTERM)

    def _kill(self, pid: int, first: signal.Signals = signal.SIGKILL
              ) -> None:
        """End the udhcpc ``pid``: SIGTERM lets it finish running its
        script and leaves the address; SIGKILL ends its session (a script
        it runs with it) at once."""
        for sig in dict.fromkeys((first, signal.SIGKILL)):
            with contextlib.suppress(ProcessLookupError):
                if sig == signal.SIGKILL and os.getpgid(pid) == pid:
                    os.killpg(pid, sig)
                else:
                    os.kill(pid, sig)
            if processes.wait_gone(pid, STOP_TIMEOUT):
                break
        else:
            LOG.warning('udhcpc (pid %d) did not end', pid)
        _forget(pid)

    def _daemon_pid(self, interface: str, family: int) -> int | None:
        """The running udhcpc that uses this interface's pid file."""
        return dhcp_client.running_client(self.paths(interface, family).pid,
                                          'udhcpc', on_exited=_forget)


def _applying(paths: Paths) -> int | None:
    """The pid of the udhcpc whose lease the script applies now."""
    try:
        with open(paths.applying) as f:
            return _int(f.read().strip())
    except OSError:
        return None


class _ScriptDeadline:
    """A deadline extended once, by ``SCRIPT_GRACE``, if it passes while
    the lease script applies a lease of the udhcpc ``pid``: the server
    granted that lease in time, and the script, a dozen commands, is slow
    on a loaded machine."""

    def __init__(self, paths: Paths, pid: int, deadline: float,
                 interface: str) -> None:
        self.paths = paths
        self.pid = pid
        self.deadline = deadline
        self.interface = interface
        self.graced = False

    def passed(self) -> bool:
        if time.monotonic() < self.deadline:
            return False
        if self.graced or _applying(self.paths) != self.pid:
            return True
        LOG.info('udhcpc on %s: a lease came in time, its script is still '
                 'applying it', self.interface)
        self.deadline += SCRIPT_GRACE
        self.graced = True
        return False


def _forget(pid: int) -> None:
    """Reap ``pid`` if this process started it."""
    with _children_lock:
        process = _children.pop(pid, None)
    if process is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(STOP_TIMEOUT)
