"""A private network lab for end-to-end tests: namespaces, veths, dnsmasq.

``NetLab`` builds two network namespaces of its own, a *server* one (the
switch side: DHCP servers) and a *node* one (the machine being rescued), and
joins them with veth pairs. Each link gets a /24 out of 198.18.0.0/15, a
dnsmasq serving part of it on the server side, or a server side left down so
that the node side has no carrier. Nothing touches the host's own
interfaces, routes or resolver:

- every address lives in 198.18.0.0/15 (IPv6: 2001:db8::/32, the
  documentation prefix) and only inside the lab's namespaces;
- ``/etc/netns/<ns>/resolv.conf`` is written before any command runs in a
  namespace, so a DHCP client there never writes the host's resolver
  (``ip netns exec`` bind-mounts it over ``/etc/resolv.conf``);
- dnsmasq runs with ``--port=0`` (no DNS), its lease and pid files in the
  test's own directory;
- ``close()`` kills every process left in the lab's namespaces (by pid, as
  listed by ``ip netns pids``), deletes the namespaces (and with them the
  veths) and ``/etc/netns/<ns>``.

Typical use, from a fixture::

    lab = NetLab(tmp_path)
    try:
        net = rescuing_network(lab)     # eth0, eth1 served; eth2 no carrier
        lab.node.run(['dhclient', ...])
    finally:
        lab.close()

IPv6: a link may carry a /64 of 2001:db8::/32 too (``add_link(...,
subnet6=...)``), and its dnsmasq send router advertisements and serve
DHCPv6 (``start_dhcp(..., ipv6='dhcpv6')``) or advertise the prefix for
SLAAC only (``ipv6='slaac'``), with or without DHCPv4 (``ipv4=False``):
``ipv6_network`` is the usual IPv6-only pair.

The tenant network flip that a rescue ends with (the conductor moving the
ports to the tenant network without a link flap) is ``switch_network``:
the same link, another subnet and DHCP server, the carrier untouched.

A process in the node namespace that must reach a service on the host (the
worker and its test broker) gets there through ``forward(port)``: a veth
pair between the host and the node (``add_host_link``, an interface of the
lab's own with a /30 out of 198.19.252.0/22) and a TCP relay on the host's
end to the service's port on the host's loopback.

The lab needs root, ``ip`` and ``dnsmasq`` (and ``dhclient`` for most
tests): call ``require()`` first, which skips, or fails under ``CI=true``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import os
import secrets
import select
import selectors
import shutil
import signal
import socket
import socketserver
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Sequence

import pytest

#: the block every lab address comes from (RFC 2544 benchmarking range)
LAB_BLOCK = ipaddress.ip_network('198.18.0.0/15')
#: the block every lab IPv6 prefix comes from (RFC 3849 documentation)
LAB_BLOCK6 = ipaddress.ip_network('2001:db8::/32')
#: where host links take their /30 from (the host's side of the block)
HOST_LINK_BLOCK = ipaddress.ip_network('198.19.252.0/22')
#: the node sides of ``rescuing_network``
RESCUING_LINKS = ('eth0', 'eth1')
NO_CARRIER_LINK = 'eth2'
#: the links of ``ipv6_network``: DHCPv6 (and RA) on one, SLAAC on the other
DHCPV6_LINK = 'eth0'
SLAAC_LINK = 'eth1'
ETC_NETNS = '/etc/netns'
COMMAND_TIMEOUT = 30.0
DNSMASQ_READY_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
MAX_IFNAME = 15  # IFNAMSIZ - 1


def unavailable(message: str) -> None:
    """Skip the test, or fail it under ``CI=true`` (never skip silently)."""
    if os.environ.get('CI') == 'true':
        pytest.fail(message)
    pytest.skip(message)


def require(commands: Sequence[str] = ('ip', 'dnsmasq', 'dhclient',
                                       'unshare')) -> None:
    """Make sure the lab can run here: root and ``commands`` on PATH."""
    missing = []
    if os.geteuid() != 0:
        missing.append('root')
    missing.extend(cmd for cmd in commands if shutil.which(cmd) is None)
    if missing:
        unavailable('needs root, %s (missing: %s)' % (
            ', '.join(commands), ', '.join(missing)))


def wait_exited(pids: Sequence[int], timeout: float) -> bool:
    """Wait until every process of ``pids`` has exited (a pidfd turns
    readable then); False if some still run after ``timeout`` seconds."""
    fds = []
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            fds.append(os.pidfd_open(pid))
    deadline = time.monotonic() + timeout
    try:
        while fds:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            for fd in select.select(fds, [], [], left)[0]:
                fds.remove(fd)
                os.close(fd)
        return True
    finally:
        for fd in fds:
            os.close(fd)


def _run(argv: Sequence[str], check: bool = True,
         timeout: float = COMMAND_TIMEOUT, **kwargs
         ) -> subprocess.CompletedProcess:
    kwargs.setdefault('capture_output', True)
    kwargs.setdefault('text', True)
    result = subprocess.run(list(argv), timeout=timeout, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError('%s exited %d: %s' % (
            ' '.join(argv), result.returncode,
            (result.stderr or '').strip()))
    return result


# Run by ``sh -c`` in front of every command of a sandboxed namespace, in
# the private mount namespace that ``ip netns exec`` makes (mounts there do
# not propagate back): an empty /run/systemd keeps dhclient's exit hooks
# (timesyncd) off the host's systemd. ``unshare --uts`` before it keeps
# dhclient-script from ever setting the host's hostname.
_SANDBOX = ('if [ -d /run/systemd ]; then '
            'mount -t tmpfs -o mode=0755 rescue-worker-test /run/systemd '
            '|| exit 125; fi; exec "$@"')


class Namespace:
    """A network namespace this test created (and will delete).

    In a ``sandboxed`` one (the node's, where DHCP clients run) each
    command also gets its own UTS namespace and an empty ``/run/systemd``.
    """

    def __init__(self, name: str, sandboxed: bool = False) -> None:
        if len(name) > MAX_IFNAME:
            raise ValueError('namespace name %r is too long' % name)
        self.name = name
        self.sandboxed = sandboxed
        self.etc_dir = os.path.join(ETC_NETNS, name)
        self.created = False
        self._etc_created = False

    def create(self) -> None:
        # The resolver file first: it must exist before anything runs in
        # the namespace, so that nothing there can write the host's.
        os.makedirs(ETC_NETNS, mode=0o755, exist_ok=True)
        os.mkdir(self.etc_dir, mode=0o755)  # never someone else's
        self._etc_created = True
        with open(os.path.join(self.etc_dir, 'resolv.conf'), 'w') as f:
            f.write('# resolver of the test namespace %s\n' % self.name)
        _run(['ip', 'netns', 'add', self.name])
        self.created = True
        self.run(['ip', 'link', 'set', 'lo', 'up'])

    def argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` wrapped to run inside this namespace (it keeps the
        pid: every wrapper execs the next)."""
        if self.sandboxed:
            return ['ip', 'netns', 'exec', self.name, 'unshare', '--uts',
                    '--', 'sh', '-c', _SANDBOX, 'sandbox', *argv]
        return ['ip', 'netns', 'exec', self.name, *argv]

    def run(self, argv: Sequence[str], check: bool = True,
            timeout: float = COMMAND_TIMEOUT, **kwargs
            ) -> subprocess.CompletedProcess:
        return _run(self.argv(argv), check=check, timeout=timeout, **kwargs)

    def popen(self, argv: Sequence[str], **kwargs) -> subprocess.Popen:
        # ``ip netns exec`` execs the command: the pid is the command's.
        return subprocess.Popen(self.argv(argv), **kwargs)

    def pids(self) -> list[int]:
        if not self.created:
            return []
        result = _run(['ip', 'netns', 'pids', self.name], check=False)
        return [int(word) for word in result.stdout.split()]

    def read_sys(self, ifname: str, attribute: str) -> str:
        """``/sys/class/net/<ifname>/<attribute>`` as seen in here."""
        return self.run(['cat', '/sys/class/net/%s/%s' %
                         (ifname, attribute)]).stdout.strip()

    def ipv4_addresses(self, ifname: str) -> list[str]:
        """The IPv4 addresses on ``ifname``, per ``ip -4 addr``."""
        out = self.run(['ip', '-4', '-o', 'addr', 'show', 'dev',
                        ifname]).stdout
        return [line.split()[3].split('/')[0]
                for line in out.splitlines() if line.strip()]

    def ipv6_addresses(self, ifname: str, scope: str = 'global',
                       *flags: str) -> list[str]:
        """The IPv6 addresses of ``scope`` on ``ifname`` (and with
        ``flags``, like ``tentative``), per ``ip -6 addr``, in its
        order."""
        out = self.run(['ip', '-6', '-o', 'addr', 'show', 'dev', ifname,
                        'scope', scope, *flags]).stdout
        return [str(ipaddress.ip_address(line.split()[3].split('/')[0]))
                for line in out.splitlines() if line.strip()]

    def link_local_ready(self, ifname: str) -> bool:
        """Whether ``ifname``'s link-local address is past duplicate
        address detection (routers advertise, clients solicit from it)."""
        return bool(self.ipv6_addresses(ifname, 'link')) and not \
            self.ipv6_addresses(ifname, 'link', 'tentative')

    def kill_all(self, timeout: float = STOP_TIMEOUT) -> None:
        """End every process in the namespace: TERM, then KILL."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            wait_exited(pids, timeout)

    def delete(self) -> None:
        if self.created:
            self.kill_all()
            _run(['ip', 'netns', 'delete', self.name], check=False)
            self.created = False
        if self._etc_created:
            shutil.rmtree(self.etc_dir, ignore_errors=True)
            self._etc_created = False


@dataclasses.dataclass
class Link:
    """A veth pair: ``node_if`` in the node namespace, ``server_if`` in the
    server one, and the subnets currently on it."""

    node_if: str
    server_if: str
    subnet: ipaddress.IPv4Network
    carrier: bool = True
    #: the IPv6 /64 on the link, if any
    subnet6: ipaddress.IPv6Network | None = None

    @property
    def server_address(self) -> str:
        return str(self.subnet.network_address + 1)

    @property
    def server_address6(self) -> str | None:
        if self.subnet6 is None:
            return None
        return str(self.subnet6.network_address + 1)

    @property
    def dhcp_range6(self) -> tuple[str, str]:
        """The addresses a DHCPv6 server on the link leases."""
        assert self.subnet6 is not None
        base = self.subnet6.network_address
        return str(base + 0x100), str(base + 0x1ff)

    @property
    def dhcp_range(self) -> tuple[str, str]:
        base = self.subnet.network_address
        return str(base + 100), str(base + 199)

    def in_range(self, address: str) -> bool:
        first, last = self.dhcp_range
        value = ipaddress.ip_address(address)
        return (ipaddress.ip_address(first) <= value <=
                ipaddress.ip_address(last))


class Dnsmasq:
    """A dnsmasq serving DHCP on one link, as a managed subprocess.

    ``ipv4``: serve DHCPv4 on the link's subnet. ``ipv6``: send router
    advertisements for the link's /64 and either serve DHCPv6 from it
    (``'dhcpv6'``: the "managed" flag, no SLAAC) or leave addresses to
    SLAAC (``'slaac'``: dnsmasq's ``ra-only``). ``options``: more
    command-line options (``--dhcp-option=...``).
    """

    def __init__(self, namespace: Namespace, link: Link, workdir: str,
                 lease_time: str = '1h', authoritative: bool = True,
                 ipv4: bool = True, ipv6: str | None = None,
                 options: Sequence[str] = ()) -> None:
        self.namespace = namespace
        self.link = link
        self.subnet = link.subnet
        self.server_address = link.server_address
        tag = '%s-%s' % (link.server_if, str(link.subnet.network_address))
        self.lease_file = os.path.join(workdir, 'dnsmasq-%s.leases' % tag)
        self.pid_file = os.path.join(workdir, 'dnsmasq-%s.pid' % tag)
        self.log_file = os.path.join(workdir, 'dnsmasq-%s.log' % tag)
        first, last = link.dhcp_range
        self.argv = [
            'dnsmasq', '--no-daemon', '--conf-file=/dev/null',
            '--interface=%s' % link.server_if, '--bind-interfaces',
            '--except-interface=lo']
        #: what dnsmasq logs once it serves each range
        self.ready_texts = []
        if ipv4:
            self.argv.append('--dhcp-range=%s,%s,%s,%s' % (
                first, last, link.subnet.netmask, lease_time))
            self.ready_texts.append('DHCP, IP range')
        if ipv6 is not None:
            if link.subnet6 is None:
                raise ValueError('%s has no IPv6 subnet' % link.node_if)
            prefix = link.subnet6.network_address
            self.argv.append('--enable-ra')
            if ipv6 == 'dhcpv6':
                first6, last6 = link.dhcp_range6
                self.argv.append('--dhcp-range=%s,%s,64,%s' % (
                    first6, last6, lease_time))
                self.ready_texts.append('DHCPv6, IP range')
            elif ipv6 == 'slaac':
                self.argv.append('--dhcp-range=%s,ra-only,64,%s' % (
                    prefix, lease_time))
            else:
                raise ValueError('ipv6 is dhcpv6 or slaac, not %r' % ipv6)
            self.ready_texts.append('router advertisement on %s' % prefix)
        if not self.ready_texts:
            raise ValueError('dnsmasq would serve nothing')
        self.argv += [
            '--dhcp-leasefile=%s' % self.lease_file,
            '--pid-file=%s' % self.pid_file,
            '--port=0', '--log-dhcp', '--log-facility=-',
            # No ping of a new address before offering it (3 s each).
            '--no-ping',
            *options,
        ]
        if authoritative:
            self.argv.append('--dhcp-authoritative')
        self.process: subprocess.Popen | None = None
        self._lines: list[str] = []
        self._cond = threading.Condition()
        self._reader: threading.Thread | None = None

    def start(self, timeout: float = DNSMASQ_READY_TIMEOUT) -> Dnsmasq:
        self.process = self.namespace.popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True,
                                        name='dnsmasq-log')
        self._reader.start()
        with self._cond:
            ready = self._cond.wait_for(
                lambda: all(self._saw(text) for text in self.ready_texts)
                or self._ended(), timeout)
        if not ready or self._ended():
            self.stop()
            raise AssertionError('dnsmasq on %s did not start:\n%s' % (
                self.link.server_if, self.log()))
        return self

    def _read(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        with open(self.log_file, 'a') as log:
            for line in self.process.stderr:
                log.write(line)
                log.flush()
                with self._cond:
                    self._lines.append(line)
                    self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def _saw(self, text: str) -> bool:
        return any(text in line for line in self._lines)

    def _ended(self) -> bool:
        return self.process is None or self.process.poll() is not None

    def wait_for_log(self, text: str, timeout: float) -> None:
        """Wait until dnsmasq logged a line containing ``text``."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._saw(text), timeout):
                raise AssertionError(
                    'dnsmasq on %s logged no %r within %.1f s:\n%s' % (
                        self.link.server_if, text, timeout, self.log()))

    def log(self) -> str:
        with self._cond:
            return ''.join(self._lines)

    @property
    def running(self) -> bool:
        return not self._ended()

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        if self._reader is not None:
            self._reader.join(timeout)
        if self.process.stderr is not None:
            self.process.stderr.close()


@dataclasses.dataclass
class HostLink:
    """A veth pair between the host (root namespace) and the node, with a
    /30 of its own: the way for the node to reach a service on the host
    (through ``NetLab.forward``)."""

    node_if: str
    host_if: str
    host_address: str
    node_address: str
    prefixlen: int = 30


class _Pump(socketserver.BaseRequestHandler):
    """One forwarded TCP connection: bytes both ways until either closes."""

    def handle(self) -> None:
        try:
            upstream = socket.create_connection(self.server.target, 10)
        except OSError:
            return
        with upstream, selectors.DefaultSelector() as selector:
            peers = {self.request: upstream, upstream: self.request}
            for sock in peers:
                selector.register(sock, selectors.EVENT_READ)
            while not self.server.closing.is_set():
                for key, _ in selector.select(0.5):
                    try:
                        data = key.fileobj.recv(65536)
                        if not data:
                            return
                        peers[key.fileobj].sendall(data)
                    except OSError:
                        return


class _Forwarder(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, listen: tuple[str, int],
                 target: tuple[str, int]) -> None:
        self.target = target
        self.closing = threading.Event()
        super().__init__(listen, _Pump)


class NetLab:
    """A server namespace and a node namespace joined by veth pairs."""

    def __init__(self, workdir: os.PathLike | str,
                 token: str | None = None) -> None:
        self.workdir = os.fspath(workdir)
        os.makedirs(self.workdir, exist_ok=True)
        token = token or secrets.token_hex(3)
        self.server = Namespace('rws-%s' % token)
        self.node = Namespace('rwn-%s' % token, sandboxed=True)
        self.token = token
        self.links: dict[str, Link] = {}
        self.dhcp: dict[str, Dnsmasq] = {}
        self.host_link: HostLink | None = None
        self._forwarders: list[tuple[_Forwarder, threading.Thread]] = []
        try:
            self.server.create()
            self.node.create()
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> NetLab:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- links --------------------------------------------------------------

    def add_link(self, node_if: str, subnet: str | None = None,
                 carrier: bool = True, subnet6: str | None = None) -> Link:
        """A veth pair, ``node_if`` on the node side (down, as a NIC at
        boot) and its server side up with the subnet's first address (and
        ``subnet6``'s, an IPv6 /64 of 2001:db8::/32); with
        ``carrier=False`` the server side stays down, so ``node_if`` never
        gets a carrier."""
        if node_if in self.links:
            raise ValueError('link %s exists' % node_if)
        server_if = ('s-%s' % node_if)[:MAX_IFNAME]
        if len(node_if) > MAX_IFNAME:
            raise ValueError('interface name %r is too long' % node_if)
        network = ipaddress.ip_network(
            subnet or '198.18.%d.0/24' % (len(self.links) + 1))
        if not network.subnet_of(LAB_BLOCK):
            raise ValueError('%s is outside %s' % (network, LAB_BLOCK))
        network6 = None
        if subnet6 is not None:
            network6 = ipaddress.ip_network(subnet6)
            if not (network6.version == 6 and network6.prefixlen == 64 and
                    network6.subnet_of(LAB_BLOCK6)):
                raise ValueError('%s is no /64 of %s' % (network6,
                                                         LAB_BLOCK6))
        _run(['ip', 'link', 'add', 'name', node_if, 'netns', self.node.name,
              'type', 'veth', 'peer', 'name', server_if, 'netns',
              self.server.name])
        link = Link(node_if, server_if, network, carrier, network6)
        self.links[node_if] = link
        self.server.run(['ip', 'addr', 'add', '%s/%d' % (
            link.server_address, network.prefixlen), 'dev', server_if])
        if network6 is not None:
            self.server.run(['ip', '-6', 'addr', 'add', '%s/64' %
                             link.server_address6, 'dev', server_if,
                             'nodad'])
        if carrier:
            self.server.run(['ip', 'link', 'set', server_if, 'up'])
        return link

    def set_carrier(self, node_if: str, up: bool) -> None:
        """Plug or unplug the cable: the server side's link state."""
        link = self.links[node_if]
        self.server.run(['ip', 'link', 'set', link.server_if,
                         'up' if up else 'down'])
        link.carrier = up

    # -- DHCP servers -------------------------------------------------------

    def start_dhcp(self, node_if: str, **kwargs) -> Dnsmasq:
        """Start dnsmasq on the link's server side, serving its subnet."""
        if node_if in self.dhcp and self.dhcp[node_if].running:
            raise ValueError('dnsmasq already runs on %s' % node_if)
        server = Dnsmasq(self.server, self.links[node_if], self.workdir,
                         **kwargs)
        self.dhcp[node_if] = server
        return server.start()

    def stop_dhcp(self, node_if: str) -> None:
        server = self.dhcp.pop(node_if, None)
        if server is not None:
            server.stop()

    def switch_network(self, node_if: str, subnet: str,
                       **kwargs) -> Dnsmasq:
        """Move the link to another network, as a conductor moving the
        port to the tenant network does: the DHCP server is replaced by
        one serving ``subnet`` and the server side's address changes, with
        no link flap (the node side's carrier stays up)."""
        link = self.links[node_if]
        network = ipaddress.ip_network(subnet)
        if not network.subnet_of(LAB_BLOCK):
            raise ValueError('%s is outside %s' % (network, LAB_BLOCK))
        self.stop_dhcp(node_if)
        self.server.run(['ip', '-4', 'addr', 'flush', 'dev', link.server_if])
        link.subnet = network
        self.server.run(['ip', 'addr', 'add', '%s/%d' % (
            link.server_address, network.prefixlen), 'dev', link.server_if])
        return self.start_dhcp(node_if, **kwargs)

    # -- the way to the host ----------------------------------------------

    def add_host_link(self, node_if: str = 'mgmt0') -> HostLink:
        """A veth pair from the host (``rwh-<token>``, an interface of the
        lab's own: no real interface of the host is touched) to the node,
        with a /30 out of 198.19.252.0/22 that no interface of the host
        uses yet. Give the node's end to ``skip_interfaces``: it is no NIC
        to configure."""
        if self.host_link is not None:
            raise ValueError('the lab has a host link already')
        host_if = 'rwh-%s' % self.token
        subnets = list(HOST_LINK_BLOCK.subnets(new_prefix=30))
        start = int.from_bytes(self.token.encode(), 'big') % len(subnets)
        for subnet in subnets[start:] + subnets[:start]:
            used = _run(['ip', '-4', '-o', 'addr', 'show', 'to',
                         str(subnet)]).stdout.strip()
            if not used:
                break
        else:
            raise AssertionError('no free /30 left in %s' % HOST_LINK_BLOCK)
        host_address, node_address = (str(a) for a in subnet.hosts())
        _run(['ip', 'link', 'add', 'name', host_if, 'type', 'veth', 'peer',
              'name', node_if, 'netns', self.node.name])
        self.host_link = HostLink(node_if, host_if, host_address,
                                  node_address)
        _run(['ip', 'addr', 'add', '%s/30' % host_address, 'dev', host_if])
        _run(['ip', 'link', 'set', host_if, 'up'])
        self.node.run(['ip', 'addr', 'add', '%s/30' % node_address, 'dev',
                       node_if])
        self.node.run(['ip', 'link', 'set', node_if, 'up'])
        return self.host_link

    def forward(self, port: int, target_host: str = '127.0.0.1',
                target_port: int | None = None) -> tuple[str, int]:
        """Make ``target_host:target_port`` on the host (a service on the
        host's loopback, like a test broker) reachable from the node at the
        returned address and port, over the host link."""
        link = self.host_link or self.add_host_link()
        server = _Forwarder((link.host_address, port),
                            (target_host, target_port or port))
        thread = threading.Thread(target=server.serve_forever,
                                  kwargs={'poll_interval': 0.1},
                                  daemon=True, name='netlab-forward')
        thread.start()
        self._forwarders.append((server, thread))
        return link.host_address, server.server_address[1]

    # -- teardown -----------------------------------------------------------

    def close(self) -> None:
        """Stop everything and delete both namespaces; safe to repeat."""
        while self._forwarders:
            server, thread = self._forwarders.pop()
            server.closing.set()
            server.shutdown()
            server.server_close()
            thread.join(STOP_TIMEOUT)
        for node_if in list(self.dhcp):
            with contextlib.suppress(Exception):
                self.stop_dhcp(node_if)
        # Deleting a namespace deletes the veth ends in it, and with them
        # their peers (the host link's end on the host too).
        for namespace in (self.node, self.server):
            namespace.delete()
        if self.host_link is not None:
            _run(['ip', 'link', 'delete', self.host_link.host_if],
                 check=False)
            self.host_link = None


def node_url(lab: NetLab, url: str) -> str:
    """``url`` (a broker on the host, like pifpaf's) as a process in the
    node namespace reaches it: through ``forward`` over the host link."""
    parsed = urllib.parse.urlsplit(url)
    host, port = lab.forward(parsed.port or 5672, parsed.hostname)
    credentials = parsed.netloc.rpartition('@')[0]
    netloc = '%s%s:%d' % (credentials + '@' if credentials else '', host,
                          port)
    return urllib.parse.urlunsplit(parsed._replace(netloc=netloc))


def ipv6_network(lab: NetLab) -> dict[str, Link]:
    """Two IPv6-only links: on ``eth0`` (2001:db8:1::/64) dnsmasq
    advertises the prefix with the "managed" flag and serves DHCPv6; on
    ``eth1`` (2001:db8:2::/64) it advertises the prefix for SLAAC only. No
    DHCPv4 anywhere."""
    links = {}
    for index, (node_if, mode) in enumerate(
            ((DHCPV6_LINK, 'dhcpv6'), (SLAAC_LINK, 'slaac')), start=1):
        links[node_if] = lab.add_link(node_if, '198.18.%d.0/24' % index,
                                      subnet6='2001:db8:%d::/64' % index)
        lab.start_dhcp(node_if, ipv4=False, ipv6=mode)
    return links


def rescuing_network(lab: NetLab) -> dict[str, Link]:
    """The usual rescue topology: ``eth0`` and ``eth1`` on links served by
    dnsmasq (198.18.1.0/24 and 198.18.2.0/24), ``eth2`` with no carrier."""
    links = {}
    for index, node_if in enumerate(RESCUING_LINKS, start=1):
        links[node_if] = lab.add_link(node_if, '198.18.%d.0/24' % index)
        lab.start_dhcp(node_if)
    links[NO_CARRIER_LINK] = lab.add_link(NO_CARRIER_LINK, '198.18.3.0/24',
                                          carrier=False)
    return links
