"""Whether a process the network package started still runs, read from
``/proc/<pid>/stat``: running, a zombie, gone."""

import os
import subprocess
import sys

import pytest

from rescue_worker.network import processes


@pytest.fixture
def sleeper():
    process = subprocess.Popen([sys.executable, '-c',
                                'import signal; signal.pause()'])
    yield process
    process.kill()
    process.wait()


def exited_unreaped(argv):
    """A child that has exited and is left a zombie: waitid(WNOWAIT)
    waits for the exit without reaping it."""
    process = subprocess.Popen(argv)
    os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOWAIT)
    return process


def test_a_running_process_has_not_ended(sleeper):
    assert processes.process_state(sleeper.pid) in ('R', 'S')
    assert not processes.has_ended(sleeper.pid)


def test_a_zombie_has_ended():
    process = exited_unreaped(['true'])
    try:
        assert processes.process_state(process.pid) == 'Z'
        assert processes.has_ended(process.pid)
    finally:
        process.wait()


def test_a_reaped_process_has_ended():
    process = subprocess.Popen(['true'])
    process.wait()

    assert processes.process_state(process.pid) is None
    assert processes.has_ended(process.pid)


def test_a_command_name_with_a_parenthesis_does_not_hide_the_state(
        tmp_path):
    # The state follows the command name, which is in parentheses and
    # may hold ") Z" itself.
    program = tmp_path / 'x) Z y'
    program.symlink_to(sys.executable)
    process = subprocess.Popen([str(program), '-c',
                                'import signal; signal.pause()'])
    try:
        assert not processes.has_ended(process.pid)
    finally:
        process.kill()
        process.wait()


def test_wait_gone_gives_up_on_a_process_that_runs_on(sleeper):
    assert not processes.wait_gone(sleeper.pid, 0.1)


def test_wait_gone_returns_once_the_process_ended(sleeper):
    sleeper.kill()

    assert processes.wait_gone(sleeper.pid, 5.0)


def test_a_child_gets_the_search_path_and_the_c_locale_only(monkeypatch):
    monkeypatch.setenv('PATH', '/opt/rescue/bin:/usr/bin')
    monkeypatch.setenv('OS_DEFAULT__TRANSPORT_URL', 'rabbit://u:secret@h/')
    monkeypatch.setenv('LANG', 'de_DE.UTF-8')

    assert processes.child_environment() == {
        'PATH': '/opt/rescue/bin:/usr/bin', 'LC_ALL': 'C'}
    assert processes.child_environment(RESCUE_WORKER_FAMILY='6') == {
        'PATH': '/opt/rescue/bin:/usr/bin', 'LC_ALL': 'C',
        'RESCUE_WORKER_FAMILY': '6'}


def test_a_worker_without_a_path_gives_its_children_the_systems(
        monkeypatch):
    monkeypatch.delenv('PATH')

    assert processes.child_environment()['PATH'] == (
        '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin')


def test_start_logged_gives_the_child_environment_and_logs_the_command(
        tmp_path, monkeypatch):
    monkeypatch.setenv('OS_DEFAULT__TRANSPORT_URL', 'rabbit://u:secret@h/')
    log = tmp_path / 'child.log'

    process = processes.start_logged(
        [sys.executable, '-c', 'import os; print(sorted(os.environ))'],
        str(log), EXTRA='1')
    assert process.wait(10) == 0

    header, output = log.read_text().splitlines()
    assert header.startswith('--- ') and header.endswith(
        ": %s -c import os; print(sorted(os.environ))" % sys.executable)
    assert output == "['EXTRA', 'LC_ALL', 'PATH']"
