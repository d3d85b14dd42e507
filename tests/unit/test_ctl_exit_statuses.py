"""rescue-worker-ctl's exit statuses and one-line errors, in process,
against a real worker on the fake transport (the command's transports are
the fixture's)."""

import io
import json
import logging
import socket
import sys
import threading
import time
import uuid

import oslo_messaging
import pytest

from rescue_worker import client as rw_client
from rescue_worker import rpc
from rescue_worker.cmd import ctl
from rescue_worker.fixture import RescueWorkerFixture

PASSWORD = 'exit status password'


@pytest.fixture(autouse=True)
def libraries_logging_restored():
    """ctl.main quiets the libraries' loggers for the process; give them
    back to the tests that come next."""
    saved = [(logging.getLogger(name), logging.getLogger(name).level,
              logging.getLogger(name).propagate)
             for name in ctl.QUIET_LOGGERS]
    yield
    for logger, level, propagate in saved:
        logger.setLevel(level)
        logger.propagate = propagate


@pytest.fixture
def worker():
    with RescueWorkerFixture(exit_after_rescue=False,
                             steps='password') as fixture:
        yield fixture


@pytest.fixture
def on_worker(worker, monkeypatch):
    """ctl's transports are the worker's (fake:// is one broker per
    transport)."""
    monkeypatch.setattr(rpc, 'get_rpc_transport',
                        lambda conf, url=None: worker.transport)
    monkeypatch.setattr(rpc, 'get_notification_transport',
                        lambda conf, url=None: worker.notification_transport)
    return worker


@pytest.fixture
def stdin(monkeypatch):
    def feed(text):
        monkeypatch.setattr(sys, 'stdin', io.StringIO(text))
    feed('')
    return feed


def run(capsys, *args):
    status = ctl.main([*args, '--transport-url', 'fake://'])
    out, err = capsys.readouterr()
    return status, out, err


def one_line(err):
    assert 'Traceback' not in err
    assert err.count('\n') == 1, err
    assert err.startswith('rescue-worker-ctl: ')
    return err


class NoQueue:
    """The broker returns every message to ``node_id`` as unroutable, as
    RabbitMQ does with the mandatory flag when no queue is bound."""

    def __init__(self, transport, node_id):
        self.node_id = node_id
        self._send = transport._send
        transport._send = self

    def __call__(self, target, ctxt, message, *args, **kwargs):
        if target.server == self.node_id:
            raise oslo_messaging.MessageUndeliverable(
                Exception('NO_ROUTE'), target.exchange, target.topic,
                message)
        return self._send(target, ctxt, message, *args, **kwargs)


# -- status -------------------------------------------------------------------

def test_status_of_a_worker_exits_0(on_worker, capsys):
    status, out, err = run(capsys, 'status', on_worker.node_id,
                           '--token-file', on_worker.token_file)

    assert status == ctl.EXIT_OK == 0, err
    assert on_worker.node_id in out
    assert 'waiting' in out
    assert on_worker.token not in out + err


def test_status_refused_by_the_worker_is_its_message_and_5(
        on_worker, capsys, tmp_path):
    wrong = tmp_path / 'token'
    wrong.write_text('w' * 40)

    status, out, err = run(capsys, 'status', on_worker.node_id,
                           '--token-file', str(wrong))

    assert status == ctl.EXIT_REFUSED == 5
    one_line(err)
    # The worker's own words, not the remote traceback.
    assert err == ("rescue-worker-ctl: node %s refused: agent_token does not "
                   "match this node's token; check that the conductor casts "
                   "to the right node and holds its current token.\n"
                   % on_worker.node_id)
    assert 'w' * 40 not in out + err


def test_status_of_a_node_without_a_queue_is_5(on_worker, capsys):
    NoQueue(on_worker.transport, 'node-never-booted')

    status, out, err = run(capsys, 'status', 'node-never-booted')

    assert status == ctl.EXIT_REFUSED
    assert one_line(err).startswith(
        'rescue-worker-ctl: no worker listens for node node-never-booted')
    assert out == ''


def test_status_without_an_answer_in_time_is_4(on_worker, capsys):
    # fake:// drops a call nobody consumes: as a locked-down worker's
    # queue, which outlives it, does.
    began = time.monotonic()
    status, out, err = run(capsys, 'status', 'node-silent', '--timeout', '1')

    assert status == ctl.EXIT_TIMEOUT == 4
    assert 'no answer from the worker of node node-silent within 1 s' in \
        one_line(err)
    assert time.monotonic() - began < 1 + ctl.CALL_GRACE + 10


def test_a_remote_refusal_is_the_workers_message_only():
    exc = oslo_messaging.RemoteError(
        'RescueError', 'agent_token does not match', 'Traceback ...')

    assert ctl.refusal_message('n1', exc) == \
        'node n1 refused: agent_token does not match'


def test_a_remote_failure_that_is_not_a_refusal_names_its_type():
    exc = oslo_messaging.RemoteError('TypeError', "bad argument 'x'\nmore",
                                     'Traceback ...')

    assert ctl.refusal_message('n1', exc) == \
        "the worker of node n1 failed: TypeError: bad argument 'x'"


# -- finalize -----------------------------------------------------------------

def test_finalize_cast_to_every_node_exits_0(on_worker, capsys, stdin):
    stdin(PASSWORD + '\n')

    status, out, err = run(capsys, 'finalize', on_worker.node_id,
                           '--token-file', on_worker.token_file)

    assert status == ctl.EXIT_OK, err
    assert PASSWORD not in out + err


def test_finalize_to_a_node_without_a_queue_is_5(on_worker, capsys, stdin):
    stdin(PASSWORD + '\n')
    NoQueue(on_worker.transport, 'node-never-booted')

    status, out, err = run(capsys, 'finalize', on_worker.node_id,
                           'node-never-booted', '--token-file',
                           on_worker.token_file, '-f', 'json')

    assert status == ctl.EXIT_REFUSED
    [_, unknown] = json.loads(out)
    assert unknown['status'] == rw_client.NOT_LISTENING
    assert unknown['error']['message'].startswith(
        'no worker listens for node node-never-booted (its queue does not '
        'exist)')


def test_finalize_wait_rescued_is_0(on_worker, capsys, stdin):
    stdin(PASSWORD + '\n')

    status, out, err = run(capsys, 'finalize', on_worker.node_id,
                           '--token-file', on_worker.token_file, '--wait',
                           '--timeout', '60')

    assert status == ctl.EXIT_OK, out + err
    assert '1 of 1 nodes rescued' in out


def test_finalize_wait_with_an_error_outcome_is_1(on_worker, capsys, stdin):
    stdin('not a crypt hash\n')

    status, out, err = run(capsys, 'finalize', on_worker.node_id,
                           '--token-file', on_worker.token_file, '--hashed',
                           '--wait', '--timeout', '60')

    assert status == ctl.EXIT_FAILED == 1, out + err
    assert 'invalid_hash' in out
    assert '0 of 1 nodes rescued' in out


def test_finalize_wait_without_an_outcome_in_time_is_4(on_worker, capsys,
                                                      stdin):
    stdin(PASSWORD + '\n')
    on_worker.lose_next_casts(10)

    status, out, err = run(capsys, 'finalize', on_worker.node_id,
                           '--token-file', on_worker.token_file, '--wait',
                           '--timeout', '1', '--start-timeout', '30')

    assert status == ctl.EXIT_TIMEOUT, out + err
    assert 'timeout' in out


def _outcome(status):
    return rw_client.Outcome('req-%s' % uuid.uuid4(), 'n', status)


@pytest.mark.parametrize('statuses, expected', [
    ([rw_client.ENDED, rw_client.ENDED], 0),
    ([rw_client.TIMED_OUT, rw_client.ERRORED, rw_client.NOT_LISTENING], 1),
    ([rw_client.TIMED_OUT, rw_client.NOT_LISTENING, rw_client.ENDED], 5),
    ([rw_client.ENDED, rw_client.TIMED_OUT], 4),
])
def test_several_nodes_exit_with_the_first_of_1_5_4(statuses, expected):
    assert ctl.finalize_status([_outcome(s) for s in statuses]) == expected


# -- watch --------------------------------------------------------------------

def test_watch_that_sees_fewer_than_count_in_time_is_4(on_worker, capsys):
    status, out, err = run(capsys, 'watch', '--count', '5', '--timeout',
                           '0.5')

    assert status == ctl.EXIT_TIMEOUT
    assert err.startswith('watching ')


def test_watch_that_ends_at_its_timeout_without_count_is_0(on_worker,
                                                          capsys):
    status, out, err = run(capsys, 'watch', '--timeout', '0.5')

    assert status == ctl.EXIT_OK


# -- bad input: one line, status 2, and no connection -------------------------

@pytest.fixture
def listening_broker():
    """A socket that takes connections and never answers: after the
    command, ``connected()`` says whether it tried to reach the broker."""
    sock = socket.socket()
    sock.bind(('127.0.0.1', 0))
    sock.listen(8)
    sock.setblocking(False)

    def connected():
        try:
            conn, _ = sock.accept()
        except BlockingIOError:
            return False
        conn.close()
        return True
    yield 'rabbit://user:broker-secret@127.0.0.1:%d/' % \
        sock.getsockname()[1], connected
    sock.close()


@pytest.mark.parametrize('args, said', [
    (['finalize', 'n1', '--token-file', '/nonexistent/token', '--wait'],
     'cannot read the token file /nonexistent/token'),
    (['status', 'n1', '--token-file', '/nonexistent/token'],
     'cannot read the token file /nonexistent/token'),
    (['watch', '--node', 'n1', '--token-file', '/nonexistent/token'],
     'cannot read the token file /nonexistent/token'),
    (['finalize', '--wait', '--token-file', 'EMPTY'],
     'the token file EMPTY is empty'),
    (['finalize', '--wait', 'n1', '--nodes-file', '/nonexistent/nodes'],
     'cannot read the nodes file /nonexistent/nodes'),
    (['finalize', '--wait'], 'no node given'),
    (['finalize', '--wait', 'n1', '--password-file', 'EMPTY'],
     'the password file EMPTY is empty'),
    (['watch', '--token-file', 'EMPTY'], '--token-file needs --node'),
])
def test_bad_input_is_2_before_any_connection(args, said, listening_broker,
                                              capsys, stdin, tmp_path):
    url, connected = listening_broker
    stdin('a password\n')
    empty = tmp_path / 'empty'
    empty.write_text('\n')
    args = [str(empty) if a == 'EMPTY' else a for a in args]
    said = said.replace('EMPTY', str(empty))

    status = ctl.main([*args, '--timeout', '5', '--transport-url', url])

    err = capsys.readouterr().err
    assert status == ctl.EXIT_USAGE == 2
    assert said in one_line(err)
    assert not connected()


def test_an_empty_password_on_stdin_is_2_before_any_connection(
        listening_broker, capsys, stdin, tmp_path):
    url, connected = listening_broker
    stdin('\n')

    status = ctl.main(['finalize', 'n1', '--wait', '--timeout', '5',
                       '--transport-url', url])

    assert status == ctl.EXIT_USAGE
    assert 'the password is empty' in one_line(capsys.readouterr().err)
    assert not connected()


@pytest.mark.parametrize('url', ['nosuchdriver://user:url-secret@host/',
                                 'rabbit://user:url-secret@host:port/'])
def test_an_unusable_transport_url_is_2_and_never_repeated(url, capsys,
                                                           stdin):
    stdin('a password\n')

    status = ctl.main(['finalize', 'n1', '--transport-url', url])

    err = capsys.readouterr().err
    assert status == ctl.EXIT_USAGE
    assert 'transport URL' in one_line(err)
    assert 'url-secret' not in err


def test_no_broker_is_2(capsys):
    assert ctl.main(['status', 'n1']) == ctl.EXIT_USAGE
    assert 'no broker given' in one_line(capsys.readouterr().err)


def test_a_missing_config_file_is_2(capsys):
    status = ctl.main(['status', 'n1', '--config-file', '/nonexistent.conf'])

    assert status == ctl.EXIT_USAGE
    assert '/nonexistent.conf' in one_line(capsys.readouterr().err)


# -- the broker guard ---------------------------------------------------------

@pytest.fixture
def guard():
    conf = ctl.messaging_conf(ctl.build_parser().parse_args(
        ['status', 'n1', '--transport-url',
         'rabbit://conductor:guard-secret@broker.example:5672/']))
    abandoned = threading.Event()
    with ctl.BrokerGuard(conf, stream=io.StringIO(),
                         abandoned=abandoned) as guard:
        guard.abandoned = abandoned
        yield guard


def test_guard_returns_what_the_call_returns(guard):
    assert guard.run(lambda: 42, 5) == 42
    assert not guard.abandoned.is_set()


def test_guard_gives_a_stuck_connection_up_at_the_limit(guard):
    release = threading.Event()
    logger = ctl.logging.getLogger(ctl.RABBIT_LOGGER)

    def connect():
        logger.error('Connection failed: %s (retrying in %s seconds)',
                     'Connection refused for guard-secret', 1.0)
        release.wait(60)
    began = time.monotonic()
    try:
        with pytest.raises(ctl.CtlError) as raised:
            guard.run(connect, 0.5)
    finally:
        release.set()

    assert time.monotonic() - began < 10
    assert raised.value.status == ctl.EXIT_BROKER == 3
    assert str(raised.value) == (
        'cannot reach the broker at broker.example:5672 within 0.5 s '
        '(Connection refused for ***): check that it runs and that the '
        'transport URL names it')
    assert guard.abandoned.is_set()


def test_guard_names_the_operators_limit_for_a_part_of_it(guard):
    # finalize --wait: the casts get what is left of --timeout, and a
    # connection lost there is blamed on --timeout, not on the remainder.
    release = threading.Event()
    try:
        with pytest.raises(ctl.CtlError) as raised:
            guard.run(lambda: release.wait(60), 0.2, grace=0.1, said=5)
    finally:
        release.set()

    assert str(raised.value).startswith(
        'cannot reach the broker at broker.example:5672 within 5 s: ')


def test_guard_stops_waiting_when_the_broker_refuses_the_login(guard):
    release = threading.Event()
    logger = ctl.logging.getLogger(ctl.RABBIT_LOGGER)

    def connect():
        logger.error('Connection failed: %s (retrying in %s seconds)',
                     '(0, 0): (403) ACCESS_REFUSED - Login was refused', 1.0)
        release.wait(60)
    began = time.monotonic()
    try:
        with pytest.raises(ctl.CtlError) as raised:
            guard.run(connect, 60)
    finally:
        release.set()

    assert time.monotonic() - began < 10
    assert raised.value.status == ctl.EXIT_BROKER
    assert str(raised.value).startswith(
        'the broker at broker.example:5672 refused the credentials of user '
        'conductor: ')


def test_guard_turns_a_refused_login_raised_into_one_line(guard):
    class AccessRefused(Exception):
        pass

    def connect():
        raise AccessRefused('(403) ACCESS_REFUSED - Login was refused')

    with pytest.raises(ctl.CtlError) as raised:
        guard.run(connect, 5)
    assert raised.value.status == ctl.EXIT_BROKER
    assert 'refused the credentials of user conductor' in str(raised.value)
    assert not guard.abandoned.is_set()


def test_guard_with_no_limit_says_the_broker_is_still_away(guard,
                                                         monkeypatch):
    monkeypatch.setattr(ctl, 'STILL_TRYING_EVERY', 0.2)
    connected = threading.Event()
    said = guard.stream

    def connect():
        # Connects once the guard has said it is still trying.
        while 'still cannot reach' not in said.getvalue():
            connected.wait(0.05)
        return 'connected'

    assert guard.run(connect, None) == 'connected'
    line = said.getvalue().splitlines()[0]
    assert line.startswith('rescue-worker-ctl: still cannot reach the '
                           'broker at broker.example:5672 after ')
    assert line.endswith('; trying on (Ctrl-C to stop)')
