"""Bad input at volume: hypothesis over ``finalize_rescue``'s arguments and
context, against one real worker on ``fake://`` for the whole module.

Every example is cast the way any publisher on the broker could send it (the
message goes straight to the transport, so argument names a Python client
cannot pass, such as ``ctxt`` or ``self``, are possible too). The property:

- exactly one outcome notification per cast; ``error`` for bad input, with
  the code an independent reading of the contract expects (always one of
  the stable codes) and a message that names neither the password, the hash
  nor the token;
- a refused request never gets a ``start`` and changes nothing in
  ``state_dir`` or ``root_dir``;
- none of the secrets reaches any log record, at any level;
- the worker stays up and serves a valid request right after.

``RESCUE_WORKER_HYPOTHESIS_EXAMPLES`` sets the number of examples (default
120; the context property runs half as many) for a longer hunt.
"""

import json
import logging
import os
import threading
import uuid

import oslo_messaging
import pytest
from hypothesis import HealthCheck
from hypothesis import event
from hypothesis import example
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from passlib.hash import bcrypt
from passlib.hash import md5_crypt
from passlib.hash import sha256_crypt
from passlib.hash import sha512_crypt

from rescue_worker import errors
from rescue_worker import notify
from rescue_worker.fixture import NotificationCapture
from rescue_worker.fixture import RescueWorkerFixture
from tests.unit import helpers

MIB = 1024 * 1024
TIMEOUT = 30.0
ARGS = ('rescue_password', 'hashed', 'agent_token')

SHA512 = sha512_crypt.using(rounds=5000).hash('hostile-sha512')
SHA256 = sha256_crypt.using(rounds=5000).hash('hostile-sha256')
BCRYPT = bcrypt.using(rounds=4).hash('hostile-bcrypt')
GOOD_HASHES = frozenset({SHA512, SHA256, BCRYPT})
WEAK_HASHES = (md5_crypt.hash('hostile-md5'), 'abJnggxhB/yWI')
# The probe: a valid, cheap request (a pre-hashed password, nothing to
# hash) sent after every example to show the worker still serves.
PROBE_HASH = sha512_crypt.using(rounds=1000).hash('hostile-probe')

SETTINGS = settings(
    max_examples=int(os.environ.get('RESCUE_WORKER_HYPOTHESIS_EXAMPLES',
                                    '120')),
    deadline=None, derandomize=False, database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture,
                           HealthCheck.too_slow,
                           HealthCheck.data_too_large])


class Marker:
    """A value resolved at run time (the worker's token is not known when
    the strategies are built), or an argument left out."""

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return '<%s>' % self.name


MISSING = Marker('missing')
TOKEN = Marker('token')
FRESH_ID = Marker('fresh request_id')


def near_miss(name, change):
    marker = Marker('token, %s' % name)
    marker.change = change
    return marker


def _flip(char):
    return 'A' if char != 'A' else 'B'


NEAR_MISSES = (
    near_miss('last character changed', lambda t: t[:-1] + _flip(t[-1])),
    near_miss('first character changed', lambda t: _flip(t[0]) + t[1:]),
    near_miss('truncated by one', lambda t: t[:-1]),
    near_miss('one character more', lambda t: t + 'x'),
    near_miss('upper case', lambda t: t.upper()),
    near_miss('with a newline', lambda t: t + '\n'),
    near_miss('short prefix', lambda t: t[:8]),
    near_miss('repeated', lambda t: t * 2),
    near_miss('as bytes-like list', lambda t: [ord(c) for c in t]),
)

# -- strategies --------------------------------------------------------------

CONTROL = st.sampled_from('\x00\x01\x07\x08\t\n\x0b\x0c\r\x1b\x7f\x85'
                          '\u2028\u2029\u202e\u200b\ufeff\ufffe')
SURROGATE = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF,
                          categories=['Cs'])
HOSTILE_CHAR = st.one_of(st.characters(), CONTROL, SURROGATE,
                         st.sampled_from(':$/\\\'"%{}'))
HOSTILE_TEXT = st.text(alphabet=HOSTILE_CHAR, max_size=48)

JSON_SCALAR = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-2 ** 70, max_value=2 ** 70),
    st.floats(allow_nan=False, allow_infinity=False),
    HOSTILE_TEXT)
JSON = st.recursive(
    JSON_SCALAR,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=8)

HASH_PREFIXES = ('$6$', '$5$', '$2b$04$', '$2y$', '$1$', '$y$', '$argon2',
                 '$6$rounds=1000$', '$6$rounds=99999999999$', '$$', '$')
# Hypothesis favours the first branch of a one_of (and the first item of a
# sampled_from), so the most telling values come first and "missing" last.
HASH_LIKE = st.one_of(
    st.tuples(st.sampled_from(HASH_PREFIXES + tuple(GOOD_HASHES)),
              HOSTILE_TEXT).map(''.join),
    st.tuples(st.sampled_from(sorted(GOOD_HASHES)),
              st.sampled_from([':', '\n', '\r', '\x00', '\t', ' ', '\u00e9',
                               ':0:99999:7:::\nroot::0:0'])).map(''.join),
    st.sampled_from(list(WEAK_HASHES)),
    st.sampled_from(sorted(GOOD_HASHES)).map(lambda h: h[:-1]),
    st.sampled_from(sorted(GOOD_HASHES)).map(lambda h: h.rsplit('$', 1)[0]),
    HOSTILE_TEXT,
    st.sampled_from(sorted(GOOD_HASHES)))
BAD_PLAIN = st.one_of(
    st.tuples(HOSTILE_TEXT, st.sampled_from(['\x00', '\ud800', '\udfff']),
              HOSTILE_TEXT).map(''.join),
    st.just(''),
    st.integers(4097, 8192).map(lambda n: 'x' * n),
    HOSTILE_TEXT)  # mostly valid: then it is hashed and run
PASSWORD = st.one_of(
    HASH_LIKE,
    BAD_PLAIN,
    JSON,
    st.just(MISSING))
HASHED = st.one_of(st.booleans(), st.booleans(), JSON, st.just(MISSING))
HOSTILE_HASHED = st.one_of(
    st.sampled_from([0, 1, 'true', 'True', '', [True], {'hashed': True}]),
    JSON, st.just(MISSING))
AGENT_TOKEN = st.one_of(st.just(TOKEN), st.just(TOKEN), st.just(TOKEN),
                        st.sampled_from(NEAR_MISSES), JSON,
                        st.just(MISSING))
HOSTILE_TOKEN = st.one_of(st.sampled_from(NEAR_MISSES), JSON,
                          st.just(MISSING))
EXTRA_KEY = st.one_of(
    st.sampled_from(['ctxt', 'self', 'request_id', 'kwargs', 'unknown',
                     'Rescue_password', 'rescue_password ', 'hashed\x00',
                     'agent-token', '__class__', '_run', 'method']),
    st.text(max_size=16))
HOSTILE_EXTRAS = st.dictionaries(EXTRA_KEY.filter(lambda k: k not in ARGS),
                                 JSON, min_size=1, max_size=3)
EXTRAS = st.one_of(st.just({}), st.just({}), HOSTILE_EXTRAS)

PRINTABLE_ASCII = st.characters(min_codepoint=0x20, max_codepoint=0x7e)
GOOD_REQUEST_ID = st.one_of(
    st.just(FRESH_ID), st.just(FRESH_ID),
    # Valid but odd: printable ASCII; a uuid is added so that each is new.
    st.text(alphabet=PRINTABLE_ASCII, max_size=200).map(
        lambda s: s + '/' + str(uuid.uuid4())),
    st.none(), st.just(MISSING))
# Mostly invalid; a short printable one may be valid, and may repeat the id
# of an earlier valid request (which is then replayed).
HOSTILE_REQUEST_ID = st.one_of(
    st.sampled_from(['', 'x' * 256, 'req-\n', 'req-\x00', 'req-\t',
                     'req-\u00e9t\u00e9', 'req-\x7f']),
    HOSTILE_TEXT, JSON)
REQUEST_ID = st.one_of(GOOD_REQUEST_ID, HOSTILE_REQUEST_ID)
CONTEXT_JUNK = st.dictionaries(
    st.text(max_size=12).filter(lambda k: k != 'request_id'), JSON,
    max_size=4)
# The password aspect has the most checks behind it, so the most weight.
ASPECTS = ('password', 'password', 'password', 'password', 'hashed', 'token',
           'token', 'extras', 'request_id', 'missing')


@st.composite
def requests(draw):
    """A request with one or two hostile aspects and the rest right, so
    that every check of the endpoint is reached; one in five is hostile
    all over."""
    ctxt = draw(CONTEXT_JUNK)
    if draw(st.sampled_from(['focused'] * 4 + ['wild'])) == 'wild':
        args = {'rescue_password': draw(PASSWORD), 'hashed': draw(HASHED),
                'agent_token': draw(AGENT_TOKEN)}
        args.update(draw(EXTRAS))
        request_id = draw(REQUEST_ID)
    else:
        hostile = draw(st.lists(st.sampled_from(ASPECTS), min_size=1,
                                max_size=2))
        # Pre-hashed: a valid request then costs no hashing.
        password = draw(st.sampled_from(sorted(GOOD_HASHES)))
        hashed = True
        if 'password' in hostile:
            kind = draw(st.sampled_from(['hash', 'plain', 'any']))
            if kind == 'hash':
                password = draw(HASH_LIKE)
            elif kind == 'plain':
                password, hashed = draw(BAD_PLAIN), False
            else:
                password, hashed = draw(PASSWORD), draw(st.booleans())
        if 'hashed' in hostile:
            hashed = draw(HOSTILE_HASHED)
        args = {'rescue_password': password, 'hashed': hashed,
                'agent_token': draw(HOSTILE_TOKEN) if 'token' in hostile
                else TOKEN}
        if 'extras' in hostile:
            args.update(draw(HOSTILE_EXTRAS))
        if 'missing' in hostile:
            for name in draw(st.sets(st.sampled_from(ARGS), min_size=1)):
                del args[name]
        request_id = draw(HOSTILE_REQUEST_ID if 'request_id' in hostile
                          else GOOD_REQUEST_ID)
    args = {k: v for k, v in args.items() if v is not MISSING}
    if request_id is not MISSING:
        ctxt['request_id'] = request_id
    return ctxt, args


# -- the oracle: the contract, read independently of the endpoint -----------

def _valid_request_id(value):
    return (isinstance(value, str) and 0 < len(value) <= 255
            and value.isascii() and value.isprintable())


def expected_code(ctxt, args, token):
    """The error code the contract calls for, or None for a valid request."""
    request_id = ctxt.get('request_id')
    if request_id is not None and not _valid_request_id(request_id):
        return errors.INVALID_REQUEST
    if args.get('agent_token') != token:
        return errors.UNAUTHORIZED
    if set(args) - set(ARGS):
        return errors.INVALID_REQUEST
    password = args.get('rescue_password', MISSING)
    hashed = args.get('hashed', False)
    if not isinstance(password, str) or not isinstance(hashed, bool):
        return errors.INVALID_REQUEST
    if hashed:
        return None if password in GOOD_HASHES else errors.INVALID_HASH
    if (not 1 <= len(password) <= 4096 or '\0' in password
            or any('\ud800' <= c <= '\udfff' for c in password)):
        return errors.INVALID_PASSWORD
    return None


# -- the worker and what it publishes and logs -------------------------------

class LogRecords(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines = []
        self._lock = threading.Lock()

    def emit(self, record):
        try:
            line = self.format(record)
        except Exception:  # a record that cannot format is still a record
            line = repr((record.msg, record.args))
        with self._lock:
            self.lines.append(line)

    def text(self):
        with self._lock:
            return '\n'.join(self.lines)

    def clear(self):
        with self._lock:
            self.lines.clear()


@pytest.fixture(scope='module')
def node():
    """One worker for the whole module (starting one takes about 1 s)."""
    handler = LogRecords()
    handler.setFormatter(logging.Formatter(
        '%(levelname)s %(name)s %(message)s'))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        # The cap is the cost a valid plaintext example is hashed at:
        # passlib's default (656000 rounds) would spend a quarter of a
        # second on each. GOOD_HASHES stay within it.
        with RescueWorkerFixture(steps='password', exit_after_rescue=False,
                                 max_sha_crypt_rounds=5000) as worker, \
                NotificationCapture(worker.notification_transport) as events:
            events.wait_for(notify.EVENT_READY, node_id=worker.node_id)
            yield Node(worker, events, handler)
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


class Node:
    def __init__(self, worker, events, logs):
        self.worker, self.events, self.logs = worker, events, logs
        self.target = oslo_messaging.Target(
            topic=worker.conf.rescue_worker.topic, server=worker.node_id,
            version='1.0')

    def outcomes(self):
        return self.events.matching(notify.EVENT_ERROR,
                                    node_id=self.worker.node_id) + \
            self.events.matching(notify.EVENT_END,
                                 node_id=self.worker.node_id)

    def count_outcomes(self):
        return len(self.outcomes())

    def raw_cast(self, ctxt, args, method='finalize_rescue'):
        """Cast what any publisher could: the message as it goes on the
        wire, with any argument names at all."""
        self.worker.transport._send(
            self.target, ctxt, {'method': method, 'args': args,
                                'version': '1.0'}, wait_for_reply=False)

    def outcome_after(self, before):
        """The one outcome that follows ``before`` outcomes."""
        self.events.wait_until(lambda: self.count_outcomes() > before,
                               timeout=TIMEOUT, what='an outcome')
        ordered = sorted(
            (n for n in self.events.notifications
             if n.event_type in (notify.EVENT_END, notify.EVENT_ERROR)
             and n.data.get('node_id') == self.worker.node_id),
            key=self.events.notifications.index)
        return ordered[before]

    def probe(self):
        """A valid request is served: its ``end`` arrives.

        A call, not a cast: it returns once the endpoint has, so by then
        the journal is complete (the outcome is published before the
        journal notes that it was) for the probe and for any request that
        ran before it (one request at a time).
        """
        request_id = 'req-%s' % uuid.uuid4()
        data = self.worker.transport._send(
            self.target, {'request_id': request_id},
            {'method': 'finalize_rescue', 'version': '1.0',
             'args': {'rescue_password': PROBE_HASH, 'hashed': True,
                      'agent_token': self.worker.token}},
            wait_for_reply=True, timeout=TIMEOUT)
        assert data['error'] is None, data['error']
        end = self.events.wait_for_outcome(request_id, timeout=TIMEOUT)
        assert end.event_type == notify.EVENT_END
        assert end.data == data
        assert self.worker.worker.ready.is_set()
        assert not self.worker.worker.stopped.is_set()


def resolve(value, token):
    if value is TOKEN:
        return token
    if isinstance(value, Marker) and hasattr(value, 'change'):
        return value.change(token)
    return value


def secrets_of(args, ctxt, token):
    """The strings that must never be published or logged.

    Short values are left out (a one-letter password is in every
    sentence), and so is anything the request itself quotes back as a
    non-secret (an argument name, the request id).
    """
    quoted = [str(k) for k in list(args) + list(ctxt)]
    request_id = ctxt.get('request_id')
    if isinstance(request_id, str):
        quoted.append(request_id)
    values = [token, PROBE_HASH]
    for name in ARGS:
        value = args.get(name)
        if isinstance(value, str):
            values.append(value)
            values.extend(part for part in value.split('$') if part)
    return {v for v in values
            if len(v) >= 8 and not any(v in q for q in quoted)}


def check_one(node, ctxt, args):
    """Cast one example and check the whole property for it."""
    worker, events = node.worker, node.events
    token = worker.token
    args = {k: resolve(v, token) for k, v in args.items()}
    ctxt = dict(ctxt)
    if ctxt.get('request_id') is FRESH_ID:
        ctxt['request_id'] = 'req-%s' % uuid.uuid4()
    code = expected_code(ctxt, args, token)
    # A valid request reusing the id of one that ended is not run again:
    # its recorded outcome is published again, and nothing changes.
    earlier = worker.worker.journal.get(ctxt['request_id']) \
        if code is None and ctxt.get('request_id') is not None else None
    node.logs.clear()
    before_disk = helpers.snapshot(worker.state_dir, worker.root_dir)
    before = node.count_outcomes()

    node.raw_cast(ctxt, args)
    outcome = node.outcome_after(before)

    data = outcome.data
    request_id = data['request_id']
    if _valid_request_id(ctxt.get('request_id')):
        assert request_id == ctxt['request_id']
    else:
        assert request_id.startswith('req-')
        uuid.UUID(request_id[4:])
    starts = events.matching(notify.EVENT_START, request_id=request_id)
    if earlier is not None:
        assert earlier.ended
        assert data == dict(earlier.outcome, replayed=True)
        assert len(starts) == 1  # the earlier run's, none for the replay
        assert helpers.snapshot(worker.state_dir, worker.root_dir) == \
            before_disk
    elif code is None:
        assert outcome.event_type == notify.EVENT_END, data['error']
        assert data['error'] is None
        assert len(starts) == 1
        assert worker.worker.journal.get(request_id).ended
    else:
        assert outcome.event_type == notify.EVENT_ERROR
        assert outcome.priority == 'ERROR'
        assert data['error']['code'] in errors.CODES
        assert data['error']['code'] == code, data['error']
        assert isinstance(data['error']['message'], str)
        assert data['error']['message']
        assert data['steps'] == []
        assert data['replayed'] is False
        assert starts == []
        assert helpers.snapshot(worker.state_dir, worker.root_dir) == \
            before_disk

    published = json.dumps([outcome.payload, outcome.ctxt],
                           ensure_ascii=False)
    logged = node.logs.text()
    for secret in secrets_of(args, ctxt, token):
        assert secret not in published, 'a secret was published'
        assert secret not in logged, 'a secret was logged'
    # Exactly one outcome for this cast: the probe's end comes next.
    node.probe()
    assert node.count_outcomes() == before + 2
    return 'replayed' if earlier is not None else code or 'valid'


# -- the properties ----------------------------------------------------------

@SETTINGS
@given(request=requests())
@example(request=({}, {}))
@example(request=({'request_id': FRESH_ID}, {'ctxt': {}, 'agent_token':
                                              TOKEN}))
@example(request=({'request_id': FRESH_ID},
                  {'self': None, 'rescue_password': 'x' * 12,
                   'agent_token': TOKEN}))
@example(request=({'request_id': FRESH_ID},
                  {'rescue_password': 'valid password', 'hashed': False,
                   'agent_token': TOKEN}))
@example(request=({'request_id': FRESH_ID},
                  {'rescue_password': SHA512, 'hashed': True,
                   'agent_token': NEAR_MISSES[0]}))
def test_any_request_gets_exactly_one_fitting_outcome(node, request):
    ctxt, args = request
    event(check_one(node, ctxt, args))


@settings(SETTINGS, max_examples=max(1, SETTINGS.max_examples // 2))
@given(ctxt=st.dictionaries(st.text(max_size=12), JSON, max_size=6),
       password=st.sampled_from([SHA512, BCRYPT, '$6$bad', 1234]))
def test_any_context_is_answered(node, ctxt, password):
    """The context, whatever its keys and values, never stops an answer."""
    hashed = isinstance(password, str) and password.startswith('$')
    event(check_one(node, ctxt, {'rescue_password': password,
                                 'hashed': hashed, 'agent_token': TOKEN}))


# -- a few fixed huge cases (1 MiB), too big to generate ---------------------



def nested(depth):
    value = []
    for _ in range(depth):
        value = [value]
    return value


HUGE = 'p' * MIB
HUGE_UNICODE = '\u00e9\U0001f600' * (MIB // 2)
HUGE_CASES = {
    'password 1 MiB': ({}, {'rescue_password': HUGE}),
    'password 1 MiB of non-ASCII': ({}, {'rescue_password': HUGE_UNICODE}),
    'password 4097 characters': ({}, {'rescue_password': 'y' * 4097}),
    'hash 1 MiB': ({}, {'rescue_password': SHA512 + 'a' * MIB,
                        'hashed': True}),
    'hash with 1 MiB of control characters': (
        {}, {'rescue_password': '$6$' + '\x01\n:' * (MIB // 3),
             'hashed': True}),
    'token 1 MiB': ({}, {'rescue_password': 'valid-password',
                         'agent_token': 't' * MIB}),
    'token 1 MiB of surrogates': ({}, {'rescue_password': 'valid-password',
                                       'agent_token': '\ud800' * MIB}),
    'request_id 1 MiB': ({'request_id': 'r' * MIB},
                         {'rescue_password': 'valid-password'}),
    'context 1 MiB of junk': ({'junk': ['j' * 1024] * 1024},
                              {'rescue_password': SHA512, 'hashed': True}),
    'extra argument 1 MiB': ({}, {'rescue_password': 'valid-password',
                                  'padding': 'z' * MIB}),
    'extra argument name 64 KiB': ({}, {'rescue_password': 'valid-password',
                                        'k' * 65536: 1}),
    'hashed is 1 MiB': ({}, {'rescue_password': 'valid-password',
                             'hashed': 'h' * MIB}),
    'password nested 1 MiB': ({}, {'rescue_password': [['n' * 1024] * 1024]}),
    'password nested 200 deep': ({}, {'rescue_password': nested(200)}),
}


@pytest.mark.parametrize('ctxt,args', HUGE_CASES.values(),
                         ids=list(HUGE_CASES))
def test_huge_input_is_refused_and_changes_nothing(node, ctxt, args):
    args = dict(args)
    args.setdefault('agent_token', TOKEN)
    ctxt = dict(ctxt)
    ctxt.setdefault('request_id', FRESH_ID)
    check_one(node, ctxt, args)
