"""The network step for real: dhclient and udhcpc against dnsmasq, in
namespaces.

The node namespace has three NICs (veths): ``eth0`` and ``eth1`` on links
where dnsmasq serves 198.18.1.0/24 and 198.18.2.0/24, ``eth2`` on a link
whose far end is down (no carrier). The step runs inside the node
namespace, in a process of its own, once with each backend that leases
there (``dhcp_backend = dhclient``, ``udhcpc``); so do the backend calls
the network keeper makes after lockdown (``lease_server``, ``renew``),
including across a tenant network flip: the far end gets another subnet
and DHCP server while the link stays up. The options are the defaults
(``ipv6`` on among them) but for the bounds: these networks have no IPv6
router, and that must cost nothing but a few seconds.

The files the ``networkd`` backend writes are handed to
``systemd-networkd`` itself, in namespaces of its own, which must parse
them without a complaint.

veth MACs are random (``addr_assign_type`` 1), so the step runs with
``skip_generated_mac = false`` except where that rule is the subject.

Needs root, ``ip``, ``dnsmasq``, ``dhclient``, ``udhcpc``,
``systemd-networkd`` (skipped otherwise; a failure under ``CI=true``).
"""

import contextlib
import hashlib
import ipaddress
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import threading

import pytest

from rescue_worker.network import networkd
from tests.e2e import netns

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
TIMEOUT = 5
TENANT_SUBNET = '198.19.1.0/24'
#: the backends that lease in a namespace, and the program each runs
LEASING_BACKENDS = ('dhclient', 'udhcpc')
NETWORKD = '/lib/systemd/systemd-networkd'

# Runs in the node namespace: one operation of the step or the backend,
# printing its outcome as JSON on the last line of stdout.
RUNNER = r'''
import json, logging, sys, time
from oslo_config import cfg
from rescue_worker import conf as rw_conf
from rescue_worker import errors, pipeline
from rescue_worker.network import base
from rescue_worker.steps import network

args = json.loads(sys.argv[1])
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
conf = cfg.ConfigOpts()
rw_conf.register_opts(conf)
for name, value in args['options'].items():
    conf.set_override(name, value, group=rw_conf.GROUP)
out = {}
started = time.monotonic()
if args['op'] == 'step':
    state = pipeline.RescueState(username='rescue')
    try:
        out['detail'] = network.NetworkStep(conf).run(
            pipeline.RescueRequest('req-e2e', 'unused'), state)
        out['error'] = None
    except errors.RescueError as exc:
        out['error'] = exc.as_dict()
    out['interfaces'] = [entry.to_data() for entry in state.interfaces]
elif args['op'] == 'renew':
    out['status'] = base.get_backend(conf).renew(
        args['interface'], conf.rescue_worker.dhcp_timeout)
elif args['op'] == 'lease_server':
    out['server'] = base.get_backend(conf).lease_server(args['interface'])
elif args['op'] == 'release':
    base.get_backend(conf).release(args['interface'],
                                   conf.rescue_worker.dhcp_timeout)
elif args['op'] == 'stop':
    base.get_backend(conf).stop(args['interface'])
out['elapsed'] = time.monotonic() - started
print(json.dumps(out))
'''


def host_resolver():
    """The host's resolver as it is now, to show it was never touched."""
    try:
        with open('/etc/resolv.conf', 'rb') as f:
            return hashlib.sha256(f.read()).hexdigest()
    except FileNotFoundError:
        return None


@pytest.fixture
def lab(tmp_path):
    netns.require(('ip', 'dnsmasq', 'dhclient', 'udhcpc', 'unshare'))
    before = host_resolver()
    lab = netns.NetLab(tmp_path / 'lab')
    try:
        yield lab
    finally:
        lab.close()
    assert host_resolver() == before
    assert not os.path.exists(lab.node.etc_dir)


@pytest.fixture
def links(lab):
    return netns.rescuing_network(lab)


@pytest.fixture(params=LEASING_BACKENDS)
def backend(request):
    return request.param


@pytest.fixture
def options(tmp_path, backend):
    return {'dhcp_backend': backend, 'dhcp_timeout': TIMEOUT,
            'skip_generated_mac': False,
            'state_dir': str(tmp_path / 'state'),
            'root_dir': str(tmp_path / 'root')}


def in_node(lab, op, options, **args):
    """Run one operation in the node namespace; its JSON outcome."""
    result = lab.node.run(
        [sys.executable, '-c', RUNNER,
         json.dumps({'op': op, 'options': options, **args})],
        check=False, timeout=120, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    outcome['log'] = result.stderr
    return outcome


def statuses(outcome):
    return {entry['name']: entry['dhcp'] for entry in outcome['interfaces']}


def client_daemons(lab, program, interface):
    """Pids of the DHCP client processes (``program``: dhclient, udhcpc)
    in the node namespace that serve ``interface``."""
    found = []
    for pid in lab.node.pids():
        try:
            with open('/proc/%d/cmdline' % pid, 'rb') as f:
                argv = f.read().decode().split('\0')[:-1]
            with open('/proc/%d/stat' % pid) as f:
                if f.read().rsplit(')', 1)[1].split()[0] == 'Z':
                    continue
        except OSError:
            continue
        if not os.path.basename(argv[0]).startswith(program):
            continue
        if program == 'dhclient' and argv[-1:] == [interface]:
            found.append(pid)
        elif program == 'udhcpc' and interface in argv[1:] and \
                argv[argv.index(interface) - 1] == '-i':
            found.append(pid)
    return found


def lease_files(backend, state_dir, interface):
    dhcp_dir = pathlib.Path(state_dir) / 'dhcp'
    if backend == 'dhclient':
        return [dhcp_dir / ('dhclient-%s.leases' % interface)]
    return [dhcp_dir / ('udhcpc-%s.lease' % interface),
            dhcp_dir / ('udhcpc-%s.pid' % interface)]


# -- the step -----------------------------------------------------------------

def test_wired_interfaces_are_leased_and_the_uncabled_one_has_no_carrier(
        lab, links, options, backend):
    outcome = in_node(lab, 'step', options)

    assert outcome['error'] is None, outcome['log']
    assert statuses(outcome) == {'eth0': 'leased', 'eth1': 'leased',
                                 'eth2': 'no_carrier'}
    for entry in outcome['interfaces']:
        name = entry['name']
        assert entry['mac'] == lab.node.read_sys(name, 'address')
        # What the step read back is what the kernel has.
        assert entry['ipv4'] == lab.node.ipv4_addresses(name)
        assert entry['ipv6'] == []
        if name in ('eth0', 'eth1'):
            [address] = entry['ipv4']
            assert links[name].in_range(address), (address, name)
    assert outcome['detail'] == ('eth0 leased, eth1 leased, eth2 '
                                 'no_carrier; 1 skipped by configuration: '
                                 'lo (skip_interfaces)')
    # Lease and pid files live under state_dir.
    for name in ('eth0', 'eth1'):
        for path in lease_files(backend, options['state_dir'], name):
            assert path.exists(), path
        assert len(client_daemons(lab, backend, name)) == 1


@pytest.mark.parametrize('backend', ['dhclient'])
def test_with_generated_macs_skipped_every_veth_is_left_alone(
        lab, links, options):
    options['skip_generated_mac'] = True

    outcome = in_node(lab, 'step', options)

    assert outcome['interfaces'] == []
    assert outcome['error'] == {
        'code': 'network_failed',
        'message': 'no network interface to configure: all were skipped '
                   'by configuration: lo (skip_interfaces); eth0, eth1, '
                   'eth2 (skip_generated_mac: MAC not permanent); adjust '
                   '[rescue_worker] skip_interfaces or skip_generated_mac'}
    assert lab.node.ipv4_addresses('eth0') == []


def test_with_no_dhcp_server_the_step_fails_within_dhcp_timeout(
        lab, links, options, backend):
    lab.stop_dhcp('eth0')
    lab.stop_dhcp('eth1')

    outcome = in_node(lab, 'step', options)

    assert outcome['error']['code'] == 'network_failed'
    message = outcome['error']['message']
    assert message.startswith(
        'no interface got a DHCP lease or configuration (eth0 failed, eth1 '
        'failed, eth2 no_carrier): no DHCP server answered on eth0, eth1 '
        'within 5 s; check that the rescuing network\'s DHCP server is '
        'running')
    assert "(%s's output: %s/dhcp/%s-<interface>.log)" % (
        backend, options['state_dir'], backend) in message
    assert ('IPv6: eth0: no router advertisement; eth1: no router '
            'advertisement') in message
    assert 'no carrier on eth2 within 5 s' in message
    assert statuses(outcome) == {'eth0': 'failed', 'eth1': 'failed',
                                 'eth2': 'no_carrier'}
    # dhclient gives up a second or two after its timeout.
    assert outcome['elapsed'] < TIMEOUT + 4
    assert client_daemons(lab, backend, 'eth0') == []


@pytest.mark.parametrize('backend', ['none'])
def test_backend_none_reports_without_touching_anything(lab, links,
                                                        options):
    options['dhcp_backend'] = 'none'

    outcome = in_node(lab, 'step', options)

    assert outcome['error'] is None
    assert statuses(outcome) == {'eth0': 'skipped', 'eth1': 'skipped',
                                 'eth2': 'skipped'}
    assert lab.node.read_sys('eth0', 'operstate') == 'down'
    assert lab.node.pids() == []


# -- what the network keeper uses after lockdown -----------------------------

def test_lease_server_is_the_dhcp_server_that_leased(lab, links, options):
    in_node(lab, 'step', options)

    for name in ('eth0', 'eth1'):
        outcome = in_node(lab, 'lease_server', options, interface=name)
        assert outcome['server'] == links[name].server_address
    assert in_node(lab, 'lease_server', options,
                   interface='eth2')['server'] is None


def test_renew_on_the_same_network_keeps_the_address(lab, links, options,
                                                     backend):
    first = in_node(lab, 'step', options)
    address = [e for e in first['interfaces'] if e['name'] == 'eth0'][0][
        'ipv4']
    [daemon] = client_daemons(lab, backend, 'eth0')

    outcome = in_node(lab, 'renew', options, interface='eth0')

    assert outcome['status'] == 'leased'
    assert lab.node.ipv4_addresses('eth0') == address
    [renewed_by] = client_daemons(lab, backend, 'eth0')
    if backend == 'udhcpc':
        # SIGUSR1: the running udhcpc renewed, it was not replaced.
        assert renewed_by == daemon
        assert 'udhcpc renewed the lease of eth0' in outcome['log']
        assert lab.dhcp['eth0'].log().count('DHCPACK(s-eth0)') == 2


@pytest.mark.parametrize('authoritative', [True, False],
                         ids=['authoritative', 'silent'])
def test_renew_after_the_tenant_network_flip_moves_to_the_tenant_network(
        lab, links, options, backend, authoritative):
    # The tenant's DHCP server either refuses the rescuing address at once
    # (authoritative: DHCPNAK "wrong network") or ignores the request, and
    # dhclient discovers after its reboot time.
    in_node(lab, 'step', options)
    flaps = lab.node.read_sys('eth0', 'carrier_changes')
    tenant = lab.switch_network('eth0', TENANT_SUBNET,
                                authoritative=authoritative)

    outcome = in_node(lab, 'renew', options, interface='eth0')

    assert outcome['status'] == 'leased', outcome['log']
    [address] = lab.node.ipv4_addresses('eth0')
    assert links['eth0'].in_range(address)
    assert address.startswith('198.19.1.')
    server = in_node(lab, 'lease_server', options, interface='eth0')
    assert server['server'] == tenant.server_address == '198.19.1.1'
    # No link flap, and still a single DHCP client on eth0.
    assert lab.node.read_sys('eth0', 'carrier_changes') == flaps
    assert len(client_daemons(lab, backend, 'eth0')) == 1
    # The other interface kept its rescuing lease.
    assert in_node(lab, 'lease_server', options,
                   interface='eth1')['server'] == '198.18.2.1'


def test_the_lab_leaves_nothing_behind(tmp_path):
    netns.require()
    lab = netns.NetLab(tmp_path / 'lab')
    netns.rescuing_network(lab)
    names = (lab.node.name, lab.server.name)

    lab.close()
    lab.close()

    listed = subprocess.run(['ip', 'netns', 'list'], capture_output=True,
                            text=True, check=True).stdout
    assert not any(name in listed for name in names)
    assert not os.path.exists(lab.node.etc_dir)
    assert not os.path.exists(lab.server.etc_dir)


def test_the_node_reaches_a_host_service_only_through_the_lab(tmp_path):
    # How a worker in the node namespace reaches its test broker.
    netns.require()
    with socket.create_server(('127.0.0.1', 0)) as service:
        port = service.getsockname()[1]

        def echo_once():
            connection, _ = service.accept()
            with connection:
                connection.sendall(connection.recv(64).upper())

        thread = threading.Thread(target=echo_once, daemon=True)
        thread.start()
        with netns.NetLab(tmp_path / 'lab') as lab:
            address, forwarded = lab.forward(port)
            host_if = lab.host_link.host_if
            assert ipaddress.ip_address(address) in netns.LAB_BLOCK
            reply = lab.node.run([sys.executable, '-c', (
                'import socket, sys\n'
                's = socket.create_connection((sys.argv[1], int(sys.argv[2])),'
                ' 10)\n'
                's.sendall(b"ping")\n'
                'print(s.recv(64).decode())\n'), address, str(forwarded)])
            assert reply.stdout.strip() == 'PING'
        thread.join(10)
    shown = subprocess.run(['ip', 'link', 'show', host_if],
                           capture_output=True, text=True)
    assert shown.returncode != 0


# -- udhcpc's lease script ------------------------------------------------

@pytest.mark.parametrize('backend', ['udhcpc'])
def test_udhcpc_applies_mtu_routes_and_resolver_under_root_dir(
        lab, options):
    link = lab.add_link('eth0', '198.18.1.0/24')
    lab.start_dhcp('eth0', options=[
        '--dhcp-option=option:mtu,1400',
        # With classless static routes (option 121) the routers option is
        # ignored (RFC 3442): the default route comes with them.
        '--dhcp-option=option:classless-static-route,'
        '198.18.100.0/24,198.18.1.1,0.0.0.0/0,198.18.1.1',
        '--dhcp-option=option:dns-server,198.18.1.53,198.18.1.54',
        '--dhcp-option=option:domain-name,rescue.test'])
    resolver = os.path.join(lab.node.etc_dir, 'resolv.conf')
    with open(resolver) as f:
        namespace_resolver = f.read()

    outcome = in_node(lab, 'step', options)

    assert statuses(outcome) == {'eth0': 'leased'}
    [address] = lab.node.ipv4_addresses('eth0')
    assert link.in_range(address)
    assert lab.node.read_sys('eth0', 'mtu') == '1400'
    routes = lab.node.run(['ip', '-4', 'route', 'show', 'dev',
                           'eth0']).stdout.splitlines()
    assert 'default via 198.18.1.1' in [' '.join(r.split()[:3])
                                        for r in routes]
    assert '198.18.100.0/24 via 198.18.1.1' in [' '.join(r.split()[:3])
                                                for r in routes]
    with open(os.path.join(options['root_dir'], 'etc', 'resolv.conf')) as f:
        written = f.read().splitlines()
    assert written[1:] == ['search rescue.test', 'nameserver 198.18.1.53',
                           'nameserver 198.18.1.54']
    # Not the resolver of the namespace (nor, the fixture checks, the
    # host's).
    with open(resolver) as f:
        assert f.read() == namespace_resolver
    lease = pathlib.Path(options['state_dir'], 'dhcp', 'udhcpc-eth0.lease')
    state = dict(line.split('=', 1) for line in
                 lease.read_text().splitlines())
    assert (state['event'], state['ip'], state['serverid'], state['mtu']) \
        == ('bound', address, '198.18.1.1', '1400')


@pytest.mark.parametrize('backend', ['udhcpc'])
def test_udhcpc_stop_keeps_the_address_release_gives_it_back(
        lab, links, options):
    in_node(lab, 'step', options)
    [address] = lab.node.ipv4_addresses('eth0')

    in_node(lab, 'stop', options, interface='eth0')

    assert client_daemons(lab, 'udhcpc', 'eth0') == []
    assert lab.node.ipv4_addresses('eth0') == [address]
    assert in_node(lab, 'renew', options,
                   interface='eth0')['status'] == 'leased'
    assert lab.node.ipv4_addresses('eth0') == [address]

    in_node(lab, 'release', options, interface='eth0')

    assert client_daemons(lab, 'udhcpc', 'eth0') == []
    assert lab.node.ipv4_addresses('eth0') == []
    assert in_node(lab, 'lease_server', options,
                   interface='eth0')['server'] is None
    lab.dhcp['eth0'].wait_for_log('DHCPRELEASE(s-eth0) %s' % address, 5)
    # The other interface is untouched.
    assert len(client_daemons(lab, 'udhcpc', 'eth1')) == 1


# -- networkd: its files as systemd-networkd reads them ---------------------

# Runs in a mount and network namespace of its own: an empty /run (no
# system bus, no state of the host's networkd) and /etc/systemd with only
# the files under test; no interface but its own loopback.
NETWORKD_SANDBOX = '''
mount -t tmpfs -o mode=0755 rescue-worker-test /run || exit 125
mkdir -p /run/systemd || exit 125
mount -t tmpfs -o mode=0755 rescue-worker-test /etc/systemd || exit 125
mkdir /etc/systemd/network || exit 125
cp "$1"/*.network /etc/systemd/network/ || exit 125
shift
exec "$@"
'''


def networkd_log(directory, timeout=30):
    """What ``systemd-networkd`` says when it loads the ``.network`` files
    of ``directory`` (once it reports READY=1: configuration loaded)."""
    if not os.path.exists(NETWORKD):
        netns.unavailable('needs %s (Debian package systemd)' % NETWORKD)
    # networkd drops to its own user before it notifies: the socket must
    # be reachable by anyone (a private temporary directory is not).
    notify_dir = tempfile.mkdtemp(prefix='rescue-worker-notify-')
    os.chmod(notify_dir, 0o711)
    notify = os.path.join(notify_dir, 'notify')
    with contextlib.ExitStack() as cleanup, \
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        cleanup.callback(shutil.rmtree, notify_dir, ignore_errors=True)
        sock.bind(notify)
        os.chmod(notify, 0o666)
        sock.settimeout(timeout)
        env = dict(os.environ, NOTIFY_SOCKET=notify,
                   SYSTEMD_LOG_TARGET='console', SYSTEMD_LOG_LEVEL='info',
                   SYSTEMD_LOG_COLOR='0')
        process = subprocess.Popen(
            ['unshare', '--mount', '--net', '--propagation', 'private',
             'sh', '-c', NETWORKD_SANDBOX, 'sandbox', directory, NETWORKD],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, env=env)
        try:
            messages = b''
            while b'READY=1' not in messages:
                try:
                    messages += sock.recv(4096) + b'\n'
                except TimeoutError:
                    break
        finally:
            process.terminate()
            output, _ = process.communicate(timeout=timeout)
    assert b'READY=1' in messages, 'systemd-networkd did not start:\n' + \
        output
    return output


def test_systemd_networkd_accepts_the_network_files(tmp_path):
    netns.require(('unshare',))
    root = tmp_path / 'root'
    networkd.NetworkdBackend(str(root)).configure(['eth0', 'enp3s0f1'], 5)
    networkd.NetworkdBackend(str(root), ipv6=False).configure(['eno1'], 5)
    written = root / 'etc' / 'systemd' / 'network'
    names = sorted(os.listdir(written))
    assert names == ['50-rescue-eno1.network', '50-rescue-enp3s0f1.network',
                     '50-rescue-eth0.network']
    # A file networkd must complain about: the check can fail.
    (written / '50-rescue-broken.network').write_text(
        '[Match]\nName=broken0\n\n[Network]\nDHCP=maybe\nIPv6AcceptRA=yes\n'
        'Bogus=1\n')

    log = networkd_log(str(written))

    complaints = [line for line in log.splitlines()
                  if '/etc/systemd/network/' in line]
    assert [line for line in complaints if 'broken' not in line] == [], log
    assert any('50-rescue-broken.network:5' in line and 'maybe' in line
               for line in complaints), log
    assert any('50-rescue-broken.network:7' in line and 'Bogus' in line
               for line in complaints), log
