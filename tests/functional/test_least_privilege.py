"""Least privilege on the broker (doc/source/broker-permissions.rst).

Each node's worker runs under its own RabbitMQ user, made by
``tools/rescue-worker-broker-user`` with the recipe of
``doc/source/broker-permissions.rst``. These tests run real ``rescue-worker``
processes under such users on the pifpaf RabbitMQ node, then use one
node's credentials directly (kombu) to show that they are worth nothing
for another node: its queue cannot be consumed, a cast cannot be published
to its routing key, while the node's own notifications still go out.

rabbitmqctl reaches the pifpaf node with ``PIFPAF_RABBITMQ_NODENAME`` and
the Erlang cookie pifpaf left in ``PIFPAF_RABBITMQ_HOME``; for another
broker set ``RESCUE_WORKER_TEST_RABBITMQCTL`` (e.g. ``rabbitmqctl -n
rabbit@host``) along with ``RESCUE_WORKER_TEST_TRANSPORT_URL``.
"""

import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import time
import urllib.parse
import uuid

import kombu
import oslo_messaging
import pytest
from amqp import exceptions as amqp_exc

from rescue_worker import client as rw_client
from rescue_worker import rpc
from tests import parts
from tests.functional import broker as fault_broker
from tests.functional.conftest import EXCHANGE
from tests.functional.conftest import TOPIC
from tests.functional.conftest import Bus
from tests.functional.conftest import WorkerProcess
from tests.functional.conftest import transport_url
from tests.functional.conftest import wait_ready

# The console script installed with the package (tools/ keeps a wrapper
# for source trees).
TOOL = os.path.join(os.path.dirname(sys.executable),
                    'rescue-worker-broker-user')
# Where pifpaf itself finds rabbitmqctl. Debian's /usr/sbin/rabbitmqctl is
# a wrapper that, run as root, switches to the rabbitmq user and so reads
# that user's Erlang cookie instead of pifpaf's.
RABBITMQCTL_DIRS = ('/usr/lib/rabbitmq/bin', '/usr/libexec/rabbitmq',
                    '/usr/local/sbin')
READY = 'rescue_worker.worker.ready'
END = 'rescue_worker.finalize_rescue.end'
ERROR = 'rescue_worker.finalize_rescue.error'
PROBE = 'rescue_worker.least_privilege.probe'
REFUSED = 403  # ACCESS_REFUSED
EXPIRY_POLICY = 'rescue-worker-expiry'


def new_request_id():
    return 'req-%s' % uuid.uuid4()


def new_node_id(label):
    return 'lp-%s-%s' % (label, uuid.uuid4().hex[:8])


def run_tool(*args, env=None, check=True):
    proc = subprocess.run([sys.executable, TOOL] + list(args), env=env,
                          capture_output=True, text=True, timeout=120,
                          check=False)
    if check and proc.returncode:
        raise AssertionError('%s failed (%d):\n%s%s' % (
            shlex.join(args), proc.returncode, proc.stdout, proc.stderr))
    return proc


# -- the broker and its users ------------------------------------------------

def split_url(url):
    """(scheme, [netloc per host], vhost) of an oslo.messaging URL."""
    parsed = urllib.parse.urlsplit(url)
    vhost = urllib.parse.unquote(parsed.path[1:]) or '/'
    return parsed, parsed.netloc.split(','), vhost


def with_credentials(url, user, password):
    parsed, hosts, _ = split_url(url)
    creds = '%s:%s@' % (urllib.parse.quote(user, safe=''),
                        urllib.parse.quote(password, safe=''))
    netloc = ','.join(creds + host.rpartition('@')[2] for host in hosts)
    return urllib.parse.urlunsplit(parsed._replace(netloc=netloc))


class Broker:
    """The broker under test: its URL, vhost and rabbitmqctl."""

    def __init__(self, url, rabbitmqctl, env):
        self.url = url
        _, hosts, self.vhost = split_url(url)
        host = hosts[0].rpartition('@')[2]
        self.host, _, port = host.rpartition(':')
        self.port = int(port or 5672)
        self.rabbitmqctl = rabbitmqctl
        self.env = env

    def ctl(self, *args):
        return subprocess.run(shlex.split(self.rabbitmqctl) + list(args),
                              env=self.env, capture_output=True, text=True,
                              timeout=120, check=True).stdout

    def plugins(self, *args):
        """``rabbitmq-plugins`` beside the ``rabbitmqctl`` in use."""
        argv = shlex.split(self.rabbitmqctl)
        argv[0] = os.path.join(os.path.dirname(argv[0]), 'rabbitmq-plugins')
        return subprocess.run(argv + list(args), env=self.env,
                              capture_output=True, text=True, timeout=120,
                              check=True).stdout

    def connection(self, user, password):
        """A kombu connection, as anyone holding these credentials."""
        return kombu.Connection(hostname=self.host, port=self.port,
                                userid=user, password=password,
                                virtual_host=self.vhost, connect_timeout=10,
                                transport_options={'confirm_publish': True})


class NodeUser:
    def __init__(self, broker, node_id, user, password, password_file):
        self.broker = broker
        self.node_id = node_id
        self.user = user
        self.password = password
        self.password_file = password_file
        self.url = with_credentials(broker.url, user, password)

    def connection(self):
        return self.broker.connection(self.user, self.password)


@pytest.fixture
def broker():
    url = transport_url()
    env = dict(os.environ)
    command = os.environ.get('RESCUE_WORKER_TEST_RABBITMQCTL')
    if not command:
        node = os.environ.get('PIFPAF_RABBITMQ_NODENAME')
        if not node or url != os.environ.get('PIFPAF_URL'):
            parts.missing('rabbitmqctl access to the broker under test: '
                          'run under "pifpaf run rabbitmq" or set '
                          'RESCUE_WORKER_TEST_RABBITMQCTL')
        program = shutil.which('rabbitmqctl',
                               path=os.pathsep.join(RABBITMQCTL_DIRS))
        if program is None:
            parts.missing('rabbitmqctl (Debian package rabbitmq-server)')
        command = shlex.join([program, '-n', node])
        # pifpaf's node and its Erlang cookie live under this HOME, and
        # rabbitmq-plugins needs its (initially absent) plugins file.
        env['HOME'] = os.environ['PIFPAF_RABBITMQ_HOME']
        env['RABBITMQ_ENABLED_PLUGINS_FILE'] = os.path.join(
            env['HOME'], 'notexists')
    return Broker(url, command, env)


@pytest.fixture
def node_users(broker, tmp_path, secrets_used):
    """Make node users with the tool; each is removed at teardown."""
    made = []

    def make(node_id, *extra):
        password_file = str(tmp_path / ('%s.password' % node_id))
        proc = run_tool('add', node_id, '--vhost', broker.vhost,
                        '--rabbitmqctl', broker.rabbitmqctl,
                        '--generate-password', password_file, *extra,
                        env=broker.env)
        user = proc.stdout.strip()
        made.append(node_id)
        with open(password_file) as f:
            password = f.read().strip()
        secrets_used.append(password)
        assert password not in proc.stdout + proc.stderr
        return NodeUser(broker, node_id, user, password, password_file)

    yield make
    for node_id in made:
        run_tool('remove', node_id, '--vhost', broker.vhost,
                 '--rabbitmqctl', broker.rabbitmqctl, env=broker.env)


@pytest.fixture
def node_worker(tmp_path, bus, secrets_used):
    """Start a ``rescue-worker`` process under a node user's credentials."""
    workers = []

    def start(node_user, **options):
        options.setdefault('exit_after_rescue', False)
        worker = WorkerProcess(tmp_path / ('w-%s' % node_user.node_id),
                               node_user.url, node_id=node_user.node_id,
                               **options)
        workers.append(worker)
        worker.start()
        wait_ready(bus, worker)
        return worker

    yield start
    for worker in workers:
        worker.kill()
    published = repr(bus.events)
    for worker in workers:
        logged = worker.logs()
        for secret in secrets_used + worker.secrets:
            assert secret not in logged, (
                'a secret appeared in %s' % worker.log_file)
            assert secret not in published, 'a secret was published'


# -- what a holder of a node's credentials tries -----------------------------

def envelope(message, ctxt):
    """An oslo.messaging 2.0 wire message, as its rabbit driver sends it."""
    message = dict(message, _unique_id=uuid.uuid4().hex)
    message.update(('_context_%s' % key, value)
                   for key, value in ctxt.items())
    return {'oslo.version': '2.0', 'oslo.message': json.dumps(message)}


def finalize_cast(request_id, **args):
    return envelope({'method': 'finalize_rescue', 'args': args,
                     'version': '1.0'}, {'request_id': request_id})


def probe_notification(node_id, probe_id):
    return envelope({
        'message_id': str(uuid.uuid4()),
        'publisher_id': 'rescue-worker.%s' % node_id,
        'event_type': PROBE, 'priority': 'INFO',
        'timestamp': time.strftime('%Y-%m-%d %H:%M:%S.000000'),
        'payload': {'rescue_worker_object.data': {
            'node_id': node_id, 'request_id': probe_id}},
    }, {})


def publish(node_user, exchange, routing_key, body):
    """Publish with publisher confirms: returns once the broker took it,
    raises if the broker closed the channel instead."""
    with node_user.connection() as conn:
        conn.Producer().publish(body, exchange=exchange,
                                routing_key=routing_key,
                                serializer='json', retry=False)


def assert_refused(call, *args, **kwargs):
    with pytest.raises(amqp_exc.AccessRefused) as caught:
        call(*args, **kwargs)
    assert caught.value.reply_code == REFUSED
    return str(caught.value)


def consume_once(node_user, queue):
    with node_user.connection() as conn:
        got = []
        consumer = kombu.Consumer(
            conn.channel(), [kombu.Queue(queue, no_declare=True)],
            callbacks=[lambda body, message: got.append(body)],
            no_ack=True)
        consumer.consume()
        try:
            conn.drain_events(timeout=1)
        except TimeoutError:
            pass
        return got


def bind(node_user, queue, exchange, routing_key):
    with node_user.connection() as conn:
        conn.channel().queue_bind(queue, exchange, routing_key)


def smuggle(node_user, routing_key, body):
    """Route a message into the control exchange through an exchange of
    the node's own (exchange-to-exchange binding): topic permissions are
    checked against the exchange published to, which is not the control
    exchange. See doc/source/broker-permissions.rst, "What cannot be
    restricted".
    """
    own = '%s_fanout_%s' % (TOPIC, uuid.uuid4().hex)
    with node_user.connection() as conn:
        channel = conn.channel()
        channel.exchange_declare(own, 'fanout', durable=False,
                                 auto_delete=True)
        try:
            channel.exchange_bind(destination=EXCHANGE, source=own,
                                  routing_key='')
            conn.Producer(channel).publish(body, exchange=own,
                                           routing_key=routing_key,
                                           serializer='json', retry=False)
        finally:
            # on a fresh channel: a refusal closed the first one
            conn.channel().exchange_delete(own)


# -- the tests ---------------------------------------------------------------

def test_tool_patterns_name_one_node_and_never_take_a_password(tmp_path):
    assert os.access(TOOL, os.X_OK)
    shown = json.loads(run_tool('show', 'node-1').stdout)
    assert shown['user'] == 'rw-node-1'
    node = r'rescue_worker\.node-1'
    fanout_q = 'rescue_worker_fanout_[0-9a-f]{32}'
    notif = r'notifications\.(?:info|error)'
    assert shown['configure'] == '^(rescue_worker|%s|rescue_worker_fanout|' \
        '%s|%s)$' % (node, fanout_q, notif)
    assert shown['write'] == '^(rescue_worker|%s|%s|%s)$' % (
        node, fanout_q, notif)
    assert shown['read'] == '^(rescue_worker|%s|rescue_worker_fanout|%s)$' \
        % (node, fanout_q)
    assert shown['topic_write'] == '^(%s)$' % notif
    assert shown['topic_read'] == '^(rescue_worker|%s|%s)$' % (node, notif)

    def allowed(kind, name):
        return re.search(shown[kind], name) is not None

    assert allowed('read', 'rescue_worker.node-1')
    for other in ('rescue_worker.node-10', 'rescue_worker.node-2',
                  'rescue_worker.node-1.x', 'xrescue_worker.node-1'):
        assert not allowed('read', other), other
        assert not allowed('write', other), other
        assert not allowed('configure', other), other
    assert not allowed('write', 'amq.default')
    assert not allowed('write', 'rescue_worker_fanout')
    assert not allowed('read', 'notifications.info')
    assert not allowed('read', 'reply_%s' % uuid.uuid4().hex)
    assert not allowed('topic_write', 'rescue_worker.node-1')
    assert not allowed('topic_read', 'rescue_worker.node-2')
    assert not allowed('topic_read', '#')
    assert allowed('topic_write', 'notifications.error')
    assert r'amq\.default' in json.loads(
        run_tool('show', 'node-1', '--allow-replies').stdout)['write']

    # Topic wildcards and blanks never make it into a routing key.
    for bad in ('#', 'node*', 'a b', '', '-x', 'a/b'):
        assert run_tool('show', bad, check=False).returncode == 2, bad

    # No password option at all; a file others can read is refused before
    # rabbitmqctl runs; --print-only never prints the password.
    assert '--password ' not in run_tool('add', '--help').stdout
    password_file = tmp_path / 'password'
    password = 'p-%s' % uuid.uuid4().hex
    password_file.write_text(password + '\n')
    password_file.chmod(0o640)
    proc = run_tool('add', 'node-1', '--password-file', str(password_file),
                    '--rabbitmqctl', '/nonexistent/rabbitmqctl', check=False)
    assert proc.returncode == 1 and 'readable by others' in proc.stderr
    password_file.chmod(0o600)
    proc = run_tool('add', 'node-1', '--password-file', str(password_file),
                    '--rabbitmqctl', 'rabbitmqctl -n rabbit@example',
                    '--print-only')
    assert password not in proc.stdout + proc.stderr
    assert 'set_topic_permissions -p / rw-node-1 rescue_worker' in proc.stdout
    # No password file is generated unless rabbitmqctl works.
    generated = tmp_path / 'generated'
    proc = run_tool('add', 'node-1', '--generate-password', str(generated),
                    '--rabbitmqctl', '/nonexistent/rabbitmqctl', check=False)
    assert proc.returncode == 1 and 'cannot run' in proc.stderr
    assert not generated.exists()


def test_node_user_serves_its_node_and_is_worth_nothing_beyond(
        bus, broker, node_users, node_worker):
    user_a = node_users(new_node_id('a'))
    user_b = node_users(new_node_id('b'))
    for user in (user_a, user_b):
        assert stat.S_IMODE(os.stat(user.password_file).st_mode) == 0o600
    # Both workers start and announce themselves (a notification published
    # with node credentials) under their own users only.
    worker_a = node_worker(user_a)
    worker_b = node_worker(user_b)
    queue_b = '%s.%s' % (TOPIC, user_b.node_id)

    # A serves a finalize as usual.
    request_id = new_request_id()
    bus.client(user_a.node_id).cast(
        {'request_id': request_id}, 'finalize_rescue',
        rescue_password='least-privilege-%s' % uuid.uuid4(),
        agent_token=worker_a.token)
    [end] = bus.wait_for(END, request_id=request_id)
    assert end['node_id'] == user_a.node_id and end['error'] is None

    # With A's credentials: B's queue cannot be consumed, read or bound ...
    assert 'queue' in assert_refused(consume_once, user_a, queue_b)
    with user_a.connection() as conn:
        assert_refused(conn.channel().basic_get, queue_b)
    for routing_key in (queue_b, '%s.*' % TOPIC, '#'):
        assert 'topic' in assert_refused(
            bind, user_a, '%s.%s' % (TOPIC, user_a.node_id), EXCHANGE,
            routing_key)

    # ... no cast can be published to B's routing key: the control exchange
    # refuses the routing key (topic permissions close the channel), the
    # default exchange and the fanout exchange refuse A altogether.
    stolen = new_request_id()
    cast = finalize_cast(stolen, rescue_password='x' * 16)
    assert 'topic' in assert_refused(publish, user_a, EXCHANGE, queue_b,
                                     cast)
    assert 'amq.default' in assert_refused(publish, user_a, '', queue_b,
                                           cast)
    assert_refused(publish, user_a, '%s_fanout' % TOPIC, '', cast)
    assert_refused(publish, user_a, EXCHANGE,
                   '%s.%s' % (TOPIC, user_a.node_id), cast)

    # ... but A's notifications go out, and reach the conductor.
    probe_id = new_request_id()
    publish(user_a, EXCHANGE, 'notifications.info',
            probe_notification(user_a.node_id, probe_id))
    [probe] = bus.wait_for(PROBE, request_id=probe_id)
    assert probe['node_id'] == user_a.node_id

    # A cast smuggled into B's queue by a route the broker cannot close
    # (see the documentation) is refused by B itself: no token, no effect.
    smuggled = new_request_id()
    try:
        smuggle(user_a, queue_b, finalize_cast(
            smuggled, rescue_password='x' * 16))
    except amqp_exc.AccessRefused:
        pass  # a broker that closes this route too: all the better
    else:
        [error] = bus.wait_for(ERROR, request_id=smuggled)
        assert error['node_id'] == user_b.node_id
        assert error['error']['code'] == 'unauthorized'
        assert os.listdir(os.path.join(worker_b.state_dir, 'journal')) == []

    # Nothing of the refused casts ever reached B, which still serves.
    assert bus.matching(request_id=stolen) == []
    request_id = new_request_id()
    bus.client(user_b.node_id).cast(
        {'request_id': request_id}, 'finalize_rescue',
        rescue_password='least-privilege-%s' % uuid.uuid4(),
        agent_token=worker_b.token)
    [end] = bus.wait_for(END, request_id=request_id)
    assert end['node_id'] == user_b.node_id and end['error'] is None


def test_calls_need_the_default_exchange(bus, node_users, node_worker):
    """A node user cannot answer an RPC call (replies go through the
    default exchange); the worker shrugs and keeps serving casts. With
    ``--allow-replies`` it answers."""
    strict = node_worker(node_users(new_node_id('strict')))
    with pytest.raises(oslo_messaging.MessagingTimeout):
        bus.client(strict.node_id, timeout=5).call(
            {}, 'get_status', agent_token=strict.token)
    request_id = new_request_id()
    bus.client(strict.node_id).cast(
        {'request_id': request_id}, 'finalize_rescue',
        rescue_password='least-privilege-%s' % uuid.uuid4(),
        agent_token=strict.token)
    bus.wait_for(END, request_id=request_id)
    assert strict.proc.poll() is None
    assert "ACCESS_REFUSED - access to exchange 'amq.default'" in \
        strict.logs()

    replying = node_worker(node_users(new_node_id('calls'),
                                      '--allow-replies'))
    status = bus.client(replying.node_id, timeout=30).call(
        {}, 'get_status', agent_token=replying.token)
    assert status['node_id'] == replying.node_id
    assert status['state'] == 'waiting'


def test_add_rotates_and_remove_revokes(broker, node_users, tmp_path):
    user = node_users(new_node_id('revoke'))
    with user.connection() as conn:
        conn.connect()

    # add again with a new password: the old one stops working.
    new_file = str(tmp_path / 'rotated')
    run_tool('add', user.node_id, '--vhost', broker.vhost,
             '--rabbitmqctl', broker.rabbitmqctl,
             '--generate-password', new_file, env=broker.env)
    with open(new_file) as f:
        rotated = f.read().strip()
    with broker.connection(user.user, user.password) as conn:
        assert 'Login was refused' in assert_refused(conn.connect)
    assert user.user in broker.ctl('list_users', '--silent')

    # remove: no login, and a connection that was open is closed.
    live = broker.connection(user.user, rotated)
    live.connect()
    closed = None
    try:
        run_tool('remove', user.node_id, '--vhost', broker.vhost,
                 '--rabbitmqctl', broker.rabbitmqctl, env=broker.env)
        deadline = time.monotonic() + 30
        while closed is None and time.monotonic() < deadline:
            try:
                live.drain_events(timeout=1)
            except TimeoutError:  # nothing yet (socket.timeout)
                continue
            except live.connection_errors + live.channel_errors as exc:
                closed = exc
    finally:
        live.release()
    assert closed is not None, 'the open connection survived the removal'
    with broker.connection(user.user, rotated) as conn:
        assert 'Login was refused' in assert_refused(conn.connect)
    assert user.user not in broker.ctl('list_users', '--silent')
    # remove is idempotent: the fixture removes the user once more.


# -- queues nobody consumes ---------------------------------------------------

def admin_credentials(broker):
    """The user and password of the broker URL the tests were given."""
    _, hosts, _ = split_url(broker.url)
    user, _, password = hosts[0].rpartition('@')[0].partition(':')
    return urllib.parse.unquote(user), urllib.parse.unquote(password)


class QueueDeletions:
    """The broker's ``queue.deleted`` events (its event exchange plugin,
    enabled here), so a test waits for a queue's expiry instead of polling
    the queue list."""

    def __init__(self, broker):
        broker.plugins('enable', 'rabbitmq_event_exchange')
        self.deleted = set()
        self.conn = broker.connection(*admin_credentials(broker))
        self.conn.connect()
        channel = self.conn.channel()
        queue, _, _ = channel.queue_declare('', exclusive=True)
        channel.queue_bind(queue, 'amq.rabbitmq.event', 'queue.deleted')
        channel.basic_consume(queue, callback=self._record, no_ack=True)

    def _record(self, message):
        headers = message.properties.get('application_headers') or {}
        self.deleted.add((headers.get('vhost'), headers.get('name')))

    def wait(self, vhost, names, timeout=60.0):
        wanted = {(vhost, name) for name in names}
        deadline = time.monotonic() + timeout
        while not wanted <= self.deleted:
            left = deadline - time.monotonic()
            try:
                if left <= 0:
                    raise TimeoutError()
                self.conn.drain_events(timeout=left)
            except TimeoutError:
                raise AssertionError('not deleted after %.0f s: %s' % (
                    timeout, ', '.join(sorted(
                        name for _, name in wanted - self.deleted)))
                    ) from None

    def close(self):
        self.conn.release()


@pytest.fixture
def scratch_vhost(broker):
    """A virtual host of its own, so that a short expiry touches no other
    test's queues; its URL."""
    vhost = 'expiry-%s' % uuid.uuid4().hex[:8]
    parsed, _, _ = split_url(broker.url)
    user, _ = admin_credentials(broker)
    broker.ctl('add_vhost', vhost)
    broker.ctl('set_permissions', '-p', vhost, user, '.*', '.*', '.*')
    yield vhost, urllib.parse.urlunsplit(
        parsed._replace(path='/' + urllib.parse.quote(vhost, safe='')))
    broker.ctl('delete_vhost', vhost)


def test_expiry_policy_drops_a_rescued_node_s_queue_and_a_waiter_s(
        broker, scratch_vhost, tmp_path, secrets_used):
    # Without the policy a locked-down node's queue lives on: casts pile
    # up there, each with a password hash, and the client can never say
    # that no worker listens (doc/source/reliability.rst, fault 8).
    vhost, url = scratch_vhost
    deletions = QueueDeletions(broker)
    run_tool('expire-queues', '--vhost', vhost, '--after', '1',
             '--rabbitmqctl', broker.rabbitmqctl, env=broker.env)
    assert EXPIRY_POLICY in broker.ctl('list_policies', '-p', vhost)
    conf = fault_broker.messaging_conf(url)
    transport = rpc.get_rpc_transport(conf)
    client = rw_client.RescueWorkerClient(transport, hash_rounds=5000)
    waiter = rw_client.CompletionWaiter(
        rpc.get_notification_transport(conf)).start()
    bus = Bus(url)
    worker = WorkerProcess(tmp_path / 'w', url, steps='password')
    password = 'expiring-%s' % uuid.uuid4()
    secrets_used.append(password)
    try:
        worker.start()
        wait_ready(bus, worker)
        request_id = client.finalize_rescue(
            {}, worker.node_id, password, agent_token=worker.token)
        [outcome] = waiter.wait([request_id], timeout=120,
                                client=client).values()
        assert outcome.succeeded, outcome
        assert worker.wait(timeout=60) == 0  # locked down
        waiter.stop()

        deletions.wait(vhost, ['%s.%s' % (TOPIC, worker.node_id),
                               waiter.pool])
        with pytest.raises(rw_client.WorkerNotListening):
            client.finalize_rescue({}, worker.node_id, password,
                                   agent_token=worker.token)
    finally:
        worker.kill()
        bus.close()
        waiter.stop()
        transport.cleanup()
        deletions.close()
    assert password not in worker.logs()
