"""rescue-worker-ctl: the demo a newcomer runs, and the conductor commands
against a worker on the in-memory broker."""

import os
import subprocess
import sys

import pytest

from rescue_worker.cmd import ctl


def run_ctl(*args, stdin=None, timeout=180):
    return subprocess.run(
        [sys.executable, '-m', 'rescue_worker.cmd.ctl', *args],
        input=stdin, capture_output=True, text=True, timeout=timeout)


def test_demo_rescues_every_node_without_a_broker():
    result = run_ctl('demo', '--nodes', '3')

    assert result.returncode == 0, result.stderr
    out = result.stdout
    for i in range(3):
        assert 'finalize_rescue.end      demo-node-%02d' % i in out
    assert '3 of 3 nodes rescued' in out
    assert ctl.DEMO_PASSWORD not in out + result.stderr


def test_demo_prints_each_account_with_the_hash_masked():
    result = run_ctl('demo', '--nodes', '1')

    assert result.returncode == 0, result.stderr
    [line] = [x for x in result.stdout.splitlines()
              if x.startswith('  demo-node-00: ')]
    assert line.startswith('  demo-node-00: rescue:$6$********:') or \
        'no rescue account' in line


def test_finalize_takes_no_password_argument():
    result = run_ctl('finalize', 'node-1', '--password', 'secret')

    assert result.returncode == 2
    assert 'unrecognized arguments' in result.stderr


def test_finalize_needs_a_broker():
    result = run_ctl('finalize', 'node-1', stdin='pw\n')

    assert result.returncode != 0
    assert 'no broker given' in result.stderr


def test_nodes_file_gives_nodes_and_tokens(tmp_path):
    nodes_file = tmp_path / 'nodes'
    nodes_file.write_text('# fleet\nnode-a tokenA\n\nnode-b  # default\n')
    token_file = tmp_path / 'token'
    token_file.write_text('default-token\n')
    args = ctl.build_parser().parse_args(
        ['finalize', 'node-0', '--nodes-file', str(nodes_file),
         '--token-file', str(token_file)])

    assert ctl.read_nodes(args) == [('node-0', 'default-token'),
                                    ('node-a', 'tokenA'),
                                    ('node-b', 'default-token')]


def test_password_from_file_or_stdin(tmp_path, monkeypatch):
    password_file = tmp_path / 'pw'
    password_file.write_text('from a file\n')
    args = ctl.build_parser().parse_args(
        ['finalize', 'n', '--password-file', str(password_file)])
    assert ctl.read_password(args) == 'from a file'


def test_table_aligns_columns():
    table = ctl.format_table(['node', 'outcome'],
                             [['node-1', 'end'], ['n2', 'timeout']])
    assert table.splitlines() == ['node    outcome',
                                  '------  -------',
                                  'node-1  end',
                                  'n2      timeout']


@pytest.mark.parametrize('event,data,expected', [
    ('rescue_worker.finalize_rescue.error',
     {'node_id': 'n1', 'request_id': 'req-1',
      'error': {'code': 'unauthorized', 'message': 'bad token'}},
     'finalize_rescue.error    n1 req-1 unauthorized: bad token'),
    ('rescue_worker.worker.stopped',
     {'node_id': 'n1', 'state': 'rescued', 'reason': 'rescued'},
     'worker.stopped           n1 rescued (rescued)'),
])
def test_watch_lines_are_readable(event, data, expected):
    assert ctl.describe(event, data) == expected


@pytest.mark.parametrize('rounds', ['999', '1000001', '999999999', 'many'])
def test_demo_hash_rounds_are_what_a_worker_accepts(rounds, capsys):
    with pytest.raises(SystemExit) as raised:
        ctl.build_parser().parse_args(['demo', '--hash-rounds', rounds])

    assert raised.value.code == 2
    assert 'sha512_crypt rounds must be a number from 1000 to 1000000' in \
        capsys.readouterr().err


def test_demo_hash_rounds_up_to_the_cap_are_taken():
    args = ctl.build_parser().parse_args(['demo', '--hash-rounds',
                                          '1000000'])

    assert args.hash_rounds == 1000000


def test_finalize_hash_schemes_are_those_a_worker_accepts():
    parser = ctl.build_parser()

    for scheme in ('sha512_crypt', 'sha256_crypt', 'bcrypt'):
        args = parser.parse_args(['finalize', 'n', '--hash-scheme', scheme])
        assert args.hash_scheme == scheme
    with pytest.raises(SystemExit):
        parser.parse_args(['finalize', 'n', '--hash-scheme', 'md5_crypt'])


def test_ctl_is_installed_as_a_console_script():
    script = os.path.join(os.path.dirname(sys.executable),
                          'rescue-worker-ctl')
    result = subprocess.run([script, '--help'], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0
    for command in ('finalize', 'status', 'watch', 'demo'):
        assert command in result.stdout
