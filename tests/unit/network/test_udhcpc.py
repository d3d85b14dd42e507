"""The udhcpc backend: how it runs udhcpc, waits for its lease script, and
renews through it.

A fake ``udhcpc`` (a script in the test's directory) stands in for
busybox's: per interface it leases (writing the lease file as the project's
lease script does, with its own pid), gets nothing, or ends at once, as
the plan of the test says; on SIGUSR1 its server answers the renewal or
not; on SIGUSR2 it releases. It never runs the real lease script, which
configures interfaces (``test_udhcpc_script.py`` runs that one with a fake
``ip``; ``tests/e2e`` runs everything for real).
"""

import logging
import os
import select
import signal
import stat
import threading
import time

import pytest
from oslo_config import cfg

from rescue_worker import conf as rw_conf
from rescue_worker.network import base
from rescue_worker.network import udhcpc
from tests.unit.network import fakes

FAKE_UDHCPC = '''#!%(python)s
import json, os, signal, sys, time
%(rendezvous)s

args = sys.argv[1:]
opts = {}
i = 0
while i < len(args):
    if args[i] in ('-i', '-p', '-s', '-t', '-T'):
        opts[args[i]] = args[i + 1]
        i += 2
    else:
        i += 1
iface = opts['-i']
directory = os.environ['RESCUE_WORKER_DHCP_DIR']
family = os.environ['RESCUE_WORKER_FAMILY']
name = 'udhcpc' if family == '4' else 'udhcpc6'
state = os.path.join(directory, '%%s-%%s.lease' %% (name, iface))
with open(%(calls_file)r, 'a') as f:
    f.write(json.dumps({
        'argv': [os.path.basename(sys.argv[0])] + args, 'pid': os.getpid(),
        'env': dict(os.environ)}) + '\\n')
with open(%(plan_file)r) as f:
    plan = json.load(f).get(iface, {})
print('fake udhcpc on', iface, flush=True)
if plan.get('exit') is not None:
    sys.exit(plan['exit'])
with open(opts['-p'], 'w') as f:
    f.write('%%d\\n' %% os.getpid())
seq = [0]


def record(event, lease=False, pid=None):
    seq[0] += 1
    lines = ['event=' + event, 'pid=%%d' %% (pid or os.getpid()),
             'seq=%%d' %% seq[0], 'time=%%d' %% time.time()]
    if lease:
        lines += ['ip=' + plan.get('address', '198.18.1.100'), 'mask=24',
                  'serverid=' + plan['server'],
                  'lease=%%d' %% plan.get('lease', 3600)]
    with open(state + '.tmp', 'w') as f:
        f.write('\\n'.join(lines) + '\\n')
    os.rename(state + '.tmp', state)


if os.path.exists(state):
    with open(state) as f:
        for line in f:
            if line.startswith('seq='):
                seq[0] = int(line.split('=')[1])
record('deconfig')


def renew(signum, frame):
    if plan.get('renew') == 'answer':
        record('renew', lease=True)


def release(signum, frame):
    record('deconfig')


signal.signal(signal.SIGUSR1, renew)
signal.signal(signal.SIGUSR2, release)
if plan.get('meet'):
    rendezvous(*plan['meet'])
if plan.get('server'):
    if plan.get('applying'):
        # The script applies the lease slowly: its marker, then the lease
        # once the test opens the FIFO named by the plan.
        with open(os.path.join(directory, '%%s-%%s.applying' %% (name, iface)),
                  'w') as f:
            f.write('%%d\\n' %% os.getpid())
        with open(plan['applying']) as f:
            f.read()
    record('bound', lease=True, pid=plan.get('bound_pid'))
while True:
    signal.pause()
'''


@pytest.fixture
def fake(tmp_path):
    return fakes.FakeProgram(str(tmp_path), 'udhcpc', FAKE_UDHCPC)


@pytest.fixture
def state_dir(tmp_path):
    return str(tmp_path / 'state')


@pytest.fixture
def backend(tmp_path, fake, state_dir):
    backend = udhcpc.UdhcpcBackend(state_dir, str(tmp_path / 'root'),
                                   executable=fake.program,
                                   executable6=str(tmp_path / 'none'))
    yield backend
    for name in ('eth0', 'eth1'):
        backend.stop(name)


def daemon_pid(backend, name):
    return backend._daemon_pid(name, 4)


# -- leasing ------------------------------------------------------------------

def test_each_interface_gets_its_udhcpc_in_parallel(backend, fake,
                                                    state_dir, tmp_path):
    meet0, meet1 = fakes.fifo_pair(str(tmp_path))
    # Each one waits until the other one runs: only parallel runs lease.
    fake.plan({'eth0': {'server': '198.18.1.1', 'meet': [meet0, meet1]},
               'eth1': {'server': '198.18.2.1', 'meet': [meet1, meet0]}})

    statuses = backend.configure(['eth0', 'eth1'], 10)

    assert statuses == {'eth0': 'leased', 'eth1': 'leased'}
    directory = os.path.join(state_dir, 'dhcp')
    calls = sorted(fake.calls(), key=lambda call: call['argv'][3])
    assert [call['argv'] for call in calls] == [
        ['udhcpc', '-f', '-i', name, '-p',
         '%s/udhcpc-%s.pid' % (directory, name),
         '-s', directory + '/udhcpc-script', '-t', '0', '-T', '1',
         '-O', 'mtu', '-O', 'staticroutes'] for name in ('eth0', 'eth1')]
    assert calls[0]['env'] == {
        'PATH': os.environ['PATH'], 'LC_ALL': 'C',
        'RESCUE_WORKER_DHCP_DIR': directory,
        'RESCUE_WORKER_ROOT_DIR': str(tmp_path / 'root'),
        'RESCUE_WORKER_FAMILY': '4'}
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    # They stay on to renew their leases.
    for name, call in zip(('eth0', 'eth1'), calls, strict=True):
        assert daemon_pid(backend, name) == call['pid']
        assert fakes.alive(call['pid'])


def test_udhcpc_runs_without_the_workers_environment(backend, fake,
                                                    monkeypatch):
    monkeypatch.setenv(*fakes.WORKER_ONLY_VARIABLE)
    fake.plan({'eth0': {'server': '198.18.1.1'}})

    assert backend.configure(['eth0'], 10) == {'eth0': 'leased'}

    # It outlives the worker, renewing the lease.
    environ = fakes.environ_of(fake.calls()[0]['pid'])
    assert fakes.WORKER_ONLY_VARIABLE[0] not in environ
    assert fakes.WORKER_ONLY_VARIABLE[1] not in repr(environ)


def test_the_lease_script_is_the_packages_and_executable(backend, fake,
                                                         state_dir):
    fake.plan({'eth0': {'server': '198.18.1.1'}})

    backend.configure(['eth0'], 10)

    script = os.path.join(state_dir, 'dhcp', 'udhcpc-script')
    here = os.path.dirname(os.path.abspath(udhcpc.__file__))
    with open(os.path.join(here, 'udhcpc-script.sh'), 'rb') as f:
        shipped = f.read()
    with open(script, 'rb') as f:
        assert f.read() == shipped
    assert stat.S_IMODE(os.stat(script).st_mode) == 0o700


def test_a_changed_script_is_put_back(backend, fake, state_dir):
    fake.plan({'eth0': {'server': '198.18.1.1'}})
    script = os.path.join(state_dir, 'dhcp', 'udhcpc-script')
    os.makedirs(os.path.dirname(script))
    with open(script, 'w') as f:
        f.write('#!/bin/sh\nexit 0\n')

    backend.configure(['eth0'], 10)

    with open(script) as f:
        assert f.read().startswith("#!/bin/sh\n# rescue-worker's lease")


def test_no_server_fails_within_the_timeout_and_leaves_no_udhcpc(
        backend, fake):
    fake.plan({'eth0': {}})
    started = time.monotonic()

    statuses = backend.configure(['eth0'], 1)

    assert statuses == {'eth0': 'failed'}
    assert time.monotonic() - started < 3
    [call] = fake.calls()
    assert not fakes.alive(call['pid'])
    assert daemon_pid(backend, 'eth0') is None
    assert backend.lease_server('eth0') is None


def test_a_udhcpc_that_ends_at_once_fails_at_once(backend, fake):
    fake.plan({'eth0': {'exit': 1}})
    started = time.monotonic()

    assert backend.configure(['eth0'], 10) == {'eth0': 'failed'}
    assert time.monotonic() - started < 5


def test_a_lease_of_another_udhcpc_is_not_this_ones(backend, fake):
    fake.plan({'eth0': {'server': '198.18.1.1', 'bound_pid': 1}})

    assert backend.configure(['eth0'], 1) == {'eth0': 'failed'}


def test_a_lease_the_script_is_still_applying_gets_its_grace(
        backend, fake, monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(udhcpc, 'SCRIPT_GRACE', 5.0)
    caplog.set_level(logging.INFO, logger=udhcpc.LOG.name)
    applied = str(tmp_path / 'applied')
    os.mkfifo(applied)
    fake.plan({'eth0': {'server': '198.18.1.1', 'applying': applied}})

    def finish_the_script():
        with open(applied, 'w'):
            pass

    class _OnGrace(logging.Handler):
        # The script finishes only once the deadline has passed and the
        # backend has granted the grace.
        def emit(self, record):
            if 'still applying' in record.getMessage():
                threading.Thread(target=finish_the_script,
                                 daemon=True).start()
    handler = _OnGrace()
    udhcpc.LOG.addHandler(handler)
    try:
        assert backend.configure(['eth0'], 1) == {'eth0': 'leased'}
    finally:
        udhcpc.LOG.removeHandler(handler)


def test_the_failure_hint_points_at_udhcpcs_output(backend, state_dir):
    assert backend.failure_hint(['eth0', 'eth1'], 30) == (
        "no DHCP server answered on eth0, eth1 within 30 s; check that the "
        "rescuing network's DHCP server is running and that these ports "
        "are on that network (udhcpc's output: %s/dhcp/udhcpc-<interface>"
        ".log)" % state_dir)


def test_without_udhcpc_the_backend_says_what_to_install(tmp_path):
    backend = udhcpc.UdhcpcBackend(str(tmp_path),
                                   executable=str(tmp_path / 'none'))

    with pytest.raises(base.BackendError) as info:
        backend.configure(['eth0'], 5)

    assert "install busybox's udhcpc (Debian: udhcpc)" in str(info.value)


@pytest.mark.parametrize('name', ['', '../x', 'a/b', '.x'])
def test_an_interface_name_that_is_no_file_name_is_refused(backend, name):
    with pytest.raises(ValueError):
        backend.paths(name)


# -- what the keeper uses -----------------------------------------------------

def test_lease_server_is_the_serverid_the_script_recorded(backend, fake):
    fake.plan({'eth0': {'server': '198.18.1.1'},
               'eth1': {'server': '198.18.2.1'}})
    backend.configure(['eth0', 'eth1'], 10)

    assert backend.lease_server('eth0') == '198.18.1.1'
    assert backend.lease_server('eth1') == '198.18.2.1'
    assert backend.lease_server('eth2') is None


def test_an_expired_lease_has_no_server(backend, fake):
    fake.plan({'eth0': {'server': '198.18.1.1', 'lease': 0}})
    backend.configure(['eth0'], 10)

    assert backend.lease_server('eth0') is None


def test_renew_signals_the_running_udhcpc_and_its_server_answers(
        backend, fake):
    fake.plan({'eth0': {'server': '198.18.1.1', 'renew': 'answer'}})
    backend.configure(['eth0'], 10)
    pid = daemon_pid(backend, 'eth0')

    assert backend.renew('eth0', 10) == 'leased'

    # SIGUSR1 renewed it: no other udhcpc was started.
    assert len(fake.calls()) == 1
    assert daemon_pid(backend, 'eth0') == pid
    state = udhcpc.read_state(backend.paths('eth0').lease)
    assert (state['event'], state['seq']) == ('renew', '3')


def test_renew_without_an_answer_starts_a_udhcpc_that_discovers(
        backend, fake, monkeypatch):
    monkeypatch.setattr(udhcpc, 'RENEW_WAIT', 0.3)
    fake.plan({'eth0': {'server': '198.18.1.1', 'renew': 'silent'}})
    backend.configure(['eth0'], 10)
    old = daemon_pid(backend, 'eth0')
    fake.plan({'eth0': {'server': '198.19.1.1', 'renew': 'silent'}})

    assert backend.renew('eth0', 10) == 'leased'

    new = daemon_pid(backend, 'eth0')
    assert new != old and fakes.alive(new) and not fakes.alive(old)
    assert backend.lease_server('eth0') == '198.19.1.1'


def test_after_the_flip_a_renewal_finds_the_new_server_within_2_s(
        backend, fake):
    # Nobody answers the renewal: after RENEW_ANSWER_WAIT a new udhcpc
    # discovers, asking for no address of its own (no -r: the old one
    # belongs to the network the port left), and the new network's server
    # answers at once (issue 14: the tenant addresses arrive within the
    # renewal interval + 2 s). 2 s is the keeper's renew timeout at a 2 s
    # interval.
    fake.plan({'eth0': {'server': '198.18.1.1', 'renew': 'silent'}})
    backend.configure(['eth0'], 10)
    fake.plan({'eth0': {'server': '198.19.1.1', 'renew': 'silent'}})
    started = time.monotonic()

    assert backend.renew('eth0', 2) == 'leased'

    assert time.monotonic() - started < base.RENEW_ANSWER_WAIT + 2
    discovering = fake.calls()[-1]['argv']
    assert '-r' not in discovering and '--request' not in discovering
    assert backend.lease_server('eth0') == '198.19.1.1'


def test_renew_with_no_udhcpc_running_starts_one(backend, fake):
    fake.plan({'eth0': {'server': '198.18.1.1'}})

    assert backend.renew('eth0', 10) == 'leased'
    assert len(fake.calls()) == 1


def test_stop_ends_the_udhcpc(backend, fake):
    fake.plan({'eth0': {'server': '198.18.1.1'}})
    backend.configure(['eth0'], 10)
    pid = daemon_pid(backend, 'eth0')

    backend.stop('eth0')

    assert not fakes.alive(pid)
    assert daemon_pid(backend, 'eth0') is None
    backend.stop('eth0')  # nothing left to stop


def test_release_has_udhcpc_give_the_lease_back_then_ends_it(backend,
                                                             fake):
    fake.plan({'eth0': {'server': '198.18.1.1'}})
    backend.configure(['eth0'], 10)
    pid = daemon_pid(backend, 'eth0')

    backend.release('eth0', 5)

    assert not fakes.alive(pid)
    assert udhcpc.read_state(backend.paths('eth0').lease)['event'] == \
        'deconfig'
    assert backend.lease_server('eth0') is None


def test_a_stale_pid_file_is_never_trusted(backend, state_dir):
    paths = backend.paths('eth0')
    os.makedirs(os.path.dirname(paths.pid))
    with open(paths.pid, 'w') as f:
        f.write('%d\n' % os.getpid())

    assert daemon_pid(backend, 'eth0') is None
    backend.stop('eth0')
    assert fakes.alive(os.getpid())


def test_a_killed_udhcpc_is_reaped(backend, fake):
    fake.plan({'eth0': {'server': '198.18.1.1'}})
    backend.configure(['eth0'], 10)
    pid = daemon_pid(backend, 'eth0')
    exited = os.pidfd_open(pid)  # readable once the process has exited
    os.kill(pid, signal.SIGKILL)
    try:
        assert select.select([exited], [], [], 5)[0], 'pid %d lives' % pid
    finally:
        os.close(exited)

    # A zombie is no running udhcpc, and the backend reaps it when it
    # looks for it.
    assert daemon_pid(backend, 'eth0') is None
    assert not os.path.exists('/proc/%d' % pid)


def test_from_conf(tmp_path):
    conf = cfg.ConfigOpts()
    rw_conf.register_opts(conf)
    conf.set_override('state_dir', str(tmp_path / 'state'), rw_conf.GROUP)
    conf.set_override('root_dir', str(tmp_path / 'root'), rw_conf.GROUP)

    backend = udhcpc.UdhcpcBackend.from_conf(conf)

    assert backend.directory == str(tmp_path / 'state' / 'dhcp')
    assert backend.root_dir == str(tmp_path / 'root')
    assert backend.autoconf is not None  # ipv6 defaults to on
    conf.set_override('ipv6', False, rw_conf.GROUP)
    assert udhcpc.UdhcpcBackend.from_conf(conf).autoconf is None


def test_read_state_takes_the_first_value_of_each_key(tmp_path):
    path = tmp_path / 'lease'
    path.write_text('event=bound\nip=198.18.1.5\nip=x\nnot a pair\n'
                    'dns=198.18.1.53 198.18.1.54\n')

    assert udhcpc.read_state(str(path)) == {
        'event': 'bound', 'ip': '198.18.1.5',
        'dns': '198.18.1.53 198.18.1.54'}
    assert udhcpc.read_state(str(tmp_path / 'none')) == {}
