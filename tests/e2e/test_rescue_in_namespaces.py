"""A whole rescue, for real: the ``rescue-worker`` process inside a network
namespace, DHCP from dnsmasq, the broker reached over a management link.

The node namespace has ``eth0`` and ``eth1`` wired to dnsmasq, ``eth2`` with
no carrier and ``mgmt0``, a link to the host where the test's RabbitMQ runs
(skipped by the worker: it is no NIC to configure). The conductor is plain
oslo.messaging. After ``end`` the conductor's port move is played by
replacing each link's dnsmasq with a tenant one serving another range, with
no link flap: the worker's network keeper must pick that up, then exit.
The tenant dnsmasq is not authoritative, as neutron's is not (its
``--dhcp-range=...,static`` command line has no ``--dhcp-authoritative``):
a request for the rescuing address is ignored, not refused. The tenant
addresses must be there within ``tenant_renew_interval`` + 2 s of the flip
(issue 14); the test prints how long they took.

Every test runs once per DHCP backend that leases in a namespace:
``dhclient`` (ISC, systemd-less Debian-like images) and ``udhcpc``
(busybox, TinyIPA-like images).

Needs root, ``ip``, ``dnsmasq``, ``dhclient``, ``udhcpc`` and RabbitMQ
(``tox -e e2e``); skipped otherwise, a failure under ``CI=true``.
"""

import os
import signal
import threading
import time
import urllib.parse
import uuid

import pytest
from passlib.hash import sha512_crypt

from rescue_worker import sandbox
from tests.e2e import netns
from tests.functional.conftest import WorkerProcess
from tests.functional.conftest import transport_url
from tests.functional.conftest import wait_ready

END = 'rescue_worker.finalize_rescue.end'
ERROR = 'rescue_worker.finalize_rescue.error'
STOPPED = 'rescue_worker.worker.stopped'
DHCP_TIMEOUT = 8
RENEW_INTERVAL = 2
#: seconds past a renewal interval by which the tenant addresses are there
HANDOVER_MARGIN = 2
TENANT_SUBNETS = {'eth0': '198.19.1.0/24', 'eth1': '198.19.2.0/24'}
LEASING_BACKENDS = ('dhclient', 'udhcpc')


@pytest.fixture(params=LEASING_BACKENDS)
def backend(request):
    return request.param


@pytest.fixture
def lab(tmp_path, backend):
    netns.require(('ip', 'dnsmasq', backend, 'unshare'))
    url = transport_url()
    lab = netns.NetLab(tmp_path / 'lab')
    try:
        lab.node_url = netns.node_url(lab, url)
        netns.rescuing_network(lab)
        yield lab
    finally:
        lab.close()


@pytest.fixture
def node_worker(tmp_path, lab, backend):
    workers = []

    def make(**options):
        settings = dict(dhcp_backend=backend, dhcp_timeout=DHCP_TIMEOUT,
                        skip_interfaces='lo,mgmt*',
                        # veth MACs are generated; real NICs' are not
                        skip_generated_mac=False,
                        tenant_renew_interval=RENEW_INTERVAL,
                        tenant_renew_period=120,
                        steps='password,account,network,verify')
        settings.update(options)
        worker = WorkerProcess(tmp_path / 'node', lab.node_url,
                               wrap=lab.node.argv, **settings)
        sandbox.seed_root(worker.root_dir)
        workers.append(worker)
        return worker

    yield make
    for worker in workers:
        worker.kill()
        logged = worker.logs()
        for secret in worker.secrets:
            assert secret not in logged


def cast(bus, worker, password):
    request_id = 'req-%s' % uuid.uuid4()
    worker.secrets.append(password)
    bus.client(worker.node_id).cast({'request_id': request_id},
                                    'finalize_rescue',
                                    rescue_password=password,
                                    agent_token=worker.token)
    return request_id


def broker_credentials(url):
    """``user:password@`` of a transport URL: as a whole, since pifpaf's
    password alone ("secret") is a word any Python process holds."""
    return urllib.parse.urlsplit(url).netloc.rpartition('@')[0] + '@'


def read_proc(pid, name):
    try:
        with open('/proc/%d/%s' % (pid, name), 'rb') as f:
            return f.read()
    except (FileNotFoundError, ProcessLookupError):
        return b''


def dhcp_clients_of(worker):
    """Running dhclient/udhcpc processes started by ``worker`` (their
    command lines name files under the worker's own directories)."""
    found = []
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        argv = read_proc(int(entry), 'cmdline').split(b'\0')
        if (argv and os.path.basename(argv[0]) in (b'dhclient', b'udhcpc',
                                                   b'busybox')
                and worker.base_dir.encode() in b' '.join(argv)):
            found.append(int(entry))
    return found


def wait_for_program(pid, module, timeout=30.0):
    """Wait until ``pid`` runs ``python -m module`` (it execs into it)."""
    deadline = time.monotonic() + timeout
    checked = threading.Event()
    while True:
        with open('/proc/%d/cmdline' % pid, 'rb') as f:
            if module.encode() in f.read().split(b'\0'):
                return
        assert time.monotonic() < deadline, '%d never ran %s' % (pid,
                                                                 module)
        checked.wait(0.05)


def process_image(pid):
    """What a tenant with sudo can read of a process: its command line,
    environment and every readable memory mapping."""
    chunks = []
    for name in ('cmdline', 'environ'):
        with open('/proc/%d/%s' % (pid, name), 'rb') as f:
            chunks.append(f.read())
    with open('/proc/%d/maps' % pid) as maps, \
            open('/proc/%d/mem' % pid, 'rb', 0) as mem:
        for line in maps:
            span, perms = line.split()[:2]
            if not perms.startswith('r'):
                continue
            start, end = (int(x, 16) for x in span.split('-'))
            try:
                mem.seek(start)
                chunks.append(mem.read(end - start))
            except (OSError, ValueError, OverflowError):
                continue  # [vvar] and friends cannot be read
    return b''.join(chunks)


def wait_for_acks(server, count, timeout):
    """Wait until the dnsmasq ``server`` acknowledged ``count`` requests."""
    deadline = time.monotonic() + timeout
    looked = threading.Event()
    while server.log().count('DHCPACK(') < count:
        assert time.monotonic() < deadline, (
            'fewer than %d DHCPACKs within %d s:\n%s' % (
                count, timeout, server.log()))
        looked.wait(0.05)


def wait_for_tenant_addresses(lab, names, since, timeout):
    """Seconds from ``since`` until every link in ``names`` has an address
    of its (tenant) subnet; fails after ``timeout``."""
    deadline = since + timeout
    looked = threading.Event()
    while True:
        now = time.monotonic()
        if all(any(lab.links[name].in_range(address)
                   for address in lab.node.ipv4_addresses(name))
               for name in names):
            return now - since
        assert now < deadline, 'no tenant address on %s after %d s' % (
            ', '.join(names), timeout)
        looked.wait(0.05)


def shadow_hash(root_dir, username='rescue'):
    with open(os.path.join(root_dir, 'etc', 'shadow')) as f:
        for line in f:
            fields = line.split(':')
            if fields[0] == username:
                return fields[1]
    raise AssertionError('no %s in shadow' % username)


def test_rescue_leases_both_wired_nics_then_follows_the_tenant_network(
        lab, bus, node_worker, backend):
    worker = node_worker()
    # The broker URL reaches the worker through its environment too, as
    # oslo.config allows: the DHCP clients must not inherit it.
    worker.extra_env['OS_DEFAULT__TRANSPORT_URL'] = lab.node_url
    worker.start()
    wait_ready(bus, worker)
    password = 'tenant-login-%s' % uuid.uuid4()

    request_id = cast(bus, worker, password)

    [end] = bus.wait_for(END, request_id=request_id, timeout=120)
    interfaces = {entry['name']: entry for entry in end['interfaces']}
    assert sorted(interfaces) == ['eth0', 'eth1', 'eth2']
    for name in ('eth0', 'eth1'):
        assert interfaces[name]['dhcp'] == 'leased'
        [address] = interfaces[name]['ipv4']
        assert lab.links[name].in_range(address)
        assert lab.node.ipv4_addresses(name) == [address]
    assert interfaces['eth2']['dhcp'] == 'no_carrier'
    assert lab.node.ipv4_addresses('eth2') == []
    assert [s['status'] for s in end['steps']] == ['done'] * 4
    clients = dhcp_clients_of(worker)
    assert clients, 'no DHCP client of this worker is running'
    for pid in clients:
        assert broker_credentials(lab.node_url).encode() not in \
            read_proc(pid, 'environ'), 'a DHCP client has the broker URL'
    # The tenant logs in with the password the conductor sent, once the
    # lockdown scrubbed the secrets and unlocked the account.
    bus.wait_for(STOPPED, node_id=worker.node_id)
    assert sha512_crypt.verify(password, shadow_hash(worker.root_dir))
    # The process that stays on is a fresh keeper program: no token, no
    # broker credentials in its memory, environment or command line.
    wait_for_program(worker.proc.pid, 'rescue_worker.cmd.keeper')
    exposed = process_image(worker.proc.pid)
    for secret in (worker.token, broker_credentials(lab.node_url)):
        assert secret.encode() not in exposed
    print('keeper %d: %.1f MiB of command line, environment and memory '
          'read, no secret in it' % (worker.proc.pid, len(exposed) / 2**20))

    # Until the flip the keeper's renewals are answered by the rescuing
    # servers and change nothing: a tenant may be logged in already.
    for name in ('eth0', 'eth1'):
        wait_for_acks(lab.dhcp[name], 2, timeout=RENEW_INTERVAL * 3 + 30)
        [address] = interfaces[name]['ipv4']
        assert lab.node.ipv4_addresses(name) == [address]

    # The conductor moves the ports to the tenant network: same links, new
    # DHCP servers and ranges, no link flap. Neutron's dnsmasq is not
    # authoritative (no --dhcp-authoritative): it ignores a request for
    # the rescuing address instead of refusing it, so nothing tells the
    # node that its network changed.
    flipping = time.monotonic()
    for name, subnet in TENANT_SUBNETS.items():
        lab.switch_network(name, subnet, authoritative=False)
    # The flip is over once every link's tenant server serves (the lab
    # replaces them one after the other).
    flipped = time.monotonic()

    # Every interface has its tenant address within one renewal interval
    # and the 2 s a renewal that nobody answers may take (issue 14).
    handover = wait_for_tenant_addresses(lab, TENANT_SUBNETS, flipped,
                                         timeout=60)
    print('%s: tenant addresses %.1f s after the flip (which took %.1f s; '
          'renewal every %d s)' % (backend, handover, flipped - flipping,
                                   RENEW_INTERVAL))
    assert handover <= RENEW_INTERVAL + HANDOVER_MARGIN, (
        'tenant addresses %.1f s after the flip' % handover)

    # The keeper ends, and the worker exits, once every interface leases
    # from the tenant network's server.
    assert worker.wait(timeout=60) == 0
    for name in TENANT_SUBNETS:
        # The tenant address replaced the rescuing one.
        addresses = lab.node.ipv4_addresses(name)
        assert addresses and all(lab.links[name].in_range(a)
                                 for a in addresses), (name, addresses)
    assert lab.node.read_sys('eth0', 'carrier') == '1'
    assert not os.path.exists(worker.token_file)
    assert not os.path.exists(worker.config_file)

    # Started again, it refuses to serve.
    worker.write_config()
    worker.start()
    assert worker.wait(timeout=60) == 0
    assert 'will not serve again' in worker.logs()


def test_no_dhcp_server_ends_with_network_failed_within_dhcp_timeout(
        lab, bus, node_worker):
    lab.stop_dhcp('eth0')
    lab.stop_dhcp('eth1')
    worker = node_worker()
    worker.start()
    wait_ready(bus, worker)

    request_id = cast(bus, worker, 'no-network-%s' % uuid.uuid4())

    [error] = bus.wait_for(ERROR, request_id=request_id,
                           timeout=DHCP_TIMEOUT + 60)
    assert error['error']['code'] == 'network_failed'
    assert 'eth0' in error['error']['message']
    steps = {step['name']: step['status'] for step in error['steps']}
    assert steps == {'password': 'done', 'account': 'done',
                     'network': 'failed', 'verify': 'skipped'}
    [network] = [s for s in error['steps'] if s['name'] == 'network']
    assert network['duration_ms'] < (DHCP_TIMEOUT + 5) * 1000
    # A failed rescue does not lock the worker down.
    status = bus.client(worker.node_id).call(
        {}, 'get_status', agent_token=worker.token)
    assert status['state'] == 'failed'
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 0
