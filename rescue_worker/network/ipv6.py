"""IPv6 for the backends that run a DHCP client per interface (``dhclient``,
``udhcpc``): router advertisements (SLAAC) and, where the router asks for
it, DHCPv6.

Per interface, beside the IPv4 lease and within the same ``dhcp_timeout``:

1. The kernel is told to take router advertisements (RAs) and to form
   addresses from them: ``/proc/sys/net/ipv6/conf/<if>/`` ``disable_ipv6
   = 0``, ``accept_ra = 2`` (even if the node forwards), ``autoconf = 1``.
   The kernel does SLAAC itself; the worker only watches.
2. A router solicitation (RS) goes out as soon as the interface's
   link-local address is usable (after duplicate address detection), again
   after 1 s, then every 4 s; the worker reads the answers on a raw ICMPv6
   socket of its own, filtered to RAs. The first RA tells what the network
   offers: prefixes to form addresses from (the "autonomous" flag), and
   whether addresses come from DHCPv6 (the "managed" flag).
3. Managed: the backend's DHCPv6 client runs (``dhclient -6``,
   ``udhcpc6``). Prefixes: the worker waits until the kernel's address in
   each one is usable (no longer tentative).

How long an interface waits for an RA: until ``dhcp_timeout`` when IPv4
got no lease (the network may be IPv6 only), and ``RA_REPLY_WAIT`` past the
first solicitation once IPv4 is leased (a router answers a solicitation
within half a second, RFC 4861's MAX_RA_DELAY_TIME). So a network without
IPv6 router costs an interface about 3 s beside its IPv4 lease (the
link-local address takes about 1 s to become usable), and nothing when
``[rescue_worker] ipv6`` is off.

The interface counts as leased when it ends with a global IPv6 address
(whatever is not link-local, loopback or multicast), with or without an
IPv4 lease.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import ipaddress
import json
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from collections.abc import Sequence
from concurrent import futures

from rescue_worker import atomic
from rescue_worker import payloads
from rescue_worker.network import base

LOG = logging.getLogger(__name__)

#: per-interface IPv6 settings of the current network namespace
PROC_SYS_CONF = '/proc/sys/net/ipv6/conf'
#: the IPv6 addresses of the current network namespace, with their flags
IF_INET6 = '/proc/net/if_inet6'

# Address flags (IFA_F_*) and scopes as /proc/net/if_inet6 shows them.
FLAG_TENTATIVE = 0x40
FLAG_DADFAILED = 0x08
SCOPE_LINK = 0x20

ICMPV6_ROUTER_SOLICITATION = 133
ICMPV6_ROUTER_ADVERTISEMENT = 134
#: setsockopt(IPPROTO_ICMPV6, ICMP6_FILTER): <netinet/icmp6.h>
ICMP6_FILTER = 1
ALL_ROUTERS = 'ff02::2'
#: RFC 4861: an RA or RS that crossed a router is not to be trusted
ND_HOP_LIMIT = 255

# RA header flags and option types (RFC 4861 section 4.2, 4.6).
RA_MANAGED = 0x80
RA_OTHER = 0x40
OPTION_PREFIX = 3
OPTION_MTU = 5
PREFIX_ON_LINK = 0x80
PREFIX_AUTONOMOUS = 0x40

#: seconds to wait for an RA past the first solicitation, once IPv4 is
#: leased
RA_REPLY_WAIT = 2.0
#: seconds from the first solicitation to the second, then between others
RS_FIRST_INTERVAL = 1.0
RS_INTERVAL = 4.0
#: seconds between two tries to send while the link-local address is
#: still tentative
RS_RETRY = 0.1
#: seconds from the start an interface whose IPv6 is configured gives
#: DHCPv4 before it stops asking (a DHCPv4 server answers within one)
IPV4_GRACE = 5.0
#: seconds an interface whose IPv4 is leased waits for its link-local
#: address to become usable, to solicit from it
LINK_LOCAL_WAIT = 5.0
#: at most this long between two looks at the IPv4 side while waiting
POLL_INTERVAL = 0.1
#: SLAAC addresses are formed from /64 prefixes only (RFC 4862, 7421)
SLAAC_PREFIXLEN = 64


class Ipv6Unavailable(Exception):
    """The kernel has no IPv6 for this interface."""


@dataclasses.dataclass(frozen=True)
class Prefix:
    network: ipaddress.IPv6Network
    on_link: bool
    autonomous: bool
    valid_lifetime: int
    preferred_lifetime: int


@dataclasses.dataclass(frozen=True)
class RouterAdvertisement:
    #: the router's link-local address
    router: str
    managed: bool
    other: bool
    #: seconds the router may be the default router (0: not one)
    router_lifetime: int
    prefixes: tuple[Prefix, ...] = ()
    mtu: int | None = None

    @property
    def slaac_prefixes(self) -> list[ipaddress.IPv6Network]:
        """The prefixes the kernel forms addresses from."""
        return [p.network for p in self.prefixes
                if p.autonomous and p.valid_lifetime > 0
                and p.network.prefixlen == SLAAC_PREFIXLEN]

    def describe(self) -> str:
        parts = ['router %s' % self.router]
        if self.managed:
            parts.append('managed (DHCPv6)')
        if self.slaac_prefixes:
            parts.append('SLAAC on %s' % ', '.join(
                str(p) for p in self.slaac_prefixes))
        return ', '.join(parts)


def parse_router_advertisement(data: bytes,
                               source: str) -> RouterAdvertisement | None:
    """The RA in ``data`` (an ICMPv6 message, as a raw socket reads it);
    None when it is none or malformed."""
    if len(data) < 16 or data[0] != ICMPV6_ROUTER_ADVERTISEMENT or data[1]:
        return None
    options = _options(data, 16)
    if options is None:
        return None
    prefixes = []
    mtu = None
    for kind, body in options:
        if kind == OPTION_PREFIX:
            prefix = _prefix(body)
            if prefix is not None:
                prefixes.append(prefix)
        elif kind == OPTION_MTU and len(body) == 8:
            (mtu,) = struct.unpack_from('!I', body, 4)
    flags = data[5]
    (router_lifetime,) = struct.unpack_from('!H', data, 6)
    return RouterAdvertisement(
        router=source.split('%', 1)[0], managed=bool(flags & RA_MANAGED),
        other=bool(flags & RA_OTHER), router_lifetime=router_lifetime,
        prefixes=tuple(prefixes), mtu=mtu)


def _options(data: bytes, offset: int) -> list[tuple[int, bytes]] | None:
    """The (type, whole option) of each option of ``data`` from
    ``offset``; None when one of them is malformed."""
    options = []
    while offset + 2 <= len(data):
        kind, length = data[offset], data[offset + 1] * 8
        if length == 0 or offset + length > len(data):
            return None  # RFC 4861: a zero-length option is invalid
        options.append((kind, data[offset:offset + length]))
        offset += length
    return options


def _prefix(body: bytes) -> Prefix | None:
    """A prefix information option; None when it is malformed."""
    if len(body) != 32 or body[2] > 128:
        return None
    prefixlen, flags = body[2], body[3]
    valid, preferred = struct.unpack_from('!II', body, 4)
    try:
        network = ipaddress.IPv6Network((body[16:32], prefixlen),
                                        strict=False)
    except ValueError:
        return None
    return Prefix(network=network, on_link=bool(flags & PREFIX_ON_LINK),
                  autonomous=bool(flags & PREFIX_AUTONOMOUS),
                  valid_lifetime=valid, preferred_lifetime=preferred)


@dataclasses.dataclass(frozen=True)
class Address:
    """One line of /proc/net/if_inet6."""

    address: ipaddress.IPv6Address
    prefixlen: int
    scope: int
    flags: int
    interface: str

    @property
    def usable(self) -> bool:
        """Past duplicate address detection, and not found a duplicate."""
        return not self.flags & (FLAG_TENTATIVE | FLAG_DADFAILED)

    @property
    def is_global(self) -> bool:
        """Reaches beyond the link: what the interface reports as IPv6."""
        a = self.address
        return not (a.is_link_local or a.is_loopback or a.is_multicast
                    or a.is_unspecified)


def read_addresses(interface: str, path: str = IF_INET6) -> list[Address]:
    """The IPv6 addresses of ``interface``, in the kernel's order."""
    found = []
    try:
        with open(path) as f:
            lines = f.readlines()
    except FileNotFoundError:
        return []
    for line in lines:
        fields = line.split()
        if len(fields) != 6 or fields[5] != interface:
            continue
        try:
            found.append(Address(
                address=ipaddress.IPv6Address(bytes.fromhex(fields[0])),
                prefixlen=int(fields[2], 16), scope=int(fields[3], 16),
                flags=int(fields[4], 16), interface=interface))
        except ValueError:
            continue
    return found


def usable_global(interface: str, path: str = IF_INET6) -> list[str]:
    return [str(a.address) for a in read_addresses(interface, path)
            if a.is_global and a.usable]


def enable(interface: str, proc_sys: str = PROC_SYS_CONF) -> None:
    """Have the kernel take RAs on ``interface`` and form addresses from
    them.

    :raises Ipv6Unavailable: the kernel has no IPv6 (for it).
    """
    directory = os.path.join(proc_sys, interface)
    if not os.path.isdir(directory):
        raise Ipv6Unavailable('the kernel has no IPv6 for %s (no %s)' % (
            interface, directory))
    for name, value in (('disable_ipv6', '0'), ('accept_ra', '2'),
                        ('autoconf', '1')):
        path = os.path.join(directory, name)
        try:
            with open(path) as f:
                if f.read().strip() == value:
                    continue
            with open(path, 'w') as f:
                f.write(value)
        except OSError as exc:
            raise Ipv6Unavailable('could not set %s to %s (%s)' % (
                path, value, exc.strerror or exc)) from exc


class RouterSolicitor:
    """A raw ICMPv6 socket on one interface: sends router solicitations,
    reads the RAs that come back (the kernel acts on them all the same).
    Needs CAP_NET_RAW."""

    def __init__(self, interface: str,
                 socket_factory: Callable[..., socket.socket] =
                 socket.socket) -> None:
        self.interface = interface
        self.index = socket.if_nametoindex(interface)
        sock = socket_factory(socket.AF_INET6, socket.SOCK_RAW,
                              socket.IPPROTO_ICMPV6)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE,
                            interface.encode())
            # Every ICMPv6 type blocked but the RA (a set bit blocks).
            words = [0xffffffff] * 8
            words[ICMPV6_ROUTER_ADVERTISEMENT >> 5] &= ~(
                1 << (ICMPV6_ROUTER_ADVERTISEMENT & 31))
            sock.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER,
                            struct.pack('8I', *words))
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS,
                            ND_HOP_LIMIT)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF,
                            self.index)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT,
                            1)
        except BaseException:
            sock.close()
            raise
        self.sock = sock

    def __enter__(self) -> RouterSolicitor:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self) -> bool:
        """Send a solicitation to all routers; False when the interface has
        no usable source address yet (its link-local one is tentative)."""
        message = bytes([ICMPV6_ROUTER_SOLICITATION, 0, 0, 0, 0, 0, 0, 0])
        try:
            # The kernel fills in the checksum of an ICMPv6 raw socket.
            self.sock.sendto(message, (ALL_ROUTERS, 0, 0, self.index))
        except OSError as exc:
            if exc.errno in (errno.EADDRNOTAVAIL, errno.ENETDOWN,
                             errno.ENETUNREACH):
                return False
            raise
        return True

    def receive(self, timeout: float) -> RouterAdvertisement | None:
        """The next valid RA within ``timeout`` seconds, or None."""
        self.sock.settimeout(max(timeout, 0.0))
        try:
            data, ancillary, _flags, source = self.sock.recvmsg(
                4096, socket.CMSG_SPACE(4))
        except (TimeoutError, BlockingIOError):
            return None
        for level, kind, value in ancillary:
            if (level == socket.IPPROTO_IPV6 and
                    kind == socket.IPV6_HOPLIMIT and len(value) >= 4 and
                    struct.unpack('i', value[:4])[0] != ND_HOP_LIMIT):
                return None
        if not ipaddress.IPv6Address(source[0].split('%')[0]).is_link_local:
            return None
        return parse_router_advertisement(data, source[0])


class Ipv4Progress:
    """How the interface's IPv4 lease, run beside, is doing."""

    def __init__(self) -> None:
        self._done = threading.Event()
        self.leased = False

    def finish(self, leased: bool) -> None:
        self.leased = leased
        self._done.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()


@dataclasses.dataclass
class AutoconfResult:
    """What IPv6 came to on one interface."""

    #: the RA that came, None when no router answered
    advertisement: RouterAdvertisement | None = None
    #: the DHCPv6 client's status (``DHCP_LEASED``/``DHCP_FAILED``), None
    #: when it did not run
    dhcpv6: str | None = None
    #: global addresses the interface ended with (usable)
    addresses: list[str] = dataclasses.field(default_factory=list)
    #: what went wrong, for the operator
    problem: str | None = None

    @property
    def leased(self) -> bool:
        return bool(self.addresses)

    def describe(self) -> str:
        if self.advertisement is None:
            return 'no router advertisement%s' % (
                ' (%s)' % self.problem if self.problem else '')
        text = self.advertisement.describe()
        if self.dhcpv6 is not None:
            text += ', DHCPv6 %s' % self.dhcpv6
        text += ': %s' % (', '.join(self.addresses) or 'no address')
        if self.problem:
            text += ' (%s)' % self.problem
        return text


class _SolicitationSchedule:
    """When to solicit a router again, how long to listen for the answer,
    and when to give up: at ``deadline``, or, once IPv4 is leased,
    ``RA_REPLY_WAIT`` after the first solicitation (``LINK_LOCAL_WAIT``
    after the start if none could be sent)."""

    def __init__(self, started: float, deadline: float) -> None:
        self.started = started
        self.deadline = deadline
        self.first_sent: float | None = None
        self.next_send = started

    def over(self, now: float, ipv4_leased: bool) -> bool:
        if now >= self.deadline:
            return True
        if not ipv4_leased:
            return False
        if self.first_sent is None:
            return now - self.started >= LINK_LOCAL_WAIT
        return now - self.first_sent >= RA_REPLY_WAIT

    def send_if_due(self, solicitor: RouterSolicitor, now: float) -> None:
        if now < self.next_send:
            return
        if not solicitor.send():
            # The link-local address is still tentative: soon again.
            self.next_send = now + RS_RETRY
        elif self.first_sent is None:
            self.first_sent = now
            self.next_send = now + RS_FIRST_INTERVAL
        else:
            self.next_send = now + RS_INTERVAL

    def listen_until(self, now: float) -> float:
        """No longer than until the next solicitation, or the next look at
        the IPv4 side; once solicited, not past the reply wait (but a
        little while in any case, for an answer already queued)."""
        until = min(self.deadline, self.next_send, now + POLL_INTERVAL)
        if self.first_sent is not None:
            until = min(until, max(self.first_sent + RA_REPLY_WAIT,
                                   now + 0.01))
        return until


#: (interface, timeout) -> (status, problem or None): a backend's DHCPv6
Dhcpv6Client = Callable[[str, float], tuple[str, str | None]]


class Autoconf:
    """IPv6 on one interface at a time, as the module says."""

    def __init__(self, state_dir: str | None = None,
                 proc_sys: str = PROC_SYS_CONF, if_inet6: str = IF_INET6,
                 solicitor: Callable[[str], RouterSolicitor] =
                 RouterSolicitor,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        #: where the last RA of each interface is recorded, if anywhere
        self.state_dir = state_dir
        self.proc_sys = proc_sys
        self.if_inet6 = if_inet6
        self.solicitor = solicitor
        self.clock = clock
        self.sleep = sleep

    def router_file(self, interface: str) -> str | None:
        if self.state_dir is None:
            return None
        return os.path.join(self.state_dir, 'ra-%s.json' % interface)

    def recorded_router(self, interface: str) -> str | None:
        """The router of the last RA recorded for ``interface``."""
        path = self.router_file(interface)
        if path is None:
            return None
        try:
            with open(path) as f:
                return json.load(f).get('router') or None
        except (OSError, ValueError, AttributeError):
            return None

    def run(self, interface: str, timeout: float, ipv4: Ipv4Progress,
            dhcpv6: Dhcpv6Client | None) -> AutoconfResult:
        deadline = self.clock() + timeout
        try:
            enable(interface, self.proc_sys)
            solicitor = self.solicitor(interface)
        except (Ipv6Unavailable, OSError) as exc:
            LOG.warning('No IPv6 on %s: %s', interface, exc)
            return AutoconfResult(problem=str(exc))
        with solicitor:
            advertisement = self._wait_for_advertisement(
                solicitor, deadline, ipv4)
        if advertisement is None:
            LOG.info('No IPv6 router answered on %s', interface)
            return AutoconfResult()
        LOG.info('Router advertisement on %s: %s', interface,
                 advertisement.describe())
        self._record(interface, advertisement)
        result = AutoconfResult(advertisement=advertisement)
        if advertisement.managed:
            if dhcpv6 is None:
                result.problem = ('the router asks for DHCPv6 and there '
                                   'is no DHCPv6 client')
            else:
                self._wait_for_link_local(interface, deadline)
                result.dhcpv6, result.problem = dhcpv6(
                    interface, max(deadline - self.clock(), 1.0))
        self._wait_for_addresses(
            interface, advertisement.slaac_prefixes,
            result.dhcpv6 == payloads.DHCP_LEASED, deadline)
        result.addresses = usable_global(interface, self.if_inet6)
        return result

    def _wait_for_advertisement(self, solicitor: RouterSolicitor,
                                deadline: float, ipv4: Ipv4Progress
                                ) -> RouterAdvertisement | None:
        schedule = _SolicitationSchedule(self.clock(), deadline)
        while True:
            now = self.clock()
            if schedule.over(now, ipv4.leased):
                return None
            schedule.send_if_due(solicitor, now)
            advertisement = solicitor.receive(
                max(schedule.listen_until(now) - now, 0.0))
            if advertisement is not None:
                return advertisement

    def _wait_for_link_local(self, interface: str, deadline: float) -> None:
        """Until the link-local address is usable: DHCPv6 clients send
        from it."""
        self._wait(lambda: any(
            a.scope == SCOPE_LINK and a.usable
            for a in read_addresses(interface, self.if_inet6)), deadline)

    def _wait_for_addresses(self, interface: str,
                            prefixes: list[ipaddress.IPv6Network],
                            leased: bool, deadline: float) -> None:
        """Until the kernel formed a usable address in each of
        ``prefixes``, the DHCPv6 one (``leased``) is usable too, and no
        global address is still tentative (duplicate address detection
        takes about a second)."""

        def settled() -> bool:
            found = [a for a in read_addresses(interface, self.if_inet6)
                     if a.is_global and not a.flags & FLAG_DADFAILED]
            usable = [a.address for a in found if a.usable]
            return (all(any(a in prefix for a in usable)
                        for prefix in prefixes) and
                    (usable or not leased) and
                    all(a.usable for a in found))

        if not self._wait(settled, deadline):
            LOG.warning('IPv6 addresses of %s not all usable in time: %s',
                        interface, ', '.join(
                            '%s (flags %#x)' % (a.address, a.flags)
                            for a in read_addresses(interface,
                                                    self.if_inet6)))

    def _wait(self, predicate: Callable[[], bool], deadline: float) -> bool:
        while not predicate():
            if self.clock() >= deadline:
                return False
            self.sleep(min(POLL_INTERVAL, max(deadline - self.clock(), 0)))
        return True

    def _record(self, interface: str,
                advertisement: RouterAdvertisement) -> None:
        path = self.router_file(interface)
        if path is None:
            return
        try:
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            atomic.write_atomically(path, json.dumps({
                'router': advertisement.router,
                'managed': advertisement.managed,
                'prefixes': [str(p) for p in advertisement.slaac_prefixes],
                'time': time.time()}).encode(), mode=0o600)
        except OSError as exc:
            LOG.warning('Could not record the router of %s in %s: %s',
                        interface, path, exc)


def hint(interfaces: Sequence[str], problems: dict[str, str]) -> str:
    """What IPv6 came to on ``interfaces`` (none of which got an address),
    for the operator."""
    return '; '.join('%s: %s' % (name, problems.get(
        name, 'no router advertisement')) for name in interfaces)


def configure_interface(interface: str, timeout: float,
                        lease4: Callable[[threading.Event], str],
                        autoconf: Autoconf | None,
                        dhcpv6: Dhcpv6Client | None,
                        clock: Callable[[], float] = time.monotonic
                        ) -> tuple[str, AutoconfResult | None]:
    """IPv4 and, with ``autoconf``, IPv6 side by side; the interface's
    status (``LEASED`` when either family got an address) and what IPv6
    came to (None without ``autoconf``).

    ``lease4(give_up)`` leases IPv4 within ``timeout``, and stops (with
    ``FAILED``) once ``give_up`` is set: that happens when IPv6 is
    configured and IPv4 has had ``IPV4_GRACE`` seconds, so that an IPv6
    only network does not cost the whole ``dhcp_timeout``.
    """
    give_up = threading.Event()
    if autoconf is None:
        return lease4(give_up), None
    progress = Ipv4Progress()
    started = clock()

    def run_ipv4() -> str:
        status = payloads.DHCP_FAILED
        try:
            status = lease4(give_up)
            return status
        finally:
            progress.finish(status == payloads.DHCP_LEASED)

    with futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix='ipv4-%s' % interface) as pool:
        job = pool.submit(run_ipv4)
        try:
            ipv6_result = autoconf.run(interface, timeout, progress, dhcpv6)
        except Exception as exc:
            LOG.exception('IPv6 on %s failed unexpectedly', interface)
            ipv6_result = AutoconfResult(
                problem='IPv6 failed unexpectedly: %s' % exc)
        if ipv6_result.leased:
            with contextlib.suppress(futures.TimeoutError):
                job.result(max(started + IPV4_GRACE - clock(), 0.0))
            if not job.done():
                LOG.info('No DHCPv4 answer on %s within %s s: going on '
                         'with IPv6 only', interface,
                         base.format_seconds(IPV4_GRACE))
                give_up.set()
        status4 = job.result()
    LOG.info('IPv6 on %s: %s', interface, ipv6_result.describe())
    if status4 == payloads.DHCP_LEASED or ipv6_result.leased:
        return payloads.DHCP_LEASED, ipv6_result
    return status4, ipv6_result
