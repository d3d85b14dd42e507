"""rescue-worker-broker-user: installed as a console script, still run
from a source tree by tools/, and what it hands rabbitmqctl (a fake one
here; the real broker is tests/functional/test_least_privilege.py)."""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
SCRIPT = os.path.join(os.path.dirname(sys.executable),
                      'rescue-worker-broker-user')
WRAPPER = os.path.join(REPO, 'tools', 'rescue-worker-broker-user')
PASSWORD = 'broker-user-password-0123456789'

FAKE_RABBITMQCTL = '''#!/bin/sh
# Records each call (its arguments, then its standard input) in $1.
log="$1"; shift
printf '%s\\n' "$*" >> "$log"
if [ "$1" = list_users ]; then
    echo '[{"user": "guest", "tags": []}]'
else
    cat >> "$log"
fi
'''


def run(argv, **kwargs):
    return subprocess.run(argv, capture_output=True, text=True, timeout=60,
                          **kwargs)


def test_the_console_script_is_installed_with_the_package():
    result = run([SCRIPT, 'show', 'node-1'])

    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown['user'] == 'rw-node-1'
    assert shown['vhost'] == '/'


def test_the_source_tree_wrapper_needs_nothing_installed():
    # -S: no site-packages, so neither this package nor oslo.* can be
    # imported; -I: nor anything from the environment.
    result = run([sys.executable, '-S', '-I', WRAPPER, 'show', 'node-1'])

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == json.loads(
        run([SCRIPT, 'show', 'node-1']).stdout)
    assert os.access(WRAPPER, os.X_OK)


def test_help_names_the_console_script_and_every_action():
    result = run([SCRIPT, '--help'])

    assert result.returncode == 0
    assert result.stdout.startswith('usage: rescue-worker-broker-user ')
    for action in ('add', 'remove', 'show', 'expire-queues'):
        assert action in result.stdout


def test_add_hands_the_password_on_standard_input_only(tmp_path):
    fake = tmp_path / 'rabbitmqctl'
    fake.write_text(FAKE_RABBITMQCTL)
    fake.chmod(0o755)
    calls = tmp_path / 'calls'
    password_file = tmp_path / 'password'
    password_file.write_text(PASSWORD + '\n')
    password_file.chmod(0o600)

    result = run([SCRIPT, 'add', 'node-1', '--password-file',
                  str(password_file), '--rabbitmqctl',
                  '%s %s' % (fake, calls)])

    assert result.returncode == 0, result.stderr
    assert result.stdout == 'rw-node-1\n'
    lines = calls.read_text().splitlines()
    assert lines[0] == 'list_users --silent --formatter json'
    assert lines[1:3] == ['add_user rw-node-1', PASSWORD]
    commands = [line.split()[0] for line in lines[3:]]
    assert commands == ['set_user_tags', 'set_permissions',
                        'set_topic_permissions', 'set_user_limits']
    assert lines[-1] == ('set_user_limits rw-node-1 {"max-channels": 40, '
                         '"max-connections": 10}')
    assert PASSWORD not in result.stdout + result.stderr


def test_print_only_never_prints_the_password(tmp_path):
    password_file = tmp_path / 'password'
    password_file.write_text(PASSWORD + '\n')
    password_file.chmod(0o600)

    result = run([SCRIPT, 'add', 'node-1', '--password-file',
                  str(password_file), '--print-only', '--max-channels',
                  '-1'])

    assert result.returncode == 0, result.stderr
    assert 'add_user rw-node-1 < %s' % password_file in result.stdout
    assert 'set_user_limits rw-node-1 \'{"max-connections": 10}\'' in \
        result.stdout
    assert PASSWORD not in result.stdout + result.stderr


def test_a_password_file_others_can_read_is_refused_in_one_line(tmp_path):
    password_file = tmp_path / 'password'
    password_file.write_text(PASSWORD + '\n')
    password_file.chmod(0o644)

    result = run([SCRIPT, 'add', 'node-1', '--password-file',
                  str(password_file), '--rabbitmqctl', 'false'])

    assert result.returncode == 1
    assert result.stderr == ('rescue-worker-broker-user: %s is readable by '
                             'others (mode 644): chmod 600 it\n'
                             % password_file)
