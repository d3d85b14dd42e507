"""The fault suite's own RabbitMQ, and the parts its tests share.

The suite restarts and stops brokers, so it never uses the node ``tox -e
functional`` provides (port 5682): ``RabbitBroker`` starts a private node, or
a 3-node cluster, with pifpaf's driver (the same code as ``pifpaf run
rabbitmq [--cluster]``) on free ports of its own, and can restart it, stop
one node and tell which node carries a queue's consumer.

Also here:

- ``Witness``: counts every notification. It consumes the default queues
  ``notifications.info`` and ``notifications.error``, which oslo.messaging's
  notifier declares itself on every (re)connection before it publishes, so
  a notification sent after a broker restart reaches the witness even when
  no listener has reconnected yet.
- ``Conductor``: the project's own ``RescueWorkerClient`` and
  ``CompletionWaiter`` on the broker under test.
- ``Fleet``: in-process workers (``RescueWorker`` on sandbox nodes), each
  counting its real runs and the outcomes it published.
- ``HookGate``: stops a ``rescue-worker`` process at a named point of the
  code (before the journal write, before the lockdown marker, ...) so a test
  can SIGKILL it there; the ``gate`` step plugin does the same inside the
  pipeline.
- ``record``: one JSON line per scenario in the file named by
  ``RESCUE_WORKER_RELIABILITY_LOG`` (the numbers of
  doc/source/reliability.rst).
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import textwrap
import threading
import time
import uuid

import oslo_messaging
from oslo_config import cfg

from rescue_worker import client as rw_client
from rescue_worker import notify
from rescue_worker import rpc
from rescue_worker import sandbox
from rescue_worker import service
from tests import parts

START = notify.EVENT_START
END = notify.EVENT_END
ERROR = notify.EVENT_ERROR
READY = notify.EVENT_READY
STOPPED = notify.EVENT_STOPPED

#: the steps of the fault suite's workers (dhcp_backend = none anyway)
STEPS = 'password,account,verify'

USERNAME = 'faults'
PASSWORD = 'faults-%s' % uuid.uuid4().hex

# Quorum queues for every queue the workers and the conductor declare; the
# two options exclude mirrored (HA) queues.
# Durable queues and exchanges on a single node: queues, and the persistent
# messages in them, outlive a broker restart.
DURABLE_OPTIONS = {'amqp_durable_queues': 'true'}

QUORUM_OPTIONS = {'rabbit_quorum_queue': 'true',
                  'rabbit_transient_quorum_queue': 'true',
                  'rabbit_ha_queues': 'false'}


# -- the broker ---------------------------------------------------------------

def _port_free(port: int) -> bool:
    with contextlib.closing(socket.socket(socket.AF_INET,
                                          socket.SOCK_STREAM)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(('127.0.0.1', port))
        except OSError:
            return False
    return True


def free_port_base(count: int, first: int = 5740, last: int = 5990) -> int:
    """A base port P with P..P+count-1 and their Erlang distribution ports
    (RabbitMQ uses AMQP port + 20000) all free; never 5682 (tox's node)."""
    for base in range(first, last, 10):
        ports = [p for b in range(base, base + count) for p in (b, b + 20000)]
        if all(_port_free(p) for p in ports):
            return base
    raise RuntimeError('no free ports for a RabbitMQ node in %d-%d' %
                       (first, last))


class RabbitBroker:
    """A private RabbitMQ node, or 3-node cluster, for one test module."""

    def __init__(self, cluster: bool = False) -> None:
        try:
            from pifpaf.drivers import rabbitmq
        except ImportError:
            parts.missing('pifpaf (test-requirements.txt)')
        search = os.pathsep.join(['/usr/lib/rabbitmq/bin', '/usr/sbin',
                                  os.environ.get('PATH', os.defpath)])
        if not all(shutil.which(name, path=search)
                   for name in ('rabbitmq-server', 'rabbitmqctl')):
            parts.missing('rabbitmq-server (Debian package rabbitmq-server)')
        self.cluster = cluster
        self.port = free_port_base(3 if cluster else 1)
        self.name = 'rwfault%d%s' % (os.getpid(), uuid.uuid4().hex[:4])
        self.driver = rabbitmq.RabbitMQDriver(
            port=self.port, nodename=self.name, cluster=cluster,
            username=USERNAME, password=PASSWORD)
        if cluster:
            self.nodes = ['%s-%d@localhost' % (self.name, i)
                          for i in (1, 2, 3)]
        else:
            self.nodes = ['%s@localhost' % self.name]
        self.ports = [self.port + i for i in range(len(self.nodes))]
        self.down: set[str] = set()

    def start(self) -> RabbitBroker:
        self.driver.setUp()
        return self

    def close(self) -> None:
        self.driver.cleanUp()

    @property
    def url(self) -> str:
        """Every node's address, as the workers' transport_url."""
        return 'rabbit://%s/' % ','.join(
            '%s:%s@127.0.0.1:%d' % (USERNAME, PASSWORD, port)
            for port in self.ports)

    def ctl(self, *args: str, node: str | None = None) -> str:
        node = node or next(n for n in self.nodes if n not in self.down)
        env = dict(os.environ, **self.driver.env)
        env['PATH'] = ':'.join(self.driver._path + [env.get('PATH', '')])
        result = subprocess.run(['rabbitmqctl', '-q', '-n', node, *args],
                                env=env, capture_output=True, text=True,
                                timeout=120, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            raise RuntimeError('rabbitmqctl %s: %s%s' % (
                ' '.join(args), result.stdout, result.stderr))
        return result.stdout

    def add_vhost(self, name: str) -> str:
        """A fresh virtual host for one scenario; returns its URL. Exchanges
        declared durable and transient cannot share a name in one vhost."""
        self.ctl('add_vhost', name)
        self.ctl('set_permissions', '-p', name, USERNAME, '.*', '.*', '.*')
        return self.url[:-1] + '/' + name

    def restart(self) -> float:
        """Stop the node's process (SIGTERM) and start a new one on the
        same data; returns how long the broker was away (s)."""
        assert not self.cluster
        began = time.monotonic()
        node = self.nodes[0]
        self.driver.kill_node(node)
        self.driver.start_node(node)
        return time.monotonic() - began

    def stop_node(self, node: str) -> None:
        """``rabbitmqctl stop_app``: the node leaves, its clients are
        disconnected; the other nodes go on."""
        self.driver.stop_node(node)
        self.down.add(node)

    def start_node(self, node: str) -> None:
        self.driver.start_node(node)
        self.down.discard(node)

    def consumer_nodes(self, queue: str) -> list[str]:
        """The node of each channel consuming ``queue`` (a channel's pid
        reads ``<node.N.N.N>``)."""
        out = self.ctl('list_consumers', '--no-table-headers', 'queue_name',
                       'channel_pid')
        found = []
        for line in out.splitlines():
            name, _, pid = line.partition('\t')
            match = re.match(r'<(.+@[^.]+)\.\d+\.\d+\.\d+>', pid.strip())
            if name == queue and match:
                found.append(match.group(1))
        return found


# -- messaging configuration --------------------------------------------------

def messaging_conf(url: str, rabbit: dict | None = None) -> cfg.ConfigOpts:
    """A conductor-side configuration for the broker under test."""
    conf = cfg.ConfigOpts()
    rpc.register_messaging_opts(conf)
    conf([], default_config_files=[], default_config_dirs=[])
    conf.set_override('transport_url', url)
    for key, value in (rabbit or {}).items():
        conf.set_override(key, value == 'true' if value in ('true', 'false')
                          else value, group='oslo_messaging_rabbit')
    return conf


def rabbit_section(rabbit: dict | None) -> str:
    """The ``[oslo_messaging_rabbit]`` section for a worker's config file
    (``SandboxNode`` writes only ``[DEFAULT]`` and ``[rescue_worker]``)."""
    if not rabbit:
        return ''
    return '\n[oslo_messaging_rabbit]\n' + ''.join(
        '%s = %s\n' % item for item in rabbit.items())


# -- the witness --------------------------------------------------------------

class Witness:
    """Every notification of the broker, in arrival order."""

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        self.transport = rpc.get_notification_transport(conf)
        self.events: list[tuple[str, dict]] = []
        self._cond = threading.Condition()
        # No pool: the queues are the notifier's default ones.
        self.listener = oslo_messaging.get_notification_listener(
            self.transport,
            [oslo_messaging.Target(topic='notifications',
                                   exchange='rescue_worker')],
            [self], serializer=oslo_messaging.NoOpSerializer())
        self.listener.start()

    def close(self) -> None:
        self.listener.stop()
        self.listener.wait()
        self.transport.cleanup()

    def _record(self, event_type, payload):
        with self._cond:
            self.events.append((event_type, notify.payload_data(payload)))
            self._cond.notify_all()

    def info(self, ctxt, publisher_id, event_type, payload, metadata):
        self._record(event_type, payload)

    def error(self, ctxt, publisher_id, event_type, payload, metadata):
        self._record(event_type, payload)

    def matching(self, event_type, request_id=None, node_id=None,
                 replayed=None) -> list[dict]:
        with self._cond:
            return [data for kind, data in self.events
                    if kind == event_type
                    and (request_id is None
                         or data.get('request_id') == request_id)
                    and (node_id is None or data.get('node_id') == node_id)
                    and (replayed is None
                         or data.get('replayed') is replayed)]

    def wait_for(self, predicate, timeout: float, what: str = 'an event'):
        with self._cond:
            if not self._cond.wait_for(predicate, timeout):
                raise TimeoutError('%s not seen in %.0f s' % (what, timeout))

    def wait_count(self, event_type, count, timeout=120.0, **filters):
        self.wait_for(
            lambda: len(self.matching(event_type, **filters)) >= count,
            timeout, '%d x %s %s' % (count, event_type, filters))
        return self.matching(event_type, **filters)

    def settle(self, request_ids, timeout=60.0) -> None:
        """Wait until every request has a non-replayed end or error (the
        witness may see it after the conductor's waiter did)."""
        ids = set(request_ids)

        def done():
            seen = {d.get('request_id') for kind, d in self.events
                    if kind in (END, ERROR) and d.get('replayed') is False}
            return ids <= seen
        with contextlib.suppress(TimeoutError):
            self.wait_for(done, timeout)

    def counts(self, request_ids) -> dict[str, dict[str, int]]:
        """Per request: starts, non-replayed ends, replays, errors."""
        table = {rid: collections.Counter() for rid in request_ids}
        with self._cond:
            for kind, data in self.events:
                counter = table.get(data.get('request_id'))
                if counter is None:
                    continue
                if kind == START:
                    counter['start'] += 1
                elif kind == END and data.get('replayed'):
                    counter['replay'] += 1
                elif kind == END:
                    counter['end'] += 1
                elif kind == ERROR:
                    counter['error'] += 1
        return {rid: dict(c) for rid, c in table.items()}


# -- the conductor ------------------------------------------------------------

class ObservedClient(rw_client.RescueWorkerClient):
    """The project's client; also tells the test when a re-cast found no
    queue (an event to wait on, not a change of behaviour)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.recast_not_listening = threading.Event()

    def recast(self, request_id: str) -> None:
        try:
            super().recast(request_id)
        except rw_client.WorkerNotListening:
            self.recast_not_listening.set()
            raise


class Conductor:
    """The project's client and waiter, as a conductor runs them."""

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        self.transport = rpc.get_rpc_transport(conf)
        self.notification_transport = rpc.get_notification_transport(conf)
        self.client = ObservedClient(self.transport, hash_rounds=5000,
                                     timeout=30)
        self.waiter = rw_client.CompletionWaiter(
            self.notification_transport).start()
        # Hashed once: sha512_crypt is slow on purpose.
        self.password_hash = self.client.hash_password(
            'rescue-%s' % uuid.uuid4().hex)
        self.not_listening_at_first_cast: list[str] = []

    def close(self) -> None:
        self.waiter.stop()
        self.transport.cleanup()
        self.notification_transport.cleanup()

    def cast(self, node_id: str, token: str,
             request_id: str | None = None) -> str:
        """Cast ``finalize_rescue``; a queue that is missing at this
        moment (the worker has not re-declared it after a broker restart)
        is left to the waiter's re-casts, as a conductor would."""
        request_id = request_id or 'req-%s' % uuid.uuid4()
        try:
            self.client.finalize_rescue({}, node_id, self.password_hash,
                                        agent_token=token, hashed=True,
                                        request_id=request_id)
        except rw_client.WorkerNotListening as exc:
            # The client keeps the request: the waiter re-casts it.
            assert exc.request_id == request_id
            self.not_listening_at_first_cast.append(request_id)
        return request_id

    def wait(self, request_ids, timeout=240.0, start_timeout=10.0,
             max_casts=10) -> dict[str, rw_client.Outcome]:
        return self.waiter.wait(request_ids, timeout=timeout,
                                client=self.client,
                                start_timeout=start_timeout,
                                max_casts=max_casts)


# -- in-process workers -------------------------------------------------------

class CountingWorker:
    """A ``RescueWorker`` on a sandbox node that also counts, on the
    worker's side, each real run (``start``) and each outcome it
    published, per request id."""

    def __init__(self, node: sandbox.SandboxNode, rpc_transport,
                 notification_transport) -> None:
        self.node = node
        self.worker = service.RescueWorker(
            node.load_config(), rpc_transport=rpc_transport,
            notification_transport=notification_transport,
            cmdline_path=node.cmdline_file)
        self.runs: collections.Counter = collections.Counter()
        self.published: collections.Counter = collections.Counter()
        notifications = self.worker.notifications
        start, outcome = notifications.start, notifications.outcome

        def counting_start(payload):
            self.runs[payload.request_id] += 1
            start(payload)

        def counting_outcome(payload):
            # Counted before the publish returns (the conductor may see the
            # end before the broker's confirm reaches this thread), and
            # taken back if the broker did not take it.
            first = not payload.replayed
            if first:
                self.published[payload.request_id] += 1
            try:
                outcome(payload)
            except notify.NotificationNotSent:
                if first:
                    self.published[payload.request_id] -= 1
                raise
        notifications.start = counting_start
        notifications.outcome = counting_outcome

    def serve(self) -> None:
        self.worker.start()
        threading.Thread(target=self._serve, daemon=True,
                         name='fleet-%s' % self.node.node_id).start()

    def _serve(self) -> None:
        self.worker.wait_for_stop_request()
        self.worker.stop()


class Fleet:
    """``count`` in-process workers sharing two transports (each RPC server
    still has its own connection, so each reconnects on its own)."""

    def __init__(self, base_dir: str, url: str, count: int,
                 rabbit: dict | None = None, **options) -> None:
        self.nodes = []
        for i in range(count):
            node = sandbox.SandboxNode(
                os.path.join(base_dir, 'n%02d' % i),
                node_id='fleet-%s-%02d' % (uuid.uuid4().hex[:6], i),
                transport_url=url, **options).create()
            if rabbit:
                with open(node.config_file, 'a') as f:
                    f.write(rabbit_section(rabbit))
            self.nodes.append(node)
        conf = self.nodes[0].load_config()
        self.rpc_transport = rpc.get_rpc_transport(conf)
        self.notification_transport = rpc.get_notification_transport(conf)
        self.workers = [CountingWorker(node, self.rpc_transport,
                                       self.notification_transport)
                        for node in self.nodes]
        for worker in self.workers:
            worker.serve()

    def runs(self, request_id: str) -> int:
        return sum(w.runs[request_id] for w in self.workers)

    def published(self, request_id: str) -> int:
        return sum(w.published[request_id] for w in self.workers)

    def stop(self) -> None:
        for worker in self.workers:
            worker.worker.request_stop()
        for worker in self.workers:
            worker.worker.stopped.wait(60)
        self.rpc_transport.cleanup()
        self.notification_transport.cleanup()


class FleetSet:
    """Fleets made by one test, stopped at its end."""

    def __init__(self, base_dir: str, url: str, rabbit: dict | None = None
                 ) -> None:
        self.base_dir, self.url, self.rabbit = base_dir, url, rabbit
        self.fleets: list[Fleet] = []

    def __call__(self, count: int, **options) -> Fleet:
        options.setdefault('steps', STEPS)
        self.fleets.append(Fleet(
            os.path.join(self.base_dir, 'fleet%d' % len(self.fleets)),
            self.url, count, rabbit=self.rabbit, **options))
        return self.fleets[-1]

    def close(self) -> None:
        for fleet in self.fleets:
            fleet.stop()


def wait_fleet_ready(witness: Witness, fleet: Fleet) -> None:
    node_ids = {node.node_id for node in fleet.nodes}
    witness.wait_for(
        lambda: node_ids <= {d['node_id'] for d in witness.matching(READY)},
        120, 'worker.ready of %d workers' % len(node_ids))


# -- rescue-worker processes --------------------------------------------------

class ProcessSet:
    """``rescue-worker`` processes (conftest's ``WorkerProcess``) on the
    broker under test, each with a seeded root; killed at the end."""

    def __init__(self, base_dir: str, url: str, rabbit: dict | None = None
                 ) -> None:
        self.base_dir, self.url, self.rabbit = base_dir, url, rabbit
        self.made: list = []

    def __call__(self, **options):
        from tests.functional.conftest import WorkerProcess
        options.setdefault('steps', STEPS)
        worker = WorkerProcess(
            os.path.join(self.base_dir, 'p%d' % len(self.made)), self.url,
            **options)
        sandbox.seed_root(worker.root_dir)
        if self.rabbit:
            worker._parser['oslo_messaging_rabbit'] = dict(self.rabbit)
            worker.write_config()
        self.made.append(worker)
        return worker

    def close(self) -> None:
        for worker in self.made:
            if worker.proc is not None and worker.proc.poll() is None:
                # A frozen (SIGSTOP) worker cannot die of SIGTERM.
                os.kill(worker.proc.pid, signal.SIGCONT)
            worker.kill()
        for worker in self.made:
            assert worker.token not in worker.logs(), \
                'the token appeared in %s' % worker.log_file


def completed_runs(worker, request_id: str) -> int:
    """Runs of ``request_id`` a worker process completed, from its log
    (one log file across restarts)."""
    return worker.logs().count('Request %s: rescue succeeded' % request_id)


def wait_process_ready(witness: Witness, worker, timeout: float = 60.0
                       ) -> None:
    """``worker.ready`` of the worker's latest start; fails at once if the
    process died."""
    runs = len(worker.runs)

    def ready():
        if worker.proc.poll() is not None:
            raise AssertionError('rescue-worker exited with %s:\n%s' % (
                worker.proc.returncode, worker.logs()[-3000:]))
        return len(witness.matching(READY, node_id=worker.node_id)) >= runs
    witness.wait_for(ready, timeout, 'worker.ready of %s' % worker.node_id)


# -- a gate at a named point of the worker's code -----------------------------

_SITECUSTOMIZE = '''\
"""Written by tests/functional/broker.py: when RESCUE_WORKER_TEST_HOOK names
module:Class.method, the method first says so on the FIFO "entered" of
RESCUE_WORKER_TEST_HOOK_DIR, then waits for the test to open "gate"."""
import importlib
import os

_target = os.environ.get('RESCUE_WORKER_TEST_HOOK')
if _target:
    _module_name, _attr = _target.split(':')
    _class_name, _method_name = _attr.split('.')
    _cls = getattr(importlib.import_module(_module_name), _class_name)
    _original = getattr(_cls, _method_name)
    _dir = os.environ['RESCUE_WORKER_TEST_HOOK_DIR']

    def _gated(*args, **kwargs):
        with open(os.path.join(_dir, 'entered'), 'w') as entered:
            entered.write(_target)
        with open(os.path.join(_dir, 'gate')) as gate:
            gate.read()
        return _original(*args, **kwargs)

    setattr(_cls, _method_name, _gated)
'''


class HookGate:
    """Runs a ``WorkerProcess`` with a gate at ``module:Class.method``."""

    def __init__(self, base_dir: str, plugins_dir: str) -> None:
        self.dir = os.path.join(base_dir, 'hook')
        os.makedirs(self.dir, exist_ok=True)
        with open(os.path.join(self.dir, 'sitecustomize.py'), 'w') as f:
            f.write(textwrap.dedent(_SITECUSTOMIZE))
        for name in ('entered', 'gate'):
            os.mkfifo(os.path.join(self.dir, name))
        self.plugins_dir = plugins_dir

    def wrap(self, target: str):
        """A ``WorkerProcess.wrap`` that arms the gate at ``target``."""
        import sys
        path = os.pathsep.join([self.dir, self.plugins_dir] + sys.path)

        def wrap(argv):
            return ['env', 'PYTHONPATH=%s' % path,
                    'RESCUE_WORKER_TEST_HOOK=%s' % target,
                    'RESCUE_WORKER_TEST_HOOK_DIR=%s' % self.dir, *argv]
        return wrap

    def wait_entered(self, timeout: float = 60.0) -> str:
        done = []

        def _open():
            with open(os.path.join(self.dir, 'entered')) as fifo:
                done.append(fifo.read())
        thread = threading.Thread(target=_open, daemon=True)
        thread.start()
        thread.join(timeout)
        assert done, 'the worker never reached the hook gate'
        return done[0]


# -- the reliability log ------------------------------------------------------

def record(scenario: str, fault: str, request_ids, outcomes, runs,
           ends, witness: Witness | None = None, **extra) -> dict:
    """Log one scenario's numbers (doc/source/reliability.rst).

    ``outcomes``: the waiter's outcome per request; ``runs``: completed
    runs of the steps per request; ``ends``: non-replayed ``end``
    notifications per request, as the witness counted them; with
    ``witness``, what it saw of each lost request is logged too.
    """
    request_ids = list(request_ids)
    entry = {
        'scenario': scenario,
        'fault': fault,
        'sent': len(request_ids),
        'ended': sum(1 for r in request_ids if outcomes[r].succeeded),
        'lost': sum(1 for r in request_ids if not outcomes[r].succeeded),
        'run_twice': sum(1 for r in request_ids if runs[r] > 1),
        'duplicate_end': sum(1 for r in request_ids if ends[r] > 1),
        'recast': sum(1 for r in request_ids if outcomes[r].casts > 1),
        'replayed_end': sum(extra.pop('replays', {}).get(r, 0)
                            for r in request_ids),
    }
    lost = [r for r in request_ids if not outcomes[r].succeeded]
    if lost and witness is not None:
        # What became of each lost request, as the witness saw it.
        seen = witness.counts(lost)
        entry['lost_detail'] = {r: dict(seen[r], waiter=outcomes[r].status,
                                        casts=outcomes[r].casts)
                                for r in lost}
    entry.update(extra)
    path = os.environ.get('RESCUE_WORKER_RELIABILITY_LOG')
    if path:
        with open(path, 'a') as f:
            f.write(json.dumps(entry, sort_keys=True) + '\n')
    return entry
