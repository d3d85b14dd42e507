"""The dhclient backend: how it runs dhclient and reads what came of it.

A fake ``dhclient`` (a script in the test's directory) stands in for ISC
dhclient: per interface it leases from a server (appending a lease block
and going to the background as the real one does), gets nothing (exit 2)
or hangs, as the plan of the test says; run with ``-6`` it follows the
plan of ``<interface>/6`` and writes ``lease6`` blocks. The real one is
exercised by ``tests/e2e``.
"""

import os
import stat
import time

import pytest

from rescue_worker import payloads
from rescue_worker.network import base
from rescue_worker.network import dhclient
from rescue_worker.network import ipv6
from tests.unit.network import fakes

FAKE_DHCLIENT = '''#!%(python)s
import json, os, signal, sys, time
%(rendezvous)s

args = sys.argv[1:]
iface = args[-1]
opts = {args[i]: args[i + 1] for i in range(len(args) - 1)
        if args[i] in ('-pf', '-lf', '-cf')}
from rescue_worker.network import leases as recorded_leases
# INIT-REBOOT: a lease recorded and not expired is asked for first.
recorded = recorded_leases.newest(opts['-lf'], iface)
with open(%(calls_file)r, 'a') as f:
    f.write(json.dumps({'argv': args, 'pid': os.getpid(),
                        'config': open(opts['-cf']).read(),
                        'recorded': recorded and recorded.address,
                        'env': dict(os.environ)}) + '\\n')
family6 = '-6' in args
with open(%(plan_file)r) as f:
    plan = json.load(f).get(iface + ('/6' if family6 else ''), {})
print('fake dhclient on', iface, flush=True)


def lease(server, expire):
    if family6:
        with open(opts['-lf'], 'a') as f:
            f.write('lease6 {\\n  interface "%%s";\\n  ia-na 1:2:3:4 {\\n'
                    '    iaaddr %%s {\\n      starts %%d;\\n'
                    '      max-life %%d;\\n    }\\n  }\\n'
                    '  option dhcp6.server-id %%s;\\n}\\n' %% (
                        iface, plan.get('address', '2001:db8:1::100'),
                        time.time(), 3600 if expire == 'never' else 0,
                        server))
        return
    with open(opts['-lf'], 'a') as f:
        f.write('lease {\\n  interface "%%s";\\n  fixed-address %%s;\\n'
                '  option dhcp-server-identifier %%s;\\n  expire %%s;\\n}\\n'
                %% (iface, plan.get('address', '198.18.1.100'), server,
                   expire))


if '-r' in args:
    lease(plan['server'], time.strftime('0 %%Y/%%m/%%d %%H:%%M:%%S',
                                        time.gmtime()))
    sys.exit(0)
if plan.get('meet'):
    rendezvous(*plan['meet'])
if plan.get('hang') or (recorded and not family6 and
                        plan.get('reboot') == 'silent'):
    # ('silent': nobody answers the request for the recorded lease, and
    # the real one would go on asking for it.)
    while True:
        signal.pause()
if not plan.get('server'):
    print('No DHCPOFFERS received.', flush=True)
    sys.exit(2)
lease(plan['server'], 'never')
if os.fork():
    sys.exit(0)
os.setsid()
with open(opts['-pf'], 'w') as f:
    f.write('%%d\\n' %% os.getpid())
os.close(1)
os.close(2)
while True:
    signal.pause()
'''


@pytest.fixture
def fake(tmp_path):
    return fakes.FakeProgram(str(tmp_path), 'dhclient', FAKE_DHCLIENT)


@pytest.fixture
def image_config(tmp_path):
    path = tmp_path / 'dhclient.conf'
    path.write_text('request subnet-mask, routers;\n')
    return str(path)


@pytest.fixture
def backend(tmp_path, fake, image_config):
    backend = dhclient.DhclientBackend(str(tmp_path / 'state'),
                                       executable=fake.program,
                                       base_config=image_config)
    yield backend
    for name in ('eth0', 'eth1'):
        backend.stop(name)


def daemon_pid(backend, name):
    return backend._daemon_pid(name)


# -- leasing ------------------------------------------------------------------

def test_each_interface_gets_dhclient_once_with_its_own_files(
        backend, fake, tmp_path):
    fake.plan({'eth0': {'server': '198.18.1.1'},
               'eth1': {'server': '198.18.2.1'}})

    statuses = backend.configure(['eth0', 'eth1'], 30)

    assert statuses == {'eth0': 'leased', 'eth1': 'leased'}
    directory = str(tmp_path / 'state' / 'dhcp')
    argv = sorted((call['argv'] for call in fake.calls()),
                  key=lambda a: a[-1])
    assert argv == [
        ['-1', '-v', '-pf', directory + '/dhclient-%s.pid' % name,
         '-lf', directory + '/dhclient-%s.leases' % name,
         '-cf', directory + '/dhclient-%s.conf' % name, name]
        for name in ('eth0', 'eth1')]
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700


def test_dhclient_runs_without_the_workers_environment(backend, fake,
                                                      monkeypatch):
    monkeypatch.setenv(*fakes.WORKER_ONLY_VARIABLE)
    fake.plan({'eth0': {'server': '198.18.1.1'}})

    assert backend.configure(['eth0'], 30) == {'eth0': 'leased'}

    assert fake.calls()[0]['env'] == {'PATH': os.environ['PATH'],
                                      'LC_ALL': 'C'}
    # The daemon that renews the lease outlives the worker.
    environ = fakes.environ_of(daemon_pid(backend, 'eth0'))
    assert fakes.WORKER_ONLY_VARIABLE[0] not in environ
    assert fakes.WORKER_ONLY_VARIABLE[1] not in repr(environ)


def test_the_config_is_the_images_own_then_the_timeout_of_the_rescue(
        backend, fake):
    fake.plan({'eth0': {'server': '198.18.1.1'}})

    backend.configure(['eth0'], 30)

    config = fake.calls()[0]['config']
    assert 'request subnet-mask, routers;\n' in config
    assert config.endswith('\ntimeout 30;\nreboot 10;\n')


def test_without_an_image_config_debians_request_list_is_used(
        tmp_path, fake):
    backend = dhclient.DhclientBackend(
        str(tmp_path / 'state'), executable=fake.program,
        base_config=str(tmp_path / 'none.conf'))
    fake.plan({'eth0': {'server': '198.18.1.1'}})

    try:
        backend.configure(['eth0'], 5)
    finally:
        backend.stop('eth0')

    config = fake.calls()[0]['config']
    assert dhclient.DEFAULT_CONFIG in config
    assert config.endswith('\ntimeout 5;\nreboot 1;\n')


@pytest.mark.parametrize('timeout, written', [(2.5, 3), (0.2, 1), (60, 60)])
def test_the_timeout_is_whole_seconds_rounded_up(backend, fake, timeout,
                                                 written):
    backend.configure(['eth0'], timeout)

    assert '\ntimeout %d;\n' % written in fake.calls()[0]['config']


@pytest.mark.parametrize('timeout, reboot', [(30, 10), (60, 10), (12, 4),
                                             (5, 1), (1, 1)])
def test_a_recorded_lease_is_asked_for_at_most_10_s(timeout, reboot):
    assert dhclient.reboot_time(timeout) == reboot


def test_no_lease_is_a_failure_and_dhclients_output_is_kept(
        backend, fake, tmp_path):
    fake.plan({'eth0': {'server': '198.18.1.1'}})

    statuses = backend.configure(['eth0', 'eth1'], 5)

    assert statuses == {'eth0': 'leased', 'eth1': 'failed'}
    log = (tmp_path / 'state' / 'dhcp' / 'dhclient-eth1.log').read_text()
    assert 'No DHCPOFFERS received.' in log
    assert ' -1 -v -pf ' in log


def test_interfaces_are_leased_in_parallel(backend, fake, tmp_path):
    # Each fake waits for the other to have started: run one after the
    # other, the first would give up.
    one, two = fakes.fifo_pair(str(tmp_path))
    fake.plan({'eth0': {'server': '198.18.1.1', 'meet': [one, two]},
               'eth1': {'server': '198.18.2.1', 'meet': [two, one]}})

    statuses = backend.configure(['eth0', 'eth1'], 5)

    assert statuses == {'eth0': 'leased', 'eth1': 'leased'}


def test_a_dhclient_that_hangs_is_killed_at_its_bound(backend, fake,
                                                      monkeypatch):
    monkeypatch.setattr(dhclient, 'GRACE', 0.5)
    fake.plan({'eth0': {'hang': True}})
    started = time.monotonic()

    statuses = backend.configure(['eth0'], 1)

    # timeout 1 s + reboot 1 s + grace
    assert statuses == {'eth0': 'failed'}
    assert time.monotonic() - started < 5
    assert not fakes.alive(fake.calls()[0]['pid'])


def test_a_missing_dhclient_is_a_backend_error_saying_what_to_install(
        tmp_path):
    backend = dhclient.DhclientBackend(str(tmp_path),
                                       executable='no-such-dhclient')

    with pytest.raises(base.BackendError) as info:
        backend.configure(['eth0'], 5)

    assert 'isc-dhcp-client' in str(info.value)
    assert 'dhcp_backend' in str(info.value)


def test_no_interfaces_runs_nothing(backend, fake):
    assert backend.configure([], 5) == {}
    assert fake.calls() == []


def test_the_failure_hint_names_the_interfaces_and_where_to_look(
        backend, tmp_path):
    hint = backend.failure_hint(['eth0', 'eth1'], 30)

    assert hint == (
        "no DHCP server answered on eth0, eth1 within 30 s; check that the "
        "rescuing network's DHCP server is running and that these ports "
        "are on that network (dhclient's output: %s/state/dhcp/"
        "dhclient-<interface>.log)" % tmp_path)


@pytest.mark.parametrize('name', ['', '../etc', 'a/b', '.hidden'])
def test_an_interface_name_that_is_no_file_name_is_refused(backend, name):
    with pytest.raises(ValueError):
        backend.paths(name)


# -- for the network keeper: lease_server, renew, stop, release --------------

def test_lease_server_is_the_server_of_the_newest_lease(backend, fake):
    fake.plan({'eth0': {'server': '198.18.1.1'}})
    backend.configure(['eth0'], 5)
    fake.plan({'eth0': {'server': '198.19.1.1', 'address': '198.19.1.5'}})
    backend.renew('eth0', 5)

    assert backend.lease_server('eth0') == '198.19.1.1'
    assert backend.lease_server('eth1') is None


def test_renew_replaces_the_running_dhclient_instead_of_adding_one(
        backend, fake):
    fake.plan({'eth0': {'server': '198.18.1.1'}})
    backend.configure(['eth0'], 5)
    first = daemon_pid(backend, 'eth0')

    assert backend.renew('eth0', 5) == 'leased'

    second = daemon_pid(backend, 'eth0')
    assert second is not None and second != first
    assert not fakes.alive(first)
    assert fake.calls()[-1]['argv'][:2] == ['-1', '-v']


def test_a_renewal_asks_for_its_recorded_lease_once_then_discovers(
        backend, fake):
    # One INIT-REBOOT request (reboot 0), and once discovering a
    # DHCPDISCOVER every second or so (initial-interval 1, not 3).
    fake.plan({'eth0': {'server': '198.18.1.1'}})
    backend.configure(['eth0'], 5)

    backend.renew('eth0', 5)

    first, renewal = (call['config'] for call in fake.calls())
    assert first.endswith('\ntimeout 5;\nreboot 1;\n')
    assert renewal.endswith(
        '\ntimeout 5;\nreboot 0;\ninitial-interval 1;\n')


def test_after_the_flip_an_unanswered_renewal_discovers_at_once(
        backend, fake, tmp_path):
    # Neutron's dnsmasq on the tenant network ignores the request for the
    # rescuing address (no DHCPNAK). After RENEW_ANSWER_WAIT dhclient is
    # given up on and runs again with that lease recorded as expired: it
    # discovers, and its script replaces the rescuing address (issue 14:
    # the tenant addresses arrive within the renewal interval + 2 s).
    fake.plan({'eth0': {'server': '198.18.1.1', 'address': '198.18.1.100'}})
    backend.configure(['eth0'], 5)
    fake.plan({'eth0': {'server': '198.19.1.1', 'address': '198.19.1.100',
                        'reboot': 'silent'}})
    started = time.monotonic()

    assert backend.renew('eth0', 5) == 'leased'

    assert time.monotonic() - started < base.RENEW_ANSWER_WAIT + 2
    asked, discovered = fake.calls()[-2:]
    assert asked['recorded'] == '198.18.1.100'
    assert discovered['recorded'] is None
    assert not fakes.alive(asked['pid'])
    assert backend.lease_server('eth0') == '198.19.1.1'
    *_, rescuing, tenant = dhclient.leases.read(
        backend.paths('eth0').leases)
    assert rescuing.address == '198.18.1.100'
    assert rescuing.expired(time.time())
    assert (tenant.address, tenant.server) == ('198.19.1.100',
                                               '198.19.1.1')


def test_on_the_same_network_a_renewal_asks_for_its_lease_only(
        backend, fake):
    fake.plan({'eth0': {'server': '198.18.1.1', 'address': '198.18.1.100'}})
    backend.configure(['eth0'], 5)

    assert backend.renew('eth0', 5) == 'leased'

    configured, renewed = fake.calls()
    assert renewed['recorded'] == '198.18.1.100'
    assert not any(lease.expired(time.time()) for lease in
                   dhclient.leases.read(backend.paths('eth0').leases))


def test_configuring_again_also_replaces_the_running_dhclient(backend,
                                                              fake):
    fake.plan({'eth0': {'server': '198.18.1.1'}})
    backend.configure(['eth0'], 5)
    first = daemon_pid(backend, 'eth0')

    backend.configure(['eth0'], 5)

    assert not fakes.alive(first)
    assert fakes.alive(daemon_pid(backend, 'eth0'))


def test_a_failed_renew_is_reported(backend, fake):
    fake.plan({'eth0': {'server': '198.18.1.1'}})
    backend.configure(['eth0'], 5)
    fake.plan({})

    assert backend.renew('eth0', 1) == 'failed'


def test_stop_ends_the_daemon(backend, fake):
    fake.plan({'eth0': {'server': '198.18.1.1'}})
    backend.configure(['eth0'], 5)
    pid = daemon_pid(backend, 'eth0')

    backend.stop('eth0')

    assert not fakes.alive(pid)
    assert daemon_pid(backend, 'eth0') is None
    backend.stop('eth0')  # nothing left to stop


def test_stop_never_signals_a_process_that_is_not_our_dhclient(backend):
    # A stale pid file naming a pid now used by another process (here:
    # the test itself).
    path = backend.paths('eth0').pid
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.write('%d\n' % os.getpid())

    backend.stop('eth0')

    assert daemon_pid(backend, 'eth0') is None


def test_release_gives_the_lease_back(backend, fake):
    fake.plan({'eth0': {'server': '198.18.1.1'}})
    backend.configure(['eth0'], 5)

    backend.release('eth0', 5)

    assert fake.calls()[-1]['argv'][:2] == ['-r', '-v']
    assert backend.lease_server('eth0') is None


def test_the_backend_comes_from_the_state_dir_of_the_configuration(
        tmp_path):
    from oslo_config import cfg

    from rescue_worker import conf as rw_conf
    conf = cfg.ConfigOpts()
    rw_conf.register_opts(conf)
    conf.set_override('state_dir', str(tmp_path), group=rw_conf.GROUP)

    backend = base.get_backend(conf)

    assert isinstance(backend, dhclient.DhclientBackend)
    assert backend.paths('eth0').pid == str(
        tmp_path / 'dhcp' / 'dhclient-eth0.pid')


# -- IPv6 ---------------------------------------------------------------------

class StubAutoconf:
    """What router advertisements came to, without any: a managed RA runs
    the backend's DHCPv6 client; otherwise ``addresses`` came by SLAAC."""

    def __init__(self, managed=True, addresses=('2001:db8:1::100',),
                 router='fe80::1'):
        self.managed = managed
        self.addresses = list(addresses)
        self.router = router
        self.runs = []

    def run(self, interface, timeout, progress, dhcpv6):
        self.runs.append(interface)
        outcome = ipv6.AutoconfResult(advertisement=ipv6.RouterAdvertisement(
            router=self.router, managed=self.managed, other=False,
            router_lifetime=1800))
        if self.managed:
            outcome.dhcpv6, outcome.problem = dhcpv6(interface, timeout)
            if outcome.dhcpv6 == payloads.DHCP_LEASED:
                outcome.addresses = self.addresses
        else:
            outcome.addresses = self.addresses
        return outcome

    def recorded_router(self, interface):
        return self.router


def ipv6_backend(tmp_path, fake, image_config, autoconf):
    return dhclient.DhclientBackend(str(tmp_path / 'state'),
                                    executable=fake.program,
                                    base_config=image_config, ipv6=True,
                                    autoconf=autoconf)


def test_a_managed_network_runs_dhclient_6_on_files_of_its_own(
        tmp_path, fake, image_config, monkeypatch):
    monkeypatch.setattr(ipv6, 'IPV4_GRACE', 0.1)
    backend = ipv6_backend(tmp_path, fake, image_config, StubAutoconf())
    fake.plan({'eth0/6': {'server': '0:1:0:1:aa:bb'}})

    try:
        statuses = backend.configure(['eth0'], 2)

        # IPv6 only (no DHCPv4 server): leased all the same.
        assert statuses == {'eth0': 'leased'}
        directory = str(tmp_path / 'state' / 'dhcp')
        [v6] = [c for c in fake.calls() if '-6' in c['argv']]
        assert v6['argv'] == [
            '-6', '-1', '-v', '-pf', directory + '/dhclient6-eth0.pid',
            '-lf', directory + '/dhclient6-eth0.leases',
            '-cf', directory + '/dhclient6-eth0.conf', 'eth0']
        assert fakes.alive(backend._daemon_pid('eth0', 6))
        # The keeper: with no IPv4 lease, the DHCPv6 server's DUID.
        assert backend.lease_server('eth0') == '0:1:0:1:aa:bb'
    finally:
        backend.stop('eth0')
    assert backend._daemon_pid('eth0', 6) is None


def test_dhcpv4_is_given_up_once_ipv6_is_there(tmp_path, fake,
                                               image_config, monkeypatch):
    monkeypatch.setattr(ipv6, 'IPV4_GRACE', 0.2)
    backend = ipv6_backend(tmp_path, fake, image_config,
                           StubAutoconf(managed=False))
    fake.plan({'eth0': {'hang': True}})
    started = time.monotonic()

    assert backend.configure(['eth0'], 20) == {'eth0': 'leased'}

    assert time.monotonic() - started < 5
    [v4] = fake.calls()
    assert not fakes.alive(v4['pid'])


def test_ipv4_and_ipv6_both(tmp_path, fake, image_config):
    backend = ipv6_backend(tmp_path, fake, image_config, StubAutoconf())
    fake.plan({'eth0': {'server': '198.18.1.1'},
               'eth0/6': {'server': '0:1:0:1:aa:bb'}})

    try:
        assert backend.configure(['eth0'], 5) == {'eth0': 'leased'}
        # The IPv4 server comes first for the keeper.
        assert backend.lease_server('eth0') == '198.18.1.1'
        assert backend.renew('eth0', 5) == 'leased'
        assert len([c for c in fake.calls() if '-6' in c['argv']]) == 2
    finally:
        backend.stop('eth0')


def test_slaac_only_the_keeper_sees_the_router(tmp_path, fake,
                                               image_config, monkeypatch):
    monkeypatch.setattr(ipv6, 'IPV4_GRACE', 0.1)
    backend = ipv6_backend(tmp_path, fake, image_config,
                           StubAutoconf(managed=False, router='fe80::7'))

    assert backend.configure(['eth0'], 1) == {'eth0': 'leased'}
    assert backend.lease_server('eth0') == 'fe80::7'
    assert [c for c in fake.calls() if '-6' in c['argv']] == []


def test_the_failure_hint_says_what_ipv6_came_to(tmp_path, fake,
                                                 image_config):
    backend = ipv6_backend(tmp_path, fake, image_config,
                           StubAutoconf(managed=True))

    assert backend.configure(['eth0'], 1) == {'eth0': 'failed'}

    hint = backend.failure_hint(['eth0'], 1)
    assert hint.endswith(
        '; IPv6: eth0: router fe80::1, managed (DHCPv6), DHCPv6 failed: no '
        'address (no DHCPv6 server answered (see %s/state/dhcp/'
        'dhclient6-eth0.log))' % tmp_path)


def test_ipv6_follows_the_configuration(tmp_path):
    from oslo_config import cfg

    from rescue_worker import conf as rw_conf
    conf = cfg.ConfigOpts()
    rw_conf.register_opts(conf)
    conf.set_override('state_dir', str(tmp_path), group=rw_conf.GROUP)

    assert isinstance(dhclient.DhclientBackend.from_conf(conf).autoconf,
                      ipv6.Autoconf)
    conf.set_override('ipv6', False, group=rw_conf.GROUP)
    assert dhclient.DhclientBackend.from_conf(conf).autoconf is None
