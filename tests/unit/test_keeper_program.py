"""The tenant network keeper as a program of its own: what reaches it from
the worker, and that it works from that alone."""

import json
import os
import subprocess
import sys

from rescue_worker import sandbox
from rescue_worker.cmd import keeper as keeper_cmd


def _conf(tmp_path, **options):
    return sandbox.SandboxNode(str(tmp_path), **options).create() \
        .load_config()


def test_its_command_line_holds_no_secret(tmp_path):
    node = sandbox.SandboxNode(
        str(tmp_path), transport_url='rabbit://rescue:broker-pw@h:5672/')
    node.create()
    conf = node.load_config()

    argv = keeper_cmd.keeper_argv(conf, ['eth0'])

    text = ' '.join(argv)
    assert 'broker-pw' not in text
    assert node.token not in text
    assert 'transport_url' not in text
    assert argv[-2:] == ['--', 'eth0']


def test_it_carries_the_backend_options(tmp_path):
    conf = _conf(tmp_path, dhcp_backend='none', tenant_renew_interval=3)

    argv = keeper_cmd.keeper_argv(conf, ['eth0'])

    settings = json.loads(argv[argv.index('--settings') + 1])
    assert settings['dhcp_backend'] == 'none'
    assert settings['tenant_renew_interval'] == 3


def test_the_program_runs_from_its_command_line_alone(tmp_path):
    conf = _conf(tmp_path, dhcp_backend='none', tenant_renew_period=0)
    log_file = tmp_path / 'keeper.log'
    argv = keeper_cmd.keeper_argv(conf, ['eth0'])
    argv[argv.index('--'):argv.index('--')] = ['--log-file', str(log_file)]

    # No configuration file, no token file, an environment of nothing.
    os.unlink(conf.config_file[0])
    result = subprocess.run(argv, env={'PATH': os.environ['PATH']},
                            capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stderr
    assert 'Tenant network keeper done (nothing_to_do)' in \
        log_file.read_text()


def test_the_worker_environment_does_not_reach_it(monkeypatch, tmp_path):
    conf = _conf(tmp_path, dhcp_backend='none')
    monkeypatch.setenv('OS_DEFAULT__TRANSPORT_URL', 'rabbit://u:pw@h/')
    seen = {}

    def fake_execve(path, argv, env):
        seen.update(path=path, argv=argv, env=env)
        raise SystemExit(0)
    monkeypatch.setattr(os, 'execve', fake_execve)

    try:
        keeper_cmd.exec_keeper(conf, ['eth0'])
    except SystemExit:
        pass

    assert seen['path'] == sys.executable
    assert 'OS_DEFAULT__TRANSPORT_URL' not in seen['env']
    assert set(seen['env']) <= set(keeper_cmd.ENVIRONMENT_KEEPS)
