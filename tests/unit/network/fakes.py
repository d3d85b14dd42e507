"""Stand-ins for netifaces, sysfs and the DHCP backends, for unit tests.

``FakeNode`` is a node's interfaces as both netifaces and sysfs show them:
give it interfaces, plug cables, and hand ``node.netifaces`` and
``node.sysfs`` to the code under test. ``FakeProgram`` is an executable
DHCP client stand-in that follows a plan and records its calls.
"""

import json
import os
import stat
import sys

from rescue_worker import payloads
from rescue_worker.network import base

AF_LINK = 17
AF_INET = 2
AF_INET6 = 10


class FakeNetifaces:
    """The subset of the netifaces module the worker uses."""

    AF_LINK = AF_LINK
    AF_INET = AF_INET
    AF_INET6 = AF_INET6

    def __init__(self):
        self.table = {}

    def interfaces(self):
        return list(self.table)

    def ifaddresses(self, name):
        if name not in self.table:
            raise ValueError('You must specify a valid interface name.')
        return self.table[name]


class FakeNode:
    """Interfaces in a fake netifaces and a fake ``/sys/class/net``."""

    def __init__(self, root):
        self.sysfs = os.path.join(root, 'sys', 'class', 'net')
        os.makedirs(self.sysfs)
        self.netifaces = FakeNetifaces()

    def add(self, name, mac='52:54:00:12:34:56', addr_assign_type=0,
            carrier=None, ipv4=(), ipv6=()):
        """An interface; ``carrier`` None means the link is down (the
        kernel then refuses to read ``carrier``: no file here)."""
        directory = os.path.join(self.sysfs, name)
        os.makedirs(directory)
        if addr_assign_type is not None:
            self._write(name, 'addr_assign_type', str(addr_assign_type))
        if carrier is not None:
            self.set_carrier(name, carrier)
        entries = {AF_LINK: [{'addr': mac}] if mac else []}
        if ipv4:
            entries[AF_INET] = [{'addr': a, 'netmask': '255.255.255.0'}
                                for a in ipv4]
        if ipv6:
            entries[AF_INET6] = [{'addr': a, 'netmask': 'ffff::/64'}
                                 for a in ipv6]
        self.netifaces.table[name] = entries

    def _write(self, name, attribute, value):
        with open(os.path.join(self.sysfs, name, attribute), 'w') as f:
            f.write(value + '\n')

    def set_carrier(self, name, up):
        self._write(name, 'carrier', '1' if up else '0')

    def set_ipv4(self, name, *addresses):
        self.netifaces.table[name][AF_INET] = [
            {'addr': a, 'netmask': '255.255.255.0'} for a in addresses]

    def set_ipv6(self, name, *addresses):
        self.netifaces.table[name][AF_INET6] = [
            {'addr': a, 'netmask': 'ffff:ffff:ffff:ffff::/64'}
            for a in addresses]


def alive(pid):
    """Whether ``pid`` runs: exists and is no zombie (read from
    ``/proc/<pid>/status``, not the way the code under test reads it)."""
    try:
        with open('/proc/%d/status' % pid) as f:
            for line in f:
                if line.startswith('State:'):
                    return line.split()[1] not in ('Z', 'X')
    except OSError:
        pass
    return False


#: what the worker's environment may hold (oslo.config reads options from
#: it), and no program it starts may see
WORKER_ONLY_VARIABLE = ('OS_DEFAULT__TRANSPORT_URL',
                        'rabbit://node-1:s3cret-broker-password@rabbit/')


def environ_of(pid):
    """The environment ``pid`` runs with, from ``/proc/<pid>/environ``."""
    with open('/proc/%d/environ' % pid, 'rb') as f:
        entries = f.read().split(b'\0')
    return dict(entry.decode().split('=', 1) for entry in entries if entry)


class FakeBackend(base.DhcpBackend):
    """Records what it is asked; answers from ``results`` (name -> status,
    default ``leased``), and gives a leased interface ``addresses`` (IPv4,
    or IPv6 when it has a colon)."""

    name = 'fake'

    def __init__(self, node=None, results=None, addresses=None,
                 error=None, on_configure=None):
        self.node = node
        self.results = results or {}
        self.addresses = addresses or {}
        self.error = error
        self.on_configure = on_configure
        self.calls = []

    def configure(self, interfaces, timeout):
        self.calls.append((list(interfaces), timeout))
        if self.on_configure is not None:
            self.on_configure(list(interfaces))
        if self.error is not None:
            raise self.error
        statuses = {}
        for name in interfaces:
            statuses[name] = self.results.get(name, payloads.DHCP_LEASED)
            if (statuses[name] == payloads.DHCP_LEASED and
                    name in self.addresses):
                address = self.addresses[name]
                if ':' in address:
                    self.node.set_ipv6(name, address)
                else:
                    self.node.set_ipv4(name, address)
        return statuses

    @property
    def configured(self):
        """Every interface handed to configure(), in order."""
        return [name for names, _ in self.calls for name in names]

    def failure_hint(self, interfaces, timeout):
        return 'fake: nothing answered on %s' % ', '.join(interfaces)


#: For a ``FakeProgram`` script: ``rendezvous(mine, other)`` returns once
#: the fake for another interface has reached it too (both hold a FIFO of
#: their own and write a byte into the other's); after 5 s alone it exits
#: 3, so a backend that leases one interface after the other fails.
RENDEZVOUS = '''

def rendezvous(mine, other):
    def alone(signum, frame):
        print('nobody else ran', flush=True)
        os._exit(3)
    signal.signal(signal.SIGALRM, alone)
    signal.alarm(5)
    # Read-write: this never blocks, and the FIFO keeps a reader (ours)
    # until we have the other's byte.
    own = os.open(mine, os.O_RDWR)
    theirs = os.open(other, os.O_WRONLY)  # blocks until the other runs
    os.write(theirs, b'x')
    os.read(own, 1)  # blocks until the other has written to ours
    signal.alarm(0)
'''


def fifo_pair(directory):
    """Two FIFOs for two fakes to meet at (``RENDEZVOUS``)."""
    paths = (os.path.join(directory, 'meet0'),
             os.path.join(directory, 'meet1'))
    for path in paths:
        os.mkfifo(path)
    return paths


class FakeProgram:
    """An executable ``bin/<name>`` written from ``script`` (a Python
    program template with ``%(python)s``, ``%(rendezvous)s``, and the
    paths ``%(plan_file)r`` and ``%(calls_file)r``): it reads the plan from
    the first and appends each call to the second. The paths are written
    into the program, not handed over in the environment: the code under
    test gives its programs an environment of its own."""

    def __init__(self, directory, name, script):
        self.bin = os.path.join(directory, 'bin')
        os.makedirs(self.bin)
        self.program = os.path.join(self.bin, name)
        self.plan_file = os.path.join(directory, 'plan.json')
        self.calls_file = os.path.join(directory, 'calls.jsonl')
        with open(self.program, 'w') as f:
            f.write(script % {'python': sys.executable,
                              'rendezvous': RENDEZVOUS,
                              'plan_file': self.plan_file,
                              'calls_file': self.calls_file})
        os.chmod(self.program, stat.S_IRWXU)
        self.plan({})

    def plan(self, plan):
        with open(self.plan_file, 'w') as f:
            json.dump(plan, f)

    def calls(self):
        try:
            with open(self.calls_file) as f:
                return [json.loads(line) for line in f]
        except FileNotFoundError:
            return []
