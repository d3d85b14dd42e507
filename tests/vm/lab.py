"""The parts of a virtual-machine rescue: images, a broker, a network, QEMU,
SSH and the conductor.

Everything lives in network namespaces of the test's own (``rwvm-...``):

- the broker namespace (one per session) runs ``pifpaf run rabbitmq`` on
  its own loopback, so RabbitMQ, its Erlang VM and the ``epmd`` that
  outlives pifpaf all die with the namespace (``Namespace.kill_all``);
  the host (the conductor, in the test process) reaches it through a
  relay on the host's loopback;
- each virtual machine's namespace has two Linux bridges: the rescuing
  network (dnsmasq from 198.18.200.0/24, the broker relayed at the
  bridge's own address) and the tenant network (dnsmasq from
  198.19.200.0/24); the VM's two NICs are tap devices made in there, on
  the rescuing bridge until the tenant flip moves them.

A relay listens in one namespace and connects in another: a socket stays
in the network namespace it was made in, so each socket is made by a
thread that has entered the right namespace with ``setns(2)`` (which only
moves the calling thread) and left it again.

No secret reaches a command line: the kernel command line (token, broker
credentials) goes to QEMU in a ``-readconfig`` file of mode 0600, the SSH
password to ``ssh`` through ``SSH_ASKPASS`` and the environment, the node
user's broker password to rabbitmqctl on its standard input (the
project's ``rescue-worker-broker-user``).
"""

from __future__ import annotations

import configparser
import contextlib
import ctypes
import dataclasses
import ipaddress
import json
import os
import queue
import re
import secrets
import selectors
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Sequence

import oslo_messaging
from oslo_config import cfg

from rescue_worker import client as rw_client
from rescue_worker import payloads
from tests.e2e import netns

#: where ``tox -e image`` puts the images, one directory each
IMAGES_DIR = os.path.join(os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__)))), 'build', 'images')
#: the broker's port inside its own namespace (never 5682: CI's and the
#: other suites' pifpaf brokers use that one on the host)
BROKER_PORT = 5711
BROKER_NODENAME = 'rwvm'
RESCUING_SUBNET = ipaddress.ip_network('198.18.200.0/24')
TENANT_SUBNET = ipaddress.ip_network('198.19.200.0/24')
RESCUING_BRIDGE = 'br-resc'
TENANT_BRIDGE = 'br-tenant'
TAPS = ('tap0', 'tap1')
# The project's rescue-worker-broker-user, from this source tree (the
# wrapper runs the same file as the console script, which an environment
# installed before the tool existed lacks).
REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
BROKER_USER_TOOL = [sys.executable,
                    os.path.join(REPO, 'tools', 'rescue-worker-broker-user')]
# Where pifpaf finds rabbitmqctl: Debian's /usr/sbin/rabbitmqctl, run as
# root, switches to the rabbitmq user and reads another Erlang cookie.
RABBITMQCTL_DIRS = ('/usr/lib/rabbitmq/bin', '/usr/libexec/rabbitmq',
                    '/usr/local/sbin')
BROKER_START_TIMEOUT = 120.0
#: how long a NIC may take to lease, as the worker's dhcp_timeout
DHCP_WAIT = 60.0
STOP_TIMEOUT = 10.0
CLONE_NEWNET = 0x40000000
MANIFEST_KEYS = ('name', 'init', 'backend', 'kernel', 'initramfs',
                 'cmdline', 'target_ram_mib', 'ssh_user')

_libc = ctypes.CDLL(None, use_errno=True)


# -- images -----------------------------------------------------------------

@dataclasses.dataclass
class Image:
    """One rescue ramdisk of ``build/images/<name>/`` per its manifest."""

    name: str
    directory: str
    manifest: dict

    @classmethod
    def load(cls, directory: str) -> Image:
        name = os.path.basename(directory)
        try:
            with open(os.path.join(directory, 'manifest.json')) as f:
                manifest = json.load(f)
        except (OSError, ValueError):
            manifest = {}
        return cls(manifest.get('name', name), directory, manifest)

    def path(self, key: str) -> str:
        return os.path.join(self.directory, self.manifest.get(key, ''))

    @property
    def kernel(self) -> str:
        return self.path('kernel')

    @property
    def initramfs(self) -> str:
        return self.path('initramfs')

    @property
    def target_ram_mib(self) -> int:
        return int(self.manifest['target_ram_mib'])

    @property
    def ssh_user(self) -> str:
        return self.manifest.get('ssh_user', 'rescue')

    def missing(self) -> list[str]:
        """What keeps this image from booting: manifest keys, files."""
        if not self.manifest:
            return ['%s/manifest.json' % self.directory]
        gaps = ['manifest key %r' % key for key in MANIFEST_KEYS
                if key not in self.manifest]
        for key in ('kernel', 'initramfs'):
            if key in self.manifest and not os.path.isfile(self.path(key)):
                gaps.append(self.path(key))
        return gaps


def find_images(directory: str = IMAGES_DIR) -> list[Image]:
    """Every image directory under ``directory``, by name."""
    if not os.path.isdir(directory):
        return []
    return [Image.load(os.path.join(directory, name))
            for name in sorted(os.listdir(directory))
            # .work: the image build's scratch space
            if not name.startswith('.')
            and os.path.isdir(os.path.join(directory, name))]


# -- sockets in another network namespace -----------------------------------

def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, 'setns: %s' % os.strerror(errno))


@contextlib.contextmanager
def in_netns(name: str | None) -> Iterator[None]:
    """Run the block with this thread in network namespace ``name`` (None:
    stay). Only the calling thread moves; sockets made meanwhile stay in
    ``name`` for good."""
    if name is None:
        yield
        return
    home = os.open('/proc/thread-self/ns/net', os.O_RDONLY)
    try:
        target = os.open('/run/netns/%s' % name, os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(home)


class Relay:
    """TCP from ``listen`` in namespace ``listen_ns`` to ``target`` in
    namespace ``target_ns`` (None: the host's), as netns.py's forwarder
    but across namespaces."""

    def __init__(self, listen_ns: str | None, listen: tuple[str, int],
                 target_ns: str | None, target: tuple[str, int]) -> None:
        self.target_ns = target_ns
        self.target = target
        with in_netns(listen_ns):
            self.sock = socket.create_server(listen, reuse_port=False)
        self.address = self.sock.getsockname()[:2]
        self.closing = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True,
                                       name='rwvm-relay')
        self.thread.start()

    def _serve(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self.sock, selectors.EVENT_READ)
            while not self.closing.is_set():
                if not selector.select(0.2):
                    continue
                try:
                    conn, _ = self.sock.accept()
                except OSError:
                    continue
                threading.Thread(target=self._pump, args=(conn,),
                                 daemon=True, name='rwvm-pump').start()

    def _pump(self, conn: socket.socket) -> None:
        try:
            with in_netns(self.target_ns):
                upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            upstream.settimeout(10)
            upstream.connect(self.target)
            upstream.settimeout(None)
        except OSError:
            conn.close()
            return
        with conn, upstream, selectors.DefaultSelector() as selector:
            peers = {conn: upstream, upstream: conn}
            for sock in peers:
                selector.register(sock, selectors.EVENT_READ)
            while not self.closing.is_set():
                for key, _ in selector.select(0.5):
                    try:
                        data = key.fileobj.recv(65536)
                        if not data:
                            return
                        peers[key.fileobj].sendall(data)
                    except OSError:
                        return

    def close(self) -> None:
        self.closing.set()
        self.thread.join(STOP_TIMEOUT)
        self.sock.close()


# -- the broker -------------------------------------------------------------

# Run by pifpaf once RabbitMQ is up: hand pifpaf's variables to the test on
# stdout, then hold the broker until the test closes our standard input.
_HOLD = ('import json, os, sys\n'
         'print("RWVM-BROKER " + json.dumps({k: v for k, v in '
         'os.environ.items() if k.startswith("PIFPAF_")}), flush=True)\n'
         'sys.stdin.read()\n')


class Broker:
    """A private RabbitMQ (pifpaf) in a namespace of its own."""

    def __init__(self, workdir: str) -> None:
        self.workdir = workdir
        self.namespace = netns.Namespace('rwvm-mq-%s' % secrets.token_hex(3))
        self.process: subprocess.Popen | None = None
        self.relay: Relay | None = None
        self.env: dict[str, str] = {}
        self.log_file = os.path.join(workdir, 'pifpaf.log')
        self.users: list[str] = []

    def start(self, timeout: float = BROKER_START_TIMEOUT) -> Broker:
        self.namespace.create()
        pifpaf = shutil.which('pifpaf',
                              path=os.path.dirname(sys.executable) +
                              os.pathsep + os.environ.get('PATH', ''))
        log = open(self.log_file, 'wb')
        with log:
            self.process = self.namespace.popen(
                [pifpaf, 'run', 'rabbitmq', '--port', str(BROKER_PORT),
                 '--nodename', BROKER_NODENAME, '--',
                 sys.executable, '-c', _HOLD],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                cwd=self.workdir)
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, args=(lines,), daemon=True,
                         name='rwvm-pifpaf').start()
        try:
            line = lines.get(timeout=timeout)
        except queue.Empty:
            line = ''
        if not line:
            raise AssertionError('pifpaf did not start RabbitMQ within '
                                 '%.0f s:\n%s' % (timeout, self.log_tail()))
        self.env = json.loads(line)
        self.relay = Relay(None, ('127.0.0.1', 0), self.namespace.name,
                           ('127.0.0.1', BROKER_PORT))
        return self

    def _read(self, lines: queue.Queue) -> None:
        assert self.process is not None and self.process.stdout is not None
        for raw in self.process.stdout:
            text = raw.decode(errors='replace')
            if text.startswith('RWVM-BROKER '):
                lines.put(text[len('RWVM-BROKER '):])
        lines.put('')

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError), open(self.log_file) as f:
            return ''.join(f.readlines()[-lines:])
        return ''

    @property
    def host_url(self) -> str:
        """pifpaf's administrator URL as the host reaches the broker."""
        parsed = urllib.parse.urlsplit(self.env['PIFPAF_URL'])
        assert self.relay is not None
        netloc = '%s@%s:%d' % (parsed.netloc.rpartition('@')[0],
                               *self.relay.address)
        return urllib.parse.urlunsplit(parsed._replace(netloc=netloc))

    def _tool_args(self) -> tuple[list[str], dict[str, str]]:
        program = shutil.which('rabbitmqctl',
                               path=os.pathsep.join(RABBITMQCTL_DIRS))
        assert program, 'no rabbitmqctl in %s' % (RABBITMQCTL_DIRS,)
        command = shlex.join(self.namespace.argv(
            [program, '-n', self.env['PIFPAF_RABBITMQ_NODENAME']]))
        # pifpaf's node and its Erlang cookie live under this HOME.
        env = dict(os.environ, HOME=self.env['PIFPAF_RABBITMQ_HOME'])
        return ['--rabbitmqctl', command], env

    def add_node_user(self, node_id: str, directory: str
                      ) -> tuple[str, str]:
        """The node's least-privilege user, as Ironic makes one: the
        user name and its fresh random password."""
        password_file = os.path.join(directory, 'broker-password')
        args, env = self._tool_args()
        result = subprocess.run(
            [*BROKER_USER_TOOL, 'add', node_id, '--generate-password',
             password_file, *args], env=env, capture_output=True,
            text=True, timeout=120)
        assert result.returncode == 0, \
            'rescue-worker-broker-user add failed: %s' % result.stderr
        self.users.append(node_id)
        with open(password_file) as f:
            return result.stdout.strip(), f.read().strip()

    def remove_node_user(self, node_id: str) -> None:
        args, env = self._tool_args()
        subprocess.run([*BROKER_USER_TOOL, 'remove', node_id, *args],
                       env=env, capture_output=True, timeout=120)
        self.users.remove(node_id)

    def close(self) -> None:
        if self.relay is not None:
            self.relay.close()
            self.relay = None
        if self.process is not None:
            # End of input: the holder exits and pifpaf stops RabbitMQ.
            with contextlib.suppress(OSError):
                self.process.stdin.close()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT)
            self.process = None
        # epmd (and whatever else pifpaf left) dies with the namespace.
        self.namespace.delete()


# -- the virtual machine's network ------------------------------------------

class Dnsmasq(netns.Dnsmasq):
    """netns.py's dnsmasq, plus waiting for a line that matches."""

    def wait_for_match(self, pattern: re.Pattern, timeout: float
                       ) -> re.Match:
        """The latest line matching ``pattern``, waiting for one."""
        found: list[re.Match] = []

        def seen() -> bool:
            found[:] = [m for m in map(pattern.search, self._lines) if m]
            return bool(found)

        with self._cond:
            if not self._cond.wait_for(seen, timeout):
                raise TimeoutError('dnsmasq on %s logged nothing like %r '
                                   'within %.1f s' % (
                                       self.link.server_if, pattern.pattern,
                                       timeout))
        return found[-1]  # the latest

    def acked(self, mac: str) -> re.Pattern:
        """The pattern of this server's DHCPACK to ``mac``."""
        return re.compile(r'DHCPACK\(%s\) (\S+) %s' % (
            re.escape(self.link.server_if), re.escape(mac)), re.I)


class VmNetwork:
    """A namespace with the rescuing and the tenant bridge, a dnsmasq on
    each, two taps on the rescuing bridge and the broker relayed to the
    rescuing bridge's address."""

    def __init__(self, workdir: str, broker: Broker) -> None:
        self.workdir = workdir
        self.namespace = netns.Namespace('rwvm-%s' % secrets.token_hex(4))
        self.dhcp: dict[str, Dnsmasq] = {}
        self.relay: Relay | None = None
        self.broker = broker
        self.links = {
            RESCUING_BRIDGE: netns.Link(TAPS[0], RESCUING_BRIDGE,
                                        RESCUING_SUBNET),
            TENANT_BRIDGE: netns.Link(TAPS[0], TENANT_BRIDGE,
                                      TENANT_SUBNET),
        }

    def start(self) -> VmNetwork:
        ns = self.namespace
        ns.create()
        for bridge, link in self.links.items():
            ns.run(['ip', 'link', 'add', bridge, 'type', 'bridge'])
            ns.run(['ip', 'addr', 'add', '%s/%d' % (
                link.server_address, link.subnet.prefixlen), 'dev', bridge])
            ns.run(['ip', 'link', 'set', bridge, 'up'])
        for tap in TAPS:
            ns.run(['ip', 'tuntap', 'add', 'dev', tap, 'mode', 'tap'])
            ns.run(['ip', 'link', 'set', tap, 'master', RESCUING_BRIDGE])
            ns.run(['ip', 'link', 'set', tap, 'up'])
        for bridge, link in self.links.items():
            # The tenant's server is not authoritative, as neutron's dnsmasq
            # is not: a client asking to keep its rescuing address hears
            # nothing (no NAK), so only a new DISCOVER gets a tenant lease.
            self.dhcp[bridge] = Dnsmasq(
                ns, link, self.workdir,
                authoritative=bridge == RESCUING_BRIDGE).start()
        self.relay = Relay(ns.name, (self.broker_address, BROKER_PORT),
                           self.broker.namespace.name,
                           ('127.0.0.1', BROKER_PORT))
        return self

    @property
    def broker_address(self) -> str:
        return self.links[RESCUING_BRIDGE].server_address

    def in_subnet(self, bridge: str, address: str) -> bool:
        return ipaddress.ip_address(address) in self.links[bridge].subnet

    def flip(self) -> None:
        """Move both taps to the tenant bridge, as Ironic's port update
        does: the taps stay up, so the guest sees no link flap."""
        for tap in TAPS:
            self.namespace.run(['ip', 'link', 'set', tap, 'master',
                                TENANT_BRIDGE])

    def tap_state(self, tap: str) -> str:
        return self.namespace.read_sys(tap, 'operstate')

    def close(self) -> None:
        if self.relay is not None:
            self.relay.close()
            self.relay = None
        for server in self.dhcp.values():
            with contextlib.suppress(Exception):
                server.stop()
        self.dhcp.clear()
        # The taps and bridges go with the namespace; its processes (QEMU
        # if still there) are killed first.
        self.namespace.delete()


# -- QEMU -------------------------------------------------------------------

def random_mac() -> str:
    # 52:54:00 is QEMU's prefix: a permanent-looking, locally made MAC.
    return '52:54:00:%02x:%02x:%02x' % tuple(secrets.token_bytes(3))


class Vm:
    """QEMU (TCG) booting an image's kernel and initramfs, two virtio-net
    NICs on the network's taps, the serial console in a file."""

    def __init__(self, network: VmNetwork, image: Image, ram_mib: int,
                 append: str, workdir: str,
                 secrets_to_hide: Sequence[str] = ()) -> None:
        self.network = network
        self.image = image
        self.ram_mib = ram_mib
        self.workdir = workdir
        self.serial_log = os.path.join(workdir, 'serial.log')
        self.config_file = os.path.join(workdir, 'qemu.cfg')
        self.macs = [random_mac() for _ in TAPS]
        self.hide = [s for s in secrets_to_hide if s]
        self.process: subprocess.Popen | None = None
        self.started_at: float | None = None
        if '"' in append:
            raise ValueError('a kernel command line with a double quote')
        # The command line holds the token and the broker credentials:
        # a file only root reads, never QEMU's argv (ps shows it).
        fd = os.open(self.config_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                     0o600)
        with os.fdopen(fd, 'w') as f:
            f.write('[machine]\n  kernel = "%s"\n  initrd = "%s"\n'
                    '  append = "%s"\n' % (image.kernel, image.initramfs,
                                           append))

    def argv(self) -> list[str]:
        argv = ['qemu-system-x86_64', '-accel', 'tcg', '-nodefaults',
                '-no-user-config', '-display', 'none', '-monitor', 'none',
                '-m', str(self.ram_mib), '-readconfig', self.config_file,
                '-serial', 'file:%s' % self.serial_log, '-no-reboot',
                # Entropy for the SSH host keys made at boot.
                '-device', 'virtio-rng-pci']
        for index, (tap, mac) in enumerate(zip(TAPS, self.macs, strict=True)):
            argv += ['-netdev', 'tap,id=n%d,ifname=%s,script=no,'
                     'downscript=no' % (index, tap),
                     '-device', 'virtio-net-pci,netdev=n%d,mac=%s' % (
                         index, mac)]
        return argv

    def start(self) -> None:
        with open(os.path.join(self.workdir, 'qemu.out'), 'wb') as out:
            self.started_at = time.monotonic()
            self.process = self.network.namespace.popen(
                self.argv(), stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def redact(self, text: str) -> str:
        for secret in self.hide:
            text = text.replace(secret, '<redacted>')
        return text

    def console_tail(self, lines: int = 60) -> str:
        """The serial console's last lines, secrets blanked (the kernel
        prints its command line at boot)."""
        chunks = []
        for path in (self.serial_log,
                     os.path.join(self.workdir, 'qemu.out')):
            with contextlib.suppress(OSError), open(
                    path, errors='replace') as f:
                tail = ''.join(f.readlines()[-lines:])
                chunks.append('--- %s (last %d lines) ---\n%s' % (
                    os.path.basename(path), lines, self.redact(tail)))
        return '\n'.join(chunks)

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT)


# -- SSH --------------------------------------------------------------------

class Ssh:
    """OpenSSH's client, run in the VM's namespace, the password given by
    an ``SSH_ASKPASS`` program from the environment (never argv)."""

    OPTIONS = ('-F', '/dev/null', '-o', 'StrictHostKeyChecking=no',
               '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR',
               '-o', 'PubkeyAuthentication=no', '-o',
               'PreferredAuthentications=password,keyboard-interactive',
               '-o', 'NumberOfPasswordPrompts=1', '-o', 'ConnectTimeout=10',
               '-o', 'ServerAliveInterval=10')

    def __init__(self, namespace: netns.Namespace, workdir: str, user: str,
                 password: str) -> None:
        self.namespace = namespace
        self.user = user
        self.password = password
        self.askpass = os.path.join(workdir, 'askpass')
        fd = os.open(self.askpass, os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                     0o700)
        with os.fdopen(fd, 'w') as f:
            f.write('#!/bin/sh\nprintf "%s\\n" "$RWVM_SSH_PASSWORD"\n')

    def run(self, host: str, command: Sequence[str],
            stdin: str | None = None, timeout: float = 120.0
            ) -> subprocess.CompletedProcess:
        env = dict(os.environ, SSH_ASKPASS=self.askpass,
                   SSH_ASKPASS_REQUIRE='force', DISPLAY=':0',
                   RWVM_SSH_PASSWORD=self.password)
        argv = self.namespace.argv(
            ['ssh', *self.OPTIONS, '%s@%s' % (self.user, host),
             shlex.join(command)])
        return subprocess.run(
            argv, input=stdin, stdin=None if stdin is not None
            else subprocess.DEVNULL, capture_output=True, text=True,
            env=env, timeout=timeout)

    def login(self, host: str, command: Sequence[str], timeout: float,
              alive: Callable[[], bool]) -> subprocess.CompletedProcess:
        """Run ``command``, trying again while sshd cannot be reached (255
        and no authentication failure) until ``timeout``: the guest's sshd
        starting tells the host nothing."""
        deadline = time.monotonic() + timeout
        while True:
            started = time.monotonic()
            result = self.run(host, command,
                              timeout=max(5.0, deadline - time.monotonic()))
            #: how long the last try took: connect, authenticate, run
            self.last_took = time.monotonic() - started
            unreachable = result.returncode == 255 and \
                'denied' not in result.stderr
            if not unreachable or time.monotonic() >= deadline or \
                    not alive():
                return result
            # ConnectTimeout bounds each try; a refused connection returns
            # at once, so pace the tries.
            threading.Event().wait(1.0)


# -- the conductor ----------------------------------------------------------

class Conductor:
    """The project's client and completion waiter on the host, through
    the broker's relay, plus a record of every authentic notification
    (``worker.ready`` and ``worker.stopped`` have no request id to wait
    on)."""

    def __init__(self, url: str) -> None:
        # The global one, as the functional tests' Bus: oslo.messaging
        # registers its options there at import (tracing, for one).
        conf = cfg.CONF
        self.transport = oslo_messaging.get_rpc_transport(conf, url=url)
        self.notification_transport = \
            oslo_messaging.get_notification_transport(conf, url=url)
        # Ironic's hashed_rescue_password is crypt's SHA-512 at its
        # default 5000 rounds; passlib's 656000 would cost the TCG guest's
        # sshd seconds per login.
        self.client = rw_client.RescueWorkerClient(self.transport,
                                                   hash_rounds=5000,
                                                   timeout=30, retry=3)
        self.events: list[tuple[float, str, dict]] = []
        self._cond = threading.Condition()
        self.waiter = rw_client.CompletionWaiter(
            self.notification_transport, on_notification=self._seen)
        self.waiter.start()

    def _seen(self, event_type: str, data: dict) -> None:
        with self._cond:
            self.events.append((time.monotonic(), event_type, data))
            self._cond.notify_all()

    def expect(self, node_id: str, token: str) -> None:
        """Check every notification of ``node_id`` against its token."""
        self.waiter.node_tokens[node_id] = token

    def wait_event(self, event_type: str, node_id: str, timeout: float,
                   alive: Callable[[], bool] = lambda: True
                   ) -> tuple[float, dict]:
        """When the first authentic ``event_type`` of ``node_id`` came,
        and its data; gives up early once ``alive()`` is false."""
        deadline = time.monotonic() + timeout

        def found() -> tuple[float, dict] | None:
            for at, kind, data in self.events:
                if kind == event_type and data.get('node_id') == node_id:
                    return at, data
            return None

        with self._cond:
            while True:
                hit = found()
                if hit is not None:
                    return hit
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError('no %s from %s within %.0f s' % (
                        event_type, node_id, timeout))
                if not alive():
                    raise AssertionError('the VM exited before %s' %
                                         event_type)
                self._cond.wait(min(left, 1.0))

    def close(self) -> None:
        self.waiter.stop()
        self.transport.cleanup()
        self.notification_transport.cleanup()


READY = payloads.EVENT_READY
STOPPED = payloads.EVENT_STOPPED


# -- what the tenant sees in the guest --------------------------------------

# Run in the guest as root (sudo), the secrets on standard input, one a
# line: which readable files hold one, what listens, which processes run
# and hold a secret in their command line or environment, and which still
# talk to the broker. Python because both images carry it (the worker is
# Python) and busybox has no ss.
GUEST_SCRIPT = r'''
import json, os, stat, sys
secrets = [s.encode() for s in sys.stdin.read().split("\n") if s]
keep = max(map(len, secrets)) if secrets else 0
found = []
for top in ("/etc", "/var", "/run", "/tmp", "/home", "/root"):
    for d, dirs, files in os.walk(top):
        for n in files:
            p = os.path.join(d, n)
            try:
                if not stat.S_ISREG(os.lstat(p).st_mode):
                    continue
                with open(p, "rb") as f:
                    tail = b""
                    while True:
                        chunk = f.read(1 << 20)
                        if not chunk:
                            break
                        data = tail + chunk
                        for i, s in enumerate(secrets):
                            if s in data and [p, i] not in found:
                                found.append([p, i])
                        tail = data[-keep:]
            except OSError:
                pass
owners = {}
procs = []
for pid in os.listdir("/proc"):
    if not pid.isdigit():
        continue
    try:
        with open("/proc/%s/cmdline" % pid, "rb") as f:
            argv = f.read()
        with open("/proc/%s/comm" % pid) as f:
            comm = f.read().strip()
        with open("/proc/%s/environ" % pid, "rb") as f:
            env = f.read()
        for fd in os.listdir("/proc/%s/fd" % pid):
            try:
                link = os.readlink("/proc/%s/fd/%s" % (pid, fd))
            except OSError:
                continue
            if link.startswith("socket:["):
                owners.setdefault(link[8:-1], set()).add(comm)
    except OSError:
        continue
    held = [i for i, s in enumerate(secrets) if s in argv or s in env]
    procs.append({"pid": int(pid), "comm": comm, "held": held,
                  "argv": [a.decode(errors="replace")[:200]
                           for a in argv.split(b"\0") if a][:12]})
def sockets(name):
    try:
        with open("/proc/net/" + name) as f:
            rows = f.read().splitlines()[1:]
    except OSError:
        return []
    out = []
    for row in rows:
        fields = row.split()
        local, remote, state = fields[1], fields[2], fields[3]
        inode = fields[9]
        out.append({"port": int(local.split(":")[1], 16),
                    "remote_port": int(remote.split(":")[1], 16),
                    "state": state,
                    "owners": sorted(owners.get(inode, ()))})
    return out
tcp = sockets("tcp") + sockets("tcp6")
udp = sockets("udp") + sockets("udp6")
json.dump({"secret_files": found,
           "listening_tcp": [s for s in tcp if s["state"] == "0A"],
           "udp": udp,
           "established_tcp": [s for s in tcp if s["state"] == "01"],
           "processes": procs}, sys.stdout)
'''


def inspect_guest(ssh: Ssh, host: str, secrets_: Sequence[str]) -> dict:
    """Run ``GUEST_SCRIPT`` as root in the guest; its findings."""
    result = ssh.run(host, ['sudo', '-n', 'python3', '-c', GUEST_SCRIPT],
                     stdin='\n'.join(secrets_) + '\n', timeout=300)
    assert result.returncode == 0, \
        'the guest inspection failed (%d): %s' % (result.returncode,
                                                  result.stderr[-2000:])
    return json.loads(result.stdout)


def guest_ipv4(ssh: Ssh, host: str) -> list[str]:
    """The guest's global IPv4 addresses, per its ``ip -4 addr``."""
    result = ssh.run(host, ['ip', '-4', 'addr'], timeout=60)
    assert result.returncode == 0, result.stderr
    return [a for a in re.findall(r'inet (\d+\.\d+\.\d+\.\d+)/',
                                  result.stdout)
            if not a.startswith('127.')]


# -- the image's own worker configuration -----------------------------------

_DECOMPRESSORS = ((b'\x28\xb5\x2f\xfd', ['zstd', '-dc']),
                  (b'\x1f\x8b', ['gzip', '-dc']),
                  (b'\xfd7zXZ\x00', ['xz', '-dc']))
WORKER_CONFIG_DIR = 'etc/rescue-worker/'


def _newc_files(data: bytes, wanted: Callable[[str], bool]
                ) -> dict[str, bytes]:
    """The regular files of a newc cpio archive (concatenated archives
    too) whose path ``wanted`` accepts."""
    files: dict[str, bytes] = {}
    offset = 0
    while offset + 110 <= len(data):
        if data[offset:offset + 6] not in (b'070701', b'070702'):
            offset += 1  # the zero padding between archives
            continue
        header = data[offset:offset + 110]
        mode = int(header[14:22], 16)
        size = int(header[54:62], 16)
        name_size = int(header[94:102], 16)
        name_end = offset + 110 + name_size
        name = data[offset + 110:name_end - 1].decode(errors='replace')
        body = (name_end + 3) & ~3
        if name == 'TRAILER!!!':
            offset = body
            continue
        if (mode & 0o170000) == 0o100000 and wanted(name.lstrip('./')):
            files[name.lstrip('./')] = data[body:body + size]
        offset = (body + size + 3) & ~3
    return files


def worker_settings(image: Image) -> dict[str, str]:
    """``[rescue_worker]`` as the image's own configuration files set it
    (``etc/rescue-worker/*.conf`` in the initramfs, later names winning):
    what the kernel command line does not give, like the keeper's
    ``tenant_renew_interval``."""
    with open(image.initramfs, 'rb') as f:
        magic = f.read(6)
    argv = next((cmd for prefix, cmd in _DECOMPRESSORS
                 if magic.startswith(prefix)), None)
    if argv is None:
        with open(image.initramfs, 'rb') as f:
            data = f.read()
    else:
        data = subprocess.run([*argv, image.initramfs], check=True,
                              capture_output=True, timeout=300).stdout
    files = _newc_files(data, lambda name: name.startswith(
        WORKER_CONFIG_DIR) and name.endswith('.conf'))
    settings: dict[str, str] = {}
    for name in sorted(files):
        parser = configparser.ConfigParser(interpolation=None,
                                           strict=False)
        parser.read_string(files[name].decode(errors='replace'))
        if parser.has_section('rescue_worker'):
            settings.update(parser['rescue_worker'])
    return settings
