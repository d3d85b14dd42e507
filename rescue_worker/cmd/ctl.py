"""``rescue-worker-ctl``: the operator's and conductor developer's tool.

    rescue-worker-ctl demo [--nodes N]               # no broker needed
    rescue-worker-ctl finalize NODE... --token-file F [--wait]
    rescue-worker-ctl status NODE --token-file F
    rescue-worker-ctl watch [--node N] [--json]

The messaging set-up comes from ``--config-file`` (an oslo.config file with
``[DEFAULT] transport_url`` and any ``[oslo_messaging_*]`` options) or
``--transport-url``. Passwords and tokens are read from files, standard
input or a prompt, never from the command line, where ``ps`` shows them.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from collections.abc import Sequence
from typing import TYPE_CHECKING

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

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

# Connection retries per message: a tool run by hand fails instead of
# hanging while the broker is away.
CLI_RETRY = 3

DEMO_URL = 'kombu+memory:////'
DEMO_PASSWORD = 'demo-rescue-password'


# -- messaging set-up -------------------------------------------------------

def messaging_conf(args: argparse.Namespace) -> cfg.ConfigOpts:
    if not (args.transport_url or args.config_file):
        # oslo.messaging would default to rabbit://localhost and retry it
        # for ever; a command line tool says what is missing instead.
        raise SystemExit('rescue-worker-ctl: no broker given; pass '
                         '--transport-url or a --config-file with '
                         '[DEFAULT] transport_url')
    conf = cfg.ConfigOpts()
    rpc.register_messaging_opts(conf)
    files = [args.config_file] if args.config_file else []
    conf([], project='rescue-worker-ctl', default_config_files=files,
         default_config_dirs=[])
    if args.transport_url:
        conf.set_override('transport_url', args.transport_url)
    if not conf.transport_url:
        raise SystemExit('rescue-worker-ctl: %s has no [DEFAULT] '
                         'transport_url' % args.config_file)
    return conf


# -- secrets ------------------------------------------------------------------

def read_secret_file(path: str) -> str:
    with open(path, encoding='utf-8') as f:
        return f.read().strip()


def read_password(args: argparse.Namespace) -> str:
    if args.password_file:
        return read_secret_file(args.password_file)
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip('\n')
    first = getpass.getpass('Rescue password: ')
    if getpass.getpass('Again: ') != first:
        raise SystemExit('rescue-worker-ctl: the passwords differ')
    return first


def read_nodes(args: argparse.Namespace) -> list[tuple[str, str | None]]:
    """(node, token) pairs: tokens from the nodes file's second column or
    from --token-file."""
    default_token = read_secret_file(args.token_file) \
        if args.token_file else None
    nodes = [(node, default_token) for node in args.nodes]
    if args.nodes_file:
        with open(args.nodes_file, encoding='utf-8') as f:
            for line in f:
                words = line.split('#', 1)[0].split()
                if words:
                    nodes.append((words[0], words[1] if len(words) > 1
                                  else default_token))
    if not nodes:
        raise SystemExit('rescue-worker-ctl: no node given')
    return nodes


# -- output -------------------------------------------------------------------

class Progress:
    """A one-line progress bar on stderr (only on a terminal)."""

    def __init__(self, total: int, stream=sys.stderr) -> None:
        self.total, self.done, self.stream = total, 0, stream
        self.enabled = stream.isatty()
        self._lock = threading.Lock()

    def advance(self) -> None:
        with self._lock:
            self.done += 1
            if self.enabled:
                width = 30
                filled = width * self.done // max(self.total, 1)
                self.stream.write('\r[%s%s] %d/%d' % (
                    '#' * filled, '.' * (width - filled), self.done,
                    self.total))
                if self.done == self.total:
                    self.stream.write('\n')
                self.stream.flush()


def format_table(header: Sequence[str], rows: list[Sequence[str]]) -> str:
    widths = [max(len(str(c)) for c in column)
              for column in zip(header, *rows, strict=True)]
    lines = []
    for row in [header, ['-' * w for w in widths], *rows]:
        cells = zip(row, widths, strict=True)
        lines.append('  '.join(str(c).ljust(w) for c, w in cells).rstrip())
    return '\n'.join(lines)


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


# -- finalize -----------------------------------------------------------------

def run_finalize(client: rw_client.RescueWorkerClient,
                 waiter: rw_client.CompletionWaiter | None,
                 nodes: list[tuple[str, str | None]], password: str,
                 hashed: bool, timeout: float, start_timeout: float,
                 progress: Progress | None = None
                 ) -> tuple[list[rw_client.Outcome], int]:
    """Cast to every node, and wait if ``waiter`` is given."""
    # The hash is made once, not per node: sha512_crypt is slow on purpose.
    if not hashed:
        password = client.hash_password(password)
    request_ids, refused = _cast_to_all(
        client, nodes, password, keep_unreachable=waiter is not None,
        start_timeout=start_timeout, progress=progress)
    if waiter is None:
        return refused, EXIT_FAILED if refused else EXIT_OK
    results = refused + _wait_for_all(client, waiter, request_ids, timeout,
                                      start_timeout)
    ok = all(o.succeeded for o in results)
    return results, EXIT_OK if ok else EXIT_FAILED


def _cast_to_all(client: rw_client.RescueWorkerClient,
                 nodes: list[tuple[str, str | None]], password_hash: str,
                 keep_unreachable: bool, start_timeout: float,
                 progress: Progress | None
                 ) -> tuple[dict[str, str], list[rw_client.Outcome]]:
    """Cast to every node: node by request id, and the outcomes of those
    no worker listened to (unless ``keep_unreachable``: then they are
    kept, to be cast again by the waiter)."""
    request_ids: dict[str, str] = {}
    refused: list[rw_client.Outcome] = []
    for node_id, token in nodes:
        try:
            request_ids[client.finalize_rescue(
                {}, node_id, password_hash, agent_token=token,
                hashed=True)] = node_id
        except rw_client.WorkerNotListening as exc:
            if keep_unreachable:
                # Not booted yet, or not reconnected after a broker
                # restart: the waiter casts it again like a lost cast.
                request_ids[exc.request_id] = node_id
                print('%s: no worker listening yet; casting again in %.0f s'
                      % (node_id, start_timeout), file=sys.stderr,
                      flush=True)
                continue
            refused.append(rw_client.Outcome(
                '-', node_id, rw_client.NOT_LISTENING, casts=1))
            if progress:
                progress.advance()
    return request_ids, refused


def _wait_for_all(client: rw_client.RescueWorkerClient,
                  waiter: rw_client.CompletionWaiter,
                  request_ids: dict[str, str], timeout: float,
                  start_timeout: float) -> list[rw_client.Outcome]:
    """The outcome of every request, named by node even when no
    notification came."""
    outcomes = waiter.wait(list(request_ids), timeout=timeout,
                           client=client, start_timeout=start_timeout)
    for request_id in request_ids:
        client.forget(request_id)
    results = []
    for request_id, node_id in request_ids.items():
        outcome = outcomes[request_id]
        outcome.node_id = outcome.node_id or node_id
        results.append(outcome)
    return results


def cmd_finalize(args: argparse.Namespace) -> int:
    conf = messaging_conf(args)
    nodes = read_nodes(args)
    password = read_password(args)
    transport = rpc.get_rpc_transport(conf)
    client = rw_client.RescueWorkerClient(
        transport, topic=args.topic, hash_scheme=args.hash_scheme,
        retry=CLI_RETRY)
    progress = Progress(len(nodes))
    waiter = None
    if args.wait:
        waiter = rw_client.CompletionWaiter(
            rpc.get_notification_transport(conf),
            on_notification=lambda event, data: progress.advance()
            if event in (payloads.EVENT_END, payloads.EVENT_ERROR) else None,
            node_tokens={node: token for node, token in nodes if token})
        waiter.start()
    try:
        results, status = run_finalize(
            client, waiter, nodes, password, args.hashed, args.timeout,
            args.start_timeout, progress)
    finally:
        if waiter is not None:
            waiter.stop()
            report_forgeries(waiter)
    if args.wait:
        print(format_table(['node', 'outcome', 'ms', 'casts', 'detail'],
                           outcome_rows(results)))
        print('%d of %d nodes rescued' % (
            sum(o.succeeded for o in results), len(results)))
    else:
        for outcome in results:
            print('%s: %s' % (outcome.node_id, outcome.error['message']))
        print('cast to %d node(s)' % (len(nodes) - len(results)))
    return status


# -- status and watch ---------------------------------------------------------

def cmd_status(args: argparse.Namespace) -> int:
    conf = messaging_conf(args)
    token = read_secret_file(args.token_file) if args.token_file else None
    client = rw_client.RescueWorkerClient(rpc.get_rpc_transport(conf),
                                          topic=args.topic,
                                          timeout=int(args.timeout),
                                          retry=CLI_RETRY)
    status = client.get_status(args.node, agent_token=token)
    print(json.dumps(status, indent=2, sort_keys=True))
    return EXIT_OK


def cmd_watch(args: argparse.Namespace) -> int:
    if args.token_file and not args.node:
        print('rescue-worker-ctl watch: --token-file needs --node (the '
              'token is one node\'s)', file=sys.stderr)
        return EXIT_USAGE
    conf = messaging_conf(args)
    done = threading.Event()
    seen = [0]

    def show(event_type: str, data: dict) -> None:
        if args.node and data.get('node_id') != args.node:
            return
        if args.json:
            print(json.dumps({'event_type': event_type, 'data': data},
                             sort_keys=True), flush=True)
        else:
            print('%s %s' % (time.strftime('%H:%M:%S'),
                             describe(event_type, data)), flush=True)
        seen[0] += 1
        if args.count and seen[0] >= args.count:
            done.set()

    tokens = {}
    if args.token_file:
        tokens[args.node] = read_secret_file(args.token_file)
    waiter = rw_client.CompletionWaiter(rpc.get_notification_transport(conf),
                                        on_notification=show,
                                        node_tokens=tokens)
    with waiter:
        # Said once the queue exists: from here on nothing is missed.
        print('watching %s notifications on exchange %s (Ctrl-C to stop)' %
              (waiter.topic, waiter.exchange), file=sys.stderr, flush=True)
        try:
            done.wait(args.timeout or None)
        except KeyboardInterrupt:
            pass
    report_forgeries(waiter)
    return EXIT_OK


def report_forgeries(waiter: rw_client.CompletionWaiter) -> None:
    """Say on stderr how many notifications were ignored as forged."""
    if waiter.forgeries:
        print('ignored %d notification(s) whose mac does not match the '
              "node's token (forged, or the token is not the node's)" %
              waiter.forgeries, file=sys.stderr, flush=True)


# -- demo -------------------------------------------------------------------

def cmd_demo(args: argparse.Namespace) -> int:
    url = args.transport_url or DEMO_URL
    base = tempfile.mkdtemp(prefix='rescue-worker-demo-')
    print('rescue-worker demo: %d node(s) on %s, files under %s' % (
        args.nodes, url, base))
    nodes = _demo_nodes(base, url, args.nodes, args.steps)
    confs = [node.load_config() for node in nodes]
    # The conductor: one transport pair, a waiter listening before anything
    # is sent, so no notification is missed.
    transport = rpc.get_rpc_transport(confs[0])
    ready = threading.Semaphore(0)
    waiter = rw_client.CompletionWaiter(
        rpc.get_notification_transport(confs[0]),
        on_notification=_demo_printer(ready)).start()
    workers: list[service.RescueWorker] = []
    try:
        _start_workers(nodes, confs, workers)
        if not all(ready.acquire(timeout=args.timeout) for _ in nodes):
            print('a worker did not get ready', file=sys.stderr)
            return EXIT_FAILED
        client = rw_client.RescueWorkerClient(transport,
                                              hash_rounds=args.hash_rounds)
        results, status = run_finalize(
            client, waiter, [(n.node_id, n.token) for n in nodes],
            DEMO_PASSWORD, False, args.timeout, args.timeout / 3)
        for worker in workers:
            worker.stopped.wait(args.timeout)
    except errors.RescueError as exc:
        print('demo failed: %s' % exc, file=sys.stderr)
        return EXIT_FAILED
    finally:
        for worker in workers:
            worker.request_stop()
        waiter.stop()
    _print_demo_report(nodes, results)
    return status


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


# -- arguments ---------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    # No abbreviations: "--password" must not silently mean
    # "--password-file".
    parser = argparse.ArgumentParser(
        prog='rescue-worker-ctl', allow_abbrev=False,
        description='Rescue bare-metal nodes through their rescue workers.')
    parser.add_argument('-v', '--verbose', action='store_true',
                        help='log at DEBUG on standard error')
    sub = parser.add_subparsers(dest='command', required=True)
    _add_finalize(sub)
    _add_status(sub)
    _add_watch(sub)
    _add_demo(sub)
    return parser


def _broker_command(sub: argparse._SubParsersAction, name: str,
                    help_text: str, func: Callable[[argparse.Namespace], int]
                    ) -> argparse.ArgumentParser:
    """The parser of a command that talks to a broker, with the messaging
    options every such command takes."""
    p = sub.add_parser(name, help=help_text, allow_abbrev=False)
    p.set_defaults(func=func)
    p.add_argument('--config-file',
                   help='oslo.config file with [DEFAULT] transport_url '
                        'and [oslo_messaging_*] options')
    p.add_argument('--transport-url',
                   help='broker URL, e.g. rabbit://user:pass@host:5672/')
    p.add_argument('--topic', default=rw_client.DEFAULT_TOPIC)
    return p


def _add_finalize(sub: argparse._SubParsersAction) -> None:
    p = _broker_command(sub, 'finalize', 'rescue one or more nodes',
                        cmd_finalize)
    p.add_argument('nodes', nargs='*', metavar='NODE')
    p.add_argument('--nodes-file',
                   help='file with one "NODE [TOKEN]" per line')
    p.add_argument('--token-file',
                   help='file holding the agent token of the nodes')
    p.add_argument('--password-file',
                   help='file holding the password (default: standard input '
                        'or a prompt)')
    p.add_argument('--hashed', action='store_true',
                   help='the password given is already a crypt hash')
    p.add_argument('--hash-scheme', default=passwords.DEFAULT_SCHEME,
                   choices=passwords.HASH_SCHEMES)
    p.add_argument('--wait', action='store_true',
                   help='wait for every outcome and print a table')
    p.add_argument('--timeout', type=float, default=300.0)
    p.add_argument('--start-timeout', type=float, default=30.0,
                   help='with --wait, cast a request again when no start '
                        'notification came (or no worker listened) within '
                        'this many seconds; 3 casts in all')


def _add_status(sub: argparse._SubParsersAction) -> None:
    p = _broker_command(sub, 'status', "show a worker's state", cmd_status)
    p.add_argument('node', metavar='NODE')
    p.add_argument('--token-file')
    p.add_argument('--timeout', type=float, default=30.0)


def _add_watch(sub: argparse._SubParsersAction) -> None:
    p = _broker_command(sub, 'watch', 'print notifications as they come',
                        cmd_watch)
    p.add_argument('--node', help='only this node')
    p.add_argument('--token-file',
                   help="the node's agent token: with --node, show only "
                        'notifications whose mac it verifies')
    p.add_argument('--json', action='store_true', help='JSON lines')
    p.add_argument('--count', type=int, default=0,
                   help='exit after this many notifications')
    p.add_argument('--timeout', type=float, default=0,
                   help='exit after this many seconds (0: never)')


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser('demo', allow_abbrev=False,
                       help='rescue N in-process nodes; no broker needed')
    p.add_argument('--nodes', type=int, default=3)
    p.add_argument('--transport-url',
                   help='run against this broker instead of the in-memory '
                        'one (%s)' % DEMO_URL)
    p.add_argument('--steps', default=None,
                   help='steps to run (default: the worker default)')
    p.add_argument('--hash-rounds', type=_sha512_rounds, default=None,
                   help='sha512_crypt rounds, %d to %d (default: passlib '
                        'default)' % (passwords.MIN_SHA_CRYPT_ROUNDS,
                                      passwords.DEFAULT_CAPS.sha_crypt_rounds))
    p.add_argument('--timeout', type=float, default=120.0)
    p.set_defaults(func=cmd_demo)


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


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format='%(asctime)s %(levelname)s %(name)s '
                               '%(message)s')
    if not verbose:
        # The in-memory transport has no heartbeats and no host name, and
        # the library says so on every connection.
        for name in ('oslo.messaging', 'oslo_messaging', 'kombu'):
            logging.getLogger(name).setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        return args.func(args)
    except rw_client.WorkerNotListening as exc:
        print('rescue-worker-ctl: %s' % exc, file=sys.stderr)
        return EXIT_FAILED
    except errors.RescueError as exc:
        print('rescue-worker-ctl: %s: %s' % (exc.code, exc.message),
              file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:
        print('rescue-worker-ctl: %s' % exc, file=sys.stderr)
        return EXIT_USAGE


if __name__ == '__main__':
    sys.exit(main())
