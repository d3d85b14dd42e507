"""Security of a real ``rescue-worker`` process on a real RabbitMQ:
who may cast, how the token file is guarded, that
no secret reaches a log line or a notification, and the modes of the files
a rescue writes.

Every worker here logs at DEBUG, libraries included; the conftest checks
each test's secrets (``secrets_used`` plus the worker's token) against the
whole log and every notification at teardown, and the tests below check
them in their own body too.
"""

import json
import os
import stat
import uuid

import oslo_messaging
import pytest
from passlib.hash import sha512_crypt

import rescue_worker.sandbox
from rescue_worker.errors import RescueError
from tests.functional.conftest import wait_ready
from tests.unit import helpers

READY = 'rescue_worker.worker.ready'
START = 'rescue_worker.finalize_rescue.start'
END = 'rescue_worker.finalize_rescue.end'
ERROR = 'rescue_worker.finalize_rescue.error'
STOPPED = 'rescue_worker.worker.stopped'

DEFAULT_STEPS = 'password,account,network,verify'


def new_request_id():
    return 'req-%s' % uuid.uuid4()


def cast(bus, worker, request_id=None, **kwargs):
    request_id = request_id or new_request_id()
    bus.client(worker.node_id).cast({'request_id': request_id},
                                    'finalize_rescue', **kwargs)
    return request_id


def assert_secrets_absent(bus, worker, secrets):
    """The check the conftest makes at teardown, made here as well so a
    leak fails the test that caused it."""
    logged = worker.logs()
    published = repr(bus.events) + json.dumps(
        [(e[2], e[3]) for e in bus.events], default=repr)
    assert 'DEBUG' in logged
    for secret in list(secrets) + [worker.token]:
        assert secret not in logged, 'a secret appeared in the log'
        assert secret not in published, 'a secret was published'


def hash_parts(crypt_hash):
    """The hash and its checksum (the part after the last '$')."""
    return [crypt_hash, crypt_hash.rsplit('$', 1)[1]]


# -- who may cast ------------------------------------------------------------

def _flip(char):
    return 'A' if char != 'A' else 'B'


BAD_TOKENS = {
    'wrong': lambda token: 'f' * len(token),
    'missing': lambda token: None,
    'empty': lambda token: '',
    'short': lambda token: token[:8],
    'almost right: last character changed':
        lambda token: token[:-1] + _flip(token[-1]),
    'almost right: first character changed':
        lambda token: _flip(token[0]) + token[1:],
    'almost right: one character short': lambda token: token[:-1],
    'almost right: one character more': lambda token: token + 'x',
    'almost right: trailing newline': lambda token: token + '\n',
    'almost right: other case': lambda token: token.swapcase(),
    'not a string': lambda token: [token],
}


def test_bad_tokens_are_unauthorized_and_change_nothing(bus, started_worker,
                                                        secrets_used):
    worker = started_worker(exit_after_rescue=False)
    # The conftest writes the token file as an operator must: 0600.
    assert stat.S_IMODE(os.stat(worker.token_file).st_mode) == 0o600
    password = 'security-%s' % uuid.uuid4()
    secrets_used.append(password)
    before = helpers.snapshot(worker.state_dir, worker.root_dir)

    sent = {}
    for name, make in BAD_TOKENS.items():
        token = make(worker.token)
        if isinstance(token, str) and len(token) >= 8:
            secrets_used.append(token)
        sent[name] = cast(bus, worker, rescue_password=password,
                          agent_token=token)
    for name, request_id in sent.items():
        [error] = bus.wait_for(ERROR, request_id=request_id)
        assert error['error']['code'] == 'unauthorized', name
        assert error['steps'] == [], name
        assert not bus.matching(START, request_id=request_id), name

    assert helpers.snapshot(worker.state_dir, worker.root_dir) == before
    assert os.listdir(os.path.join(worker.state_dir, 'journal')) == []
    # A refusal is no outcome: the same request_id with the right token
    # runs (it is not replayed as refused).
    request_id = sent['almost right: last character changed']
    cast(bus, worker, request_id=request_id, rescue_password=password,
         agent_token=worker.token)
    [end] = bus.wait_for(END, request_id=request_id)
    assert end['error'] is None
    assert end['replayed'] is False
    # get_status wants the token too.
    with pytest.raises((oslo_messaging.RemoteError, RescueError)) as raised:
        bus.client(worker.node_id).call(
            {}, 'get_status', agent_token=BAD_TOKENS[
                'almost right: last character changed'](worker.token))
    assert 'agent_token does not match' in str(raised.value)
    assert_secrets_absent(bus, worker, secrets_used)


# -- the token file and the default of allow_unauthenticated ----------------

@pytest.mark.parametrize('mode', [0o640, 0o604, 0o660], ids=oct)
def test_a_token_file_others_can_read_stops_the_worker(bus, make_worker,
                                                       mode):
    worker = make_worker()
    os.chmod(worker.token_file, mode)

    worker.start()

    assert worker.wait() == 2
    logged = worker.logs()
    assert 'chmod 600 %s' % worker.token_file in logged
    assert not bus.matching(READY, node_id=worker.node_id)


def test_a_short_token_stops_the_worker(bus, make_worker, secrets_used):
    worker = make_worker()
    short = 'short-token-%s' % uuid.uuid4().hex[:8]
    secrets_used.append(short)
    with open(worker.token_file, 'w') as f:
        f.write(short)

    worker.start()

    assert worker.wait() == 2
    assert 'at least 32' in worker.logs()
    assert not bus.matching(READY, node_id=worker.node_id)


def _kernel_token_present():
    try:
        with open('/proc/cmdline') as f:
            return 'rescue_worker_token=' in f.read()
    except OSError:
        return False


def test_no_token_at_all_stops_the_worker_by_default(bus, make_worker):
    # The worker also looks at the kernel command line; on this machine it
    # must have no token there for the test to mean anything.
    assert not _kernel_token_present()
    worker = make_worker()
    os.unlink(worker.token_file)
    with open(worker.config_file) as f:
        assert 'allow_unauthenticated' not in f.read()

    worker.start()

    assert worker.wait() == 2
    logged = worker.logs()
    assert 'No agent token' in logged
    assert 'allow_unauthenticated' in logged
    assert not bus.matching(READY, node_id=worker.node_id)


def test_allow_unauthenticated_is_the_only_way_to_run_without_a_token(
        bus, make_worker, secrets_used):
    worker = make_worker(allow_unauthenticated=True,
                         exit_after_rescue=False)
    os.unlink(worker.token_file)
    password = 'security-%s' % uuid.uuid4()
    secrets_used.append(password)

    worker.start()
    wait_ready(bus, worker)

    assert 'ANYONE WHO CAN PUBLISH' in worker.logs()
    request_id = cast(bus, worker, rescue_password=password)
    [end] = bus.wait_for(END, request_id=request_id)
    assert end['error'] is None


# -- no secret anywhere ------------------------------------------------------

def test_no_password_hash_or_token_in_any_log_line_or_notification(
        bus, started_worker, secrets_used):
    worker = started_worker(exit_after_rescue=False)
    password = 'plain-%s' % uuid.uuid4()
    hashed = sha512_crypt.using(rounds=5000).hash('hashed-%s' % uuid.uuid4())
    bad_hash = hashed + ':0:99999'
    weak_password = 'weak-%s' % uuid.uuid4()
    secrets_used.extend([password, weak_password] + hash_parts(hashed))
    near_miss = worker.token[:-1] + ('A' if worker.token[-1] != 'A'
                                      else 'B')
    secrets_used.append(near_miss)

    requests = [
        cast(bus, worker, rescue_password=password,
             agent_token=worker.token),
        cast(bus, worker, rescue_password=hashed, hashed=True,
             agent_token=worker.token),
        cast(bus, worker, rescue_password=bad_hash, hashed=True,
             agent_token=worker.token),
        cast(bus, worker, rescue_password=password + '\x00',
             agent_token=worker.token),
        cast(bus, worker, rescue_password=password, agent_token=near_miss),
        # A conductor that mixes the arguments up: the password as token.
        cast(bus, worker, rescue_password=worker.token,
             agent_token=password),
        cast(bus, worker, rescue_password=weak_password, hashed='true',
             agent_token=worker.token),
        cast(bus, worker, rescue_password=password, agent_token=worker.token,
             password=password),
    ]
    expected = [None, None, 'invalid_hash', 'invalid_password',
                'unauthorized', 'unauthorized', 'invalid_request',
                'invalid_request']
    for request_id, code in zip(requests, expected, strict=True):
        if code is None:
            [end] = bus.wait_for(END, request_id=request_id)
            assert end['error'] is None
        else:
            [error] = bus.wait_for(ERROR, request_id=request_id)
            assert error['error']['code'] == code
    status = bus.client(worker.node_id).call({}, 'get_status',
                                             agent_token=worker.token)
    assert worker.token not in json.dumps(status)

    assert_secrets_absent(bus, worker, secrets_used)


# -- file modes after a real rescue ------------------------------------------

def test_file_modes_after_a_rescue_with_the_default_steps(bus, make_worker,
                                                          secrets_used):
    worker = make_worker(steps=DEFAULT_STEPS)
    rescue_worker.sandbox.seed_root(worker.root_dir)
    password = 'modes-%s' % uuid.uuid4()
    secrets_used.append(password)
    worker.start()
    wait_ready(bus, worker)

    request_id = cast(bus, worker, rescue_password=password,
                      agent_token=worker.token)

    [end] = bus.wait_for(END, request_id=request_id)
    assert [s['name'] for s in end['steps']] == DEFAULT_STEPS.split(',')
    assert {s['status'] for s in end['steps']} == {'done'}
    bus.wait_for(STOPPED, node_id=worker.node_id)  # lockdown done
    owner = os.geteuid()

    etc = os.path.join(worker.root_dir, 'etc')
    shadow = os.stat(os.path.join(etc, 'shadow'))
    assert stat.S_IMODE(shadow.st_mode) in (0o640, 0o600)
    assert shadow.st_uid == owner  # root when the suite runs as root
    assert stat.S_ISREG(shadow.st_mode)
    sudoers = os.stat(os.path.join(etc, 'sudoers.d', 'rescue'))
    assert stat.S_IMODE(sudoers.st_mode) == 0o440
    assert sudoers.st_uid == owner
    for name in ('passwd', 'group'):
        assert stat.S_IMODE(os.stat(os.path.join(etc, name)).st_mode) == \
            0o644

    journal = os.path.join(worker.state_dir, 'journal')
    assert stat.S_IMODE(os.stat(journal).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(worker.state_dir).st_mode) == 0o700
    names = os.listdir(journal)
    assert names
    for name in names:
        st = os.stat(os.path.join(journal, name))
        assert stat.S_IMODE(st.st_mode) == 0o600, name
        assert st.st_uid == owner
    # No temporary file left behind next to the files the steps rewrote.
    assert not [n for n in os.listdir(etc) if n.endswith('.tmp')]

    # The hash the worker wrote is a secret too: it must be nowhere else.
    with open(os.path.join(etc, 'shadow')) as f:
        [entry] = [line for line in f if line.startswith('rescue:')]
    crypt_hash = entry.split(':')[1]
    assert sha512_crypt.verify(password, crypt_hash)
    secrets_used.extend(hash_parts(crypt_hash))
    assert_secrets_absent(bus, worker, secrets_used)
