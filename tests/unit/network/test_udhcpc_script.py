"""The lease script of the udhcpc backend (``udhcpc-script.sh``), run as
udhcpc runs it: an event and the lease in the environment.

A fake ``ip`` first on the PATH records every call and keeps a pretend
interface (``rwtest0``: addresses, routes, MTU), so no interface of the
machine is ever touched; the real one is exercised by ``tests/e2e``. The
script runs under each shell an image may have (sh, dash, busybox sh).

"The same udhcpc" is the process that runs the script (the script's
parent); "a new udhcpc" runs it through an extra shell.
"""

import json
import os
import subprocess
import sys

import pytest

from tests import parts

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__))))), 'rescue_worker',
    'network', 'udhcpc-script.sh')
IFACE = 'rwtest0'

FAKE_IP = r'''#!%(python)s
import json, os, sys

path = os.environ['FAKE_IP_STATE']
with open(path) as f:
    state = json.load(f)
args = sys.argv[1:]
state['calls'].append(' '.join(args))
family = '6' if args[:1] == ['-6'] else '4'
if args[:1] in (['-4'], ['-6']):
    args = args[1:]
code = 0
out = ''
if args[:3] == ['addr', 'show', 'dev']:
    for address in state['addresses']:
        if (':' in address) == (family == '6'):
            out += '    inet%%s %%s scope global %%s\n' %% (
                '6' if family == '6' else '', address, args[3])
elif args[:2] == ['addr', 'add']:
    if args[2] in state['addresses']:
        code = 2
    else:
        state['addresses'].append(args[2])
elif args[:2] == ['addr', 'del']:
    if args[2] in state['addresses']:
        state['addresses'].remove(args[2])
    else:
        code = 2
elif args[:2] == ['route', 'show']:
    out = ''.join(r + '\n' for r in state['routes'])
elif args[:2] == ['route', 'add']:
    route = ' '.join(args[2:])
    if any(r.split(' dev ')[0].split(' via ')[0] == args[2]
           for r in state['routes']):
        code = 2
    else:
        state['routes'].append(route)
elif args[:2] == ['route', 'replace']:
    state['routes'] = [r for r in state['routes']
                       if r.split(' ')[0] != args[2]]
    state['routes'].append(' '.join(args[2:]))
elif args[:2] == ['route', 'del']:
    # The destination, and the gateway and device when given.
    wanted = dict(zip(args[3::2], args[4::2]))

    def matches(route):
        words = route.split()
        fields = dict(zip(words[1::2], words[2::2]))
        return words[0] == args[2] and all(
            fields.get(k) == v for k, v in wanted.items())

    matching = [r for r in state['routes'] if matches(r)]
    if matching:
        state['routes'].remove(matching[0])
    else:
        code = 2
elif args[:4] == ['link', 'set', 'dev', os.environ['FAKE_IP_IFACE']]:
    if args[4:5] == ['mtu']:
        state['mtu'] = int(args[5])
    elif args[4:5] == ['up']:
        state['up'] = True
else:
    code = 1
with open(path, 'w') as f:
    json.dump(state, f)
sys.stdout.write(out)
if code:
    sys.stderr.write('RTNETLINK answers: File exists\n')
sys.exit(code)
'''

SHELLS = {'sh': ['sh'], 'dash': ['dash'], 'busybox': ['busybox', 'sh']}


class Node:
    """The fake ``ip``'s pretend interface, and the script run against
    it."""

    def __init__(self, tmp_path, shell):
        parts.require_programs(SHELLS[shell][0])
        self.shell = SHELLS[shell]
        bin_dir = tmp_path / 'bin'
        bin_dir.mkdir()
        ip = bin_dir / 'ip'
        ip.write_text(FAKE_IP % {'python': sys.executable})
        ip.chmod(0o755)
        self.state_file = tmp_path / 'ip.json'
        self.state_file.write_text(json.dumps(
            {'calls': [], 'addresses': [], 'routes': [], 'mtu': 1500,
             'up': False}))
        self.dhcp_dir = tmp_path / 'state' / 'dhcp'
        self.dhcp_dir.mkdir(parents=True)
        self.root = tmp_path / 'root'
        self.env = {'PATH': '%s:%s' % (bin_dir, os.environ['PATH']),
                    'FAKE_IP_STATE': str(self.state_file),
                    'FAKE_IP_IFACE': IFACE,
                    'RESCUE_WORKER_DHCP_DIR': str(self.dhcp_dir),
                    'RESCUE_WORKER_ROOT_DIR': str(self.root),
                    'interface': IFACE}

    def run(self, event, new_udhcpc=False, family='4', **lease):
        env = dict(self.env, RESCUE_WORKER_FAMILY=family, **lease)
        argv = [*self.shell, SCRIPT, event]
        if new_udhcpc:
            # Another parent: a udhcpc that has not run the script yet.
            argv = ['sh', '-c', '"$@"; exit $?', 'udhcpc', *argv]
        result = subprocess.run(argv, env=env, capture_output=True,
                                text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        self.stderr = result.stderr
        return result

    @property
    def ip(self):
        return json.loads(self.state_file.read_text())

    def calls(self):
        return self.ip['calls']

    def reset_calls(self):
        state = self.ip
        state['calls'] = []
        self.state_file.write_text(json.dumps(state))

    def lease_file(self, name='udhcpc'):
        path = self.dhcp_dir / ('%s-%s.lease' % (name, IFACE))
        return dict(line.split('=', 1)
                    for line in path.read_text().splitlines())

    def applied(self, name='udhcpc'):
        path = self.dhcp_dir / ('%s-%s.applied' % (name, IFACE))
        return dict(line.split('=', 1)
                    for line in path.read_text().splitlines())


@pytest.fixture(params=sorted(SHELLS))
def node(request, tmp_path):
    return Node(tmp_path, request.param)


LEASE = {'ip': '198.18.1.150', 'mask': '24', 'subnet': '255.255.255.0',
         'broadcast': '198.18.1.255', 'router': '198.18.1.1',
         'serverid': '198.18.1.1', 'lease': '3600'}


def test_bound_applies_address_mtu_routes_and_resolver(node):
    node.run('bound', mtu='1400',
             staticroutes='198.18.100.0/24 198.18.1.1 0.0.0.0/0 198.18.1.1',
             dns='198.18.1.53 198.18.1.54', domain='rescue.test',
             search='example.test', **LEASE)

    ip = node.ip
    assert ip['up'] and ip['mtu'] == 1400
    assert ip['addresses'] == ['198.18.1.150/24']
    assert '-4 addr add 198.18.1.150/24 broadcast 198.18.1.255 dev ' \
        'rwtest0' in ip['calls']
    # Classless static routes, the default among them; the routers option
    # is ignored then (RFC 3442).
    assert ip['routes'] == ['198.18.100.0/24 via 198.18.1.1 dev rwtest0',
                            'default via 198.18.1.1 dev rwtest0']
    assert (node.root / 'etc' / 'resolv.conf').read_text() == (
        "# Written by rescue-worker's udhcpc script for rwtest0\n"
        'search rescue.test example.test\n'
        'nameserver 198.18.1.53\nnameserver 198.18.1.54\n')
    lease = node.lease_file()
    assert (lease['event'], lease['seq'], lease['ip'], lease['serverid'],
            lease['mtu']) == ('bound', '1', '198.18.1.150', '198.18.1.1',
                              '1400')
    assert lease['pid'] == str(os.getpid())
    assert node.applied() == {
        'ip': '198.18.1.150', 'mask': '24', 'router': '198.18.1.1',
        'staticroutes': '198.18.100.0/24 198.18.1.1 0.0.0.0/0 198.18.1.1'}
    assert not (node.dhcp_dir / ('udhcpc-%s.applying' % IFACE)).exists()


def test_the_routers_option_gives_the_default_route(node):
    node.run('bound', **dict(LEASE, router='198.18.1.1 198.18.1.2'))

    assert node.ip['routes'] == ['default via 198.18.1.1 dev rwtest0']


def test_another_interfaces_default_route_is_kept(node):
    state = node.ip
    state['routes'] = ['default via 198.18.2.1 dev rwtest1']
    node.state_file.write_text(json.dumps(state))

    node.run('bound', **LEASE)

    assert node.ip['routes'] == ['default via 198.18.2.1 dev rwtest1']
    assert 'default route via 198.18.1.1 not added' in node.stderr


def test_without_mask_the_prefix_comes_from_the_subnet(node):
    lease = dict(LEASE, subnet='255.255.252.0')
    del lease['mask']

    node.run('bound', **lease)

    assert node.ip['addresses'] == ['198.18.1.150/22']


def test_no_resolver_is_written_without_name_servers(node):
    node.run('bound', **LEASE)

    assert not (node.root / 'etc' / 'resolv.conf').exists()


def test_a_backslash_sequence_from_the_server_adds_no_line(node):
    # dash's echo would turn "\n" into a line of its own: a name server
    # of the sender's choosing.
    node.run('bound', dns='198.18.1.53', domain='rescue.test',
             search='example.test\\nnameserver\\0406.6.6.6', **LEASE)

    assert (node.root / 'etc' / 'resolv.conf').read_text() == (
        "# Written by rescue-worker's udhcpc script for rwtest0\n"
        'search rescue.test\n'
        'nameserver 198.18.1.53\n')
    # The lease file keeps the value as it came, on one line.
    assert node.lease_file()['search'] == \
        'example.test\\nnameserver\\0406.6.6.6'


def test_only_host_names_are_search_domains(node):
    node.run('bound', dns='198.18.1.53',
             domain='Rescue-1.test under_score.test',
             search='ok.example.test d\u00e9j\u00e0.test $(reboot) a;b '
                    'x/y 2nd.test',
             **LEASE)

    assert (node.root / 'etc' / 'resolv.conf').read_text().splitlines()[1] \
        == 'search Rescue-1.test ok.example.test 2nd.test'
    assert node.stderr.count('a search domain that is no host name left '
                             'out') == 5


def test_a_renewal_of_the_same_lease_changes_nothing(node):
    node.run('bound', **LEASE)
    node.reset_calls()

    node.run('renew', **LEASE)

    assert node.ip['addresses'] == ['198.18.1.150/24']
    assert [c for c in node.calls() if ' add ' in c or ' del ' in c] == []
    assert node.lease_file()['event'] == 'renew'
    assert node.lease_file()['seq'] == '2'


def test_a_new_udhcpc_keeps_the_address_until_its_lease_replaces_it(node):
    node.run('bound', **LEASE)
    node.reset_calls()

    # A udhcpc started anew after the tenant network flip: its first
    # deconfig leaves the address; its lease replaces it.
    node.run('deconfig', new_udhcpc=True)

    assert node.ip['addresses'] == ['198.18.1.150/24']
    assert node.lease_file()['event'] == 'deconfig'
    assert 'serverid' not in node.lease_file()

    node.run('bound', new_udhcpc=True, **dict(
        LEASE, ip='198.19.1.120', router='198.19.1.1',
        serverid='198.19.1.1'))

    ip = node.ip
    assert ip['addresses'] == ['198.19.1.120/24']
    assert ip['routes'] == ['default via 198.19.1.1 dev rwtest0']
    assert 'route del default via 198.18.1.1 dev rwtest0' in ip['calls']
    assert node.lease_file()['serverid'] == '198.19.1.1'


def test_a_lost_lease_takes_the_address_and_routes_away(node):
    node.run('bound', staticroutes='198.18.100.0/24 198.18.1.1', **LEASE)

    node.run('deconfig')  # the same udhcpc: its lease is gone

    ip = node.ip
    assert ip['addresses'] == [] and ip['routes'] == []
    assert node.applied() == {}
    assert 'lease lost: removing 198.18.1.150' in node.stderr
    # Lost again: nothing left to remove.
    node.run('deconfig')
    assert node.lease_file()['seq'] == '3'


def test_leasefail_and_nak_are_recorded(node):
    node.run('leasefail')
    assert node.lease_file()['event'] == 'leasefail'
    node.run('nak')
    assert (node.lease_file()['event'], node.lease_file()['seq']) == (
        'nak', '2')
    assert node.ip['addresses'] == []


def test_an_unknown_event_is_ignored(node):
    node.run('something')

    assert 'ignoring event something' in node.stderr
    assert not (node.dhcp_dir / ('udhcpc-%s.lease' % IFACE)).exists()


def test_udhcpc6_adds_the_address_and_takes_it_away(node):
    node.run('bound', family='6', ipv6='2001:db8:1::150',
             dns='2001:db8:1::53')

    assert node.ip['addresses'] == ['2001:db8:1::150/128']
    assert '-6 addr add 2001:db8:1::150/128 dev rwtest0' in node.calls()
    assert node.lease_file('udhcpc6')['ipv6'] == '2001:db8:1::150'
    assert (node.root / 'etc' / 'resolv.conf').read_text().endswith(
        'nameserver 2001:db8:1::53\n')

    node.run('bound', family='6', new_udhcpc=True, ipv6='2001:db8:1::151')

    assert node.ip['addresses'] == ['2001:db8:1::151/128']

    node.run('deconfig', family='6', new_udhcpc=True)
    assert node.ip['addresses'] == ['2001:db8:1::151/128']


def test_without_the_state_directory_setting_it_refuses(node):
    env = dict(node.env, RESCUE_WORKER_DHCP_DIR='')
    result = subprocess.run([*node.shell, SCRIPT, 'bound'], env=env,
                            capture_output=True, text=True, timeout=30)

    assert result.returncode != 0
    assert node.calls() == []


def test_the_script_is_posix_sh():
    parts.require_programs('checkbashisms', package='devscripts')
    result = subprocess.run(['checkbashisms', '--posix', '--extra',
                             SCRIPT], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert os.access(SCRIPT, os.X_OK)
