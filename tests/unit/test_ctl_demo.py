"""rescue-worker-ctl demo: one deadline for the whole demo, input it
refuses in one line, and the directory of the nodes' files."""

import os
import re
import shutil
import time

import pytest

from rescue_worker import errors
from rescue_worker.cmd import ctl
from rescue_worker.steps import verify
from tests.unit import test_ctl_exit_statuses as exit_statuses

# An autouse fixture: ctl.main quiets the libraries' loggers.
libraries_logging_restored = exit_statuses.libraries_logging_restored


def _files_under(out):
    return re.search(r'files under (\S+)', out).group(1)


def test_a_failing_step_ends_the_demo_at_the_outcomes(monkeypatch, capsys):
    # A node whose rescue failed never stops by itself: the demo used to
    # wait --timeout for each such node.
    def fail(self, request, state):
        raise errors.RescueError(errors.VERIFY_FAILED,
                                 'forced to fail by the test')
    monkeypatch.setattr(verify.VerifyStep, 'run', fail)
    began = time.monotonic()

    status = ctl.main(['demo', '--nodes', '2', '--timeout', '20'])

    took = time.monotonic() - began
    out = capsys.readouterr().out
    assert status == ctl.EXIT_FAILED
    assert took < 20, took
    rows = [line.split(None, 4) for line in out.splitlines()
            if line.startswith('demo-node-')]
    assert [row[1] for row in rows] == ['error', 'error']
    assert all(row[4].startswith('verify_failed: forced to fail by the test')
               for row in rows)
    assert '0 of 2 nodes rescued' in out


def test_the_demo_removes_its_directory(capsys):
    status = ctl.main(['demo', '--nodes', '1'])

    out, err = capsys.readouterr()
    assert status == ctl.EXIT_OK, err
    base = _files_under(out)
    assert os.path.basename(base).startswith('rescue-worker-demo-')
    assert not os.path.exists(base)
    assert '(removed at the end; --keep keeps them)' in out


def test_keep_says_where_the_files_are_and_what_secrets_they_hold(
        monkeypatch, capsys):
    # One node rescued (locked down: its token scrubbed), one failed.
    real_run = verify.VerifyStep.run

    def fail_one(self, request, state):
        if self.conf.rescue_worker.node_id == 'demo-node-01':
            raise errors.RescueError(errors.VERIFY_FAILED, 'failed')
        return real_run(self, request, state)
    monkeypatch.setattr(verify.VerifyStep, 'run', fail_one)

    status = ctl.main(['demo', '--nodes', '2', '--keep'])

    out, err = capsys.readouterr()
    base = _files_under(out)
    try:
        assert status == ctl.EXIT_FAILED, err
        assert not os.path.exists(os.path.join(base, 'node-00',
                                               'agent-token'))
        assert os.path.isfile(os.path.join(base, 'node-01', 'agent-token'))
        assert os.path.isfile(os.path.join(base, 'node-00', 'root', 'etc',
                                           'shadow'))
        assert err.splitlines()[-1] == (
            "kept %s: it holds the rescue password's hash (each "
            "root/etc/shadow) and, for a node not rescued, its agent token "
            "and configuration (with the broker URL); remove it when done: "
            "rm -r %s" % (base, base))
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize('nodes', ['0', '-1', 'three'])
def test_fewer_than_one_node_is_refused_in_one_line(nodes, capsys):
    with pytest.raises(SystemExit) as raised:
        ctl.main(['demo', '--nodes', nodes])

    err = capsys.readouterr().err
    assert raised.value.code == ctl.EXIT_USAGE
    assert err == ("rescue-worker-ctl demo: error: argument --nodes: %r is "
                   "not a whole number, 1 or more (see rescue-worker-ctl "
                   "demo --help)\n" % nodes)


@pytest.mark.parametrize('rounds', ['999', '1000001'])
def test_rounds_a_worker_refuses_are_refused_in_one_line(rounds, capsys):
    with pytest.raises(SystemExit) as raised:
        ctl.main(['demo', '--hash-rounds', rounds])

    err = capsys.readouterr().err
    assert raised.value.code == ctl.EXIT_USAGE
    assert err.count('\n') == 1
    assert 'sha512_crypt rounds must be a number from 1000 to 1000000' in err


def test_a_step_that_does_not_exist_is_one_line(capsys):
    status = ctl.main(['demo', '--nodes', '1', '--steps', 'password,nosuch'])

    err = capsys.readouterr().err
    assert status == ctl.EXIT_USAGE
    assert err.count('\n') == 1, err
    assert err.startswith("rescue-worker-ctl: the workers cannot start: "
                          "Unknown step 'nosuch'")
