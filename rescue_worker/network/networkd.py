"""The ``networkd`` backend: persistent systemd-networkd configuration.

For each interface it writes ``<root_dir>/etc/systemd/network/
50-rescue-<if>.network``::

    [Match]
    Name=<if>

    [Network]
    DHCP=yes
    IPv6AcceptRA=yes

atomically, then has networkd pick the files up with
``[rescue_worker] networkd_reload_command`` (``networkctl reload``).
networkd then leases (and renews) on its own. On the live system the step
waits, up to its timeout, for networkd's lease of each interface: a lease
file written after the reload (an interface whose file changed gives up the
lease it had from the image's boot configuration) whose address is on the
interface. ``leased`` for those that have one by then, ``configured`` for
the others, which networkd goes on asking for.
``DHCP=yes`` is DHCPv4 and DHCPv6 (the latter when a router advertisement
asks for it); ``IPv6AcceptRA=yes`` takes router advertisements (SLAAC)
even where the kernel forwards. With ``[rescue_worker] ipv6 = false`` the
file says ``DHCP=ipv4`` and ``IPv6AcceptRA=no``.

The files are the ones systemd-networkd accepts without a warning: the
end-to-end tests have ``systemd-networkd`` itself parse them.

Renewing (the tenant network keeper): ``networkctl renew <if>`` has the
DHCPv4 client send a renewal (a unicast REQUEST) to its server now. When
that server answers, networkd rewrites the interface's lease file
(``/run/systemd/netif/leases/<ifindex>``, replaced as a whole) and the
address stays. When the lease file is not rewritten within
``base.RENEW_ANSWER_WAIT`` (the port moved to another network: the old
server is not on the link any more, and networkd would keep asking it until
the rebinding time, hours later), ``networkctl reconfigure <if>`` restarts
the interface's configuration without taking the link down: the DHCPv4
client gives up its lease and discovers the new network's server.

The reload (and ``renew``, ``lease_server``) only happen on the live
system: ``root_dir`` is ``/`` and the command's program is installed.
Under any other ``root_dir`` (an image being prepared, tests) the files are
all there is to do.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Sequence

import netifaces
from oslo_config import cfg

from rescue_worker import atomic
from rescue_worker import payloads
from rescue_worker.network import base
from rescue_worker.network import interfaces as net_interfaces
from rescue_worker.network import processes

LOG = logging.getLogger(__name__)

NETWORK_DIR = 'etc/systemd/network'
NETWORKCTL = 'networkctl'
#: where networkd keeps each interface's lease, by interface index
LEASES_DIR = '/run/systemd/netif/leases'
COMMAND_TIMEOUT = 30.0
#: seconds between two looks at the lease file after a renewal
POLL_INTERVAL = 0.05


def network_file_content(interface: str, ipv6: bool = True) -> str:
    return ('# Written by rescue-worker: DHCP on %s for the rescue.\n'
            '[Match]\nName=%s\n\n[Network]\nDHCP=%s\nIPv6AcceptRA=%s\n' % (
                interface, interface, 'yes' if ipv6 else 'ipv4',
                'yes' if ipv6 else 'no'))


class NetworkdBackend(base.DhcpBackend):
    """Write ``.network`` files and reload systemd-networkd."""

    name = 'networkd'

    def __init__(self, root_dir: str, networkctl: str = NETWORKCTL,
                 leases_dir: str = LEASES_DIR,
                 sysfs: str = net_interfaces.SYSFS_NET,
                 live: bool | None = None, ipv6: bool = True,
                 reload_command: Sequence[str] | None = None,
                 netifaces_module=netifaces) -> None:
        self.root_dir = root_dir
        self.netifaces = netifaces_module
        #: whether this is the running system; by default when root_dir
        #: is ``/``
        self.live = (os.path.realpath(root_dir) == '/' if live is None
                     else live)
        self.networkctl = networkctl
        self.leases_dir = leases_dir
        self.sysfs = sysfs
        self.ipv6 = ipv6
        #: argv run after writing the files; empty: none
        self.reload_command = (list(reload_command)
                               if reload_command is not None
                               else [networkctl, 'reload'])
        self._last_error: str | None = None

    @classmethod
    def from_conf(cls, conf: cfg.ConfigOpts) -> NetworkdBackend:
        group = conf.rescue_worker
        try:
            command = shlex.split(group.networkd_reload_command or '')
        except ValueError as exc:
            raise base.BackendError(
                '[rescue_worker] networkd_reload_command %r cannot be '
                'split into words (%s)' % (
                    group.networkd_reload_command, exc)) from exc
        return cls(group.root_dir, ipv6=group.ipv6, reload_command=command)

    def network_file(self, interface: str) -> str:
        return os.path.join(self.root_dir, NETWORK_DIR, '50-rescue-%s.network'
                            % net_interfaces.checked_name(interface))

    def _networkctl(self) -> str | None:
        """The program when this is the live system, else None."""
        if not self.live:
            return None
        return shutil.which(self.networkctl)

    def configure(self, interfaces: Sequence[str],
                  timeout: float) -> dict[str, str]:
        if not interfaces:
            return {}
        # Taken before the reload: an interface whose .network file changes
        # is reconfigured by networkd, and its lease from before (the boot
        # configuration's) is about to go.
        before = {name: self._lease_stamp(name) for name in interfaces}
        changed = self._write_all(interfaces)
        if not (self.live and self.reload_command):
            return dict.fromkeys(interfaces, payloads.DHCP_CONFIGURED)
        program = shutil.which(self.reload_command[0])
        if program is None:
            LOG.warning('%s is not installed: the .network files are '
                        'written, systemd-networkd reads them when it '
                        'starts', self.reload_command[0])
            return dict.fromkeys(interfaces, payloads.DHCP_CONFIGURED)
        error = self._call(program, self.reload_command[1:], timeout)
        if error is not None:
            self._last_error = error
            return dict.fromkeys(interfaces, payloads.DHCP_FAILED)
        return self._wait_for_leases(interfaces, timeout, before, changed)

    def _write_all(self, interfaces: Sequence[str]) -> set[str]:
        """Write every interface's file; the interfaces whose changed."""
        directory = os.path.join(self.root_dir, NETWORK_DIR)
        try:
            os.makedirs(directory, mode=0o755, exist_ok=True)
            return {name for name in interfaces if self._write(name)}
        except OSError as exc:
            raise base.BackendError(
                'could not write the systemd-networkd configuration in %s '
                '(%s); check that the directory is writable' % (
                    directory, exc.strerror or exc)) from exc

    def _wait_for_leases(self, interfaces: Sequence[str], timeout: float,
                         before: dict[str, tuple[int, int] | None],
                         changed: set[str]) -> dict[str, str]:
        """``leased`` for each interface that holds networkd's lease, its
        address on the interface, within ``timeout`` seconds; ``configured``
        for the others (networkd goes on asking).

        Waiting is what makes the outcome report the addresses: without
        it the step returned before networkd's lease, and the ``end``
        named no address for the tenant to log in on.
        """
        # An interface sysfs does not know is not waited for.
        waiting = [name for name in interfaces
                   if self._lease_file(name) is not None]
        leased = []
        deadline = time.monotonic() + timeout
        while waiting and time.monotonic() < deadline:
            for name in list(waiting):
                if self._holds_new_lease(name, before[name],
                                         name in changed):
                    waiting.remove(name)
                    leased.append(name)
            if waiting:
                time.sleep(POLL_INTERVAL)
        statuses = dict.fromkeys(interfaces, payloads.DHCP_CONFIGURED)
        statuses.update(dict.fromkeys(leased, payloads.DHCP_LEASED))
        return statuses

    def _holds_new_lease(self, interface: str,
                         before: tuple[int, int] | None,
                         changed: bool) -> bool:
        """Whether networkd holds a lease of ``interface`` with its address
        up; for a ``changed`` interface, a lease other than ``before``."""
        stamp = self._lease_stamp(interface)
        if stamp is None or (changed and stamp == before):
            return False
        address = self._lease_value(interface, 'ADDRESS')
        return address in net_interfaces.addresses(interface,
                                                   self.netifaces)[0]

    def _write(self, interface: str) -> bool:
        """Write the file of ``interface``; whether it changed."""
        path = self.network_file(interface)
        data = network_file_content(interface, self.ipv6).encode()
        try:
            with open(path, 'rb') as f:
                if f.read() == data:
                    return False
        except FileNotFoundError:
            pass
        atomic.write_atomically(path, data, mode=0o644)
        return True

    def _call(self, program: str, args: Sequence[str],
              timeout: float) -> str | None:
        """Run a command; None when it worked, else what went wrong."""
        argv = [program, *args]
        try:
            result = subprocess.run(argv, capture_output=True, text=True,
                                    timeout=max(timeout, COMMAND_TIMEOUT),
                                    env=processes.child_environment())
        except (OSError, subprocess.SubprocessError) as exc:
            return '%s failed: %s' % (' '.join(argv), exc)
        if result.returncode != 0:
            return '%s failed: %s' % (' '.join(argv), (
                result.stderr.strip() or 'exit code %d' % result.returncode))
        return None

    def failure_hint(self, interfaces: Sequence[str], timeout: float) -> str:
        return ('systemd-networkd could not be told about %s (%s); check '
                'that systemd-networkd is running' % (
                    ', '.join(interfaces), self._last_error or 'unknown'))

    def renew(self, interface: str, timeout: float) -> str:
        program = self._networkctl()
        if program is None:
            return payloads.DHCP_SKIPPED
        before = self._lease_stamp(interface)
        error = self._call(program, ['renew', interface], timeout)
        if error is not None:
            LOG.warning('Could not renew the lease of %s: %s', interface,
                        error)
            return payloads.DHCP_FAILED
        if self._wait_for_new_lease(interface, before,
                                    base.RENEW_ANSWER_WAIT):
            return payloads.DHCP_CONFIGURED
        LOG.info('No answer to the renewal of %s from %s within %s s: '
                 'having systemd-networkd look for a DHCP server anew',
                 interface, self.lease_server(interface) or 'its server',
                 base.format_seconds(base.RENEW_ANSWER_WAIT))
        error = self._call(program, ['reconfigure', interface], timeout)
        if error is not None:
            LOG.warning('Could not have systemd-networkd look for a DHCP '
                        'server anew on %s: %s', interface, error)
            return payloads.DHCP_FAILED
        return payloads.DHCP_CONFIGURED

    def _lease_file(self, interface: str) -> str | None:
        """networkd's lease file of ``interface``; None without one."""
        try:
            with open(os.path.join(self.sysfs, interface, 'ifindex')) as f:
                index = f.read().strip()
        except OSError:
            return None
        return os.path.join(self.leases_dir, index) if index else None

    def _lease_stamp(self, interface: str) -> tuple[int, int] | None:
        """What changes each time networkd writes the lease file anew."""
        path = self._lease_file(interface)
        try:
            info = os.stat(path) if path else None
        except OSError:
            return None
        return (info.st_ino, info.st_mtime_ns) if info else None

    def _wait_for_new_lease(self, interface: str,
                            before: tuple[int, int] | None,
                            timeout: float) -> bool:
        """Whether networkd wrote the lease file of ``interface`` anew
        (a server answered) within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            stamp = self._lease_stamp(interface)
            if stamp is not None and stamp != before:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL_INTERVAL)

    def lease_server(self, interface: str) -> str | None:
        if not self.live:
            return None
        return self._lease_value(interface, 'SERVER_ADDRESS')

    def _lease_value(self, interface: str, key: str) -> str | None:
        """One ``KEY=value`` of networkd's lease of ``interface``."""
        path = self._lease_file(interface)
        if path is None:
            return None
        try:
            with open(path) as f:
                for line in f:
                    name, _, value = line.strip().partition('=')
                    if name == key and value:
                        return value
        except OSError:
            return None
        return None
