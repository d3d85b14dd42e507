"""The conductor's side imports nothing of the worker.

A conductor installs rescue-worker for its client and rescue-worker-ctl;
importing them must not load the worker's pipeline, its steps (and the
step plug-ins behind them), its service or its network code. Only the
modules both ends share (contract, payloads, passwords, errors) and, for the
command line tool, the messaging set-up (rpc, conf) may come along.
rescue-worker-ctl's ``demo`` runs workers in-process and imports them only
when it runs.

stevedore cannot be checked this way: oslo.messaging itself imports it to
load its drivers. What the project controls is that its own step loader
(``rescue_worker.pipeline``) is not imported.

Each import runs in a fresh interpreter: this process's ``sys.modules``
holds whatever the other tests imported.
"""

import json
import pathlib
import subprocess
import sys

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]

SHARED = {'rescue_worker', 'rescue_worker.contract', 'rescue_worker.errors',
          'rescue_worker.passwords', 'rescue_worker.payloads'}
CLIENT_SIDE = SHARED | {'rescue_worker.client'}
CTL_SIDE = CLIENT_SIDE | {'rescue_worker.cmd', 'rescue_worker.cmd.ctl',
                          'rescue_worker.conf', 'rescue_worker.rpc'}


def project_modules_imported_by(module):
    """The ``rescue_worker`` modules that importing ``module`` loads."""
    code = ('import json, sys\n'
            'import %s\n'
            'print(json.dumps(sorted(\n'
            '    name for name in sys.modules\n'
            '    if name.split(".")[0] == "rescue_worker")))\n' % module)
    result = subprocess.run([sys.executable, '-W', 'ignore', '-c', code],
                            cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.splitlines()[-1]))


@pytest.mark.parametrize('module,allowed', [
    ('rescue_worker.client', CLIENT_SIDE),
    ('rescue_worker.cmd.ctl', CTL_SIDE),
])
def test_the_conductor_side_imports_no_module_of_the_worker(module,
                                                            allowed):
    imported = project_modules_imported_by(module)

    assert module in imported
    assert 'rescue_worker.pipeline' not in imported
    assert not any(name.startswith('rescue_worker.steps')
                   for name in imported)
    assert imported - allowed == set(), (
        'importing %s also imports %s; import worker modules where they '
        'are used, or add a module both sides share to this test' % (
            module, ', '.join(sorted(imported - allowed))))


def test_the_password_step_does_pull_in_the_pipeline():
    # What the conductor side avoids by hashing with rescue_worker.passwords
    # instead of the step module it once imported.
    imported = project_modules_imported_by('rescue_worker.steps.password')

    assert {'rescue_worker.pipeline', 'rescue_worker.passwords'} <= imported
