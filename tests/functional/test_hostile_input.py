"""Bad input on the wire: messages that are not what oslo.messaging sends,
published straight to a real ``rescue-worker`` process's queue on a real
RabbitMQ, plus unknown, private and future-version methods sent by a plain
oslo.messaging client.

Whatever arrives, the worker answers what it can (an ``error``
notification, or a dispatcher refusal to a call), stays up, writes nothing
to its state directory or its root, and serves a valid request right after.
For a message no one can answer (a cast the dispatcher refuses, or bytes
that are no message at all) that last part is the whole proof: the process
is alive, the next valid request ends, and nothing is on disk but that
request's journal record.
"""

import json
import os
import uuid

import kombu
import oslo_messaging
import pytest
from oslo_config import cfg
from passlib.hash import sha512_crypt

from tests.functional.conftest import EXCHANGE
from tests.functional.conftest import TOPIC
from tests.functional.conftest import transport_url
from tests.unit import helpers

START = 'rescue_worker.finalize_rescue.start'
END = 'rescue_worker.finalize_rescue.end'
ERROR = 'rescue_worker.finalize_rescue.error'

MIB = 1024 * 1024


def new_request_id():
    return 'req-%s' % uuid.uuid4()


def queue_name(worker):
    # oslo.messaging's rabbit driver: the server's queue is
    # "<topic>.<server>", bound on the control exchange with that key.
    return '%s.%s' % (TOPIC, worker.node_id)


@pytest.fixture
def amqp():
    """A plain AMQP connection to the test broker (kombu, no
    oslo.messaging), as any publisher on a shared broker has."""
    url = oslo_messaging.TransportURL.parse(cfg.CONF, transport_url())
    host = url.hosts[0]
    connection = kombu.Connection(
        hostname=host.hostname, port=host.port, userid=host.username,
        password=host.password, virtual_host=url.virtual_host or '/',
        transport='pyamqp', connect_timeout=10)
    connection.ensure_connection(max_retries=3)
    yield connection
    connection.release()


@pytest.fixture
def worker(started_worker):
    return started_worker(exit_after_rescue=False)


class Disk:
    """What the worker has on disk, to show that a message changed
    nothing."""

    def __init__(self, worker):
        self.worker = worker
        self.journal = os.path.join(worker.state_dir, 'journal')
        self.before = helpers.snapshot(worker.state_dir, worker.root_dir)
        self.names = set(os.listdir(self.journal))

    def assert_only(self, *request_ids, case=''):
        """Nothing changed but for new journal records of ``request_ids``
        (the probes'); every file that was there is as it was."""
        new = {}
        for name in set(os.listdir(self.journal)) - self.names:
            with open(os.path.join(self.journal, name)) as f:
                new[name] = json.load(f)['request_id']
        assert sorted(new.values()) == sorted(request_ids), case
        after = helpers.snapshot(self.worker.state_dir, self.worker.root_dir)
        for name in new:
            del after[os.path.join(self.journal, name)]
        assert after == self.before, case


def publish(amqp, worker, body, content_type='application/json',
            content_encoding='utf-8', **headers):
    """Publish raw bytes where a cast to the worker goes."""
    channel = amqp.default_channel
    # The queue is there and the worker consumes it: the name is right.
    _, _, consumers = channel.queue_declare(queue=queue_name(worker),
                                            passive=True)
    assert consumers >= 1
    producer = kombu.Producer(channel)
    producer.publish(body, exchange=EXCHANGE,
                     routing_key=queue_name(worker),
                     content_type=content_type,
                     content_encoding=content_encoding,
                     headers=headers or None, retry=True)


def envelope(message):
    """What oslo.messaging's rabbit driver publishes for ``message``."""
    return json.dumps({'oslo.version': '2.0',
                       'oslo.message': json.dumps(message)}).encode()


def rpc_message(method='finalize_rescue', args=None, ctxt=None,
                **fields):
    message = {'method': method, 'args': {} if args is None else args,
               'version': '1.0', '_unique_id': uuid.uuid4().hex}
    message.update(('_context_%s' % k, v) for k, v in (ctxt or {}).items())
    message.update(fields)
    return message


def serve_valid_request(bus, worker, secrets_used):
    """The worker is up and serves a valid request; returns its id."""
    # Pre-hashed (cheap rounds): the probe costs no hashing.
    password = sha512_crypt.using(rounds=1000).hash(
        'hostile-probe-%s' % uuid.uuid4())
    secrets_used.extend([password, password.rsplit('$', 1)[1]])
    request_id = new_request_id()
    # A call, not a cast: its reply comes once the endpoint has returned,
    # so the journal is complete by then (the end notification goes out
    # before the journal notes that it did).
    data = bus.client(worker.node_id).call({'request_id': request_id},
                                           'finalize_rescue',
                                           rescue_password=password,
                                           hashed=True,
                                           agent_token=worker.token)
    assert data['error'] is None
    [end] = bus.wait_for(END, request_id=request_id)
    assert end == data
    assert worker.proc.poll() is None, 'the worker exited'
    return request_id


# -- bytes and JSON that are no oslo.messaging message -----------------------

# Passwords inside the raw cases: no log line may quote them either.
RAW_SECRETS = ['no-method-password', 'future-password']
RAW_CASES = {
    'garbage bytes': (b'\x00\xff\xfe\x80garbage\x01\x02' * 8,
                      'application/octet-stream', 'binary'),
    'garbage labelled JSON': (b'\xff\xfe\x80\x81 not utf-8 \x00',
                              'application/json', 'utf-8'),
    'empty body': (b'', 'application/json', 'utf-8'),
    'invalid JSON': (b'{"oslo.version": "2.0", "oslo.message": ',
                     'application/json', 'utf-8'),
    'JSON list': (b'[1, 2, 3]', 'application/json', 'utf-8'),
    'JSON string': (b'"finalize_rescue"', 'application/json', 'utf-8'),
    'JSON null': (b'null', 'application/json', 'utf-8'),
    'JSON number': (b'1e999', 'application/json', 'utf-8'),
    'JSON object that is no message': (b'{"hello": "world"}',
                                       'application/json', 'utf-8'),
    'deeply nested JSON': (b'[' * 100000 + b']' * 100000,
                           'application/json', 'utf-8'),
    '1 MiB of garbage': (bytes(range(256)) * (MIB // 256),
                         'application/octet-stream', 'binary'),
    'unknown content type': (b'\x80\x04\x95', 'application/x-python-'
                             'serialize', 'binary'),
    'YAML': (b'!!python/object/apply:os.system ["true"]',
             'application/x-yaml', 'utf-8'),
    'envelope, message not JSON': (
        json.dumps({'oslo.version': '2.0',
                    'oslo.message': 'not json'}).encode(),
        'application/json', 'utf-8'),
    'envelope, message a list': (
        json.dumps({'oslo.version': '2.0',
                    'oslo.message': '[1, 2]'}).encode(),
        'application/json', 'utf-8'),
    'envelope, message not a string': (
        json.dumps({'oslo.version': '2.0',
                    'oslo.message': {'method': 'get_status'}}).encode(),
        'application/json', 'utf-8'),
    'envelope of an unknown version': (
        json.dumps({'oslo.version': '9.0',
                    'oslo.message': '{}'}).encode(),
        'application/json', 'utf-8'),
    'envelope with no method': (
        envelope(rpc_message(method=None, args={
            'rescue_password': 'no-method-password'})),
        'application/json', 'utf-8'),
    'unknown method': (envelope(rpc_message(method='reboot_node')),
                       'application/json', 'utf-8'),
    'private method': (envelope(rpc_message(method='_run', args={
        'request': None, 'received': 0})),
        'application/json', 'utf-8'),
    'dunder method': (envelope(rpc_message(method='__init__')),
                      'application/json', 'utf-8'),
    'method not a string': (envelope(rpc_message(method=['finalize'])),
                            'application/json', 'utf-8'),
    'args not an object': (envelope(rpc_message(args=[1, 2])),
                           'application/json', 'utf-8'),
    'version 2.0 in the message': (
        envelope(rpc_message(version='2.0', args={
            'rescue_password': 'future-password'})),
        'application/json', 'utf-8'),
    'version not a string': (envelope(rpc_message(version=2)),
                             'application/json', 'utf-8'),
    'namespace of another API': (
        envelope(rpc_message(namespace='baremetal')),
        'application/json', 'utf-8'),
}


def test_messages_that_are_no_requests_change_nothing(bus, worker, amqp,
                                                     secrets_used):
    """One worker takes every case in turn: after each, a valid request is
    served and nothing but its journal record is new."""
    secrets_used.extend(RAW_SECRETS)
    for case, (body, content_type, encoding) in RAW_CASES.items():
        disk = Disk(worker)

        publish(amqp, worker, body, content_type, encoding)

        probe = serve_valid_request(bus, worker, secrets_used)
        disk.assert_only(probe, case=case)
    # Nothing but the probes was started or answered.
    kinds = [e[1] for e in bus.events
             if e[1].startswith('rescue_worker.finalize_rescue')]
    assert kinds == [START, END] * len(RAW_CASES)


def test_many_bad_messages_in_a_row_leave_the_worker_serving(
        bus, worker, amqp, secrets_used):
    disk = Disk(worker)

    for _ in range(20):
        for body, content_type, encoding in RAW_CASES.values():
            if len(body) < 4096:
                publish(amqp, worker, body, content_type, encoding)

    probe = serve_valid_request(bus, worker, secrets_used)
    disk.assert_only(probe)
    assert not bus.matching(ERROR)


# -- well-formed messages with bad arguments: answered -----------------------

def answered(bus, worker, amqp, message):
    """Publish ``message``; return the one error it is answered with."""
    before = len(bus.matching(ERROR, node_id=worker.node_id))
    publish(amqp, worker, envelope(message))
    errors = bus.wait_for(ERROR, node_id=worker.node_id, count=before + 1)
    assert len(errors) == before + 1
    error = errors[-1]
    request_id = message.get('_context_request_id')
    if (isinstance(request_id, str) and len(request_id) <= 255
            and request_id.isascii() and request_id.isprintable()):
        assert error['request_id'] == request_id
    else:
        # Refused with a request_id of the worker's making.
        assert error['request_id'].startswith('req-')
    assert not bus.matching(START, request_id=error['request_id'])
    return error


ANSWERED = {
    # The dispatcher passes the context by position: an argument named
    # "ctxt" or "self" must still reach the endpoint and be refused there.
    'argument named ctxt': ({'ctxt': {}, 'rescue_password': 'ctxt-pw-1'},
                            {}, 'invalid_request'),
    'argument named self': ({'self': 1, 'rescue_password': 'self-pw-22'},
                            {}, 'invalid_request'),
    'unknown argument': ({'colour': 'red', 'rescue_password': 'col-pw-33'},
                         {}, 'invalid_request'),
    'password not a string': ({'rescue_password': {'plain': 'x'}}, {},
                              'invalid_request'),
    'password missing': ({}, {}, 'invalid_request'),
    'hashed not a boolean': ({'rescue_password': 'hashed-pw-4',
                              'hashed': 'yes'}, {}, 'invalid_request'),
    'password with NUL': ({'rescue_password': 'nul\x00pw-555'}, {},
                          'invalid_password'),
    'password with a lone surrogate': ({'rescue_password': 'sur\ud800pw-6'},
                                       {}, 'invalid_password'),
    'password of 1 MiB': ({'rescue_password': 'm' * MIB}, {},
                          'invalid_password'),
    'hash with a newline': ({'rescue_password': '$6$salt$x\nroot::0:0:::',
                             'hashed': True}, {}, 'invalid_hash'),
    'token missing': ({'rescue_password': 'tok-pw-777',
                       'agent_token': None}, {}, 'unauthorized'),
    'token of 1 MiB': ({'rescue_password': 'tok-pw-888',
                        'agent_token': 't' * MIB}, {}, 'unauthorized'),
    'request_id not a string': ({'rescue_password': 'rid-pw-999'},
                                {'request_id': ['req', 1]},
                                'invalid_request'),
    'request_id with control characters': ({'rescue_password': 'rid-pw-A'},
                                           {'request_id': 'req-\x1b[2J'},
                                           'invalid_request'),
    'request_id of 1 MiB': ({'rescue_password': 'rid-pw-BB'},
                            {'request_id': 'r' * MIB}, 'invalid_request'),
}


def test_bad_arguments_on_the_wire_are_answered_and_change_nothing(
        bus, worker, amqp, secrets_used):
    for case, (args, ctxt, code) in ANSWERED.items():
        password = args.get('rescue_password')
        if isinstance(password, str) and len(password) >= 8:
            secrets_used.append(password)
        args = dict(args)
        args.setdefault('agent_token', worker.token)
        ctxt = dict(ctxt)
        ctxt.setdefault('request_id', new_request_id())
        disk = Disk(worker)

        error = answered(bus, worker, amqp,
                         rpc_message(args=args, ctxt=ctxt))

        assert error['error']['code'] == code, case
        assert error['steps'] == [], case
        probe = serve_valid_request(bus, worker, secrets_used)
        disk.assert_only(probe, case=case)
    assert len(bus.matching(ERROR)) == len(ANSWERED)


# -- an oslo.messaging client asking for what the worker does not serve ------

def client(bus, worker, **target):
    target.setdefault('version', '1.0')
    return oslo_messaging.get_rpc_client(
        bus.transport, oslo_messaging.Target(
            topic=TOPIC, server=worker.node_id, exchange=EXCHANGE,
            **target), timeout=30)


def remote_name(exc):
    return getattr(exc, 'exc_type', None) or type(exc).__name__


REFUSALS = [
    # (what, target, method, the dispatcher's exception)
    ('version 2.0', {'version': '2.0'}, 'finalize_rescue',
     'UnsupportedVersion'),
    ('version 2.0', {'version': '2.0'}, 'get_status', 'UnsupportedVersion'),
    ('version 1.1', {'version': '1.1'}, 'finalize_rescue',
     'UnsupportedVersion'),
    ('another namespace', {'namespace': 'baremetal'}, 'get_status',
     'UnsupportedVersion'),
    ('unknown method', {}, 'reboot_node', 'NoSuchMethod'),
    ('private method', {}, '_run', 'NoSuchMethod'),
    ('private method', {}, '_parse', 'NoSuchMethod'),
    ('private attribute', {}, '_token_check', 'NoSuchMethod'),
    ('dunder method', {}, '__init__', 'NoSuchMethod'),
]


def test_what_the_worker_does_not_serve_is_refused_by_the_dispatcher(
        bus, worker, secrets_used):
    """A call is answered with the dispatcher's refusal; the same cast,
    which nothing can answer, does not run either."""
    for what, target, method, refusal in REFUSALS:
        case = '%s: %s' % (what, method)
        password = 'refused-%s' % uuid.uuid4()
        secrets_used.append(password)
        refused = client(bus, worker, **target)
        request_id = new_request_id()
        disk = Disk(worker)

        with pytest.raises((oslo_messaging.UnsupportedVersion,
                            oslo_messaging.NoSuchMethod,
                            oslo_messaging.RemoteError)) as raised:
            refused.call({'request_id': request_id}, method,
                         rescue_password=password, agent_token=worker.token)
        assert remote_name(raised.value) == refusal, case
        assert password not in str(raised.value), case
        assert worker.token not in str(raised.value), case
        refused.cast({'request_id': request_id}, method,
                     rescue_password=password, agent_token=worker.token)

        probe = serve_valid_request(bus, worker, secrets_used)
        disk.assert_only(probe, case=case)
        assert not bus.matching(request_id=request_id), case
