"""The shipped systemd unit starts the worker only on a node not rescued."""

import configparser
import os
import subprocess

from rescue_worker import conf as rw_conf
from rescue_worker import lockdown
from tests import parts

UNIT = os.path.join(os.path.dirname(__file__), '..', '..', 'etc', 'systemd',
                    'rescue-worker.service')


def load_unit():
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    with open(UNIT) as f:
        parser.read_file(f)
    return parser


def default_state_dir():
    [opt] = [o for o in rw_conf.ALL_OPTS if o.name == 'state_dir']
    return opt.default


def test_unit_refuses_to_start_once_the_marker_exists():
    unit = load_unit()
    marker = os.path.join(default_state_dir(), lockdown.MARKER_NAME)
    assert unit['Unit']['ConditionPathExists'] == '!' + marker


def test_unit_runs_the_worker_with_its_config_file():
    service = load_unit()['Service']
    assert service['ExecStart'].split()[1:] == [
        '--config-file', '/etc/rescue-worker/rescue-worker.conf']
    assert service['KillSignal'] == 'SIGTERM'
    # A configuration error (exit 2) is not fixed by restarting.
    assert service['RestartPreventExitStatus'] == '2'


def test_systemd_accepts_the_unit(tmp_path):
    parts.require_programs('systemd-analyze', package='systemd')
    unit = tmp_path / 'rescue-worker.service'
    unit.write_text(open(UNIT).read().replace('/usr/local/bin/rescue-worker',
                                              '/bin/true'))
    result = subprocess.run(['systemd-analyze', 'verify', str(unit)],
                            capture_output=True, text=True)
    assert 'rescue-worker.service' not in result.stderr, result.stderr
