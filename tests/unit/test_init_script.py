"""The init script for images without systemd (``etc/init.d/rescue-worker``):
POSIX sh, in step with the systemd unit, and what it does with a stand-in
worker (a shell script; the real one in a network namespace is
``tests/e2e/test_init_script.py``).

Each behaviour runs twice: with ``start-stop-daemon`` on the PATH and
without it (then the script starts the worker as a background job).
"""

import os
import re
import shlex
import subprocess
import threading

import pytest

from rescue_worker import lockdown
from rescue_worker.network import processes
from tests import parts
from tests.unit import test_systemd_unit

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, 'etc', 'init.d', 'rescue-worker')
#: a PATH without /usr/sbin, where Debian keeps start-stop-daemon
PLAIN_PATH = '/usr/bin:/bin'
TIMEOUT = 10

FAKE_WORKER = '''#!/bin/sh
echo "fake worker $$: $*"
# Tell a waiting test that the line above is written (blocks until read).
if [ -n "$FAKE_READY" ]; then echo ready > "$FAKE_READY"; fi
if [ -n "$FAKE_EXIT" ]; then exit "$FAKE_EXIT"; fi
# After a rescue the worker execs the keeper: same pid, its module on the
# command line; it tells a waiting test once it is the keeper.
if [ -n "$FAKE_KEEPER" ]; then
    exec sh -c 'trap "exit 0" TERM; echo keeper > "$FAKE_KEEPER"
                while :; do sleep 1 & wait $!; done' rescue_worker.cmd.keeper
fi
if [ -n "$FAKE_IGNORE_TERM" ]; then
    trap 'echo ignoring TERM' TERM
else
    trap 'echo stopping; exit 0' TERM
fi
while :; do
    sleep 1 &
    wait $!
done
'''


def script_text():
    with open(SCRIPT) as f:
        return f.read()


def default(name):
    """The default of ``NAME=${RESCUE_WORKER_X:-default}`` in the script."""
    match = re.search(r'^%s=\$\{RESCUE_WORKER_[A-Z_]+:-([^}]*)\}$' % name,
                      script_text(), re.M)
    assert match, name
    return match.group(1)


# -- POSIX sh ---------------------------------------------------------------

@pytest.mark.parametrize('shell', [['sh', '-n'], ['dash', '-n'],
                                   ['busybox', 'sh', '-n']],
                         ids=['sh', 'dash', 'busybox'])
def test_the_script_parses_in_every_shell_an_image_may_have(shell):
    parts.require_programs(shell[0], package='busybox' if shell[0] ==
                           'busybox' else 'dash')
    result = subprocess.run([*shell, SCRIPT], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr


def test_checkbashisms_finds_nothing():
    parts.require_programs('checkbashisms', package='devscripts')
    result = subprocess.run(['checkbashisms', '--posix', '--extra', SCRIPT],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_script_is_executable_and_lsb_described():
    assert os.access(SCRIPT, os.X_OK)
    text = script_text()
    assert text.startswith('#!/bin/sh\n### BEGIN INIT INFO\n')
    assert '# Provides:          rescue-worker\n' in text
    assert '### END INIT INFO\n' in text


# -- in step with the systemd unit ------------------------------------------

def test_same_marker_program_and_configuration_as_the_systemd_unit():
    unit = test_systemd_unit.load_unit()
    marker = os.path.join(default('STATE_DIR'), lockdown.MARKER_NAME)
    assert unit['Unit']['ConditionPathExists'] == '!' + marker
    assert marker == os.path.join(test_systemd_unit.default_state_dir(),
                                  lockdown.MARKER_NAME)
    assert shlex.split(unit['Service']['ExecStart']) == [
        default('DAEMON'), '--config-file', default('CONFIG_FILE')]


def test_same_stop_and_file_rules_as_the_systemd_unit():
    service = test_systemd_unit.load_unit()['Service']
    assert service['KillSignal'] == 'SIGTERM'
    assert default('STOP_TIMEOUT') == service['TimeoutStopSec']
    assert service['UMask'] == '0077'
    assert '\n    umask 077\n' in script_text()
    assert service['StateDirectoryMode'] == '0700'
    assert 'chmod 0700 "$STATE_DIR"' in script_text()


# -- what it does -------------------------------------------------------------

class Init:
    """The script, run with its files in ``tmp_path`` and a stand-in
    worker."""

    def __init__(self, tmp_path, launcher):
        self.daemon = tmp_path / 'bin' / 'rescue-worker'
        self.daemon.parent.mkdir()
        self.daemon.write_text(FAKE_WORKER)
        self.daemon.chmod(0o755)
        self.config = tmp_path / 'rescue-worker.conf'
        self.config.write_text('[rescue_worker]\n')
        self.state_dir = tmp_path / 'state'
        self.pidfile = tmp_path / 'run' / 'rescue-worker.pid'
        self.log = tmp_path / 'log' / 'rescue-worker.log'
        self.env = dict(
            os.environ,
            RESCUE_WORKER_BIN=str(self.daemon),
            RESCUE_WORKER_CONFIG=str(self.config),
            RESCUE_WORKER_STATE_DIR=str(self.state_dir),
            RESCUE_WORKER_PIDFILE=str(self.pidfile),
            RESCUE_WORKER_LOG=str(self.log),
            RESCUE_WORKER_DEFAULTS=str(tmp_path / 'no-defaults'))
        if launcher == 'start-stop-daemon':
            parts.require_programs('start-stop-daemon', package='dpkg')
        else:
            self.env['PATH'] = PLAIN_PATH
            assert subprocess.run(
                ['sh', '-c', 'command -v start-stop-daemon'],
                env=self.env).returncode != 0
        self.started = []

    def __call__(self, action, **env):
        result = subprocess.run(['sh', SCRIPT, action], capture_output=True,
                                text=True, env=dict(self.env, **env),
                                timeout=60)
        return result.returncode, result.stdout + result.stderr

    def pid(self):
        return int(self.pidfile.read_text().split()[0])

    def workers(self):
        """Pids of live processes running the stand-in worker."""
        found = []
        for entry in os.listdir('/proc'):
            if not entry.isdigit():
                continue
            try:
                with open('/proc/%s/cmdline' % entry, 'rb') as f:
                    argv = f.read().split(b'\0')
                with open('/proc/%s/stat' % entry) as f:
                    state = f.read().rsplit(')', 1)[1].split()[0]
            except OSError:
                continue
            if os.fsencode(self.daemon) in argv and state != 'Z':
                found.append(int(entry))
        return found

    def kill_all(self):
        for pid in self.workers():
            os.kill(pid, 9)


@pytest.fixture(params=['start-stop-daemon', 'sh'])
def init(request, tmp_path):
    init = Init(tmp_path, request.param)
    yield init
    init.kill_all()


def read_fifo(path, timeout=TIMEOUT):
    """What a writer puts into the FIFO ``path``; fails after ``timeout``
    seconds with no writer."""
    got = []
    reader = threading.Thread(
        target=lambda: got.append(open(path).read()), daemon=True)
    reader.start()
    reader.join(timeout)
    assert got, 'nothing written to %s in %s s' % (path, timeout)
    return got[0]


def test_start_status_stop(init, tmp_path):
    ready = tmp_path / 'ready'
    os.mkfifo(ready)
    code, out = init('start', FAKE_READY=str(ready))

    assert code == 0, out
    pid = init.pid()
    assert 'started (pid %d)' % pid in out
    assert init.workers() == [pid]
    assert read_fifo(ready) == 'ready\n'
    assert 'fake worker %d: --config-file %s' % (
        pid, init.config) in init.log.read_text()
    assert oct(init.state_dir.stat().st_mode & 0o777) == '0o700'
    assert init('status') == (0, 'rescue-worker: running (pid %d)\n' % pid)
    # Started twice, it runs once.
    assert init('start') == (
        0, 'rescue-worker: already running (pid %d)\n' % pid)
    assert init.workers() == [pid]

    code, out = init('stop')

    assert (code, out) == (0, 'rescue-worker: stopped\n')
    assert init.workers() == []
    assert not init.pidfile.exists()
    assert 'stopping' in init.log.read_text()
    assert init('status') == (3, 'rescue-worker: not running\n')
    assert init('stop') == (0, 'rescue-worker: not running\n')


def test_with_the_lockdown_marker_nothing_starts(init):
    init.state_dir.mkdir()
    (init.state_dir / 'rescued').write_text('req-1\n')

    code, out = init('start')

    assert code == 0
    assert out == ('rescue-worker: not started: %s/rescued exists (this '
                   'node was rescued; the worker never serves again)\n' %
                   init.state_dir)
    assert init.workers() == []
    assert not init.pidfile.exists()
    assert init('status') == (
        3, 'rescue-worker: not running: this node was rescued (%s/rescued)'
           '\n' % init.state_dir)


def test_the_keeper_a_rescued_worker_became_is_running_and_stops(
        init, tmp_path):
    keeper = tmp_path / 'keeper'
    os.mkfifo(keeper)
    assert init('start', FAKE_KEEPER=str(keeper))[0] == 0
    pid = init.pid()
    assert read_fifo(keeper) == 'keeper\n'
    # The lockdown wrote its marker before the exec.
    init.state_dir.mkdir(exist_ok=True)
    (init.state_dir / 'rescued').write_text('req-1\n')

    try:
        assert init('status') == (
            0, 'rescue-worker: running (pid %d): the tenant network keeper '
               'of this rescued node\n' % pid)
        assert init('stop') == (0, 'rescue-worker: stopped\n')
        assert processes.has_ended(pid)
    finally:
        if not processes.has_ended(pid):
            os.kill(pid, 9)
    assert init('status') == (
        3, 'rescue-worker: not running: this node was rescued (%s/rescued)'
           '\n' % init.state_dir)


def test_restart_after_a_rescue_stops_and_starts_nothing(init):
    assert init('start')[0] == 0
    pid = init.pid()
    (init.state_dir / 'rescued').write_text('req-1\n')

    code, out = init('restart')

    assert code == 0
    assert 'stopped' in out and 'not started' in out
    assert init.workers() == []
    assert pid not in init.workers()


def test_a_worker_that_ends_at_once_fails_the_start(init):
    code, out = init('start', FAKE_EXIT='2')

    assert code == 1
    assert 'failed to start; see %s' % init.log in out
    assert 'fake worker' in init.log.read_text()
    assert not init.pidfile.exists()


def test_a_stale_pid_file_is_not_trusted(init):
    init.pidfile.parent.mkdir()
    init.pidfile.write_text('%d\n' % os.getpid())

    assert init('status') == (1, 'rescue-worker: not running, but %s '
                                 'exists\n' % init.pidfile)
    code, out = init('start')
    assert code == 0, out
    assert init.pid() != os.getpid()


def test_stop_kills_a_worker_that_ignores_sigterm_after_the_timeout(init):
    assert init('start', FAKE_IGNORE_TERM='1')[0] == 0
    pid = init.pid()

    code, out = init('stop', RESCUE_WORKER_STOP_TIMEOUT='1')

    assert code == 0
    assert 'still running after 1s: killing pid %d' % pid in out
    assert init.workers() == []


def test_missing_program_configuration_and_usage(init, tmp_path):
    assert init('start', RESCUE_WORKER_BIN=str(tmp_path / 'none'))[0] == 5
    assert init('start', RESCUE_WORKER_CONFIG=str(tmp_path / 'none'))[0] \
        == 6
    code, out = init('reload')
    assert code == 2
    assert out.startswith('Usage: ')
    assert init.workers() == []
