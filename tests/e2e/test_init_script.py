"""The init script (``etc/init.d/rescue-worker``) starting the real worker
in the node namespace, as an image without systemd boots it.

The worker reaches the test's RabbitMQ over the lab's host link. Without
the lockdown marker ``start`` launches it and it serves: its
``worker.ready`` arrives and it answers ``get_status``; ``stop`` ends it
with SIGTERM (``worker.stopped``). With the marker, ``start`` exits 0 and
no worker process exists in the namespace. Both with
``start-stop-daemon`` and without it (a PATH without /usr/sbin).

Needs root, ``ip``, ``unshare`` and RabbitMQ (``tox -e e2e``); skipped
otherwise, a failure under ``CI=true``.
"""

import os
import sys

import pytest

from tests.e2e import netns
from tests.functional.conftest import WorkerProcess
from tests.functional.conftest import transport_url
from tests.unit.test_init_script import PLAIN_PATH
from tests.unit.test_init_script import SCRIPT

READY = 'rescue_worker.worker.ready'
STOPPED = 'rescue_worker.worker.stopped'
PROGRAM = os.path.join(os.path.dirname(sys.executable), 'rescue-worker')


@pytest.fixture
def lab(tmp_path):
    netns.require(('ip', 'unshare'))
    url = transport_url()
    lab = netns.NetLab(tmp_path / 'lab')
    try:
        lab.node_url = netns.node_url(lab, url)
        yield lab
    finally:
        lab.close()


@pytest.fixture(params=['start-stop-daemon', 'sh'])
def init(request, tmp_path, lab):
    """Runs the init script in the node namespace for a worker configured
    as the functional tests' are; returns (exit code, output)."""
    worker = WorkerProcess(tmp_path / 'node', lab.node_url)
    env = dict(os.environ,
               RESCUE_WORKER_BIN=PROGRAM,
               RESCUE_WORKER_CONFIG=worker.config_file,
               RESCUE_WORKER_STATE_DIR=worker.state_dir,
               RESCUE_WORKER_PIDFILE=str(tmp_path / 'rescue-worker.pid'),
               RESCUE_WORKER_LOG=str(tmp_path / 'init-output.log'),
               RESCUE_WORKER_DEFAULTS=str(tmp_path / 'no-defaults'))
    if request.param == 'sh':
        env['PATH'] = PLAIN_PATH

    def run(action):
        result = lab.node.run(['sh', SCRIPT, action], check=False, env=env,
                              timeout=120)
        return result.returncode, result.stdout + result.stderr

    run.worker = worker
    run.pidfile = env['RESCUE_WORKER_PIDFILE']
    yield run
    logged = worker.logs()
    for secret in worker.secrets:
        assert secret not in logged


def workers_in(lab):
    """Pids of rescue-worker processes in the node namespace."""
    found = []
    for pid in lab.node.pids():
        try:
            with open('/proc/%d/cmdline' % pid, 'rb') as f:
                argv = f.read().split(b'\0')
        except OSError:
            continue
        if os.fsencode(PROGRAM) in argv:
            found.append(pid)
    return found


def test_without_the_marker_the_script_starts_a_worker_that_serves(
        lab, bus, init):
    worker = init.worker

    code, out = init('start')

    assert code == 0, out
    [pid] = workers_in(lab)
    assert 'started (pid %d)' % pid in out
    bus.wait_for(READY, node_id=worker.node_id, timeout=60)
    status = bus.client(worker.node_id).call({}, 'get_status',
                                             agent_token=worker.token)
    assert status['state'] == 'waiting'
    assert init('status') == (0, 'rescue-worker: running (pid %d)\n' % pid)

    code, out = init('stop')

    assert (code, out) == (0, 'rescue-worker: stopped\n')
    bus.wait_for(STOPPED, node_id=worker.node_id, timeout=60)
    assert workers_in(lab) == []
    assert not os.path.exists(init.pidfile)


def test_with_the_marker_the_script_starts_nothing(lab, init):
    worker = init.worker
    os.makedirs(worker.state_dir, mode=0o700)
    with open(os.path.join(worker.state_dir, 'rescued'), 'w') as f:
        f.write('req-earlier\n')

    code, out = init('start')

    assert code == 0
    assert 'not started: %s/rescued exists' % worker.state_dir in out
    assert workers_in(lab) == []
    assert not os.path.exists(init.pidfile)
    assert init('status')[0] == 3
    assert not os.path.exists(worker.log_file)
