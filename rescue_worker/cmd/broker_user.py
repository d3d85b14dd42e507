"""``rescue-worker-broker-user``: one rescue node's least-privilege
RabbitMQ user, created or removed.

    rescue-worker-broker-user add NODE_ID [--vhost V]
        (--password-file F | --password-file - | --generate-password F)
        [--rabbitmqctl 'rabbitmqctl -n NODE'] [--print-only] ...
    rescue-worker-broker-user remove NODE_ID [--vhost V]
        [--rabbitmqctl 'rabbitmqctl -n NODE'] [--print-only]
    rescue-worker-broker-user show NODE_ID [--vhost V]
    rescue-worker-broker-user expire-queues [--vhost V] [--after SECONDS]
        [--rabbitmqctl 'rabbitmqctl -n NODE'] [--print-only]

The recipe and the reasons for every pattern are in
doc/source/broker-permissions.rst. In short, user ``rw-<node_id>`` may:

- declare and consume its own queues (``rescue_worker.<node_id>``, its
  fanout queue ``rescue_worker_fanout_<uuid hex>``) and the topic queue
  ``rescue_worker`` that every oslo.messaging RPC server declares;
- publish to the control exchange ``rescue_worker`` only with the routing
  keys ``notifications.info`` and ``notifications.error`` (topic
  permissions), and declare and bind those two notification queues
  without reading them;
- nothing else: no default exchange (so no RPC replies), no fanout
  exchange, no other node's queue, no management tag.

``expire-queues`` (once per virtual host, not per node) sets the policy
``rescue-worker-expiry``: a node's RPC queue (``rescue_worker.<node_id>``)
and a conductor's waiter queue (``rescue-worker-waiter-<uuid>``) are
deleted once nobody has consumed them for ``--after`` seconds. Without it
both outlive their consumer for good: casts to a node that locked down
pile up, with their password hashes, in a queue nobody reads, and the
client cannot tell the conductor that no worker listens.

The password never appears on a command line (ours or rabbitmqctl's): it is
read from a file or standard input, or generated and written to a new file
with mode 0600, and handed to ``rabbitmqctl add_user``/``change_password``
on their standard input.

Installed with the package as the console script
``rescue-worker-broker-user``. Only the Python standard library is used,
so that ``tools/rescue-worker-broker-user`` in a source tree runs this
file on any host with rabbitmqctl, without installing the package.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import secrets
import shlex
import stat
import subprocess
import sys
from collections.abc import Iterable
from typing import TextIO

PROG = 'rescue-worker-broker-user'
DEFAULT_PREFIX = 'rw-'
DEFAULT_EXCHANGE = 'rescue_worker'
DEFAULT_TOPIC = 'rescue_worker'
DEFAULT_NOTIFICATION_TOPIC = 'notifications'
# The priorities rescue-worker publishes (its notifications: README).
PRIORITIES = ('info', 'error')
# oslo.messaging names a fanout queue "<topic>_fanout_<uuid4 hex>".
FANOUT_UNIQUE = '[0-9a-f]{32}'
# Node ids end up in routing keys, binding keys and regexes: "#" and "*" are
# topic wildcards, whitespace and quotes have no business there.
NAME_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,199}$')
EX_NOUSER = 67  # rabbitmqctl: "User ... does not exist"
EXPIRY_POLICY = 'rescue-worker-expiry'
# rescue_worker.client.CompletionWaiter's queue names.
WAITER_PREFIX = 'rescue-worker-waiter-'
# Longer than any broker outage a worker must ride out with durable
# queues: an expired queue takes the casts waiting in it along.
DEFAULT_EXPIRY = 3600


class Failure(Exception):
    """An error for the operator, printed without a traceback."""


def escape(name: str) -> str:
    """A literal for an Erlang (PCRE) regex."""
    return re.sub(r'([\\^$.|?*+()\[\]{}])', r'\\\1', name)


def alternatives(names: Iterable[str]) -> str:
    seen = []
    for name in names:
        if name not in seen:
            seen.append(name)
    return '^(' + '|'.join(seen) + ')$'


def recipe(node_id: str, exchange: str = DEFAULT_EXCHANGE,
           topic: str = DEFAULT_TOPIC,
           notification_topics: Iterable[str] = (DEFAULT_NOTIFICATION_TOPIC,),
           allow_replies: bool = False) -> dict[str, str]:
    """The permission patterns for one node, as a dict of regexes.

    ``configure``/``write``/``read`` go to ``set_permissions``;
    ``topic_write``/``topic_read`` to ``set_topic_permissions`` on the
    control exchange. RabbitMQ matches each against a resource *name*,
    whatever its kind (exchange or queue).
    """
    x = escape(exchange)
    t = escape(topic)
    own = '%s\\.%s' % (t, escape(node_id))
    fanout_exchange = '%s_fanout' % t
    fanout_queue = '%s_fanout_%s' % (t, FANOUT_UNIQUE)
    notifications = ['%s\\.(?:%s)' % (escape(n), '|'.join(PRIORITIES))
                     for n in notification_topics]
    write = [x, t, own, fanout_queue] + notifications
    if allow_replies:
        # The default exchange: RPC replies go to the caller's reply_<uuid>
        # queue through it. It routes to ANY queue by name, topic
        # permissions do not apply to it: see the documentation.
        write.append('amq\\.default')
    return {
        # exchange.declare/queue.declare (and delete): the control and
        # fanout exchanges, the three consumer queues, the notification
        # queues oslo.messaging declares before publishing.
        'configure': alternatives([x, t, own, fanout_exchange, fanout_queue]
                                  + notifications),
        # basic.publish needs write on the exchange; queue.bind needs write
        # on the queue being bound.
        'write': alternatives(write),
        # basic.consume needs read on the queue; queue.bind read on the
        # exchange. No notification queue: the node cannot drain them.
        'read': alternatives([x, t, own, fanout_exchange, fanout_queue]),
        # Routing keys the node may publish with on the control exchange.
        'topic_write': alternatives(notifications),
        # Binding keys the node may bind with on the control exchange.
        'topic_read': alternatives([t, own] + notifications),
    }


def user_name(prefix: str, node_id: str) -> str:
    return prefix + node_id


class Ctl:
    """rabbitmqctl, run or printed."""

    def __init__(self, command: str, vhost: str, print_only: bool,
                 out: TextIO | None = None) -> None:
        self.argv = shlex.split(command)
        if not self.argv:
            raise Failure('--rabbitmqctl is empty')
        self.vhost = vhost
        self.print_only = print_only
        self.out = out or sys.stdout

    def show(self, args: list[str], stdin_from: str | None = None) -> None:
        line = shlex.join(self.argv + args)
        if stdin_from:
            line += ' < ' + shlex.quote(stdin_from)
        print(line, file=self.out)

    def run(self, args: list[str], stdin: str | None = None,
            ok: tuple[int, ...] = (0,)) -> tuple[int, str]:
        """Run; return the exit code (one of ``ok``) or raise Failure."""
        try:
            proc = subprocess.run(
                self.argv + args, input=stdin, capture_output=True,
                text=True, check=False)
        except OSError as exc:
            raise Failure('cannot run %s: %s' % (self.argv[0], exc)) from exc
        if proc.returncode not in ok:
            raise Failure('%s %s failed (exit %d): %s' % (
                shlex.join(self.argv), args[0], proc.returncode,
                (proc.stderr or proc.stdout).strip()))
        return proc.returncode, proc.stdout

    def step(self, args: list[str], ok: tuple[int, ...] = (0,)) -> int:
        if self.print_only:
            self.show(args)
            return 0
        return self.run(args, ok=ok)[0]


def read_password(path: str) -> str:
    if path == '-':
        password = sys.stdin.readline()
    else:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as exc:
            raise Failure('cannot read %s: %s' % (path, exc)) from exc
        with os.fdopen(fd) as f:
            mode = os.fstat(f.fileno()).st_mode
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise Failure('%s is readable by others (mode %o): '
                              'chmod 600 it' % (path, stat.S_IMODE(mode)))
            password = f.readline()
    password = password.rstrip('\r\n')
    if len(password) < 16:
        raise Failure('the password must have at least 16 characters')
    if any(ord(c) < 32 or ord(c) == 127 for c in password):
        raise Failure('the password contains a control character')
    return password


def generate_password(path: str) -> str:
    password = secrets.token_urlsafe(32)  # URL-safe: fits a transport_url
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL
                     | os.O_NOFOLLOW, 0o600)
    except FileExistsError as exc:
        raise Failure('%s already exists: use --password-file to reuse '
                      'it' % path) from exc
    except OSError as exc:
        raise Failure('cannot create %s: %s' % (path, exc)) from exc
    with os.fdopen(fd, 'w') as f:
        os.fchmod(f.fileno(), 0o600)  # whatever the umask
        f.write(password + '\n')
        f.flush()
        os.fsync(f.fileno())
    return password


def user_exists(ctl: Ctl, user: str) -> bool:
    _, out = ctl.run(['list_users', '--silent', '--formatter', 'json'])
    try:
        users = json.loads(out)
    except ValueError as exc:
        raise Failure('cannot parse list_users output: %r' % out) from exc
    return any(entry.get('user') == user for entry in users)


def _patterns(args: argparse.Namespace) -> dict[str, str]:
    return recipe(args.node_id, args.exchange, args.topic,
                  args.notification_topic or [DEFAULT_NOTIFICATION_TOPIC],
                  args.allow_replies)


def add(args: argparse.Namespace, ctl: Ctl) -> int:
    user = user_name(args.user_prefix, args.node_id)
    patterns = _patterns(args)
    if ctl.print_only:
        _show_add_user(args, ctl, user)
    else:
        _add_user(args, ctl, user)
    # No tag: no management UI or HTTP API, no monitoring, no policies.
    ctl.step(['set_user_tags', user])
    ctl.step(['set_permissions', '-p', ctl.vhost, user,
              patterns['configure'], patterns['write'], patterns['read']])
    ctl.step(['set_topic_permissions', '-p', ctl.vhost, user,
              args.exchange, patterns['topic_write'],
              patterns['topic_read']])
    limits = _limits(args)
    if limits:
        ctl.step(['set_user_limits', user,
                  json.dumps(limits, sort_keys=True)])
    if not ctl.print_only:
        print(user)
    return 0


def _show_add_user(args: argparse.Namespace, ctl: Ctl, user: str) -> None:
    print('# node %s: user %s, vhost %s' % (args.node_id, user, ctl.vhost),
          file=ctl.out)
    print('# the password goes on stdin, never on the command line; '
          'for an existing user use change_password the same way',
          file=ctl.out)
    source = args.password_file or args.generate_password
    ctl.show(['add_user', user], stdin_from=None if source == '-' else source)


def _add_user(args: argparse.Namespace, ctl: Ctl, user: str) -> None:
    # In this order: a bad password file is refused before rabbitmqctl
    # runs, and no password file is generated unless rabbitmqctl works.
    password = (read_password(args.password_file)
                if args.password_file else None)
    exists = user_exists(ctl, user)
    if password is None:
        password = generate_password(args.generate_password)
    ctl.run(['change_password' if exists else 'add_user', user],
            stdin=password + '\n')


def _limits(args: argparse.Namespace) -> dict[str, int]:
    limits = {}
    if args.max_connections >= 0:
        limits['max-connections'] = args.max_connections
    if args.max_channels >= 0:
        limits['max-channels'] = args.max_channels
    return limits


def remove(args: argparse.Namespace, ctl: Ctl) -> int:
    user = user_name(args.user_prefix, args.node_id)
    # Deleting the user drops its permissions and topic permissions and
    # stops new logins; open connections keep their cached rights until
    # they are closed, so close them too.
    ctl.step(['delete_user', user], ok=(0, EX_NOUSER))
    ctl.step(['close_all_user_connections', user,
              'rescue-worker node credentials revoked'])
    return 0


def show(args: argparse.Namespace, out: TextIO | None = None) -> int:
    patterns = _patterns(args)
    patterns['user'] = user_name(args.user_prefix, args.node_id)
    patterns['vhost'] = args.vhost
    patterns['exchange'] = args.exchange
    out = out or sys.stdout
    json.dump(patterns, out, indent=2, sort_keys=True)
    out.write('\n')
    return 0


def expire_queues(args: argparse.Namespace, ctl: Ctl) -> int:
    pattern = '^(%s\\.|%s)' % (escape(args.topic), escape(WAITER_PREFIX))
    definition = json.dumps({'expires': int(args.after * 1000)})
    ctl.step(['set_policy', '-p', ctl.vhost, '--apply-to', 'queues',
              '--priority', str(args.priority), EXPIRY_POLICY, pattern,
              definition])
    return 0


def _add_common(p: argparse.ArgumentParser) -> None:
    """The options naming a node's user and what it may use."""
    p.add_argument('node_id', metavar='NODE_ID',
                   help="the worker's [rescue_worker] node_id")
    p.add_argument('--vhost', default='/',
                   help='virtual host (default: %(default)s)')
    p.add_argument('--user-prefix', default=DEFAULT_PREFIX,
                   help='user name = prefix + node id '
                        '(default: %(default)s)')
    p.add_argument('--exchange', default=DEFAULT_EXCHANGE,
                   help='control exchange (default: %(default)s)')
    p.add_argument('--topic', default=DEFAULT_TOPIC,
                   help='[rescue_worker] topic (default: %(default)s)')
    p.add_argument('--notification-topic', action='append',
                   help='[oslo_messaging_notifications] topics entry; '
                        'repeat for several (default: notifications)')
    p.add_argument('--allow-replies', action='store_true',
                   help='also grant the default exchange so the worker '
                        'can answer RPC calls (get_status); weakens '
                        'the isolation, see the documentation')


def _add_broker(p: argparse.ArgumentParser) -> None:
    """The options of the commands that run rabbitmqctl."""
    p.add_argument('--rabbitmqctl', default='rabbitmqctl',
                   help="the command, e.g. 'rabbitmqctl -n rabbit@host' "
                        '(default: %(default)s)')
    p.add_argument('--print-only', action='store_true',
                   help='print the rabbitmqctl commands, run nothing '
                        '(the password is never printed)')


def _add_add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser('add', help='create or update the user')
    _add_common(p)
    _add_broker(p)
    secret = p.add_mutually_exclusive_group(required=True)
    for flag, help_text in (
            ('--password-file', "read the password from FILE (mode 0600 "
             "or stricter), or from stdin with '-'"),
            ('--generate-password', 'generate a password and write it to '
             'FILE, which must not exist (created 0600)')):
        secret.add_argument(flag, metavar='FILE', help=help_text)
    # A worker holds 3 connections (RPC listener, RPC replies,
    # notifications) of 1 channel each; room for reconnections.
    for flag, default in (('--max-connections', 10), ('--max-channels', 40)):
        p.add_argument(flag, type=int, default=default,
                       help='user limit, -1 for none (default: '
                            '%(default)s)')


def _add_expire_queues(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        'expire-queues', help="delete nodes' and waiters' queues nobody "
                              'consumed for a while (once per vhost)')
    p.add_argument('--vhost', default='/',
                   help='virtual host (default: %(default)s)')
    p.add_argument('--topic', default=DEFAULT_TOPIC,
                   help='[rescue_worker] topic (default: %(default)s)')
    p.add_argument('--after', type=float, default=DEFAULT_EXPIRY,
                   help='seconds without a consumer (default: '
                        '%(default)s); keep it longer than any broker '
                        'outage workers must survive')
    p.add_argument('--priority', type=int, default=0,
                   help='policy priority: RabbitMQ applies only the '
                        'highest-priority policy matching a queue '
                        '(default: %(default)s)')
    _add_broker(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Apply (or revoke) a rescue node's least-privilege "
                    'RabbitMQ user. See doc/source/broker-permissions.rst.')
    sub = parser.add_subparsers(dest='action', required=True)
    _add_add(sub)
    p_remove = sub.add_parser('remove', help='delete the user and close '
                                             'its connections')
    _add_common(p_remove)
    _add_broker(p_remove)
    p_show = sub.add_parser('show', help='print the patterns as JSON')
    _add_common(p_show)
    _add_expire_queues(sub)
    return parser


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.action == 'expire-queues':
        if not NAME_RE.match(args.topic):
            parser.error('--topic %r: invalid' % args.topic)
        if not math.isfinite(args.after) or args.after < 1:
            parser.error('--after must be a number of seconds, at least 1')
        return args
    _check_names(parser, args)
    return args


def _check_names(parser: argparse.ArgumentParser,
                 args: argparse.Namespace) -> None:
    """Refuse names that would widen a pattern (a topic wildcard, a
    blank)."""
    for what, value, checked in (
            ('NODE_ID', args.node_id, args.node_id),
            ('--exchange', args.exchange, args.exchange),
            ('--topic', args.topic, args.topic),
            ('--user-prefix', args.user_prefix, args.user_prefix + 'x')):
        if not NAME_RE.match(checked):
            parser.error('%s %r: use letters, digits and _ . : @ - only '
                         '(no topic wildcard, no blank)' % (what, value))
    for name in args.notification_topic or ():
        if not NAME_RE.match(name):
            parser.error('--notification-topic %r: invalid' % name)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.action == 'show':
            return show(args)
        ctl = Ctl(args.rabbitmqctl, args.vhost, args.print_only)
        if args.action == 'add':
            return add(args, ctl)
        if args.action == 'expire-queues':
            return expire_queues(args, ctl)
        return remove(args, ctl)
    except Failure as exc:
        print('%s: %s' % (PROG, exc), file=sys.stderr)
        return 1


if __name__ == '__main__':
    sys.exit(main())
