"""Functional test harness: real RabbitMQ, real ``rescue-worker`` processes.

The broker comes from ``pifpaf run rabbitmq`` (``tox -e functional``), which
exports ``PIFPAF_URL``; ``RESCUE_WORKER_TEST_TRANSPORT_URL`` overrides it.
The conductor side is plain oslo.messaging (``Bus``), never the project's own
client, so these tests check the wire contract itself.

Every worker logs at DEBUG, and every test's secrets (password, hash, token)
are checked against the worker's whole log and every notification at
teardown.
"""

import configparser
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid

import oslo_messaging
import pytest
from oslo_config import cfg

from tests import parts

HERE = os.path.dirname(os.path.abspath(__file__))
PLUGINS = os.path.join(HERE, 'plugins')
EXCHANGE = 'rescue_worker'
TOPIC = 'rescue_worker'
TIMEOUT = 60.0


def transport_url():
    url = (os.environ.get('RESCUE_WORKER_TEST_TRANSPORT_URL')
           or os.environ.get('PIFPAF_URL'))
    if url:
        return url
    parts.missing('RabbitMQ: run "tox -e functional" (pifpaf starts one) or '
                  'set RESCUE_WORKER_TEST_TRANSPORT_URL')


class Bus:
    """The conductor's side, in plain oslo.messaging."""

    def __init__(self, url):
        conf = cfg.CONF
        self.transport = oslo_messaging.get_rpc_transport(conf, url=url)
        self.notification_transport = \
            oslo_messaging.get_notification_transport(conf, url=url)
        self.events = []
        self._cond = threading.Condition()
        self.listener = oslo_messaging.get_notification_listener(
            self.notification_transport,
            [oslo_messaging.Target(topic='notifications',
                                   exchange=EXCHANGE)],
            [self], pool='functional-%s' % uuid.uuid4().hex)
        self.listener.start()

    def close(self):
        self.listener.stop()
        self.listener.wait()
        self.transport.cleanup()
        self.notification_transport.cleanup()

    def _record(self, priority, ctxt, event_type, payload):
        with self._cond:
            self.events.append((priority, event_type, payload, ctxt))
            self._cond.notify_all()

    def info(self, ctxt, publisher_id, event_type, payload, metadata):
        self._record('INFO', ctxt, event_type, payload)

    def error(self, ctxt, publisher_id, event_type, payload, metadata):
        self._record('ERROR', ctxt, event_type, payload)

    def client(self, node_id, timeout=30):
        target = oslo_messaging.Target(topic=TOPIC, server=node_id,
                                       exchange=EXCHANGE, version='1.0')
        return oslo_messaging.get_rpc_client(self.transport, target,
                                             timeout=timeout)

    def matching(self, event_type=None, request_id=None, node_id=None):
        with self._cond:
            found = []
            for _priority, kind, payload, _ctxt in self.events:
                data = payload['rescue_worker_object.data']
                if event_type and kind != event_type:
                    continue
                if request_id and data.get('request_id') != request_id:
                    continue
                if node_id and data.get('node_id') != node_id:
                    continue
                found.append(data)
            return found

    def wait_for(self, event_type, request_id=None, node_id=None,
                 count=1, timeout=TIMEOUT):
        """The first ``count`` notifications of a kind (their data)."""
        with self._cond:
            ok = self._cond.wait_for(
                lambda: len(self.matching(event_type, request_id,
                                          node_id)) >= count, timeout)
            if not ok:
                raise TimeoutError(
                    '%d x %s (request %s, node %s) not seen in %.0f s; '
                    'seen: %s' % (count, event_type, request_id, node_id,
                                  timeout, [e[1] for e in self.events]))
            return self.matching(event_type, request_id, node_id)


class WorkerProcess:
    """A ``rescue-worker`` process started from its own config file."""

    def __init__(self, base_dir, url, node_id=None, wrap=None, **options):
        self.node_id = node_id or 'node-%s' % uuid.uuid4().hex[:12]
        self.base_dir = str(base_dir)
        self.token = secrets.token_urlsafe(32)
        self.root_dir = os.path.join(self.base_dir, 'root')
        self.state_dir = os.path.join(self.base_dir, 'state')
        self.gate_dir = os.path.join(self.base_dir, 'gate')
        self.token_file = os.path.join(self.base_dir, 'agent-token')
        self.config_file = os.path.join(self.base_dir, 'rescue-worker.conf')
        self.log_file = os.path.join(self.base_dir, 'rescue-worker.log')
        self.output_file = os.path.join(self.base_dir, 'output.log')
        for path in (self.root_dir, self.gate_dir):
            os.makedirs(path, exist_ok=True)
        os.mkfifo(os.path.join(self.gate_dir, 'gate'))
        os.mkfifo(os.path.join(self.gate_dir, 'entered'))
        fd = os.open(self.token_file, os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(fd, 'w') as f:
            f.write(self.token)
        section = {'node_id': self.node_id, 'root_dir': self.root_dir,
                   'state_dir': self.state_dir,
                   'agent_token_file': self.token_file,
                   'dhcp_backend': 'none', 'steps': 'password'}
        section.update({k: str(v).lower() if isinstance(v, bool) else str(v)
                        for k, v in options.items()})
        parser = configparser.ConfigParser(interpolation=None)
        parser['DEFAULT'] = {
            'transport_url': url,
            'debug': 'true',
            'log_file': self.log_file,
            # Everything at DEBUG, libraries included: the secret check
            # below reads the most verbose log there can be.
            'default_log_levels': ','.join(
                '%s=DEBUG' % name for name in (
                    'amqp', 'amqplib', 'kombu', 'oslo.messaging',
                    'oslo_messaging', 'stevedore', 'passlib',
                    'rescue_worker')),
        }
        parser['rescue_worker'] = section
        self._parser = parser
        self.write_config()
        self.secrets = [self.token]
        # argv -> argv, e.g. to run the worker inside a network namespace
        self.wrap = wrap or list
        self.proc = None
        self.runs = []
        #: variables added to the worker's environment (oslo.config reads
        #: OS_<GROUP>__<OPTION> from there, credentials included)
        self.extra_env = {}
        #: arguments added to the worker's command line
        self.extra_args = []

    def write_config(self):
        with open(self.config_file, 'w') as f:
            self._parser.write(f)

    def start(self):
        env = dict(os.environ,
                   PYTHONPATH=os.pathsep.join(
                       [PLUGINS] + sys.path),
                   RESCUE_WORKER_TEST_GATE_DIR=self.gate_dir,
                   **self.extra_env)
        with open(self.output_file, 'ab') as out:
            self.proc = subprocess.Popen(
                self.wrap([os.path.join(os.path.dirname(sys.executable),
                                        'rescue-worker'),
                           '--config-file', self.config_file]
                          + self.extra_args),
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env)
        self.runs.append(self.proc)
        return self.proc

    def signal(self, signum):
        self.proc.send_signal(signum)

    def wait(self, timeout=TIMEOUT):
        return self.proc.wait(timeout)

    def _fifo(self, name, mode, timeout):
        done = []

        def _open():
            # Opening a FIFO blocks until the step opens the other end.
            with open(os.path.join(self.gate_dir, name), mode) as fifo:
                done.append(fifo.read() if mode == 'r' else None)

        thread = threading.Thread(target=_open, daemon=True)
        thread.start()
        thread.join(timeout)
        assert done, 'the gate step never reached the %s FIFO' % name
        return done[0]

    def wait_in_gate(self, timeout=TIMEOUT):
        """Block until a ``gate`` step is running; returns its request id."""
        return self._fifo('entered', 'r', timeout)

    def open_gate(self, timeout=TIMEOUT):
        """Let the ``gate`` step that is waiting finish."""
        self._fifo('gate', 'w', timeout)

    def gate_runs(self):
        try:
            with open(os.path.join(self.gate_dir, 'runs')) as f:
                return f.read().split()
        except FileNotFoundError:
            return []

    def account_hashes(self):
        """The hash the worker wrote to its shadow file, and its checksum:
        secrets too."""
        try:
            with open(os.path.join(self.root_dir, 'etc', 'shadow')) as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            return []
        for line in lines:
            fields = line.split(':')
            # A leading "!": written locked until the lockdown unlocks it.
            password_hash = fields[1].lstrip('!') if len(fields) > 1 else ''
            if fields[0] == 'rescue' and password_hash.startswith('$'):
                return [password_hash, password_hash.rsplit('$', 1)[1]]
        return []

    def logs(self):
        text = ''
        for path in (self.log_file, self.output_file):
            if os.path.exists(path):
                with open(path, errors='replace') as f:
                    text += f.read()
        return text

    def wait_for_log(self, text, timeout=TIMEOUT):
        """Wait until the worker logged ``text``, or fail with its log;
        the log file is the only sign some states give."""
        deadline = time.monotonic() + timeout
        polled = threading.Event()
        while text not in self.logs():
            if self.proc.poll() is not None:
                raise AssertionError('rescue-worker exited with %s before '
                                     'logging %r:\n%s' % (
                                         self.proc.returncode, text,
                                         self.logs()[-4000:]))
            if time.monotonic() >= deadline:
                raise AssertionError('rescue-worker did not log %r within '
                                     '%.0f s' % (text, timeout))
            polled.wait(0.1)

    def kill(self):
        for proc in self.runs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(TIMEOUT)


@pytest.fixture
def bus():
    bus = Bus(transport_url())
    yield bus
    bus.close()


@pytest.fixture
def secrets_used():
    """Secrets a test handed to a worker; none may show up anywhere."""
    return []


@pytest.fixture
def make_worker(tmp_path, bus, secrets_used):
    url = transport_url()
    workers = []

    def make(**options):
        worker = WorkerProcess(tmp_path / ('w%d' % len(workers)), url,
                               **options)
        workers.append(worker)
        return worker

    yield make
    for worker in workers:
        worker.kill()
    published = repr(bus.events)
    for worker in workers:
        logged = worker.logs()
        assert 'DEBUG' in logged, 'the worker did not log at DEBUG'
        for secret in (secrets_used + worker.secrets +
                       worker.account_hashes()):
            assert secret not in logged, (
                'a secret appeared in %s' % worker.log_file)
            assert secret not in published, 'a secret was published'


def wait_ready(bus, worker, timeout=TIMEOUT):
    """Wait for ``worker.ready``; fail early if the process died."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return bus.wait_for('rescue_worker.worker.ready',
                                node_id=worker.node_id,
                                count=len(worker.runs),
                                timeout=min(2.0, deadline - time.monotonic()))
        except TimeoutError:
            if worker.proc.poll() is not None:
                raise AssertionError(  # noqa: B904
                    'rescue-worker exited with %s before ready:\n%s' %
                    (worker.proc.returncode, worker.logs()[-4000:]))
            if time.monotonic() >= deadline:
                raise


@pytest.fixture
def started_worker(bus, make_worker):
    def start(**options):
        worker = make_worker(**options)
        worker.start()
        wait_ready(bus, worker)
        return worker
    return start


__all__ = ['Bus', 'WorkerProcess', 'signal', 'wait_ready']
