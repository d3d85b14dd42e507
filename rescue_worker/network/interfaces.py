"""The node's network interfaces: listing, skip rules, link, carrier,
addresses.

Interfaces and their addresses come from netifaces; what netifaces does not
tell (whether the MAC is permanent, the carrier) comes from sysfs. Both are
parameters (``netifaces_module``, ``sysfs``) so that the logic runs against
fakes in unit tests.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import ipaddress
import logging
import os
import subprocess
import time
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Sequence

import netifaces

from rescue_worker.network import processes

LOG = logging.getLogger(__name__)

#: where the kernel describes the interfaces of the current namespace
SYSFS_NET = '/sys/class/net'

#: ``addr_assign_type`` of a MAC burnt into the device (``NET_ADDR_PERM``);
#: 1 is random, 2 stolen (a bond or VLAN's), 3 set by user space
ADDR_PERMANENT = 0

#: seconds between two looks at the carrier while waiting for it
CARRIER_POLL_INTERVAL = 0.1

#: bound of ``ip link set <if> up``
LINK_UP_TIMEOUT = 10.0

SKIPPED_BY_PATTERN = 'skip_interfaces'
SKIPPED_GENERATED_MAC = 'skip_generated_mac'


class LinkError(Exception):
    """A link could not be brought up; the message says why."""


@dataclasses.dataclass(frozen=True)
class Interface:
    """One interface as listed."""

    name: str
    #: the link-layer address, '' when the interface has none
    mac: str
    #: ``addr_assign_type`` from sysfs; None when the kernel does not say
    addr_assign_type: int | None

    @property
    def permanent_mac(self) -> bool | None:
        """Whether the MAC is the device's own; None when unknown."""
        if self.addr_assign_type is None:
            return None
        return self.addr_assign_type == ADDR_PERMANENT


def checked_name(name: str) -> str:
    """``name``, which names a file under the worker's directories (a
    lease file, a ``.network`` file), so may not be empty, hold a '/' or
    start with a '.'.

    :raises ValueError: it does.
    """
    if not name or '/' in name or name.startswith('.'):
        raise ValueError('invalid interface name %r' % name)
    return name


def _read_sysfs(sysfs: str, name: str, attribute: str) -> str | None:
    try:
        with open(os.path.join(sysfs, name, attribute)) as f:
            return f.read().strip()
    except (OSError, ValueError):
        # Missing (old kernel, virtual device), or EINVAL: the kernel
        # refuses to read ``carrier`` of a link that is down.
        return None


def read_addr_assign_type(name: str, sysfs: str = SYSFS_NET) -> int | None:
    value = _read_sysfs(sysfs, name, 'addr_assign_type')
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def has_carrier(name: str, sysfs: str = SYSFS_NET) -> bool:
    """Whether the link of ``name`` is up with a carrier (cable, peer)."""
    return _read_sysfs(sysfs, name, 'carrier') == '1'


def list_interfaces(netifaces_module=netifaces,
                    sysfs: str = SYSFS_NET) -> list[Interface]:
    """Every interface of the node, in the kernel's order."""
    found = []
    for name in netifaces_module.interfaces():
        found.append(Interface(
            name=name,
            mac=_mac(netifaces_module, name),
            addr_assign_type=read_addr_assign_type(name, sysfs)))
    return found


def _mac(netifaces_module, name: str) -> str:
    for entry in _ifaddresses(netifaces_module, name).get(
            netifaces_module.AF_LINK, []):
        if entry.get('addr'):
            return entry['addr'].lower()
    return ''


def _ifaddresses(netifaces_module, name: str) -> dict:
    try:
        return netifaces_module.ifaddresses(name)
    except ValueError:
        # The interface went away since it was listed.
        return {}


def skip_reason(interface: Interface, patterns: Iterable[str],
                skip_generated_mac: bool) -> str | None:
    """Why ``interface`` is left alone, or None to configure it.

    The reasons are the option that skips it: ``skip_interfaces`` when the
    name matches one of the glob ``patterns``, ``skip_generated_mac`` when
    that is on and the MAC is known not to be permanent. An interface
    whose kernel does not report ``addr_assign_type`` is kept: it cannot be
    told apart from a NIC.
    """
    for pattern in patterns:
        pattern = pattern.strip()
        if pattern and fnmatch.fnmatchcase(interface.name, pattern):
            return SKIPPED_BY_PATTERN
    if skip_generated_mac and interface.permanent_mac is False:
        return SKIPPED_GENERATED_MAC
    return None


def set_link_up(name: str,
                runner: Callable[..., subprocess.CompletedProcess] =
                subprocess.run) -> None:
    """``ip link set <name> up``.

    :raises LinkError: with ``ip``'s own message.
    """
    argv = ['ip', 'link', 'set', name, 'up']
    try:
        result = runner(argv, capture_output=True, text=True,
                        timeout=LINK_UP_TIMEOUT,
                        env=processes.child_environment())
    except (OSError, subprocess.SubprocessError) as exc:
        raise LinkError('%s failed: %s' % (' '.join(argv), exc)) from exc
    if result.returncode != 0:
        raise LinkError('%s failed: %s' % (
            ' '.join(argv),
            (result.stderr or '').strip() or 'exit code %d' %
            result.returncode))


def watch_carrier(names: Sequence[str], timeout: float,
                  sysfs: str = SYSFS_NET,
                  interval: float = CARRIER_POLL_INTERVAL,
                  clock: Callable[[], float] = time.monotonic,
                  sleep: Callable[[float], None] = time.sleep
                  ) -> Iterator[list[str]]:
    """Yield the interfaces of ``names`` as their carrier comes up.

    Each item is the list of those that got a carrier since the last one
    (in ``names`` order), so that the caller can start on them at once.
    Ends when all have a carrier or after ``timeout`` seconds; the ones
    never yielded had no carrier. The kernel sends no event for this that
    could be waited on without a netlink listener, so sysfs is read every
    ``interval`` seconds: cheap, and bounded.
    """
    pending = list(names)
    deadline = clock() + timeout
    while pending:
        ready = [name for name in pending if has_carrier(name, sysfs)]
        if ready:
            pending = [name for name in pending if name not in ready]
            yield ready
            continue
        remaining = deadline - clock()
        if remaining <= 0:
            return
        sleep(min(interval, remaining))


def addresses(name: str, netifaces_module=netifaces
              ) -> tuple[list[str], list[str]]:
    """The IPv4 addresses and the global IPv6 addresses of ``name``.

    Link-local, loopback and multicast IPv6 addresses are left out (every
    interface has a link-local one; it reaches nobody beyond the link).
    """
    found = _ifaddresses(netifaces_module, name)
    ipv4 = [entry['addr'] for entry in found.get(netifaces_module.AF_INET,
                                                 [])
            if entry.get('addr')]
    ipv6 = []
    for entry in found.get(netifaces_module.AF_INET6, []):
        text = (entry.get('addr') or '').split('%', 1)[0]
        try:
            address = ipaddress.IPv6Address(text)
        except ValueError:
            continue
        if not (address.is_link_local or address.is_loopback or
                address.is_multicast or address.is_unspecified):
            ipv6.append(str(address))
    return ipv4, ipv6
