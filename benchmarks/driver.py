"""The conductor's side of the benchmark: fleets of helper processes,
measured rounds, single processes, hashing, and the whole run.

Clocks: every time is taken in this process with ``time.perf_counter``
(the cast just before it is sent, a notification when the listener hands
it over), so no clock is compared across processes.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import platform
import queue
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from importlib import metadata

import oslo_messaging
from oslo_config import cfg

from benchmarks import bare
from benchmarks import stats
from rescue_worker import client as rw_client
from rescue_worker import notify
from rescue_worker import passwords
from rescue_worker import rpc
from rescue_worker import sandbox

LOG = logging.getLogger('benchmarks')

#: the directory holding the ``benchmarks`` package, which is not installed:
#: the helper and bare server processes (``python -m benchmarks``) find it
#: through PYTHONPATH, wherever they start
SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: what a helper or a single process gets to become ready
READY_TIMEOUT = 180.0
#: the longest a settle waits for the processes to go quiet
SETTLE_TIMEOUT = 10.0
#: CPU seconds per 0.25 s window under which the processes count as quiet
QUIET_CPU = 0.02

DEFAULT_STEPS = ('password', 'account', 'network', 'verify')
FALLBACK_STEPS = ('password', 'account', 'verify')

HASH_CASES = (
    ('sha512_crypt', None), ('sha512_crypt', 5000),
    ('sha256_crypt', None), ('sha256_crypt', 5000),
    ('bcrypt', 10), ('bcrypt', 12),
)

VERSIONS_OF = ('rescue-worker', 'oslo.messaging', 'oslo.config', 'oslo.log',
               'kombu', 'amqp', 'passlib', 'bcrypt', 'stevedore',
               'netifaces', 'psutil', 'matplotlib')


class BenchError(Exception):
    """The benchmark cannot go on (a fleet did not start, no broker)."""


# -- steps --------------------------------------------------------------------

def choose_steps(requested: str | None = None) -> tuple[list[str], str]:
    """The steps the fleet runs, and why: the full pipeline when the
    network step loads, else password,account,verify."""
    if requested:
        return [s.strip() for s in requested.split(',') if s.strip()], \
            'given with --steps'
    try:
        from stevedore import driver as stevedore_driver

        from rescue_worker import pipeline

        stevedore_driver.DriverManager(pipeline.STEP_NAMESPACE, 'network',
                                       invoke_on_load=False)
        import rescue_worker.steps.network  # noqa: F401
    except Exception as exc:
        return list(FALLBACK_STEPS), (
            'the network step does not load here (%s); running without it'
            % type(exc).__name__)
    return list(DEFAULT_STEPS), 'the worker default, network with ' \
        'dhcp_backend = none'


# -- processes ----------------------------------------------------------------

def _psutil():
    import psutil

    return psutil


class CpuMeter:
    """CPU seconds (user + system) of a set of processes, as one number:
    with ``recursive``, their descendants too, and the children they
    waited for (e.g. a worker's ``visudo``)."""

    def __init__(self, pids: list[int], recursive: bool = True) -> None:
        psutil = _psutil()
        self.recursive = recursive
        self._procs = []
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(pid)
                self._procs.append(proc)
                if recursive:
                    self._procs.extend(proc.children(recursive=True))

    def seconds(self) -> float:
        total = 0.0
        for proc in self._procs:
            with contextlib.suppress(_psutil().Error):
                times = proc.cpu_times()
                total += times.user + times.system
                if self.recursive:
                    total += times.children_user + times.children_system
        return total


def broker_meter() -> CpuMeter | None:
    """The broker's processes, when pifpaf started it (PIFPAF_PID)."""
    pid = os.environ.get('PIFPAF_PID')
    if not pid or not pid.isdigit():
        return None
    meter = CpuMeter([int(pid)])
    return meter if meter.seconds() > 0 else None


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy so far (every core)."""
    times = _psutil().cpu_times()
    idle = times.idle + getattr(times, 'iowait', 0.0)
    return sum(times) - idle - getattr(times, 'guest', 0.0) - \
        getattr(times, 'guest_nice', 0.0)


def settle(meters: list[CpuMeter], timeout: float = SETTLE_TIMEOUT
           ) -> float:
    """Wait until the processes are quiet (the work a round started is
    over, e.g. the journal write after ``end``); the seconds waited."""
    started = time.perf_counter()
    deadline = started + timeout
    last = sum(m.seconds() for m in meters)
    while time.perf_counter() < deadline:
        time.sleep(0.25)
        now = sum(m.seconds() for m in meters)
        if now - last < QUIET_CPU:
            break
        last = now
    return time.perf_counter() - started


class Helper:
    """One fleet helper process (``fleet-helper``) and its event lines."""

    def __init__(self, kind: str, spec_file: str, log_file: str,
                 env: dict) -> None:
        self.kind = kind
        self.events: queue.Queue = queue.Queue()
        with open(log_file, 'ab') as log:
            self.proc = subprocess.Popen(
                [sys.executable, '-m', 'benchmarks', 'fleet-helper',
                 '--spec', spec_file],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                env=env, text=True, bufsize=1)
        self.pid = self.proc.pid
        self.log_file = log_file
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError):
                self.events.put(json.loads(line))
        self.events.put({'event': 'eof'})

    def wait_event(self, name: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError('%s helper %d: no %s event in %.0f s (see '
                                 '%s)' % (self.kind, self.pid, name, timeout,
                                          self.log_file))
            try:
                event = self.events.get(timeout=left)
            except queue.Empty:
                continue
            if event['event'] == name:
                return event
            if event['event'] in ('error', 'eof'):
                raise BenchError('%s helper %d failed: %s (see %s)' % (
                    self.kind, self.pid, event.get('message', 'it exited'),
                    self.log_file))

    def stop(self, timeout: float = 90.0) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.proc.stdin.write('stop\n')
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            LOG.warning('%s helper %d did not stop in %.0f s; killing it',
                        self.kind, self.pid, timeout)
            self.proc.kill()
            self.proc.wait(10)


class Fleet:
    """N nodes of one kind dealt over P helper processes."""

    def __init__(self, kind: str, nodes: list[dict], processes: int,
                 work_dir: str, env: dict, lockdown: bool = False) -> None:
        self.kind = kind
        self.nodes = nodes
        self.helpers: list[Helper] = []
        self.ready_events: list[dict] = []
        os.makedirs(work_dir, exist_ok=True)
        for index, part in enumerate(stats.round_robin(nodes, processes)):
            spec_file = os.path.join(work_dir, '%s-%d.json' % (kind, index))
            spec = {'kind': 'rescue' if kind == stats.RESCUE else 'bare',
                    'lockdown': lockdown,
                    'nodes': [{k: v for k, v in n.items() if k != 'token'}
                              for n in part]}
            fd = os.open(spec_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                         0o600)
            with os.fdopen(fd, 'w') as f:
                json.dump(spec, f)
            self.helpers.append(Helper(
                kind, spec_file,
                os.path.join(work_dir, '%s-%d.log' % (kind, index)), env))

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        for helper in self.helpers:
            self.ready_events.append(helper.wait_event(
                'ready', max(0.0, deadline - time.monotonic())))

    def meter(self) -> CpuMeter:
        return CpuMeter([h.pid for h in self.helpers])

    def stop(self) -> None:
        threads = [threading.Thread(target=h.stop) for h in self.helpers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def helper_facts(self) -> dict:
        count = len(self.nodes)
        return {
            'nodes': count,
            'processes': len(self.helpers),
            'start_seconds': max(e['start_seconds']
                                 for e in self.ready_events),
            'rss_bytes_per_node': sum(e['rss_bytes']
                                      for e in self.ready_events) / count,
            'threads_per_node': sum(e['threads']
                                    for e in self.ready_events) / count,
        }


# -- the conductor ------------------------------------------------------------

class Arrivals:
    """A plain oslo.messaging notification listener that notes when each
    notification arrived: ``end`` by request id, ``ready`` by node id."""

    def __init__(self, transport: oslo_messaging.Transport,
                 topic: str) -> None:
        self._cond = threading.Condition()
        self.ends: dict[str, float] = {}
        self.ready: dict[str, float] = {}
        self.stopped: dict[str, float] = {}
        self._listener = oslo_messaging.get_notification_listener(
            transport,
            [oslo_messaging.Target(topic=topic, exchange=bare.EXCHANGE)],
            [self], pool='rescue-worker-bench-%s' % uuid.uuid4().hex,
            serializer=oslo_messaging.NoOpSerializer())

    def start(self) -> Arrivals:
        self._listener.start()
        return self

    def stop(self) -> None:
        self._listener.stop()
        self._listener.wait()

    def info(self, ctxt, publisher_id, event_type, payload, metadata):
        now = time.perf_counter()
        if not isinstance(payload, dict):
            return
        data = payload.get('rescue_worker_object.data', payload)
        with self._cond:
            if event_type.endswith('.ready'):
                self.ready.setdefault(data.get('node_id'), now)
            elif event_type.endswith('.stopped'):
                self.stopped.setdefault(data.get('node_id'), now)
            elif event_type.endswith('.end'):
                self.ends.setdefault(data.get('request_id'), now)
            self._cond.notify_all()

    error = info

    def wait(self, table: str, key: str, timeout: float) -> float | None:
        with self._cond:
            self._cond.wait_for(lambda: key in getattr(self, table),
                                timeout)
            return getattr(self, table).get(key)

    def wait_all(self, keys: list[str], deadline: float) -> None:
        with self._cond:
            self._cond.wait_for(
                lambda: all(k in self.ends for k in keys),
                max(0.0, deadline - time.perf_counter()))


class Conductor:
    """One transport pair, the project's client and waiter for the rescue
    fleet, a plain listener and plain casts for the baseline."""

    def __init__(self, url: str) -> None:
        conf = cfg.ConfigOpts()
        rpc.register_messaging_opts(conf)
        conf([], project='rescue-worker-bench', default_config_files=[],
             default_config_dirs=[])
        conf.set_override('transport_url', url)
        self.transport = rpc.get_rpc_transport(conf)
        self.notification_transport = rpc.get_notification_transport(conf)
        self.client = rw_client.RescueWorkerClient(self.transport)
        self._lock = threading.Lock()
        self._ends: dict[str, float] = {}
        self._data: dict[str, dict] = {}
        self._seen: dict[str, int] = {}
        self.waiter = rw_client.CompletionWaiter(
            self.notification_transport, on_notification=self._note)
        self.waiter.start()
        self.bare_arrivals = Arrivals(self.notification_transport,
                                      bare.NOTIFICATION_TOPIC).start()

    def close(self) -> None:
        self.waiter.stop()
        self.bare_arrivals.stop()
        self.transport.cleanup()
        self.notification_transport.cleanup()

    def _note(self, event_type: str, data: dict) -> None:
        now = time.perf_counter()
        request_id = data.get('request_id')
        with self._lock:
            if request_id is not None:
                self._seen[request_id] = self._seen.get(request_id, 0) + 1
            if event_type in (notify.EVENT_END, notify.EVENT_ERROR):
                self._ends.setdefault(request_id, now)
                self._data.setdefault(request_id, data)

    def bare_cast(self, node_id: str, request_id: str, password: str,
                  token: str) -> None:
        """A cast as the project's client makes it (mandatory flag, the
        same arguments), to a bare server."""
        target = oslo_messaging.Target(topic=bare.TOPIC, server=node_id,
                                       exchange=bare.EXCHANGE, version='1.0')
        client = oslo_messaging.get_rpc_client(
            self.transport, target, timeout=60,
            transport_options=oslo_messaging.TransportOptions(
                at_least_once=True))
        client.cast({'request_id': request_id}, 'finalize_rescue',
                    rescue_password=password, hashed=True,
                    agent_token=token)

    def rescue_round(self, nodes: list[dict], password_hash: str,
                     timeout: float) -> dict:
        cast_at: dict[str, float] = {}
        not_listening = 0
        first = time.perf_counter()
        for node in nodes:
            request_id = 'req-%s' % uuid.uuid4()
            cast_at[request_id] = time.perf_counter()
            try:
                self.client.finalize_rescue(
                    {}, node['node_id'], password_hash,
                    agent_token=node['token'], hashed=True,
                    request_id=request_id)
            except rw_client.WorkerNotListening:
                not_listening += 1
                del cast_at[request_id]
        cast_seconds = time.perf_counter() - first
        outcomes = self.waiter.wait(list(cast_at), timeout=timeout)
        for request_id in cast_at:
            self.client.forget(request_id)
        # The waiter hands a notification to our callback just after it
        # wakes wait() up: give the last ones a moment.
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            with self._lock:
                if all(r in self._ends for r in cast_at
                       if outcomes[r].status in (rw_client.ENDED,
                                                 rw_client.ERRORED)):
                    break
            time.sleep(0.01)
        with self._lock:
            ends = {r: self._ends.pop(r) for r in cast_at if r in self._ends}
            data = {r: self._data.pop(r) for r in cast_at if r in self._data}
            seen = sum(self._seen.pop(r, 0) for r in cast_at)
        ended = [r for r in cast_at
                 if outcomes[r].status == rw_client.ENDED and r in ends]
        failed = [r for r in cast_at
                  if outcomes[r].status == rw_client.ERRORED]
        errors: dict[str, int] = {}
        samples: list[str] = []
        for r in failed:
            error = outcomes[r].error or {}
            code = error.get('code', '?')
            errors[code] = errors.get(code, 0) + 1
            if len(samples) < 5:
                # Error messages never hold a secret (the wire contract).
                samples.append('%s: %s' % (code, error.get('message')))
        step_ms: dict[str, list[float]] = {}
        for r in ended:
            for step in data[r].get('steps', []):
                step_ms.setdefault(step['name'], []).append(
                    step['duration_ms'])
        return {
            'fleet_seconds': (max(ends.values()) - first) if ends else None,
            'cast_seconds': cast_seconds,
            'latencies': [ends[r] - cast_at[r] for r in ended],
            'ended': len(ended),
            'failed': len(failed),
            'errors': errors,
            'error_samples': samples,
            'not_listening': not_listening,
            'timed_out': sum(o.status == rw_client.TIMED_OUT
                             for o in outcomes.values()),
            'notifications': seen,
            'worker_ms': [data[r]['duration_ms'] for r in ended],
            'step_ms': step_ms,
        }

    def bare_round(self, nodes: list[dict], password_hash: str,
                   timeout: float) -> dict:
        arrivals = self.bare_arrivals
        cast_at: dict[str, float] = {}
        not_listening = 0
        first = time.perf_counter()
        for node in nodes:
            request_id = 'req-%s' % uuid.uuid4()
            cast_at[request_id] = time.perf_counter()
            try:
                self.bare_cast(node['node_id'], request_id, password_hash,
                               node['token'])
            except oslo_messaging.MessageUndeliverable:
                not_listening += 1
                del cast_at[request_id]
        cast_seconds = time.perf_counter() - first
        arrivals.wait_all(list(cast_at), time.perf_counter() + timeout)
        with arrivals._cond:
            ends = {r: arrivals.ends.pop(r) for r in cast_at
                    if r in arrivals.ends}
        return {
            'fleet_seconds': (max(ends.values()) - first) if ends else None,
            'cast_seconds': cast_seconds,
            'latencies': [ends[r] - cast_at[r] for r in ends],
            'ended': len(ends),
            'failed': 0,
            'errors': {},
            'not_listening': not_listening,
            'timed_out': len(cast_at) - len(ends),
            'notifications': len(ends),
        }


# -- fleets -------------------------------------------------------------------

def rescue_nodes(base_dir: str, count: int, url: str, steps: list[str],
                 tag: str, lockdown: bool) -> list[dict]:
    nodes = []
    for index in range(count):
        node = sandbox.SandboxNode(
            os.path.join(base_dir, 'n%04d' % index),
            node_id='bench-rw-%s-%04d' % (tag, index), transport_url=url,
            steps=steps, dhcp_backend='none',
            exit_after_rescue=lockdown).create()
        nodes.append({'node_id': node.node_id, 'token': node.token,
                      'config_file': node.config_file,
                      'cmdline_file': node.cmdline_file})
    return nodes


def bare_nodes(count: int, tag: str) -> list[dict]:
    # A token of the same length, so that the casts weigh the same.
    return [{'node_id': 'bench-bare-%s-%04d' % (tag, index),
             'token': secrets.token_hex(32)} for index in range(count)]


def run_round(conductor: Conductor, *, size: int, index: int, url: str,
              steps: list[str], processes: int, work_dir: str, env: dict,
              password_hash: str, timeout: float, lockdown: bool,
              broker: CpuMeter | None) -> list[dict]:
    """One round at one size: for each kind in turn (the order alternates
    from round to round), a fresh fleet (every node is rescued once in its
    life, as a real one is, and no idle fleet of the other kind runs
    meanwhile), driven and then dropped. One round dict per kind."""
    order = (stats.BASELINE, stats.RESCUE) if index % 2 == 0 \
        else (stats.RESCUE, stats.BASELINE)
    return [run_fleet(conductor, kind=kind, size=size, index=index,
                      position=position, url=url, steps=steps,
                      processes=processes, work_dir=work_dir, env=env,
                      password_hash=password_hash, timeout=timeout,
                      lockdown=lockdown, broker=broker)
            for position, kind in enumerate(order)]


def run_fleet(conductor: Conductor, *, kind: str, size: int, index: int,
              position: int, url: str, steps: list[str], processes: int,
              work_dir: str, env: dict, password_hash: str, timeout: float,
              lockdown: bool, broker: CpuMeter | None) -> dict:
    created = time.perf_counter()
    tag = '%d-%d-%s' % (size, index, uuid.uuid4().hex[:6])
    round_dir = os.path.join(work_dir, 'round-%d-%d' % (size, index))
    if kind == stats.RESCUE:
        fleet = Fleet(kind, rescue_nodes(os.path.join(round_dir, 'nodes'),
                                         size, url, steps, tag, lockdown),
                      processes, round_dir, env, lockdown)
    else:
        fleet = Fleet(kind, bare_nodes(size, tag), processes, round_dir,
                      env)
    try:
        fleet.wait_ready()
        ready = time.perf_counter() - created
        meter = fleet.meter()
        everyone = [meter] + ([broker] if broker else [])
        settle(everyone)
        me = CpuMeter([os.getpid()], recursive=False)
        before = (meter.seconds(), broker.seconds() if broker else None,
                  me.seconds(), machine_busy_seconds())
        drive = conductor.rescue_round if kind == stats.RESCUE \
            else conductor.bare_round
        result = drive(fleet.nodes, password_hash, timeout)
        settle(everyone)
        result.update(
            kind=kind, nodes=size, round=index, order=position,
            worker_cpu_seconds=meter.seconds() - before[0],
            broker_cpu_seconds=(broker.seconds() - before[1]
                                if broker else None),
            conductor_cpu_seconds=me.seconds() - before[2],
            machine_cpu_seconds=machine_busy_seconds() - before[3],
            ready_seconds=ready, helpers=fleet.helper_facts())
        # What else ran on the machine meanwhile: anything that is not
        # this benchmark (other users, other tests).
        result['other_cpu_seconds'] = max(0.0, result[
            'machine_cpu_seconds'] - result['worker_cpu_seconds'] -
            (result['broker_cpu_seconds'] or 0.0) -
            result['conductor_cpu_seconds'])
        LOG.info(
            '  N=%d round %d %-13s ready in %.0f s; all ended in %s s, '
            'p50 %s ms, p99 %s ms, %d/%d ended%s', size, index, kind, ready,
            '%.2f' % result['fleet_seconds']
            if result['fleet_seconds'] else '-',
            _ms(stats.percentile(result['latencies'], 50)),
            _ms(stats.percentile(result['latencies'], 99)),
            result['ended'], size,
            ' %s' % result['errors'] if result['errors'] else '')
    finally:
        fleet.stop()
        shutil.rmtree(os.path.join(round_dir, 'nodes'), ignore_errors=True)
    return result


def run_sequential(conductor: Conductor, *, count: int, url: str,
                   steps: list[str], processes: int, work_dir: str,
                   env: dict, password_hash: str,
                   broker: CpuMeter | None) -> dict:
    """Both kinds driven one node at a time (cast, wait for the end, next
    node): what one request costs when nothing else runs, as on a real
    node, which has its CPU to itself. Fresh fleets of ``count`` nodes."""
    tag = 'seq-%s' % uuid.uuid4().hex[:6]
    seq_dir = os.path.join(work_dir, 'sequential')
    fleets = {
        stats.RESCUE: Fleet(stats.RESCUE,
                            rescue_nodes(os.path.join(seq_dir, 'nodes'),
                                         count, url, steps, tag, False),
                            processes, seq_dir, env),
        stats.BASELINE: Fleet(stats.BASELINE, bare_nodes(count, tag),
                              processes, seq_dir, env),
    }
    result = {}
    try:
        for fleet in fleets.values():
            fleet.wait_ready()
        meters = {kind: fleet.meter() for kind, fleet in fleets.items()}
        everyone = list(meters.values()) + ([broker] if broker else [])
        for kind in stats.KINDS:
            settle(everyone)
            fleet = fleets[kind]
            drive = conductor.rescue_round if kind == stats.RESCUE \
                else conductor.bare_round
            before = (meters[kind].seconds(),
                      broker.seconds() if broker else None)
            latencies: list[float] = []
            worker_ms: list[float] = []
            step_ms: dict[str, list[float]] = {}
            ended = 0
            for node in fleet.nodes:
                one = drive([node], password_hash, 30.0)
                ended += one['ended']
                latencies.extend(one['latencies'])
                worker_ms.extend(one.get('worker_ms') or ())
                for name, values in (one.get('step_ms') or {}).items():
                    step_ms.setdefault(name, []).extend(values)
            settle(everyone)
            entry = {
                'nodes': count, 'ended': ended,
                'latency_ms': stats.latency_summary(latencies),
                'worker_cpu_ms_per_request': round(
                    (meters[kind].seconds() - before[0]) * 1000.0 / count,
                    2),
                'broker_cpu_ms_per_request': round(
                    (broker.seconds() - before[1]) * 1000.0 / count, 2)
                if broker else None,
            }
            if worker_ms:
                entry['worker_duration_ms'] = stats.latency_summary(
                    [ms / 1000.0 for ms in worker_ms])
                entry['step_ms'] = {
                    name: {'p50': round(stats.percentile(v, 50), 3),
                           'p99': round(stats.percentile(v, 99), 3)}
                    for name, v in step_ms.items()}
            result[kind] = entry
            LOG.info('  one at a time %-13s p50 %.1f ms, p99 %.1f ms, '
                     'worker CPU %.1f ms a request', kind,
                     entry['latency_ms']['p50'] or 0,
                     entry['latency_ms']['p99'] or 0,
                     entry['worker_cpu_ms_per_request'])
    finally:
        for fleet in fleets.values():
            fleet.stop()
        shutil.rmtree(os.path.join(seq_dir, 'nodes'), ignore_errors=True)
    result['ratios'] = {
        'latency_p50': stats.ratio(result[stats.RESCUE]['latency_ms']['p50'],
                                   result[stats.BASELINE]['latency_ms'][
                                       'p50']),
        'latency_p99': stats.ratio(result[stats.RESCUE]['latency_ms']['p99'],
                                   result[stats.BASELINE]['latency_ms'][
                                       'p99']),
        'worker_cpu_per_request': stats.ratio(
            result[stats.RESCUE]['worker_cpu_ms_per_request'],
            result[stats.BASELINE]['worker_cpu_ms_per_request']),
    }
    return result


def _ms(seconds: float | None) -> str:
    return '-' if seconds is None else '%.1f' % (seconds * 1000.0)


# -- one process against one process ------------------------------------------

def console_script(name: str) -> str:
    path = os.path.join(os.path.dirname(sys.executable), name)
    if os.path.exists(path):
        return path
    found = shutil.which(name)
    if not found:
        raise BenchError('the %s command is not installed' % name)
    return found


def measure_process(conductor: Conductor, arrivals: Arrivals, kind: str,
                    index: int, url: str, steps: list[str], work_dir: str,
                    password_hash: str, env: dict) -> dict:
    """Start one process, note when its ready notification arrives, read
    its memory, send it one request, and stop it (SIGTERM)."""
    psutil = _psutil()
    tag = uuid.uuid4().hex[:6]
    node_id = 'bench-proc-%s-%s-%d' % (
        'rw' if kind == stats.RESCUE else 'bare', tag, index)
    log_file = os.path.join(work_dir, '%s-%d.log' % (kind, index))
    token = secrets.token_hex(32)
    if kind == stats.RESCUE:
        node = sandbox.SandboxNode(
            os.path.join(work_dir, 'rw-%d' % index), node_id=node_id,
            transport_url=url, steps=steps, dhcp_backend='none',
            exit_after_rescue=False).create()
        token = node.token
        command = [console_script('rescue-worker'), '--config-file',
                   node.config_file]
        child_env = env
    else:
        command = [sys.executable, '-m', 'benchmarks', 'bare-server',
                   '--node-id', node_id, '--notification-topic',
                   'notifications']
        child_env = dict(env, **{bare.URL_ENV: url})
    with open(log_file, 'ab') as log:
        started = time.perf_counter()
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=child_env)
    run = {'kind': kind, 'index': index}
    try:
        ready = arrivals.wait('ready', node_id, READY_TIMEOUT)
        if ready is None:
            raise BenchError('%s process did not get ready in %.0f s (see '
                             '%s)' % (kind, READY_TIMEOUT, log_file))
        info = psutil.Process(proc.pid)
        run['start_to_ready_seconds'] = ready - started
        run['rss_ready_bytes'] = info.memory_info().rss
        run['uss_ready_bytes'] = info.memory_full_info().uss
        run['threads_ready'] = info.num_threads()
        request_id = 'req-%s' % uuid.uuid4()
        cast_at = time.perf_counter()
        if kind == stats.RESCUE:
            conductor.client.finalize_rescue(
                {}, node_id, password_hash, agent_token=token, hashed=True,
                request_id=request_id)
        else:
            conductor.bare_cast(node_id, request_id, password_hash, token)
        ended = arrivals.wait('ends', request_id, 60.0)
        conductor.client.forget(request_id)
        if ended is not None:
            run['one_request_seconds'] = ended - cast_at
            time.sleep(0.2)  # let the post-end work (journal) finish
            run['rss_after_request_bytes'] = info.memory_info().rss
    finally:
        stop_at = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        try:
            run['exit_status'] = proc.wait(60)
            run['stop_seconds'] = time.perf_counter() - stop_at
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            run['exit_status'] = 'killed'
    return run


def measure_processes(conductor: Conductor, repeats: int, url: str,
                      steps: list[str], work_dir: str, password_hash: str,
                      env: dict) -> dict:
    os.makedirs(work_dir, exist_ok=True)
    arrivals = Arrivals(conductor.notification_transport,
                        'notifications').start()
    runs = []
    try:
        for index in range(repeats):
            order = (stats.RESCUE, stats.BASELINE) if index % 2 == 0 \
                else (stats.BASELINE, stats.RESCUE)
            for kind in order:
                run = measure_process(conductor, arrivals, kind, index, url,
                                      steps, work_dir, password_hash, env)
                runs.append(run)
                LOG.info('  process %-13s ready in %.2f s, RSS %.1f MiB',
                         kind, run['start_to_ready_seconds'],
                         run['rss_ready_bytes'] / stats.MIB)
    finally:
        arrivals.stop()
    summary = stats.summarize_processes(runs)
    summary['runs'] = runs
    return summary


# -- hashing ------------------------------------------------------------------

def measure_hashing(repeats: int, cases=HASH_CASES) -> list[dict]:
    """The conductor's cost of ``hash_password`` per scheme and rounds."""
    plaintext = secrets.token_urlsafe(15)  # 20 characters
    results = []
    for scheme, rounds in cases:
        passwords.hash_password(plaintext, scheme, rounds)  # warm up
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            passwords.hash_password(plaintext, scheme, rounds)
            times.append(time.perf_counter() - started)
        median_ms = stats.spread([t * 1000.0 for t in times])
        results.append({
            'scheme': scheme,
            'rounds': rounds if rounds is not None
            else passwords.default_rounds(scheme),
            'default_rounds': rounds is None,
            'backend': passwords.hash_backend(scheme),
            'ms': median_ms,
            'hashes_per_second_one_core': round(
                1000.0 / median_ms['median'], 2),
        })
        LOG.info('  %-12s rounds %-7s %8.1f ms', scheme,
                 results[-1]['rounds'], median_ms['median'])
    return results


# -- facts about the run ------------------------------------------------------

def _read(path: str) -> str:
    try:
        with open(path, encoding='utf-8', errors='replace') as f:
            return f.read()
    except OSError:
        return ''


def machine_facts(sandbox_dir: str, load_at_start: tuple | None = None
                  ) -> dict:
    mount = stats.mount_for(os.path.realpath(sandbox_dir),
                            _read('/proc/mounts'))
    mem = stats.parse_mem_total(_read('/proc/meminfo'))
    return {
        'nproc': len(os.sched_getaffinity(0)),
        'cpu_count': os.cpu_count(),
        'cpu_model': stats.parse_cpu_model(_read('/proc/cpuinfo')),
        'memory_gib': round(mem / 1024 ** 3, 1) if mem else None,
        'kernel': platform.release(),
        'os': _os_name(),
        'python': platform.python_version(),
        'sandbox_fs': mount[1] if mount else None,
        # Other work on the machine skews every figure: the load average
        # when the run started and when it ended.
        'loadavg_at_start': list(load_at_start) if load_at_start else None,
        'loadavg_at_end': list(os.getloadavg()),
    }


def _os_name() -> str | None:
    for line in _read('/etc/os-release').splitlines():
        if line.startswith('PRETTY_NAME='):
            return line.split('=', 1)[1].strip('"')
    return None


def _dpkg_version(package: str) -> str | None:
    try:
        out = subprocess.run(['dpkg-query', '-W', '-f', '${Version}',
                              package], capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def versions() -> dict:
    found = {}
    for name in VERSIONS_OF:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    found['rabbitmq-server (deb)'] = _dpkg_version('rabbitmq-server')
    found['erlang-base (deb)'] = _dpkg_version('erlang-base')
    return found


def default_sandbox_parent() -> str:
    """tmpfs (/dev/shm) when there is one: a rescue ramdisk's root is in
    memory too, so fsync costs there what it costs in the ramdisk."""
    shm = '/dev/shm'
    if os.path.isdir(shm) and os.access(shm, os.W_OK):
        return shm
    return tempfile.gettempdir()


# -- the whole run ------------------------------------------------------------

def run(args) -> dict:
    url = args.transport_url or os.environ.get('PIFPAF_URL')
    if not url:
        raise BenchError('no broker: run under "pifpaf run rabbitmq --" '
                         '(tox -e bench) or pass --transport-url')
    started_wall = time.time()
    load_at_start = os.getloadavg()
    started = time.perf_counter()
    budget_end = started + args.budget
    sizes = ([int(s) for s in args.sizes.split(',')] if args.sizes
             else stats.sweep_sizes(args.nodes))
    if args.nodes not in sizes:
        sizes.append(args.nodes)
    sizes = sorted(set(sizes))
    steps, steps_why = choose_steps(args.steps)
    output_dir = os.path.abspath(args.output_dir)
    os.makedirs(output_dir, exist_ok=True)
    logs_dir = os.path.join(output_dir, 'logs')
    shutil.rmtree(logs_dir, ignore_errors=True)
    os.makedirs(logs_dir)
    sandbox_dir = tempfile.mkdtemp(prefix='rescue-worker-bench-',
                                   dir=args.sandbox_dir or
                                   default_sandbox_parent())
    env = dict(os.environ, PYTHONWARNINGS='ignore',
               PYTHONPATH=os.pathsep.join(
                   filter(None, [SOURCE_ROOT, os.environ.get('PYTHONPATH')])))
    env.pop(bare.URL_ENV, None)
    bare_env = dict(env, **{bare.URL_ENV: url})
    notes = ['steps: %s (%s)' % (','.join(steps), steps_why)]
    config = {
        'nodes': args.nodes, 'sizes': sizes, 'processes': args.processes,
        'rounds': args.rounds, 'process_repeats': args.repeats,
        'sequential_nodes': args.sequential,
        'hash_repeats': args.hash_repeats, 'steps': steps,
        'dhcp_backend': 'none', 'exit_after_rescue': args.exit_after_rescue,
        'round_timeout': args.round_timeout, 'budget_seconds': args.budget,
        'sandbox_dir': sandbox_dir, 'transport_url': stats.redact_url(url),
        'fleet_hash': 'sha512_crypt, default rounds, hashed once',
    }
    LOG.info('rescue-worker bench: N=%d over %d processes per fleet, '
             'sizes %s, %d round(s), steps %s, sandboxes in %s',
             args.nodes, args.processes, sizes, args.rounds,
             ','.join(steps), sandbox_dir)

    hashing = []
    if args.hash_repeats > 0:
        LOG.info('hashing on the conductor side:')
        hashing = measure_hashing(args.hash_repeats)

    conductor = Conductor(url)
    password_hash = passwords.hash_password(
        secrets.token_urlsafe(15), 'sha512_crypt')
    broker = broker_meter()
    if broker is None:
        notes.append('broker CPU not measured (no PIFPAF_PID)')
    process = None
    sequential = None
    rounds: list[dict] = []
    try:
        if args.repeats > 0:
            LOG.info('one rescue-worker process against one bare server '
                     'process, %d time(s):', args.repeats)
            process = measure_processes(
                conductor, args.repeats, url, steps,
                os.path.join(sandbox_dir, 'processes'), password_hash, env)
            _copy_logs(os.path.join(sandbox_dir, 'processes'), logs_dir)
        if args.sequential > 0:
            LOG.info('one node at a time, %d nodes:', args.sequential)
            sequential = run_sequential(
                conductor, count=args.sequential, url=url, steps=steps,
                processes=args.processes,
                work_dir=os.path.join(sandbox_dir, 'fleets'), env=bare_env,
                password_hash=password_hash, broker=broker)
        LOG.info('fleets:')
        for size in sizes:
            for index in range(args.rounds):
                if time.perf_counter() > budget_end:
                    notes.append('budget of %d s spent: N=%d round %d and '
                                 'later were skipped' % (args.budget, size,
                                                         index))
                    break
                round_dir = os.path.join(sandbox_dir, 'fleets')
                rounds.extend(run_round(
                    conductor, size=size, index=index, url=url, steps=steps,
                    processes=args.processes, work_dir=round_dir,
                    env=bare_env, password_hash=password_hash,
                    timeout=args.round_timeout,
                    lockdown=args.exit_after_rescue, broker=broker))
                _copy_logs(round_dir, logs_dir)
    finally:
        conductor.close()
        if not args.keep_sandbox:
            shutil.rmtree(sandbox_dir, ignore_errors=True)
    fleet = None
    if rounds:
        done_sizes = sorted({r['nodes'] for r in rounds})
        main = args.nodes if args.nodes in done_sizes else done_sizes[-1]
        fleet = stats.fleet_section(rounds, done_sizes, main)
        fleet['helpers'] = _helper_summary(rounds, main)
    report = stats.build_report(
        started_at=datetime.datetime.fromtimestamp(
            started_wall, datetime.UTC).isoformat(
                timespec='seconds'),
        wall_seconds=time.perf_counter() - started, config=config,
        machine=machine_facts(args.sandbox_dir or default_sandbox_parent(),
                              load_at_start),
        versions=versions(), fleet=fleet, process=process, hashing=hashing,
        notes=notes)
    report['sequential'] = sequential
    return report


def _helper_summary(rounds: list[dict], size: int) -> dict:
    result = {}
    for kind in stats.KINDS:
        facts = [r['helpers'] for r in rounds
                 if r['kind'] == kind and r['nodes'] == size]
        result[kind] = {
            'start_seconds': stats.spread(f['start_seconds'] for f in facts),
            'rss_mib_per_node': stats.spread(
                f['rss_bytes_per_node'] / stats.MIB for f in facts),
            'threads_per_node': stats.spread(
                (f['threads_per_node'] for f in facts), 1),
        }
    return result


def _copy_logs(source: str, target: str) -> None:
    """Keep the helpers' and processes' logs (not their sandboxes)."""
    for dirpath, _, filenames in os.walk(source):
        for name in filenames:
            if name.endswith('.log'):
                rel = os.path.relpath(os.path.join(dirpath, name), source)
                dest = os.path.join(target, rel.replace(os.sep, '_'))
                with contextlib.suppress(OSError):
                    shutil.copyfile(os.path.join(dirpath, name), dest)


def write_outputs(report: dict, output_dir: str, plot: bool = True
                  ) -> list[str]:
    os.makedirs(output_dir, exist_ok=True)
    written = []
    json_file = os.path.join(output_dir, 'bench.json')
    with open(json_file, 'w', encoding='utf-8') as f:
        json.dump(report, f, indent=1, sort_keys=True)
        f.write('\n')
    written.append(json_file)
    if plot and report.get('fleet'):
        from benchmarks import plot as bench_plot

        png = os.path.join(output_dir, 'bench.png')
        bench_plot.plot(report, png)
        written.append(png)
    return written
