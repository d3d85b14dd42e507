"""The networkd backend: one ``.network`` file per interface under
``root_dir``, then the reload command (``networkctl reload``) on the live
system only. That systemd-networkd itself accepts the files is
``tests/e2e/test_network_step.py``'s to show."""

import json
import os
import stat
import sys
import time

import pytest
from oslo_config import cfg

from rescue_worker import conf as rw_conf
from rescue_worker.network import base
from rescue_worker.network import networkd
from tests.unit.network import fakes

EXPECTED_ETH0 = ('# Written by rescue-worker: DHCP on eth0 for the rescue.\n'
                 '[Match]\n'
                 'Name=eth0\n'
                 '\n'
                 '[Network]\n'
                 'DHCP=yes\n'
                 'IPv6AcceptRA=yes\n')

FAKE_NETWORKCTL = '''#!%(python)s
import json, os, sys
with open(%(calls)r, 'a') as f:
    f.write(' '.join(sys.argv[1:]) + '\\n')
with open(%(environ)r, 'w') as f:
    json.dump(dict(os.environ), f)
if os.path.exists(%(fail)r) and open(%(fail)r).read() in ('',
                                                      sys.argv[1]):
    sys.stderr.write('Failed to reload network settings: Unit '
                     'dbus-org.freedesktop.network1.service not found.\\n')
    sys.exit(1)
# The DHCP servers on the link, as networkd would meet them: the one that
# answers a renewal, and the one found by looking anew; networkd writes
# the lease file anew (a new file in its place) for each lease.
if os.path.exists(%(servers)r):
    with open(%(servers)r) as f:
        servers = json.load(f)
    server = servers.get(sys.argv[1])
    if server:
        lease_file = servers['lease_file']
        with open(lease_file + '.new', 'w') as f:
            f.write('ADDRESS=%%s.100\\nSERVER_ADDRESS=%%s\\n' %% (
                server.rpartition('.')[0], server))
        os.rename(lease_file + '.new', lease_file)
'''


@pytest.fixture
def root(tmp_path):
    return tmp_path / 'root'


@pytest.fixture
def no_sysfs(tmp_path):
    """A sysfs with no interfaces: networkd has nothing to lease, so
    configure does not wait for a lease."""
    return str(tmp_path / 'no-sys')


def network_dir(root):
    return root / 'etc' / 'systemd' / 'network'


@pytest.fixture
def networkctl(tmp_path):
    """A fake networkctl; ``.calls()`` lists its command lines,
    ``.environ()`` the environment of the last one, ``.fail()`` makes it
    fail from then on."""
    program = tmp_path / 'networkctl'
    calls = tmp_path / 'networkctl.calls'
    environ = tmp_path / 'networkctl.environ'
    fail = tmp_path / 'networkctl.fail'
    servers = tmp_path / 'networkctl.servers'
    program.write_text(FAKE_NETWORKCTL % {
        'python': sys.executable, 'calls': str(calls),
        'environ': str(environ), 'fail': str(fail),
        'servers': str(servers)})
    program.chmod(0o700)

    class Fake:
        path = str(program)

        @staticmethod
        def calls():
            return calls.read_text().splitlines() if calls.exists() else []

        @staticmethod
        def environ():
            return json.loads(environ.read_text())

        @staticmethod
        def fail(command=''):
            """Fail from then on (only ``command``, when given)."""
            fail.write_text(command)

        @staticmethod
        def serve(lease_file, renew=None, reconfigure=None, reload=None):
            """Which server answers ``networkctl renew`` (None: none, the
            old one is gone) and which one ``reconfigure`` (or the first
            lease after ``reload``) finds."""
            servers.write_text(json.dumps({
                'lease_file': str(lease_file), 'renew': renew,
                'reconfigure': reconfigure, 'reload': reload}))
    return Fake


@pytest.fixture
def leased(root, tmp_path):
    """eth0 (ifindex 7) holds a lease of 198.18.1.1, the rescuing network's
    server, in networkd's lease directory."""
    sysfs = tmp_path / 'sys'
    (sysfs / 'eth0').mkdir(parents=True)
    (sysfs / 'eth0' / 'ifindex').write_text('7\n')
    leases = tmp_path / 'leases'
    leases.mkdir()
    (leases / '7').write_text('ADDRESS=198.18.1.100\n'
                              'SERVER_ADDRESS=198.18.1.1\n')

    addresses = fakes.FakeNetifaces()
    addresses.table['eth0'] = {fakes.AF_INET: [
        {'addr': '198.18.1.100', 'netmask': '255.255.255.0'}]}

    class Leased:
        lease_file = leases / '7'
        netifaces = addresses

        @staticmethod
        def backend(networkctl):
            return networkd.NetworkdBackend(
                str(root), networkctl=networkctl.path,
                leases_dir=str(leases), sysfs=str(sysfs), live=True,
                netifaces_module=addresses)
    return Leased


def test_a_network_file_is_written_per_interface(root):
    backend = networkd.NetworkdBackend(str(root))

    statuses = backend.configure(['eth0', 'eth1'], 30)

    assert statuses == {'eth0': 'configured', 'eth1': 'configured'}
    directory = network_dir(root)
    assert sorted(os.listdir(directory)) == ['50-rescue-eth0.network',
                                             '50-rescue-eth1.network']
    path = directory / '50-rescue-eth0.network'
    assert path.read_text() == EXPECTED_ETH0
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert (directory / '50-rescue-eth1.network').read_text() == \
        EXPECTED_ETH0.replace('eth0', 'eth1')


def test_configuring_twice_leaves_the_same_files_untouched(root):
    backend = networkd.NetworkdBackend(str(root))
    backend.configure(['eth0'], 30)
    path = network_dir(root) / '50-rescue-eth0.network'
    before = path.stat()

    backend.configure(['eth0'], 30)

    after = path.stat()
    assert path.read_text() == EXPECTED_ETH0
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino,
                                                 before.st_mtime_ns)
    assert os.listdir(network_dir(root)) == ['50-rescue-eth0.network']


def test_a_changed_file_is_put_right(root):
    backend = networkd.NetworkdBackend(str(root))
    backend.configure(['eth0'], 30)
    path = network_dir(root) / '50-rescue-eth0.network'
    path.write_text('[Match]\nName=eth0\n[Network]\nDHCP=no\n')

    backend.configure(['eth0'], 30)

    assert path.read_text() == EXPECTED_ETH0


def test_other_network_files_are_left_alone(root):
    directory = network_dir(root)
    directory.mkdir(parents=True)
    (directory / '10-image.network').write_text('[Match]\nName=en*\n')
    backend = networkd.NetworkdBackend(str(root))

    backend.configure(['eth0'], 30)

    assert (directory / '10-image.network').read_text() == \
        '[Match]\nName=en*\n'


def test_networkctl_is_not_run_when_root_dir_is_not_the_live_system(
        root, networkctl):
    backend = networkd.NetworkdBackend(str(root), networkctl=networkctl.path)

    backend.configure(['eth0'], 30)

    assert not backend.live
    assert networkctl.calls() == []
    assert backend.renew('eth0', 30) == 'skipped'
    assert backend.lease_server('eth0') is None


def test_the_live_system_is_root_dir_slash():
    assert networkd.NetworkdBackend('/').live
    assert networkd.NetworkdBackend('/tmp/..').live
    assert not networkd.NetworkdBackend('/tmp').live


def test_on_the_live_system_networkd_is_reloaded_once(root, networkctl,
                                                     no_sysfs):
    backend = networkd.NetworkdBackend(str(root), networkctl=networkctl.path,
                                       sysfs=no_sysfs, live=True)

    statuses = backend.configure(['eth0', 'eth1'], 30)

    assert statuses == {'eth0': 'configured', 'eth1': 'configured'}
    assert networkctl.calls() == ['reload']


def test_the_reload_command_runs_without_the_workers_environment(
        root, networkctl, no_sysfs, monkeypatch):
    monkeypatch.setenv(*fakes.WORKER_ONLY_VARIABLE)
    backend = networkd.NetworkdBackend(str(root), networkctl=networkctl.path,
                                       sysfs=no_sysfs, live=True)

    backend.configure(['eth0'], 30)

    assert networkctl.environ() == {'PATH': os.environ['PATH'],
                                    'LC_ALL': 'C'}


def test_configure_waits_for_networkds_first_lease_and_reports_it(
        leased, networkctl):
    leased.lease_file.unlink()
    networkctl.serve(leased.lease_file, reload='198.18.1.1')
    backend = leased.backend(networkctl)

    statuses = backend.configure(['eth0'], 30)

    # The lease came with the reload, its address is on eth0: leased.
    assert statuses == {'eth0': 'leased'}
    assert backend.lease_server('eth0') == '198.18.1.1'


def test_the_lease_from_before_a_changed_file_is_not_taken_for_one(
        leased, networkctl):
    # eth0 leased with the image's boot configuration; the new file makes
    # networkd give that lease up and ask again. No new lease came within
    # the timeout: configured (networkd goes on asking), not leased.
    backend = leased.backend(networkctl)

    statuses = backend.configure(['eth0'], 0.3)

    assert statuses == {'eth0': 'configured'}


def test_a_lease_whose_address_is_not_on_the_interface_is_not_held(
        leased, networkctl):
    leased.lease_file.unlink()
    networkctl.serve(leased.lease_file, reload='198.18.1.1')
    leased.netifaces.table['eth0'] = {}
    backend = leased.backend(networkctl)

    assert backend.configure(['eth0'], 0.3) == {'eth0': 'configured'}


def test_an_unchanged_file_and_the_lease_networkd_holds_are_leased_at_once(
        root, leased, networkctl):
    # A second configure (the same request again): networkd keeps the
    # lease it has, no new one comes, and none is needed.
    backend = leased.backend(networkctl)
    networkd.NetworkdBackend(str(root), live=False).configure(['eth0'], 30)

    started = time.monotonic()
    statuses = backend.configure(['eth0'], 30)

    assert statuses == {'eth0': 'leased'}
    assert time.monotonic() - started < 10


def test_no_lease_within_the_timeout_is_configured_not_failed(
        leased, networkctl):
    # networkd goes on asking: the interface is configured, not failed;
    # one unknown to sysfs (eth1) is not waited for.
    leased.lease_file.unlink()
    backend = leased.backend(networkctl)

    started = time.monotonic()
    statuses = backend.configure(['eth0', 'eth1'], 0.3)

    assert statuses == {'eth0': 'configured', 'eth1': 'configured'}
    assert time.monotonic() - started >= 0.3


def test_on_the_live_system_without_networkctl_the_files_are_all(root):
    backend = networkd.NetworkdBackend(str(root), networkctl='no-networkctl',
                                       live=True)

    assert backend.configure(['eth0'], 30) == {'eth0': 'configured'}


def test_a_failed_reload_fails_the_interfaces_and_says_why(
        root, networkctl, no_sysfs):
    networkctl.fail()
    backend = networkd.NetworkdBackend(str(root), networkctl=networkctl.path,
                                       sysfs=no_sysfs, live=True)

    statuses = backend.configure(['eth0'], 30)

    assert statuses == {'eth0': 'failed'}
    hint = backend.failure_hint(['eth0'], 30)
    assert 'reload failed: Failed to reload network settings' in hint
    assert 'check that systemd-networkd is running' in hint


def test_an_unwritable_directory_is_a_backend_error(root):
    root.mkdir()
    (root / 'etc').write_text('not a directory')
    backend = networkd.NetworkdBackend(str(root))

    with pytest.raises(base.BackendError) as info:
        backend.configure(['eth0'], 30)

    assert 'could not write the systemd-networkd configuration' in str(
        info.value)


def test_a_renewal_its_server_answers_is_all_there_is(leased,
                                                     networkctl):
    # The same network: the rescuing server answers, the address stays.
    networkctl.serve(leased.lease_file, renew='198.18.1.1')
    backend = leased.backend(networkctl)

    assert backend.renew('eth0', 30) == 'configured'

    assert networkctl.calls() == ['renew eth0']
    assert backend.lease_server('eth0') == '198.18.1.1'


def test_an_unanswered_renewal_has_networkd_look_for_a_server_anew(
        leased, networkctl):
    # After the tenant network flip the rescuing server is gone: networkd
    # would ask it until the rebinding time, so after RENEW_ANSWER_WAIT its
    # DHCP client is restarted, without taking the link down, and finds
    # the tenant network's server.
    networkctl.serve(leased.lease_file, renew=None,
                     reconfigure='198.19.1.1')
    backend = leased.backend(networkctl)
    started = time.monotonic()

    assert backend.renew('eth0', 30) == 'configured'

    waited = time.monotonic() - started
    assert networkctl.calls() == ['renew eth0', 'reconfigure eth0']
    assert backend.lease_server('eth0') == '198.19.1.1'
    assert base.RENEW_ANSWER_WAIT <= waited < 30


def test_a_failed_reconfigure_is_reported(leased, networkctl):
    networkctl.serve(leased.lease_file)
    networkctl.fail('reconfigure')
    backend = leased.backend(networkctl)

    assert backend.renew('eth0', 30) == 'failed'
    assert networkctl.calls() == ['renew eth0', 'reconfigure eth0']
    assert backend.lease_server('eth0') == '198.18.1.1'


def test_a_failed_renew_is_reported_and_nothing_else_is_tried(
        leased, networkctl):
    networkctl.fail()

    assert leased.backend(networkctl).renew('eth0', 30) == 'failed'
    assert networkctl.calls() == ['renew eth0']


def test_renew_is_skipped_off_the_live_system(root, networkctl):
    backend = networkd.NetworkdBackend(str(root), networkctl=networkctl.path,
                                       live=False)

    assert backend.renew('eth0', 30) == 'skipped'
    assert networkctl.calls() == []


def test_lease_server_is_read_from_networkds_lease_of_the_interface(
        root, tmp_path):
    sysfs = tmp_path / 'sys'
    (sysfs / 'eth0').mkdir(parents=True)
    (sysfs / 'eth0' / 'ifindex').write_text('7\n')
    leases = tmp_path / 'leases'
    leases.mkdir()
    (leases / '7').write_text('# This is private data. Do not parse.\n'
                              'ADDRESS=198.18.1.100\n'
                              'SERVER_ADDRESS=198.18.1.1\n')
    backend = networkd.NetworkdBackend(str(root), leases_dir=str(leases),
                                       sysfs=str(sysfs), live=True)

    assert backend.lease_server('eth0') == '198.18.1.1'
    assert backend.lease_server('eth1') is None


@pytest.mark.parametrize('name', ['', '../x', 'a/b', '.x'])
def test_an_interface_name_that_is_no_file_name_is_refused(root, name):
    with pytest.raises(ValueError):
        networkd.NetworkdBackend(str(root)).network_file(name)


def test_without_ipv6_the_file_asks_for_dhcpv4_only(root):
    backend = networkd.NetworkdBackend(str(root), ipv6=False)

    backend.configure(['eth0'], 30)

    assert (network_dir(root) / '50-rescue-eth0.network').read_text() == (
        EXPECTED_ETH0.replace('DHCP=yes', 'DHCP=ipv4').replace(
            'IPv6AcceptRA=yes', 'IPv6AcceptRA=no'))


def test_the_reload_command_is_configurable(root, networkctl, no_sysfs):
    backend = networkd.NetworkdBackend(
        str(root), live=True, sysfs=no_sysfs,
        reload_command=[networkctl.path, 'reload', '--now'])

    assert backend.configure(['eth0'], 30) == {'eth0': 'configured'}
    assert networkctl.calls() == ['reload --now']


def test_an_empty_reload_command_only_writes_the_files(root, networkctl):
    backend = networkd.NetworkdBackend(str(root), networkctl=networkctl.path,
                                       live=True, reload_command=[])

    assert backend.configure(['eth0'], 30) == {'eth0': 'configured'}
    assert networkctl.calls() == []
    assert (network_dir(root) / '50-rescue-eth0.network').exists()


def make_conf(**options):
    conf = cfg.ConfigOpts()
    rw_conf.register_opts(conf)
    for name, value in options.items():
        conf.set_override(name, value, group=rw_conf.GROUP)
    return conf


def test_from_conf_splits_the_reload_command_like_a_shell():
    backend = networkd.NetworkdBackend.from_conf(make_conf(
        root_dir='/tmp/image', ipv6=False,
        networkd_reload_command="systemctl restart 'systemd-networkd'"))

    assert backend.reload_command == ['systemctl', 'restart',
                                      'systemd-networkd']
    assert backend.ipv6 is False
    assert backend.root_dir == '/tmp/image'


def test_from_conf_defaults():
    backend = networkd.NetworkdBackend.from_conf(make_conf())

    assert backend.reload_command == ['networkctl', 'reload']
    assert backend.ipv6 is True
    assert networkd.NetworkdBackend.from_conf(make_conf(
        networkd_reload_command='')).reload_command == []


def test_a_reload_command_that_cannot_be_split_is_a_backend_error():
    with pytest.raises(base.BackendError) as info:
        networkd.NetworkdBackend.from_conf(make_conf(
            networkd_reload_command='networkctl "reload'))

    assert 'networkd_reload_command' in str(info.value)
