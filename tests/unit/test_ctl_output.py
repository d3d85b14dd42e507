"""rescue-worker-ctl's output: tables that fit the terminal, JSON for
scripts, request ids, the progress bar and what finalize says of a node
that is not there yet."""

import io
import json
import sys

import pytest

from rescue_worker import client as rw_client
from rescue_worker import payloads
from rescue_worker import rpc
from rescue_worker.cmd import ctl
from rescue_worker.fixture import NotificationCapture
from rescue_worker.fixture import RescueWorkerFixture
from tests.unit import test_ctl_exit_statuses as exit_statuses

NoQueue = exit_statuses.NoQueue
# An autouse fixture: ctl.main quiets the libraries' loggers.
libraries_logging_restored = exit_statuses.libraries_logging_restored

PASSWORD = 'output password'
DETAIL = ('no worker listens for node n1 (its queue does not exist): check '
          'that the node booted the rescue ramdisk and wait for its '
          'worker.ready notification')


@pytest.fixture
def worker():
    with RescueWorkerFixture(exit_after_rescue=False,
                             steps='password') as fixture:
        yield fixture


@pytest.fixture
def on_worker(worker, monkeypatch):
    monkeypatch.setattr(rpc, 'get_rpc_transport',
                        lambda conf, url=None: worker.transport)
    monkeypatch.setattr(rpc, 'get_notification_transport',
                        lambda conf, url=None: worker.notification_transport)
    monkeypatch.setattr(sys, 'stdin', io.StringIO(PASSWORD + '\n'))
    return worker


def run(capsys, *args):
    status = ctl.main([*args, '--transport-url', 'fake://'])
    out, err = capsys.readouterr()
    return status, out, err


class Terminal(io.StringIO):
    def isatty(self):
        return True


# -- tables -------------------------------------------------------------------

def test_a_long_detail_is_wrapped_to_the_width():
    table = ctl.format_table(['node', 'outcome', 'detail'],
                             [['node-1', 'not_listening', DETAIL],
                              ['node-22', 'end', 'ok']], width=60)

    lines = table.splitlines()
    assert max(len(line) for line in lines) <= 60
    assert lines[2].startswith('node-1   not_listening  no worker listens')
    # The detail goes on under itself, the other columns left blank.
    detail_column = lines[2].index('no worker')
    continued = lines[3:-1]
    assert continued and all(
        line[:detail_column].strip() == '' for line in continued)
    words = ' '.join(line[detail_column:] for line in lines[2:-1]).split()
    assert words == DETAIL.split()
    assert lines[-1].split() == ['node-22', 'end', 'ok']


def test_a_table_fits_the_terminal(monkeypatch):
    monkeypatch.setenv('COLUMNS', '50')

    table = ctl.format_table(['node', 'detail'], [['n1', DETAIL]])

    assert max(len(line) for line in table.splitlines()) <= 50


def test_a_short_table_is_not_widened():
    assert ctl.format_table(['node', 'detail'], [['n1', 'ok']],
                            width=200).splitlines() == ['node  detail',
                                                        '----  ------',
                                                        'n1    ok']


def test_a_narrow_terminal_still_shows_a_readable_detail():
    table = ctl.format_table(['a' * 30, 'detail'], [['x', DETAIL]],
                             width=40)

    detail_lines = [line[32:] for line in table.splitlines()[2:]]
    assert all(len(line) <= ctl.MIN_DETAIL_WIDTH for line in detail_lines)
    assert ' '.join(detail_lines).split() == DETAIL.split()


# -- the progress bar ---------------------------------------------------------

def _outcome_data(request_id):
    return {'request_id': request_id, 'node_id': 'n'}


def test_the_bar_counts_each_request_once():
    stream = Terminal()
    progress = ctl.Progress(2, stream)

    progress.on_notification(payloads.EVENT_START, _outcome_data('r1'))
    progress.on_notification(payloads.EVENT_END, _outcome_data('r1'))
    progress.on_notification(payloads.EVENT_END, _outcome_data('r1'))

    assert progress.done == 1
    assert stream.getvalue().endswith('] 1/2')


def test_the_bar_counts_only_its_own_requests():
    # The waiter sees every outcome on the exchange, other conductors'.
    stream = Terminal()
    progress = ctl.Progress(2, stream, counts=lambda rid: rid == 'mine')

    progress.on_notification(payloads.EVENT_END, _outcome_data('theirs'))
    progress.on_notification(payloads.EVENT_ERROR, _outcome_data('mine'))

    assert progress.done == 1


def test_finish_ends_a_bar_that_did_not_fill():
    stream = Terminal()
    progress = ctl.Progress(3, stream)
    progress.advance()

    progress.finish()

    assert stream.getvalue().endswith('] 1/3\n')


def test_finish_writes_nothing_when_nothing_was_drawn():
    stream = Terminal()

    ctl.Progress(3, stream).finish()

    assert stream.getvalue() == ''


def test_the_bar_ends_its_line_before_the_table(on_worker, monkeypatch):
    # One terminal for both streams, as an operator sees them: a node that
    # never answers leaves the bar short of full.
    NoQueue(on_worker.transport, 'node-never-booted')
    screen = Terminal()
    monkeypatch.setattr(sys, 'stdout', screen)
    monkeypatch.setattr(sys, 'stderr', screen)

    status = ctl.main(['finalize', on_worker.node_id, 'node-never-booted',
                       '--token-file', on_worker.token_file, '--wait',
                       '--timeout', '2', '--transport-url', 'fake://'])

    assert status == ctl.EXIT_REFUSED
    text = screen.getvalue()
    assert '] 1/2\nnode ' in text


# -- finalize -----------------------------------------------------------------

def test_a_plain_finalize_prints_the_request_id_the_worker_runs(
        on_worker, capsys):
    with NotificationCapture(on_worker.notification_transport) as events:
        status, out, err = run(capsys, 'finalize', on_worker.node_id,
                               '--token-file', on_worker.token_file)
        [row] = [line.split() for line in out.splitlines()
                 if line.startswith(on_worker.node_id)]

        assert status == ctl.EXIT_OK, err
        assert row[1].startswith('req-')
        assert row[2] == 'cast'
        events.wait_for(payloads.EVENT_END, request_id=row[1])
    assert 'cast to 1 of 1 node(s)' in out


def test_a_plain_finalize_in_json(on_worker, capsys):
    NoQueue(on_worker.transport, 'node-never-booted')

    status, out, err = run(capsys, 'finalize', on_worker.node_id,
                           'node-never-booted', '--token-file',
                           on_worker.token_file, '--format', 'json')

    cast, unknown = json.loads(out)
    assert cast['node_id'] == on_worker.node_id
    assert cast['status'] == 'cast'
    assert cast['request_id'].startswith('req-')
    assert cast['error'] is None
    assert unknown['node_id'] == 'node-never-booted'
    assert unknown['error']['code'] == rw_client.NOT_LISTENING
    assert status == ctl.EXIT_REFUSED


def test_finalize_wait_in_json(on_worker, capsys):
    status, out, err = run(capsys, 'finalize', on_worker.node_id,
                           '--token-file', on_worker.token_file, '--wait',
                           '--timeout', '60', '-f', 'json')

    assert status == ctl.EXIT_OK, err
    [outcome] = json.loads(out)
    assert outcome['node_id'] == on_worker.node_id
    assert outcome['status'] == 'end'
    assert outcome['succeeded'] is True
    assert outcome['casts'] == 1
    assert outcome['error'] is None
    assert outcome['duration_ms'] >= 0
    assert outcome['request_id'].startswith('req-')


@pytest.mark.parametrize('timeout, start_timeout, said', [
    (300, 30, 'casting again in 30 s (2 more casts at most within '
              '--timeout 300 s)'),
    (45, 30, 'casting again in 30 s (1 more cast at most within --timeout '
             '45 s)'),
    (5, 30, 'and --timeout (5 s) ends before --start-timeout (30 s) would '
            'cast again: give a longer --timeout to wait for it to boot'),
])
def test_the_recast_message_agrees_with_the_timeout(timeout, start_timeout,
                                                    said):
    line = ctl.not_listening_yet('n1', timeout, start_timeout)

    assert line.startswith('n1: no worker listens for n1 yet')
    assert line.endswith(said)


def test_a_node_not_there_before_the_timeout_is_reported_unknown(
        on_worker, capsys):
    NoQueue(on_worker.transport, 'node-never-booted')

    status, out, err = run(capsys, 'finalize', 'node-never-booted',
                           '--token-file', on_worker.token_file, '--wait',
                           '--timeout', '1', '--start-timeout', '30',
                           '-f', 'json')

    assert 'ends before --start-timeout (30 s)' in err
    [outcome] = json.loads(out)
    assert outcome['status'] == rw_client.NOT_LISTENING
    assert outcome['error']['message'].startswith(
        'no worker listens for node node-never-booted')
    assert status == ctl.EXIT_REFUSED


# -- status and watch ---------------------------------------------------------

def test_status_is_a_table_of_fields(on_worker, capsys):
    status, out, err = run(capsys, 'status', on_worker.node_id,
                           '--token-file', on_worker.token_file)

    rows = dict(line.split(None, 1) for line in out.splitlines()[2:])
    assert status == ctl.EXIT_OK
    assert out.splitlines()[0].split() == ['field', 'value']
    assert rows['node_id'] == on_worker.node_id
    assert rows['state'] == 'waiting'


def test_status_in_json(on_worker, capsys):
    status, out, err = run(capsys, 'status', on_worker.node_id,
                           '--token-file', on_worker.token_file, '-f',
                           'json')

    assert json.loads(out)['state'] == 'waiting'


@pytest.mark.parametrize('option', [['--json'], ['-f', 'json'],
                                    ['--format', 'json']])
def test_watch_takes_json_as_the_other_commands_do(option):
    args = ctl.build_parser().parse_args(['watch', *option])

    assert args.format == 'json'
