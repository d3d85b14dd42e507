"""Ironic integration harness: a private RabbitMQ with its management API, a
real Ironic (all-in-one, SQLite, noauth) with the plug-in, and the test-only
boot interface ``rw-test-sandbox`` (``plugins/``) that boots each node by
starting a real ``rescue-worker`` in a sandbox.

Everything here is started by the suite itself and stopped at its end: the
broker (with its own epmd on a port of its own, so that no other Erlang
node on the machine is touched), Ironic, and every worker Ironic started.
Every wait has a deadline.

Ports: 5701 (AMQP), 15701 (management), 25701 (Erlang distribution), 4701
(epmd); ``RESCUE_WORKER_IRONIC_TEST_PORT`` moves the first and the others
follow. Ironic's API listens on a free port.
"""

from __future__ import annotations

import base64
import configparser
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from collections.abc import Iterator

import pytest

from tests import parts

HERE = os.path.dirname(os.path.abspath(__file__))
PLUGINS = os.path.join(HERE, 'plugins')
RABBITMQ_BIN = '/usr/lib/rabbitmq/bin'
HOST = '127.0.0.1'
TIMEOUT = 60.0
#: Ironic's rescue timeout in the tests that do not test it: long enough
#: for a slow machine, short enough to end a stuck test
RESCUE_TIMEOUT = 120


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((HOST, port)) == 0


def wait_until(what: str, check: Callable[[], object],
               timeout: float = TIMEOUT, interval: float = 0.2,
               alive: Callable[[], str | None] | None = None) -> object:
    """Poll ``check`` until it returns something true, or fail after
    ``timeout`` seconds; ``alive`` returns why waiting is pointless (a
    process died), if it is."""
    deadline = time.monotonic() + timeout
    ticker = threading.Event()
    while True:
        result = check()
        if result:
            return result
        if alive is not None:
            dead = alive()
            if dead:
                raise AssertionError('waiting for %s: %s' % (what, dead))
        if time.monotonic() >= deadline:
            raise AssertionError('%s: not within %.0f s' % (what, timeout))
        ticker.wait(interval)


def _stop_group(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM a process started in its own session, and its group; SIGKILL
    what is left after ``timeout``."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout)


class Broker:
    """A private RabbitMQ node with the management plug-in."""

    def __init__(self, base_dir: str, port: int) -> None:
        self.base_dir = base_dir
        self.port = port
        self.management_port = port + 10000
        self.epmd_port = port - 1000
        self.dist_port = port + 20000
        self.nodename = 'rw-ironic-test-%d@localhost' % port
        self.admin = ('rw-admin', secrets.token_urlsafe(16))
        self.conductor = ('ironic-rw', secrets.token_urlsafe(16))
        self.proc: subprocess.Popen | None = None
        self.log_file = os.path.join(base_dir, 'rabbitmq-server.out')
        self.env = dict(
            os.environ,
            HOME=base_dir,  # the Erlang cookie
            ERL_EPMD_PORT=str(self.epmd_port),
            RABBITMQ_NODENAME=self.nodename,
            RABBITMQ_NODE_IP_ADDRESS=HOST,
            RABBITMQ_NODE_PORT=str(port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=os.path.join(base_dir, 'mnesia'),
            RABBITMQ_LOG_BASE=os.path.join(base_dir, 'log'),
            RABBITMQ_PID_FILE=os.path.join(base_dir, 'pid'),
            RABBITMQ_ENABLED_PLUGINS_FILE=os.path.join(base_dir,
                                                       'enabled_plugins'),
            RABBITMQ_CONFIG_FILE=os.path.join(base_dir, 'rabbitmq.conf'),
            # Never created: the machine's /etc/rabbitmq/advanced.config,
            # if any, is not this node's.
            RABBITMQ_ADVANCED_CONFIG_FILE=os.path.join(base_dir,
                                                       'advanced.config'),
        )

    @property
    def management_url(self) -> str:
        return 'http://%s:%s@%s:%d/' % (self.admin + (HOST,
                                                      self.management_port))

    @property
    def conductor_url(self) -> str:
        return 'rabbit://%s:%s@%s:%d/' % (self.conductor + (HOST, self.port))

    @property
    def ramdisk_url(self) -> str:
        return 'rabbit://%s:%d/' % (HOST, self.port)

    def start(self) -> None:
        busy = [p for p in (self.port, self.management_port,
                            self.epmd_port, self.dist_port)
                if _port_in_use(p)]
        if busy:
            raise AssertionError(
                'ports %s are in use: set RESCUE_WORKER_IRONIC_TEST_PORT to '
                'another AMQP port (management +10000, epmd -1000, '
                'distribution +20000)' % busy)
        os.makedirs(self.base_dir, exist_ok=True)
        with open(self.env['RABBITMQ_ENABLED_PLUGINS_FILE'], 'w') as f:
            f.write('[rabbitmq_management].\n')
        with open(self.env['RABBITMQ_CONFIG_FILE'], 'w') as f:
            f.write('management.tcp.ip = %s\n'
                    'management.tcp.port = %d\n'
                    'default_user = %s\n'
                    'default_pass = %s\n'
                    'default_user_tags.administrator = true\n'
                    'default_permissions.configure = .*\n'
                    'default_permissions.read = .*\n'
                    'default_permissions.write = .*\n' % (
                        (HOST, self.management_port) + self.admin))
        self._launch()
        # The conductors' own user, as the operator docs set it up.
        self.api('PUT', 'users', self.conductor[0],
                 body={'password': self.conductor[1], 'tags': ''})
        self.api('PUT', 'permissions', '/', self.conductor[0],
                 body={'configure': '.*', 'write': '.*', 'read': '.*'})

    def _launch(self) -> None:
        with open(self.log_file, 'ab') as out:
            # Its own session: stopping it stops its whole group.
            self.proc = subprocess.Popen(
                [os.path.join(RABBITMQ_BIN, 'rabbitmq-server')],
                env=self.env, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True)
        wait_until('RabbitMQ management API on port %d' %
                   self.management_port,
                   lambda: self._get('overview') is not None,
                   alive=self._dead)
        wait_until('RabbitMQ on port %d' % self.port,
                   lambda: _port_in_use(self.port), alive=self._dead)

    def restart(self) -> None:
        """Stop the node and start it again on the same data (users and
        durable queues stay; epmd keeps running)."""
        _stop_group(self.proc)
        wait_until('RabbitMQ to free port %d' % self.port,
                   lambda: not _port_in_use(self.port))
        self._launch()

    def _dead(self) -> str | None:
        if self.proc.poll() is not None:
            with open(self.log_file, errors='replace') as f:
                return 'rabbitmq-server exited with %s:\n%s' % (
                    self.proc.returncode, f.read()[-3000:])
        return None

    def api(self, method: str, *path: str, body: object = None
            ) -> tuple[int, object]:
        url = 'http://%s:%d/api/%s' % (HOST, self.management_port, '/'.join(
            urllib.parse.quote(p, safe='') for p in path))
        request = urllib.request.Request(
            url, method=method,
            data=None if body is None else json.dumps(body).encode())
        request.add_header('Content-Type', 'application/json')
        request.add_header('Authorization', 'Basic ' + base64.b64encode(
            ('%s:%s' % self.admin).encode()).decode())
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            return exc.code, None

    def _get(self, *path: str) -> object:
        try:
            status, body = self.api('GET', *path)
        except OSError:
            return None
        return body if status == 200 else None

    def add_vhost(self, vhost: str) -> None:
        """A virtual host where the conductors' user may do anything."""
        for path, body in (
                (('vhosts', vhost), {}),
                (('permissions', vhost, self.conductor[0]),
                 {'configure': '.*', 'write': '.*', 'read': '.*'})):
            status, _ = self.api('PUT', *path, body=body)
            assert status in (201, 204), (path, status)

    def queue(self, vhost: str, name: str) -> dict | None:
        return self._get('queues', vhost, name)

    def peek(self, vhost: str, queue: str) -> list[dict]:
        """The oslo.messaging notifications waiting in a queue (requeued:
        they stay there, in order)."""
        status, body = self.api(
            'POST', 'queues', vhost, queue, 'get',
            body={'count': 100, 'ackmode': 'ack_requeue_true',
                  'encoding': 'auto'})
        assert status == 200, status
        return [json.loads(json.loads(m['payload'])['oslo.message'])
                for m in body]

    def user_exists(self, name: str) -> bool:
        status, _ = self.api('GET', 'users', name)
        assert status in (200, 404), status
        return status == 200

    def users(self) -> list[str]:
        return [u['name'] for u in self._get('users') or []]

    def stop(self) -> None:
        if self.proc is not None:
            _stop_group(self.proc)
        # The node started its own epmd (ERL_EPMD_PORT), outside its
        # process group: stop that one, never the machine's.
        subprocess.run(['epmd', '-kill'], env=self.env, timeout=30,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       check=False)
        wait_until('epmd on port %d to stop' % self.epmd_port,
                   lambda: not _port_in_use(self.epmd_port), timeout=30)


class Ironic:
    """Ironic all-in-one (``ironic``: API and conductor in one service,
    ``rpc_transport = none``) on SQLite, noauth, with the plug-in."""

    def __init__(self, base_dir: str, broker: Broker) -> None:
        self.base_dir = base_dir
        self.broker = broker
        self.port = _free_port()
        self.endpoint = 'http://%s:%d' % (HOST, self.port)
        self.config_file = os.path.join(base_dir, 'ironic.conf')
        self.log_file = os.path.join(base_dir, 'ironic.log')
        self.output_file = os.path.join(base_dir, 'ironic.out')
        self.sandboxes = os.path.join(base_dir, 'sandboxes')
        self.proc: subprocess.Popen | None = None
        #: where the current process's part of the log starts
        self.log_offset = 0
        os.makedirs(self.sandboxes, exist_ok=True)

    def write_config(self, rescue_callback_timeout: int = RESCUE_TIMEOUT,
                     vhost: str = '/', durable_queues: bool = False
                     ) -> None:
        config = configparser.ConfigParser(interpolation=None)
        config['DEFAULT'] = {
            'auth_strategy': 'noauth',
            'rpc_transport': 'none',
            'host': 'rw-ironic-test',
            'debug': 'true',
            'log_file': self.log_file,
            # The libraries at DEBUG too: the tests look for secrets in the
            # most verbose log Ironic can write.
            'default_log_levels': ','.join(
                '%s=DEBUG' % name for name in (
                    'amqp', 'kombu', 'oslo.messaging', 'oslo_messaging',
                    'stevedore', 'passlib', 'rescue_worker', 'ironic',
                    'urllib3', 'keystonemiddleware')),
            'enabled_hardware_types': 'fake-hardware',
            'enabled_boot_interfaces': 'rw-test-sandbox,fake',
            'enabled_deploy_interfaces': 'fake',
            'enabled_power_interfaces': 'fake',
            'enabled_management_interfaces': 'fake',
            'enabled_network_interfaces': 'noop',
            'enabled_rescue_interfaces': 'rescue-worker,no-rescue',
            'enabled_inspect_interfaces': 'no-inspect',
            'enabled_console_interfaces': 'no-console',
            'enabled_vendor_interfaces': 'no-vendor',
            'enabled_raid_interfaces': 'no-raid',
            'enabled_bios_interfaces': 'no-bios',
            'enabled_firmware_interfaces': 'no-firmware',
            'enabled_storage_interfaces': 'noop',
        }
        config['api'] = {'host_ip': HOST, 'port': str(self.port)}
        config['database'] = {
            'connection': 'sqlite:///%s' % os.path.join(self.base_dir,
                                                        'ironic.sqlite')}
        config['conductor'] = {
            'automated_clean': 'false',
            'rescue_callback_timeout': str(rescue_callback_timeout),
            'check_rescue_state_interval': '1',
            'sync_power_state_interval': '0',
        }
        config['dhcp'] = {'dhcp_provider': 'none'}
        config['oslo_concurrency'] = {
            'lock_path': os.path.join(self.base_dir, 'locks')}
        config['rescue_worker'] = {
            'transport_url': self.broker.conductor_url,
            'ramdisk_transport_url': self.broker.ramdisk_url,
            'vhost': vhost,
            'management_url': self.broker.management_url,
        }
        if durable_queues:
            config['oslo_messaging_rabbit'] = {'amqp_durable_queues': 'true'}
        with open(self.config_file, 'w') as f:
            config.write(f)

    def _bin(self, name: str) -> str:
        return os.path.join(os.path.dirname(sys.executable), name)

    def create_schema(self) -> None:
        subprocess.run([self._bin('ironic-dbsync'), '--config-file',
                        self.config_file, 'create_schema'],
                       check=True, timeout=120, stdin=subprocess.DEVNULL,
                       capture_output=True)

    def start(self, **config) -> None:
        """Start with ``write_config(**config)``."""
        self.write_config(**config)
        env = dict(os.environ,
                   PYTHONPATH=os.pathsep.join([PLUGINS] + sys.path),
                   RW_IRONIC_TEST_SANDBOXES=self.sandboxes)
        self.log_offset = (os.path.getsize(self.log_file)
                           if os.path.exists(self.log_file) else 0)
        with open(self.output_file, 'ab') as out:
            self.proc = subprocess.Popen(
                [self._bin('ironic'), '--config-file', self.config_file],
                env=env, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True)
        # The API answers once the conductor registered its drivers.
        wait_until('Ironic API with the fake-hardware driver',
                   self._drivers_ready, alive=self._dead)
        # The periodic that starts the listener runs at conductor start.
        wait_until('the rescue-worker listener to start',
                   lambda: 'Listening to rescue workers in pool'
                   in self.log_of_run(), alive=self._dead)

    def _drivers_ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.endpoint + '/v1/drivers',
                                        timeout=5) as response:
                drivers = json.loads(response.read())['drivers']
        except (OSError, ValueError, KeyError):
            return False
        return any(d['name'] == 'fake-hardware' for d in drivers)

    def _dead(self) -> str | None:
        if self.proc.poll() is not None:
            return 'ironic exited with %s:\n%s' % (self.proc.returncode,
                                                   self.output()[-3000:])
        return None

    def stop(self) -> None:
        if self.proc is not None:
            _stop_group(self.proc)
            self.proc = None

    def restart(self, **config) -> None:
        self.stop()
        self.start(**config)

    def log(self) -> str:
        if not os.path.exists(self.log_file):
            return ''
        with open(self.log_file, errors='replace') as f:
            return f.read()

    def log_of_run(self) -> str:
        """The log since the current process started."""
        if not os.path.exists(self.log_file):
            return ''
        with open(self.log_file, errors='replace') as f:
            f.seek(self.log_offset)
            return f.read()

    def output(self) -> str:
        if not os.path.exists(self.output_file):
            return ''
        with open(self.output_file, errors='replace') as f:
            return f.read()


@pytest.fixture(scope='session')
def broker(tmp_path_factory) -> Iterator[Broker]:
    if not os.path.exists(os.path.join(RABBITMQ_BIN, 'rabbitmq-server')):
        parts.missing('rabbitmq-server (Debian package rabbitmq-server)')
    parts.require_programs('epmd', package='erlang-base')
    port = int(os.environ.get('RESCUE_WORKER_IRONIC_TEST_PORT', '5701'))
    broker = Broker(str(tmp_path_factory.mktemp('rabbitmq')), port)
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope='session')
def ironic(broker, tmp_path_factory) -> Iterator[Ironic]:
    try:
        import ironic as _  # noqa: F401
        import ironicclient as _  # noqa: F401,F811
    except ImportError as exc:
        parts.missing('Ironic and python-ironicclient (tox -e ironic): %s'
                      % exc)
    server = Ironic(str(tmp_path_factory.mktemp('ironic')), broker)
    server.write_config()
    server.create_schema()
    try:
        server.start()
        yield server
    finally:
        server.stop()
        stop_workers(server.sandboxes)


def stop_workers(sandboxes: str) -> None:
    """Kill every worker the test boot interface started and Ironic did not
    stop (a failed test)."""
    for name in os.listdir(sandboxes):
        sandbox = os.path.join(sandboxes, name)
        try:
            with open(os.path.join(sandbox, 'worker.pid')) as f:
                pid = int(f.read())
            with open('/proc/%d/cmdline' % pid, 'rb') as f:
                argv = f.read().decode(errors='replace')
        except (OSError, ValueError):
            continue
        # Only that worker (its own session): the pid of one that exited
        # long ago may belong to another process by now.
        if sandbox + os.sep in argv:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


@pytest.fixture(scope='session')
def api(ironic):
    from ironicclient import client
    return client.get_client(1, endpoint=ironic.endpoint, auth_type='none',
                             os_ironic_api_version='latest')

