"""What the backends that run a DHCP client program per interface share
(``dhclient``, ``udhcpc``): finding the program, leasing every interface in
parallel, IPv4 and then IPv6 on each (``rescue_worker.network.ipv6``), and
the operator's hint when no server answered.

A backend says how to run its program for one interface and one address
family (``_lease``); the rest is here.
"""

from __future__ import annotations

import abc
import os
import shutil
import threading
from collections.abc import Callable
from collections.abc import Sequence
from concurrent import futures

from rescue_worker import payloads
from rescue_worker.network import base
from rescue_worker.network import ipv6 as net_ipv6
from rescue_worker.network import processes


def running_client(pid_file: str, name: str,
                   on_exited: Callable[[int], None] | None = None
                   ) -> int | None:
    """The pid in ``pid_file`` if that process runs ``name`` (the program,
    or a script run by its interpreter) with this pid file on its command
    line; else None: a stale pid is never trusted. A process that has
    exited but not been reaped is handed to ``on_exited``."""
    try:
        with open(pid_file) as f:
            pid = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    state = processes.process_state(pid)
    if state is None:
        return None
    if state in processes.ENDED_STATES:
        if on_exited is not None:
            on_exited(pid)
        return None
    try:
        with open('/proc/%d/cmdline' % pid, 'rb') as f:
            argv = f.read().split(b'\0')
    except OSError:
        return None
    named = any(os.path.basename(arg).startswith(os.fsencode(name))
                for arg in argv[:2])
    if named and os.fsencode(pid_file) in argv:
        return pid
    return None


class DhcpClientBackend(base.DhcpBackend):
    """A DHCP client program per interface, its files in ``directory``."""

    #: the program's name or path, found on PATH
    executable: str
    #: what to install when the program is missing
    install_hint: str = ''

    def __init__(self, state_dir: str, ipv6: bool,
                 autoconf: net_ipv6.Autoconf | None) -> None:
        self.directory = os.path.join(state_dir, 'dhcp')
        #: IPv6 beside IPv4 (None: IPv4 only)
        self.autoconf = (autoconf or net_ipv6.Autoconf(self.directory)
                         if ipv6 else None)
        #: interface -> what went wrong with its IPv6, for the hint
        self._ipv6_problems: dict[str, str] = {}

    # -- what a backend provides -------------------------------------------

    @abc.abstractmethod
    def paths(self, interface: str, family: int = 4):
        """The files of one interface's client; ``.log`` at least."""

    @abc.abstractmethod
    def _lease(self, program: str, interface: str, timeout: float,
               family: int, renew: bool,
               give_up: threading.Event | None = None) -> str:
        """Lease on ``interface`` for ``family`` (4 or 6): ``LEASED`` or
        ``FAILED``; stop early once ``give_up`` is set."""

    def _program6(self, program: str) -> tuple[str | None, str | None]:
        """The DHCPv6 client program, or None and why there is none."""
        return program, None

    def _before_leasing(self) -> None:
        """Called before any lease (e.g. to install a lease script)."""

    # -- the backend interface ---------------------------------------------

    def configure(self, interfaces: Sequence[str],
                  timeout: float) -> dict[str, str]:
        program = self._program()
        if not interfaces:
            return {}
        self._before_leasing()
        with futures.ThreadPoolExecutor(
                max_workers=len(interfaces),
                thread_name_prefix=self.name) as pool:
            statuses = pool.map(
                lambda name: self._configure_one(program, name, timeout,
                                                 renew=False),
                interfaces)
            return dict(zip(interfaces, statuses, strict=True))

    def renew(self, interface: str, timeout: float) -> str:
        program = self._program()
        self._before_leasing()
        return self._configure_one(program, interface, timeout, renew=True)

    def failure_hint(self, interfaces: Sequence[str], timeout: float) -> str:
        text = ('no DHCP server answered on %s within %s s; check that the '
                "rescuing network's DHCP server is running and that these "
                "ports are on that network (%s's output: %s)" % (
                    ', '.join(interfaces), base.format_seconds(timeout),
                    self.name, self.paths('<interface>').log))
        if self.autoconf is not None:
            text += '; IPv6: %s' % net_ipv6.hint(interfaces,
                                                 self._ipv6_problems)
        return text

    # -- leasing -------------------------------------------------------------

    def _program(self) -> str:
        program = shutil.which(self.executable)
        if program is None:
            raise base.BackendError(
                '%s is not installed (dhcp_backend = %s): install %s in the '
                'rescue image, or choose another [rescue_worker] '
                'dhcp_backend' % (self.executable, self.name,
                                  self.install_hint))
        return program

    def _configure_one(self, program: str, interface: str, timeout: float,
                       renew: bool) -> str:
        status, ipv6_result = net_ipv6.configure_interface(
            interface, timeout,
            lambda give_up: self._lease(program, interface, timeout, 4,
                                        renew, give_up),
            self.autoconf,
            lambda name, seconds: self._lease6(program, name, seconds,
                                               renew))
        if ipv6_result is not None:
            if ipv6_result.leased:
                self._ipv6_problems.pop(interface, None)
            else:
                self._ipv6_problems[interface] = ipv6_result.describe()
        return status

    def _lease6(self, program: str, interface: str, timeout: float,
                renew: bool) -> tuple[str, str | None]:
        program6, missing = self._program6(program)
        if program6 is None:
            return payloads.DHCP_FAILED, missing
        status = self._lease(program6, interface, timeout, 6, renew)
        if status == payloads.DHCP_LEASED:
            return status, None
        return status, 'no DHCPv6 server answered (see %s)' % (
            self.paths(interface, 6).log)
