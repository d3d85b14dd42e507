"""``rescue-worker-ctl``: the operator's and conductor developer's tool.

    rescue-worker-ctl demo [--nodes N]               # no broker needed
    rescue-worker-ctl finalize NODE... --token-file F [--wait]
    rescue-worker-ctl status NODE --token-file F
    rescue-worker-ctl watch [--node N] [--json]

The messaging set-up comes from ``--config-file`` (an oslo.config file with
``[DEFAULT] transport_url`` and any ``[oslo_messaging_*]`` options) or
``--transport-url``. Passwords and tokens are read from files, standard
input or a prompt, never from the command line, where ``ps`` shows them;
they are read, and the password hashed, before any connection is made.

``--timeout`` bounds a command's connection to the broker too:
oslo.messaging retries a connection for ever (a listener's, and the reply
queue of a call, whatever ``retry`` says), so whatever talks to the broker
runs in a thread of its own and the command gives up on it in time.

The exit statuses are fixed: ``EXIT_STATUSES`` below says what each means,
and every ``--help`` shows it.

Why argparse and not cliff (the OpenStack CLI framework of
python-openstackclient and python-ironicclient): this module ships in the
same package as the worker, which goes into every rescue ramdisk, and
cliff would bring cmd2, PrettyTable, autopage, pyperclip and wcwidth
there for four commands whose table and JSON output take a few dozen
lines here. Should the conductor side grow into an ``openstack rescue
worker ...`` plug-in, it belongs in a client package of its own, on
cliff, as python-ironicclient is.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable
from collections.abc import Sequence
from typing import TYPE_CHECKING
from typing import NoReturn
from typing import TextIO
from typing import TypeVar

import kombu.exceptions
import oslo_messaging
from oslo_config import cfg

from rescue_worker import client as rw_client
from rescue_worker import errors
from rescue_worker import passwords
from rescue_worker import payloads
from rescue_worker import rpc

if TYPE_CHECKING:
    # Only the demo runs workers, and imports them when it does: the
    # conductor's commands import nothing of the worker.
    from rescue_worker import sandbox
    from rescue_worker import service

PROG = 'rescue-worker-ctl'

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_BROKER = 3
EXIT_TIMEOUT = 4
EXIT_REFUSED = 5
EXIT_INTERRUPTED = 130

EXIT_STATUSES = """\
exit status:
  0    done: every node rescued (finalize --wait) or cast to (finalize),
       the worker answered (status), the watch ended
  1    a rescue failed: a worker published an error outcome
  2    usage or bad input: an option, an unreadable or empty token,
       password or nodes file, no node, no broker given, demo workers
       that cannot start with the options given
  3    the broker cannot be reached, or it refused the credentials
  4    timed out: no answer (status) or no outcome (finalize --wait)
       within --timeout; fewer than --count notifications (watch)
  5    a worker refused the request (status), or no worker listens for
       a node (its queue does not exist)
  130  interrupted (Ctrl-C), except for watch, which exits 0
With several nodes, finalize exits with the first of 1, 5 and 4 that
applies to any of them."""

# Connection retries per message: a tool run by hand fails instead of
# hanging while the broker is away.
CLI_RETRY = 3
# Casts of one request in all, with --wait (the first and the re-casts).
MAX_CASTS = 3
# How much longer than its own --timeout a call may take before the
# connection is blamed: oslo.messaging raises MessagingTimeout itself at
# --timeout once connected, and that is the better message.
CALL_GRACE = 3.0
# With no time limit (watch --timeout 0), how often to say that the broker
# still cannot be reached.
STILL_TRYING_EVERY = 30.0
# The logger of oslo.messaging's rabbit driver (oslo.log turns "oslo_"
# into "oslo."): it logs each failed connection attempt, and nothing else
# tells why a connection does not come.
RABBIT_LOGGER = 'oslo.messaging._drivers.impl_rabbit'

DEMO_URL = 'kombu+memory:////'
DEMO_PASSWORD = 'demo-rescue-password'

T = TypeVar('T')


class CtlError(Exception):
    """What the operator gets: one line (``str``) and an exit status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def usage_error(message: str) -> CtlError:
    return CtlError(message, EXIT_USAGE)


# -- messaging set-up ---------------------------------------------------------

def messaging_conf(args: argparse.Namespace) -> cfg.ConfigOpts:
    """The messaging configuration; nothing connects yet.

    :raises CtlError: no broker given, or an unusable config file.
    """
    if not (args.transport_url or args.config_file):
        # oslo.messaging would default to rabbit://localhost and retry it
        # for ever; a command line tool says what is missing instead.
        raise usage_error('no broker given: pass --transport-url or a '
                          '--config-file with [DEFAULT] transport_url')
    conf = cfg.ConfigOpts()
    rpc.register_messaging_opts(conf)
    files = [args.config_file] if args.config_file else []
    try:
        conf([], project=PROG, default_config_files=files,
             default_config_dirs=[])
        if args.transport_url:
            conf.set_override('transport_url', args.transport_url)
        url = conf.transport_url
    except cfg.Error as exc:
        raise usage_error('cannot use %s: %s' % (
            args.config_file, str(exc).splitlines()[0])) from None
    if not url:
        raise usage_error('%s has no [DEFAULT] transport_url: add one, or '
                          'pass --transport-url' % args.config_file)
    _check_url(conf)
    return conf


def _check_url(conf: cfg.ConfigOpts) -> None:
    """Refuse a transport URL oslo.messaging cannot parse, without
    repeating it: it holds the broker password."""
    try:
        oslo_messaging.TransportURL.parse(conf)
    except (oslo_messaging.InvalidTransportURL, ValueError):
        raise usage_error(
            'the transport URL is not valid: write it as '
            'rabbit://USER:PASSWORD@HOST:PORT/VHOST') from None


# -- secrets ------------------------------------------------------------------

def read_secret_file(path: str, what: str = 'token') -> str:
    """The first line of a secret file, stripped.

    :raises CtlError: the file cannot be read or holds nothing.
    """
    try:
        with open(path, encoding='utf-8') as f:
            secret = f.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise usage_error('cannot read the %s file %s: %s' % (
            what, path, getattr(exc, 'strerror', None) or exc)) from None
    if not secret:
        raise usage_error('the %s file %s is empty: write the %s in it' % (
            what, path, what))
    return secret


def read_password(args: argparse.Namespace) -> str:
    """The password, from --password-file, standard input or a prompt.

    :raises CtlError: an empty password, or two different ones typed.
    """
    if args.password_file:
        return read_secret_file(args.password_file, 'password')
    if not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip('\n')
    else:
        password = getpass.getpass('Rescue password: ')
        if getpass.getpass('Again: ') != password:
            raise usage_error('the passwords differ: type the same twice')
    if not password:
        raise usage_error('the password is empty: give one on standard '
                          'input, at the prompt or with --password-file')
    return password


def read_nodes(args: argparse.Namespace) -> list[tuple[str, str | None]]:
    """(node, token) pairs: tokens from the nodes file's second column or
    from --token-file.

    :raises CtlError: a file cannot be read, or no node is given.
    """
    default_token = read_secret_file(args.token_file) \
        if args.token_file else None
    nodes = [(node, default_token) for node in args.nodes]
    if args.nodes_file:
        try:
            with open(args.nodes_file, encoding='utf-8') as f:
                lines = f.readlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise usage_error('cannot read the nodes file %s: %s' % (
                args.nodes_file, getattr(exc, 'strerror', None) or exc)
            ) from None
        for line in lines:
            words = line.split('#', 1)[0].split()
            if words:
                nodes.append((words[0], words[1] if len(words) > 1
                              else default_token))
    if not nodes:
        raise usage_error('no node given: name nodes on the command line or '
                          'in --nodes-file')
    return nodes


# -- the broker ---------------------------------------------------------------

class _BrokerLog(logging.Handler):
    """What the rabbit driver logs of its connection attempts: the last
    error, and whether the broker refused the credentials."""

    def __init__(self, scrub: Sequence[str]) -> None:
        super().__init__(level=logging.ERROR)
        self.scrub = [s for s in scrub if s]
        self.last_error: str | None = None
        self.refused = False
        self.wake: threading.Event | None = None

    def emit(self, record: logging.LogRecord) -> None:
        exc = record.exc_info[1] if record.exc_info else None
        if 'ACCESS_REFUSED' in record.getMessage() or (
                exc is not None and rpc.credentials_refused(exc)):
            self.refused = True
            if self.wake is not None:
                self.wake.set()
            return
        self.last_error = self.clean(_logged_error(record))

    def clean(self, text: str) -> str:
        """``text`` without the broker password, should a library have
        put it there."""
        for secret in self.scrub:
            text = text.replace(secret, '***')
        return text


def _logged_error(record: logging.LogRecord) -> str:
    """The error of a connection failure the rabbit driver logged."""
    args = record.args
    if isinstance(args, dict) and args.get('err_str') is not None:
        return str(args['err_str'])
    if isinstance(args, tuple) and args and isinstance(record.msg, str) \
            and record.msg.startswith('Connection failed'):
        return str(args[0])
    return record.getMessage()


def _url_passwords(conf: cfg.ConfigOpts) -> list[str]:
    url = oslo_messaging.TransportURL.parse(conf)
    return [str(host.password) for host in url.hosts if host.password]


class _Call:
    """``func()`` run in another thread: its result or its exception."""

    def __init__(self, func: Callable[[], T], done: threading.Event
                 ) -> None:
        self.func, self.done = func, done
        self.value: T | None = None
        self.error: BaseException | None = None
        self.finished = False

    def __call__(self) -> None:
        try:
            self.value = self.func()
        except BaseException as exc:
            self.error = exc
        finally:
            self.finished = True
            self.done.set()


class BrokerGuard:
    """Runs what talks to the broker within a time limit, and turns the
    broker's failures into one line and exit status 3.

    oslo.messaging retries a connection for ever, so ``run`` gives the
    connecting thread up at the limit (a daemon thread: the process exits
    all the same); a refused login ends the wait at once, as retrying
    cannot fix credentials.
    """

    def __init__(self, conf: cfg.ConfigOpts, stream: TextIO | None = None,
                 abandoned: threading.Event | None = None) -> None:
        self.hosts = rpc.broker_hosts(conf)
        self.user = rpc.broker_user(conf)
        self.stream = stream or sys.stderr
        #: set when a thread is given up while it still runs
        self.abandoned = abandoned or _ABANDONED
        self._log = _BrokerLog(_url_passwords(conf))

    def __enter__(self) -> BrokerGuard:
        logging.getLogger(RABBIT_LOGGER).addHandler(self._log)
        return self

    def __exit__(self, *exc_info) -> None:
        logging.getLogger(RABBIT_LOGGER).removeHandler(self._log)

    def run(self, func: Callable[[], T], limit: float | None,
            grace: float = 0.0, said: float | None = None) -> T:
        """``func()``, given at most ``limit`` seconds (None: as long as
        it takes, saying now and then that the broker is still away), and
        ``grace`` more for what ``func`` itself bounds by ``limit``;
        ``said`` is the limit to name when it is a part of the operator's.

        :raises CtlError: the broker could not be reached or refused the
            credentials (``EXIT_BROKER``).
        """
        done = threading.Event()
        call = _Call(func, done)
        self._log.wake = done
        threading.Thread(target=call, daemon=True,
                         name='rescue-worker-ctl-broker').start()
        began = time.monotonic()
        deadline = None if limit is None else began + limit + grace
        try:
            while not done.wait(self._slice(deadline)):
                if deadline is not None and time.monotonic() >= deadline:
                    raise self.unreachable(said or limit)
                self._still_trying(time.monotonic() - began)
        finally:
            if not call.finished:
                self.abandoned.set()
        if not call.finished:
            # Woken by the log: the broker refused a login the driver
            # would retry for ever.
            raise self.refused()
        if call.error is not None:
            raise self.translate(call.error) from None
        return call.value

    @staticmethod
    def _slice(deadline: float | None) -> float:
        if deadline is None:
            return STILL_TRYING_EVERY
        return max(0.0, deadline - time.monotonic())

    def _still_trying(self, waited: float) -> None:
        print('%s: still cannot reach the broker at %s after %.0f s%s; '
              'trying on (Ctrl-C to stop)' % (
                  PROG, self.hosts, waited, self._last_error()),
              file=self.stream, flush=True)

    def _last_error(self) -> str:
        error = self._log.last_error
        return ' (%s)' % error if error else ''

    def unreachable(self, limit: float | None = None) -> CtlError:
        within = ' within %s s' % _seconds(limit) if limit else ''
        return CtlError(
            'cannot reach the broker at %s%s%s: check that it runs and '
            'that the transport URL names it' % (
                self.hosts, within, self._last_error()), EXIT_BROKER)

    def refused(self) -> CtlError:
        return CtlError(
            'the broker at %s refused the credentials of user %s: fix the '
            'user, password or virtual host of the transport URL' % (
                self.hosts, self.user), EXIT_BROKER)

    def translate(self, exc: BaseException) -> BaseException:
        """The broker's failures as one line; any other error as is."""
        if rpc.credentials_refused(exc):
            return self.refused()
        if isinstance(exc, (oslo_messaging.MessageDeliveryFailure,
                            kombu.exceptions.OperationalError,
                            ConnectionError)):
            self._log.last_error = self._log.last_error or \
                self._log.clean(str(exc))
            return self.unreachable()
        return exc


def _seconds(value: float) -> str:
    return ('%.1f' % value).rstrip('0').rstrip('.')


# -- output -------------------------------------------------------------------

# The detail column is wrapped, never narrower than this.
MIN_DETAIL_WIDTH = 24
FORMATS = ('table', 'json')


class Progress:
    """A one-line progress bar on stderr (only on a terminal): one step
    per request that has an outcome."""

    def __init__(self, total: int, stream: TextIO | None = None,
                 counts: Callable[[str], bool] | None = None) -> None:
        self.stream = stream or sys.stderr
        self.total, self.done = total, 0
        # Which request ids are ours: the waiter sees every request on
        # the exchange, other conductors' too.
        self.counts = counts
        self.enabled = self.stream.isatty()
        self._seen: set[str] = set()
        self._drawn = False
        self._lock = threading.Lock()

    def on_notification(self, event_type: str, data: dict) -> None:
        """A CompletionWaiter callback: a request's first outcome (not a
        replay of it, nor its re-cast's) advances the bar."""
        if event_type not in (payloads.EVENT_END, payloads.EVENT_ERROR):
            return
        if self.counts is not None and \
                not self.counts(data.get('request_id')):
            return
        with self._lock:
            if data.get('request_id') in self._seen:
                return
            self._seen.add(data.get('request_id'))
        self.advance()

    def advance(self) -> None:
        with self._lock:
            self.done += 1
            if self.enabled:
                width = 30
                filled = width * min(self.done, self.total) // \
                    max(self.total, 1)
                self.stream.write('\r[%s%s] %d/%d' % (
                    '#' * filled, '.' * (width - filled), self.done,
                    self.total))
                self.stream.flush()
                self._drawn = True

    def finish(self) -> None:
        """End the bar's line, so that what follows starts on its own."""
        with self._lock:
            if self._drawn:
                self.stream.write('\n')
                self.stream.flush()
                self._drawn = False


def format_table(header: Sequence[str], rows: Sequence[Sequence[object]],
                 width: int | None = None) -> str:
    """Aligned columns that fit ``width`` (the terminal's by default): the
    last column, the detail, is wrapped to what room is left."""
    rows = [[str(c) for c in row] for row in rows]
    widths = _column_widths(header, rows,
                            width or shutil.get_terminal_size().columns)
    lines = []
    for row in [list(header), ['-' * w for w in widths], *rows]:
        lines.extend(_row_lines(row, widths))
    return '\n'.join(lines)


def _column_widths(header: Sequence[str], rows: list[list[str]],
                   width: int) -> list[int]:
    widths = [max(len(c) for c in column)
              for column in zip(header, *rows, strict=True)]
    room = width - sum(widths[:-1]) - 2 * (len(widths) - 1)
    if widths[-1] > room:
        widths[-1] = max(room, MIN_DETAIL_WIDTH)
    return widths


def _row_lines(row: list[str], widths: list[int]) -> list[str]:
    """One row: its first line, then the rest of its wrapped detail."""
    pieces = textwrap.wrap(row[-1], widths[-1]) or ['']
    lines = []
    for i, piece in enumerate(pieces):
        cells = row[:-1] if i == 0 else [''] * (len(row) - 1)
        lines.append('  '.join(
            c.ljust(w) for c, w in zip([*cells, piece], widths,
                                       strict=True)).rstrip())
    return lines


def print_json(value: object) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


def describe(event_type: str, data: dict) -> str:
    """One readable line per notification."""
    kind = event_type.rsplit('.', 2)
    label = '.'.join(kind[-2:])
    node = data.get('node_id', '?')
    if event_type in (payloads.EVENT_READY, payloads.EVENT_STOPPED):
        return '%-24s %s %s%s' % (label, node, data.get('state'),
                                  ' (%s)' % data['reason']
                                  if data.get('reason') else '')
    text = '%-24s %s %s' % (label, node, data.get('request_id'))
    if data.get('replayed'):
        text += ' (replayed)'
    if data.get('error'):
        text += ' %s: %s' % (data['error']['code'], data['error']['message'])
    elif event_type == payloads.EVENT_END:
        text += ' %s in %.0f ms' % (
            ','.join(s['name'] for s in data.get('steps', [])),
            data.get('duration_ms', 0))
    return text


OUTCOME_HEADER = ('node', 'outcome', 'ms', 'casts', 'detail')


def outcome_rows(outcomes: list[rw_client.Outcome]) -> list[list[str]]:
    rows = []
    for outcome in outcomes:
        error = outcome.error
        rows.append([
            outcome.node_id or '?', outcome.status,
            '%.0f' % outcome.data['duration_ms'] if outcome.data else '-',
            str(outcome.casts),
            '%s: %s' % (error['code'], error['message']) if error else 'ok',
        ])
    return rows


def outcome_json(outcome: rw_client.Outcome) -> dict:
    """An outcome for scripts: what the table shows, by name."""
    data = outcome.data or {}
    return {'node_id': outcome.node_id, 'request_id': outcome.request_id,
            'status': outcome.status, 'succeeded': outcome.succeeded,
            'started': outcome.started, 'casts': outcome.casts,
            'duration_ms': data.get('duration_ms'), 'error': outcome.error}


CAST_HEADER = ('node', 'request', 'detail')
CAST = 'cast'


def cast_json(node_id: str, request_id: str, heard: bool) -> dict:
    """A plain finalize's result for one node."""
    if heard:
        return {'node_id': node_id, 'request_id': request_id,
                'status': CAST, 'error': None}
    return {'node_id': node_id, 'request_id': request_id,
            'status': rw_client.NOT_LISTENING,
            'error': {'code': rw_client.NOT_LISTENING,
                      'message': rw_client.not_listening_message(node_id)}}


# -- finalize -----------------------------------------------------------------

def cast_to_all(client: rw_client.RescueWorkerClient,
                nodes: list[tuple[str, str | None]], password_hash: str
                ) -> list[tuple[str, str, bool]]:
    """Cast to every node: (node, request id, whether a worker's queue
    took the cast). The client keeps every request for re-casting."""
    casts = []
    for node_id, token in nodes:
        try:
            request_id = client.finalize_rescue(
                {}, node_id, password_hash, agent_token=token, hashed=True)
        except rw_client.WorkerNotListening as exc:
            casts.append((node_id, exc.request_id, False))
        else:
            casts.append((node_id, request_id, True))
    return casts


def run_finalize(client: rw_client.RescueWorkerClient,
                 waiter: rw_client.CompletionWaiter,
                 nodes: list[tuple[str, str | None]], password_hash: str,
                 timeout: float, start_timeout: float
                 ) -> list[rw_client.Outcome]:
    """Cast to every node and wait for every outcome, casting again
    what did not start in time (a node whose queue does not exist yet
    is still booting, as far as the waiter knows)."""
    casts = cast_to_all(client, nodes, password_hash)
    for node_id, _request_id, heard in casts:
        if not heard:
            print(not_listening_yet(node_id, timeout, start_timeout),
                  file=sys.stderr, flush=True)
    request_ids = {request_id: node_id for node_id, request_id, _ in casts}
    return _wait_for_all(client, waiter, request_ids, timeout,
                         start_timeout)


def not_listening_yet(node_id: str, timeout: float,
                      start_timeout: float) -> str:
    """What finalize --wait says of a node whose queue did not exist at
    the first cast: when it casts again, as --timeout allows."""
    recasts = sum(1 for n in range(1, MAX_CASTS)
                  if n * start_timeout < timeout)
    if not recasts:
        return ('%s: no worker listens for %s yet, and --timeout (%s s) '
                'ends before --start-timeout (%s s) would cast again: give '
                'a longer --timeout to wait for it to boot' % (
                    node_id, node_id, _seconds(timeout),
                    _seconds(start_timeout)))
    return ('%s: no worker listens for %s yet; casting again in %s s (%d '
            'more cast%s at most within --timeout %s s)' % (
                node_id, node_id, _seconds(start_timeout), recasts,
                's' if recasts > 1 else '', _seconds(timeout)))


def _wait_for_all(client: rw_client.RescueWorkerClient,
                  waiter: rw_client.CompletionWaiter,
                  request_ids: dict[str, str], timeout: float,
                  start_timeout: float) -> list[rw_client.Outcome]:
    """The outcome of every request, named by node even when no
    notification came."""
    try:
        outcomes = waiter.wait(list(request_ids), timeout=timeout,
                               client=client, start_timeout=start_timeout,
                               max_casts=MAX_CASTS)
    finally:
        for request_id in request_ids:
            # What the client keeps for re-casting holds the hash.
            client.forget(request_id)
    results = []
    for request_id, node_id in request_ids.items():
        outcome = outcomes[request_id]
        outcome.node_id = outcome.node_id or node_id
        results.append(outcome)
    return results


def finalize_status(outcomes: list[rw_client.Outcome]) -> int:
    """The exit status of a finalize --wait: the first of 1, 5, 4 that
    applies to any node."""
    statuses = {outcome.status for outcome in outcomes}
    for status, exit_status in ((rw_client.ERRORED, EXIT_FAILED),
                                (rw_client.NOT_LISTENING, EXIT_REFUSED),
                                (rw_client.TIMED_OUT, EXIT_TIMEOUT)):
        if status in statuses:
            return exit_status
    return EXIT_OK


def cmd_finalize(args: argparse.Namespace) -> int:
    # Everything the operator gave is checked, and the password hashed
    # (once for every node: sha512_crypt is slow on purpose), before
    # anything connects: bad input is not a broker matter.
    conf = messaging_conf(args)
    nodes = read_nodes(args)
    password = read_password(args)
    client = rw_client.RescueWorkerClient(
        rpc.get_rpc_transport(conf), topic=args.topic,
        hash_scheme=args.hash_scheme, retry=CLI_RETRY)
    password_hash = password if args.hashed else \
        client.hash_password(password)
    with BrokerGuard(conf) as guard:
        if args.wait:
            results = _finalize_and_wait(args, conf, guard, client, nodes,
                                         password_hash)
            return _print_outcomes(args, results)
        casts = guard.run(lambda: cast_to_all(client, nodes, password_hash),
                          args.timeout)
    for _node_id, request_id, _heard in casts:
        # What the client keeps for re-casting holds the hash.
        client.forget(request_id)
    return _print_casts(args, casts)


def _finalize_and_wait(args: argparse.Namespace, conf: cfg.ConfigOpts,
                       guard: BrokerGuard,
                       client: rw_client.RescueWorkerClient,
                       nodes: list[tuple[str, str | None]],
                       password_hash: str) -> list[rw_client.Outcome]:
    """finalize --wait: listen, cast, wait; all within --timeout."""
    began = time.monotonic()
    progress = Progress(len(nodes),
                        counts=lambda rid: client.sent_to(rid) is not None)
    waiter = rw_client.CompletionWaiter(
        rpc.get_notification_transport(conf),
        on_notification=progress.on_notification,
        node_tokens={node: token for node, token in nodes if token})
    # Listening before the first cast, so that no outcome is missed.
    guard.run(waiter.start, args.timeout)
    remaining = max(0.0, args.timeout - (time.monotonic() - began))
    try:
        results = guard.run(
            lambda: run_finalize(client, waiter, nodes, password_hash,
                                 remaining, args.start_timeout),
            remaining, grace=CALL_GRACE, said=args.timeout)
    finally:
        progress.finish()
    waiter.stop()
    report_forgeries(waiter)
    return results


def _print_outcomes(args: argparse.Namespace,
                    results: list[rw_client.Outcome]) -> int:
    if args.format == 'json':
        print_json([outcome_json(outcome) for outcome in results])
    else:
        print(format_table(OUTCOME_HEADER, outcome_rows(results)))
        print('%d of %d nodes rescued' % (
            sum(o.succeeded for o in results), len(results)))
    return finalize_status(results)


def _print_casts(args: argparse.Namespace,
                 casts: list[tuple[str, str, bool]]) -> int:
    """A plain finalize's results: the request id of each node, to find
    its outcome by (``watch``, the notifications)."""
    results = [cast_json(*cast) for cast in casts]
    if args.format == 'json':
        print_json(results)
    else:
        print(format_table(CAST_HEADER, [
            [r['node_id'], r['request_id'],
             r['error']['message'] if r['error'] else CAST]
            for r in results]))
        print('cast to %d of %d node(s)' % (
            sum(heard for _, _, heard in casts), len(casts)))
    return EXIT_OK if all(heard for _, _, heard in casts) else \
        EXIT_REFUSED


# -- status and watch ---------------------------------------------------------

def cmd_status(args: argparse.Namespace) -> int:
    conf = messaging_conf(args)
    token = read_secret_file(args.token_file) if args.token_file else None
    client = rw_client.RescueWorkerClient(
        rpc.get_rpc_transport(conf), topic=args.topic,
        timeout=max(1, math.ceil(args.timeout)), retry=CLI_RETRY)
    with BrokerGuard(conf) as guard:
        status = guard.run(
            lambda: get_status(client, args.node, token, args.timeout),
            args.timeout, grace=CALL_GRACE)
    if args.format == 'json':
        print_json(status)
    else:
        print(format_table(('field', 'value'), sorted(status.items())))
    return EXIT_OK


def get_status(client: rw_client.RescueWorkerClient, node_id: str,
               token: str | None, timeout: float) -> dict:
    """The worker's status, or one line that says why there is none.

    :raises CtlError: no worker listens, it refused, or it did not answer.
    """
    try:
        return client.get_status(node_id, agent_token=token)
    except oslo_messaging.MessageUndeliverable:
        raise CtlError(rw_client.not_listening_message(node_id),
                       EXIT_REFUSED) from None
    except oslo_messaging.RemoteError as exc:
        raise CtlError(refusal_message(node_id, exc), EXIT_REFUSED) from None
    except errors.RescueError as exc:
        # As a transport that hands the worker's exception over raises it.
        raise CtlError('node %s refused: %s' % (node_id, exc.message),
                       EXIT_REFUSED) from None
    except oslo_messaging.MessagingTimeout:
        raise CtlError(
            'no answer from the worker of node %s within %s s: it may be '
            'busy, or locked down after a rescue (its queue outlives it), '
            'or its broker user may not send replies (see '
            'rescue-worker-broker-user add --allow-replies); try again with '
            'a longer --timeout' % (node_id, _seconds(timeout)),
            EXIT_TIMEOUT) from None


def refusal_message(node_id: str, exc: oslo_messaging.RemoteError) -> str:
    """A worker's refusal as the worker worded it, without the remote
    traceback."""
    text = str(exc.value or '').strip().splitlines()
    if exc.exc_type == 'RescueError':
        return 'node %s refused: %s' % (node_id, text[0] if text else '')
    return 'the worker of node %s failed: %s%s' % (
        node_id, exc.exc_type, ': %s' % text[0] if text else '')


class _WatchPrinter:
    """watch's notification callback: prints, counts, says when
    --count is reached."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.node, self.count = args.node, args.count
        self.json = args.format == 'json'
        self.seen = 0
        self.done = threading.Event()

    def __call__(self, event_type: str, data: dict) -> None:
        if self.node and data.get('node_id') != self.node:
            return
        if self.json:
            print(json.dumps({'event_type': event_type, 'data': data},
                             sort_keys=True), flush=True)
        else:
            print('%s %s' % (time.strftime('%H:%M:%S'),
                             describe(event_type, data)), flush=True)
        self.seen += 1
        if self.count and self.seen >= self.count:
            self.done.set()


def cmd_watch(args: argparse.Namespace) -> int:
    if args.token_file and not args.node:
        raise usage_error("watch: --token-file needs --node (the token is "
                          "one node's)")
    conf = messaging_conf(args)
    tokens = {args.node: read_secret_file(args.token_file)} \
        if args.token_file else {}
    printer = _WatchPrinter(args)
    waiter = rw_client.CompletionWaiter(rpc.get_notification_transport(conf),
                                        on_notification=printer,
                                        node_tokens=tokens)
    began = time.monotonic()
    try:
        with BrokerGuard(conf) as guard:
            guard.run(waiter.start, args.timeout or None)
    except KeyboardInterrupt:
        # Ctrl-C is how a watch ends, even before it began.
        return EXIT_OK
    try:
        # Said once the queue exists: from here on nothing is missed.
        print('watching %s notifications on exchange %s (Ctrl-C to stop)' %
              (waiter.topic, waiter.exchange), file=sys.stderr, flush=True)
        printer.done.wait(max(0.0, args.timeout - (time.monotonic() - began))
                          if args.timeout else None)
    except KeyboardInterrupt:
        return EXIT_OK
    finally:
        waiter.stop()
        report_forgeries(waiter)
    return EXIT_TIMEOUT if printer.seen < args.count else EXIT_OK


def report_forgeries(waiter: rw_client.CompletionWaiter) -> None:
    """Say on stderr how many notifications were ignored as forged."""
    if waiter.forgeries:
        print('ignored %d notification(s) whose mac does not match the '
              "node's token (forged, or the token is not the node's)" %
              waiter.forgeries, file=sys.stderr, flush=True)


# -- demo ---------------------------------------------------------------------

def cmd_demo(args: argparse.Namespace) -> int:
    url = args.transport_url or DEMO_URL
    base = tempfile.mkdtemp(prefix='rescue-worker-demo-')
    try:
        return _run_demo(args, url, base)
    finally:
        if args.keep:
            # Lockdown scrubs a rescued node's token and configuration,
            # not the hash in its shadow file; a node not rescued keeps all.
            print('kept %s: it holds the rescue password\'s hash (each '
                  'root/etc/shadow) and, for a node not rescued, its agent '
                  'token and configuration (with the broker URL); remove it '
                  'when done: rm -r %s' % (base, base), file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=True)


def _run_demo(args: argparse.Namespace, url: str, base: str) -> int:
    # One deadline for the whole demo: waiting --timeout per node is what
    # an operator would not expect.
    deadline = time.monotonic() + args.timeout
    nodes = _demo_nodes(base, url, args.nodes, args.steps)
    confs = [node.load_config() for node in nodes]
    print('rescue-worker demo: %d node(s) on %s, files under %s%s' % (
        args.nodes, rpc.broker_hosts(confs[0]), base,
        '' if args.keep else ' (removed at the end; --keep keeps them)'))
    # The conductor: a waiter listening before anything is sent, so that
    # no notification is missed.
    ready = threading.Semaphore(0)
    waiter = rw_client.CompletionWaiter(
        rpc.get_notification_transport(confs[0]),
        on_notification=_demo_printer(ready))
    with BrokerGuard(confs[0]) as guard:
        guard.run(waiter.start, args.timeout)
    workers: list[service.RescueWorker] = []
    results: list[rw_client.Outcome] = []
    try:
        _start_workers(nodes, confs, workers)
        _wait_ready(ready, len(nodes), deadline, args.timeout)
        client = rw_client.RescueWorkerClient(rpc.get_rpc_transport(confs[0]),
                                              hash_rounds=args.hash_rounds)
        results = run_finalize(
            client, waiter, [(n.node_id, n.token) for n in nodes],
            client.hash_password(DEMO_PASSWORD), _left(deadline),
            args.timeout / 3)
    finally:
        _stop_workers(workers, results, deadline)
        waiter.stop()
    _print_demo_report(nodes, results)
    return finalize_status(results)


def _left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def _wait_ready(ready: threading.Semaphore, count: int, deadline: float,
                timeout: float) -> None:
    """Wait for ``count`` worker.ready notifications, all by ``deadline``.

    :raises CtlError: not every worker got ready in time.
    """
    for _ in range(count):
        if not ready.acquire(timeout=_left(deadline)):
            raise CtlError('not every worker got ready within --timeout (%s '
                           's): try a longer one' % _seconds(timeout),
                           EXIT_TIMEOUT)


def _stop_workers(workers: list[service.RescueWorker],
                  results: list[rw_client.Outcome], deadline: float) -> None:
    """Stop the workers: a rescued one stops by itself once locked down
    (its worker.stopped says so), the others are asked to."""
    rescued = {o.node_id for o in results if o.succeeded}
    for worker in workers:
        if worker.conf.rescue_worker.node_id in rescued:
            worker.stopped.wait(_left(deadline))
    for worker in workers:
        worker.request_stop()
    for worker in workers:
        worker.stopped.wait(_left(deadline))


def _demo_nodes(base: str, url: str, count: int,
                steps: str | None) -> list[sandbox.SandboxNode]:
    """``count`` nodes in directories of their own under ``base``."""
    from rescue_worker import sandbox

    options = {'steps': steps} if steps else {}
    return [sandbox.SandboxNode(os.path.join(base, 'node-%02d' % i),
                                node_id='demo-node-%02d' % i,
                                transport_url=url, **options).create()
            for i in range(count)]


def _demo_printer(ready: threading.Semaphore
                  ) -> Callable[[str, dict], None]:
    """The demo's notification callback: print each one, count readies."""
    lock = threading.Lock()

    def show(event_type: str, data: dict) -> None:
        if event_type == payloads.EVENT_READY:
            ready.release()
        with lock:
            print('  %s' % describe(event_type, data), flush=True)

    return show


def _start_workers(nodes: list[sandbox.SandboxNode],
                   confs: list[cfg.ConfigOpts],
                   workers: list[service.RescueWorker]) -> None:
    """Start a worker per node, each served by a thread of its own, and
    add it to ``workers`` at once (so that it is stopped if a later one
    fails to start)."""
    from rescue_worker import service

    for node, conf in zip(nodes, confs, strict=True):
        worker = service.RescueWorker(
            conf, rpc.get_rpc_transport(conf),
            rpc.get_notification_transport(conf),
            cmdline_path=node.cmdline_file)
        worker.start()
        threading.Thread(target=_serve, args=(worker,), daemon=True).start()
        workers.append(worker)


def _print_demo_report(nodes: list[sandbox.SandboxNode],
                       results: list[rw_client.Outcome]) -> None:
    print()
    print(format_table(['node', 'outcome', 'ms', 'casts', 'detail'],
                       outcome_rows(results)))
    print()
    print('Accounts (hash masked), as each node\'s shadow file has them:')
    for node in nodes:
        print('  %s: %s' % (node.node_id, _masked_account(node)))
    print('%d of %d nodes rescued' % (sum(o.succeeded for o in results),
                                      len(results)))


def _serve(worker: service.RescueWorker) -> None:
    worker.wait_for_stop_request()
    worker.stop()


def _masked_account(node: sandbox.SandboxNode) -> str:
    path = os.path.join(node.root_dir, 'etc', 'shadow')
    with open(path, encoding='utf-8') as f:
        for line in f:
            fields = line.rstrip('\n').split(':')
            if fields[0] == 'rescue':
                scheme_id = fields[1].split('$')[1] if '$' in fields[1] \
                    else '?'
                fields[1] = '$%s$********' % scheme_id
                return ':'.join(fields)
    return '(no rescue account in %s)' % path


# -- arguments ----------------------------------------------------------------

# Descriptions are laid out here (the formatter keeps the epilog's layout).
HELP_WIDTH = 76


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, '%s: error: %s (see %s --help)\n' % (
            self.prog, message, self.prog))


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the epilog's layout (the exit statuses) and shows the default
    of every option that takes a value."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ''
        if ('%(default)' in text or not action.option_strings
                or action.nargs == 0 or action.default is None
                or action.default is argparse.SUPPRESS):
            return text
        return text + ' (default: %(default)s)'


def build_parser() -> argparse.ArgumentParser:
    # Imported here: tests/unit/test_conductor_imports.py holds the
    # conductor side to the modules it lists, and this one is not (yet).
    from rescue_worker import version

    # No abbreviations: "--password" must not silently mean
    # "--password-file".
    parser = _Parser(
        prog=PROG, allow_abbrev=False, formatter_class=_HelpFormatter,
        description=textwrap.fill(
            'Rescue bare-metal nodes through their rescue workers, and '
            'watch them do it. "%s COMMAND --help" tells more of each '
            'command.' % PROG, HELP_WIDTH),
        epilog=EXIT_STATUSES)
    parser.add_argument('--version', action='version',
                        version='%s %s' % (PROG, version.version_string()))
    parser.add_argument('-v', '--verbose', action='store_true',
                        help='log at DEBUG on standard error, the '
                             "messaging libraries' connection attempts "
                             'included')
    sub = parser.add_subparsers(dest='command', required=True,
                                metavar='COMMAND')
    _add_finalize(sub)
    _add_status(sub)
    _add_watch(sub)
    _add_demo(sub)
    return parser


def _command(sub: argparse._SubParsersAction, name: str, help_text: str,
             func: Callable[[argparse.Namespace], int]
             ) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_text,
                       description=textwrap.fill(help_text, HELP_WIDTH),
                       epilog=EXIT_STATUSES, allow_abbrev=False,
                       formatter_class=_HelpFormatter)
    p.set_defaults(func=func)
    return p


def _broker_command(sub: argparse._SubParsersAction, name: str,
                    help_text: str, func: Callable[[argparse.Namespace], int]
                    ) -> argparse.ArgumentParser:
    """The parser of a command that talks to a broker, with the messaging
    options every such command takes."""
    p = _command(sub, name, help_text, func)
    p.add_argument('--config-file', metavar='FILE',
                   help='oslo.config file with [DEFAULT] transport_url and '
                        'any [oslo_messaging_*] options; this or '
                        '--transport-url is needed')
    p.add_argument('--transport-url', metavar='URL',
                   help='the broker, e.g. rabbit://USER:PASSWORD@HOST:5672/ '
                        '(overrides the config file\'s)')
    p.add_argument('--topic', default=rw_client.DEFAULT_TOPIC,
                   help="the workers' [rescue_worker] topic")
    return p


def _add_finalize(sub: argparse._SubParsersAction) -> None:
    p = _broker_command(
        sub, 'finalize', 'rescue one or more nodes: cast finalize_rescue '
        'to each, and with --wait wait for the outcomes', cmd_finalize)
    p.add_argument('nodes', nargs='*', metavar='NODE',
                   help='a node id (its worker\'s [rescue_worker] node_id)')
    for flag, help_text in (
            ('--nodes-file', 'file with one "NODE [TOKEN]" per line (# '
             'starts a comment); a node without a token gets '
             '--token-file\'s'),
            ('--token-file', 'file holding the agent token of the nodes '
             '(without one only a worker that allows unauthenticated '
             'requests accepts them)'),
            ('--password-file', 'file holding the password; without it, '
             'the first line of standard input, or a prompt on a '
             'terminal')):
        p.add_argument(flag, metavar='FILE', help=help_text)
    p.add_argument('--hashed', action='store_true',
                   help='the password given is already a crypt hash, sent '
                        'as is')
    p.add_argument('--hash-scheme', default=passwords.DEFAULT_SCHEME,
                   choices=passwords.HASH_SCHEMES,
                   help='how the password is hashed on this side, before it '
                        'is sent')
    p.add_argument('--wait', action='store_true',
                   help='wait for every outcome and print them')
    _add_timeout(p, 300.0)
    p.add_argument('--start-timeout', type=_seconds_arg, default=30.0,
                   metavar='SECONDS',
                   help='with --wait, cast a request again when no start '
                        'notification came (or no worker listened) within '
                        'this many seconds; %d casts in all' % MAX_CASTS)
    _add_format(p)


def _add_token_file(p: argparse.ArgumentParser, help_text: str) -> None:
    # A file, never the token itself: ps shows a command line to everyone.
    p.add_argument('--token-file', metavar='FILE', help=help_text)


def _add_timeout(p: argparse.ArgumentParser, default: float) -> None:
    p.add_argument('--timeout', type=_seconds_arg, default=default,
                   metavar='SECONDS',
                   help='give up after this many seconds, the connection '
                        'to the broker included')


def _add_format(p: argparse.ArgumentParser) -> None:
    p.add_argument('-f', '--format', choices=FORMATS, default='table',
                   help='table: for people, fitted to the terminal; json: '
                        'for scripts')


def _add_status(sub: argparse._SubParsersAction) -> None:
    p = _broker_command(sub, 'status', "show a worker's state (a call: the "
                        'worker answers)', cmd_status)
    p.add_argument('node', metavar='NODE', help='the node id')
    _add_token_file(p, "file holding the node's agent token")
    _add_timeout(p, 30.0)
    _add_format(p)


def _add_watch(sub: argparse._SubParsersAction) -> None:
    p = _broker_command(sub, 'watch', "print the workers' notifications as "
                        'they come', cmd_watch)
    p.add_argument('--node', metavar='NODE',
                   help="only this node's notifications (default: every "
                        "node's)")
    _add_token_file(p, "the node's agent token: with --node, show only "
                    'notifications whose mac it verifies')
    p.add_argument('-f', '--format', choices=('text', 'json'),
                   default='text',
                   help='text: a readable line per notification; json: a '
                        'JSON object per line')
    p.add_argument('--json', dest='format', action='store_const',
                   const='json', help='the same as --format json')
    p.add_argument('--count', type=_count_arg, default=0, metavar='N',
                   help='exit after N notifications (0: no limit); exit 4 '
                        'if --timeout comes first')
    p.add_argument('--timeout', type=_seconds_or_never, default=0.0,
                   metavar='SECONDS',
                   help='exit after this many seconds, the connection to '
                        'the broker included (0: never; while the broker '
                        'cannot be reached, say so every %.0f s)'
                        % STILL_TRYING_EVERY)


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, 'demo', 'rescue N nodes whose workers run in this '
                 'process, on an in-memory broker: nothing to install',
                 cmd_demo)
    p.add_argument('--nodes', type=_positive_int, default=3, metavar='N',
                   help='how many nodes')
    p.add_argument('--transport-url', metavar='URL',
                   help='run against this broker instead of the in-memory '
                        'one (%s)' % DEMO_URL)
    p.add_argument('--steps', default=None, metavar='STEP,...',
                   help="the workers' [rescue_worker] steps (default: the "
                        "worker's default)")
    p.add_argument('--hash-rounds', type=_sha512_rounds, default=None,
                   metavar='N',
                   help='sha512_crypt rounds, %d to %d (default: passlib\'s '
                        'default)' % (passwords.MIN_SHA_CRYPT_ROUNDS,
                                      passwords.DEFAULT_CAPS.sha_crypt_rounds))
    p.add_argument('--timeout', type=_seconds_arg, default=120.0,
                   metavar='SECONDS',
                   help='give up on the workers after this many seconds, '
                        'for the whole demo')
    p.add_argument('--keep', action='store_true',
                   help='keep the directory of the nodes\' files (roots, '
                        'tokens, configuration) instead of removing it')


def _seconds_arg(text: str) -> float:
    """A time limit: a number of seconds above 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(
            '%r is not a number of seconds above 0' % text)
    return value


def _seconds_or_never(text: str) -> float:
    """A time limit, or 0 for none."""
    if text.strip() in ('0', '0.0'):
        return 0.0
    return _seconds_arg(text)


def _positive_int(text: str) -> int:
    if not (text.isdigit() and int(text) >= 1):
        raise argparse.ArgumentTypeError(
            '%r is not a whole number, 1 or more' % text)
    return int(text)


def _count_arg(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(
            '%r is not a whole number, 0 or more' % text)
    return int(text)


def _sha512_rounds(text: str) -> int:
    """``--hash-rounds``: what a worker accepts by default."""
    least = passwords.MIN_SHA_CRYPT_ROUNDS
    most = passwords.DEFAULT_CAPS.sha_crypt_rounds
    rounds = int(text) if text.isdigit() else -1
    if not least <= rounds <= most:
        raise argparse.ArgumentTypeError(
            'sha512_crypt rounds must be a number from %d to %d, what a '
            'worker accepts by default' % (least, most))
    return rounds


# Loggers whose records the command puts in its own words unless -v: the
# broker away, a worker that cannot start, and the client's warning per
# forged notification (report_forgeries counts them in one line).
QUIET_LOGGERS = ('oslo.messaging', 'oslo_messaging', 'kombu', 'amqp',
                 'stevedore', 'rescue_worker.client')


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format='%(asctime)s %(levelname)s %(name)s '
                               '%(message)s')
    if not verbose:
        # What the libraries log of a broker that is away (an error per
        # attempt, forever) the command says itself, in one line; the
        # BrokerGuard's handler still gets the records.
        for name in QUIET_LOGGERS:
            logger = logging.getLogger(name)
            logger.setLevel(logging.ERROR)
            logger.propagate = False


def one_line(exc: BaseException) -> CtlError | None:
    """What an operator meets, as one line and an exit status; None for
    an error that is a bug (its traceback is what a report needs)."""
    if isinstance(exc, CtlError):
        return exc
    if isinstance(exc, rw_client.WorkerNotListening):
        return CtlError(str(exc), EXIT_REFUSED)
    if isinstance(exc, errors.RescueError):
        # Raised on this side: the password cannot be hashed.
        return usage_error('%s: %s' % (exc.code, exc.message))
    if isinstance(exc, errors.ConfigurationError):
        # The demo's workers, started with the options given.
        return usage_error('the workers cannot start: %s' % exc)
    if isinstance(exc, oslo_messaging.DriverLoadFailure):
        return usage_error('no oslo.messaging driver for the scheme of the '
                           'transport URL: use rabbit://')
    if isinstance(exc, oslo_messaging.MessagingTimeout):
        return CtlError('timed out: %s' % exc, EXIT_TIMEOUT)
    if isinstance(exc, OSError):
        return usage_error(str(exc))
    return None


# Set once a thread that talks to the broker was given up while it still
# runs (retrying a connection): the process then exits without waiting for
# it, or for the library's threads, at interpreter shutdown.
_ABANDONED = threading.Event()


def _exit_now(status: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(status)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        status = args.func(args)
    except KeyboardInterrupt:
        status = EXIT_INTERRUPTED
    except Exception as exc:
        error = one_line(exc)
        if error is None:
            raise
        print('%s: %s' % (PROG, error), file=sys.stderr, flush=True)
        status = error.status
    if _ABANDONED.is_set():
        _exit_now(status)
    return status


if __name__ == '__main__':
    sys.exit(main())
