"""A real Ironic rescues nodes through real rescue workers.

Each node is a ``fake-hardware`` node with the ``rescue-worker`` rescue
interface and the test boot interface ``rw-test-sandbox``, deployed through
the API (``fake`` deploy interface), and rescued through the API. What is
checked is what an operator or a tenant checks: the node's provision state
and ``last_error``, the sandbox's shadow file, the broker's users, and the
logs, which must hold no secret.
"""

from __future__ import annotations

import os
import re
import secrets
import threading
import urllib.parse

import oslo_messaging
import pytest
from oslo_config import cfg

from rescue_worker import boot
from rescue_worker import passwords
from rescue_worker import payloads
from tests.ironic.integration.conftest import TIMEOUT
from tests.ironic.integration.conftest import wait_until

MASK = '******'
HOLD_STEPS = 'password,hold,account,network,verify'


# -- helpers -----------------------------------------------------------------

def wait_state(api, node_uuid: str, state: str,
               timeout: float = TIMEOUT) -> object:
    """Poll the API until the node is in ``state`` and no conductor holds
    it (Ironic may enter a failed state before the clean-up that it runs
    under the node's lock sets ``last_error``); fail at once if it settles
    in another stable state."""
    seen = []

    def check():
        node = api.node.get(node_uuid)
        if not seen or seen[-1] != node.provision_state:
            seen.append(node.provision_state)
        if node.provision_state == state:
            return node if node.reservation is None else None
        if (node.provision_state != state and node.provision_state in (
                'rescue failed', 'deploy failed', 'clean failed',
                'unrescue failed', 'error', 'rescue', 'active')
                and node.target_provision_state is None):
            raise AssertionError('node %s is %s, not %s (states seen: %s); '
                                 'last_error: %s' % (
                                     node_uuid, node.provision_state, state,
                                     seen, node.last_error))
        return None

    try:
        return wait_until('node %s in %s' % (node_uuid, state), check,
                          timeout=timeout, interval=0.3)
    except AssertionError as exc:
        raise AssertionError('%s; states seen: %s' % (exc, seen)) from None


def active_node(api, **driver_info) -> str:
    """A node deployed through the API, ready to be rescued."""
    node = api.node.create(
        driver='fake-hardware', boot_interface='rw-test-sandbox',
        deploy_interface='fake', power_interface='fake',
        management_interface='fake', network_interface='noop',
        rescue_interface='rescue-worker', driver_info=driver_info)
    for verb, state in (('manage', 'manageable'), ('provide', 'available'),
                        ('active', 'active')):
        api.node.set_provision_state(node.uuid, verb)
        wait_state(api, node.uuid, state)
    return node.uuid


class Sandbox:
    """The sandbox the test boot interface made for a node."""

    def __init__(self, ironic, node_uuid: str) -> None:
        self.node_uuid = node_uuid
        self.path = os.path.join(ironic.sandboxes, node_uuid)

    def file(self, *name: str) -> str:
        return os.path.join(self.path, *name)

    def read(self, *name: str) -> str:
        with open(self.file(*name), errors='replace') as f:
            return f.read()

    def cmdline(self) -> dict[str, str]:
        return boot.parameters(self.file('cmdline'))

    def broker_url(self) -> str:
        return self.cmdline()[boot.TRANSPORT_URL]

    def broker_password(self) -> str:
        return urllib.parse.unquote(
            urllib.parse.urlsplit(self.broker_url()).password)

    def token(self) -> str:
        return self.cmdline()[boot.TOKEN]

    def pid(self) -> int:
        return int(self.read('worker.pid'))

    def worker_alive(self) -> bool:
        try:
            with open('/proc/%d/stat' % self.pid()) as f:
                return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
        except OSError:
            return False

    def worker_log(self) -> str:
        text = ''
        for name in ('rescue-worker.log', 'output.log'):
            if os.path.exists(self.file(name)):
                text += self.read(name)
        return text

    def shadow_entry(self) -> list[str] | None:
        for line in self.read('root', 'etc', 'shadow').splitlines():
            fields = line.split(':')
            if fields[0] == 'rescue':
                return fields
        return None

    def _fifo(self, name: str, mode: str) -> str | None:
        done = []

        def _open():
            # Opening a FIFO blocks until the hold step opens its end.
            with open(self.file(name), mode) as fifo:
                done.append(fifo.read() if mode == 'r' else None)

        thread = threading.Thread(target=_open, daemon=True)
        thread.start()
        thread.join(TIMEOUT)
        assert done, ('the worker of node %s never reached its hold step:\n'
                      '%s' % (self.node_uuid, self.worker_log()[-3000:]))
        return done[0]

    def wait_in_hold(self) -> str:
        """Block until the worker runs its hold step; its request id."""
        wait_until('the sandbox of node %s' % self.node_uuid,
                   lambda: os.path.exists(self.file('entered')))
        return self._fifo('entered', 'r')

    def release(self) -> None:
        self._fifo('gate', 'w')


#: a record of an oslo.log file: "<date> <time> <pid> <LEVEL> <logger> ..."
RECORD = re.compile(r'^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ \d+ '
                    r'(?P<level>[A-Z]+) (?P<logger>\S+) ', re.MULTILINE)


def log_records(text: str) -> list[tuple[str, str, str]]:
    """(level, logger, text) of each record, continuation lines (SQL,
    tracebacks) included."""
    starts = list(RECORD.finditer(text))
    return [(m.group('level'), m.group('logger'),
             text[m.start():starts[i + 1].start() if i + 1 < len(starts)
                  else len(text)])
            for i, m in enumerate(starts)]


def assert_no_secrets(ironic, sandboxes: list[Sandbox],
                      node_secrets: list[str]) -> None:
    """No secret in a worker's log (DEBUG, every library) nor in Ironic's.

    ``node_secrets``: the rescue passwords and hashes of the test. One
    exception, Ironic's own and documented (doc/source/ironic.rst, "The
    trust boundary"): Ironic's DEBUG records other than the plug-in's may
    hold what Ironic stores in the node, its token and Ironic's own
    rescue password and hash (its database layer logs the values of an
    update it retries, as it does for ``agent_secret_token``). Broker
    passwords are not stored in Ironic: they may appear nowhere.
    """
    stored = list(node_secrets)
    # A crypt hash's checksum alone gives it away as well.
    stored += [s.rsplit('$', 1)[1] for s in stored if s.startswith('$')]
    stored += [box.token() for box in sandboxes]
    never = [box.broker_password() for box in sandboxes]
    never += [ironic.broker.admin[1], ironic.broker.conductor[1]]
    texts = {'ironic output': ironic.output()}
    for box in sandboxes:
        texts['worker log of %s' % box.node_uuid] = box.worker_log()
    for where, text in texts.items():
        for secret in stored + never:
            assert secret not in text, 'a secret is in the %s' % where
    records = log_records(ironic.log())
    assert any(level == 'DEBUG' for level, _, _ in records)
    for level, logger, text in records:
        for secret in never:
            assert secret not in text, (
                'a broker password is in Ironic\'s log (%s %s)' % (
                    level, logger))
        for secret in stored:
            assert secret not in text or (
                level == 'DEBUG' and not logger.startswith('rescue_worker')
            ), 'a secret is in Ironic\'s log (%s %s)' % (level, logger)


def rescue(api, node_uuid: str) -> str:
    password = 'Rescue-%s' % secrets.token_urlsafe(12)
    api.node.set_provision_state(node_uuid, 'rescue',
                                 rescue_password=password)
    return password


def assert_rescued_with(box: Sandbox, password: str) -> str:
    """Check the sandbox's shadow; the hash (a secret too)."""
    # A rescued ramdisk's worker exits by itself after its lockdown, which
    # also unlocks the account.
    wait_until('the worker of node %s to lock down and exit' %
               box.node_uuid, lambda: not box.worker_alive())
    assert os.path.exists(box.file('state', 'rescued'))
    entry = box.shadow_entry()
    assert entry is not None, 'no rescue user in the sandbox\'s shadow'
    assert entry[1].startswith('$5$'), 'not Ironic\'s sha256_crypt hash'
    assert passwords.verify_password(password, entry[1]) is True
    assert passwords.verify_password(password + 'x', entry[1]) is False
    return entry[1]


def assert_secrets_dropped(api, broker, node_uuid: str) -> None:
    assert not broker.user_exists('rw-%s' % node_uuid)
    info = api.node.get(node_uuid).driver_internal_info
    assert 'rescue_worker_secret_token' not in info
    assert 'rescue_worker_request_id' not in info


def forge_end(broker_url: str, node_uuid: str, request_id: str,
              key: str) -> None:
    """Publish an ``end`` for ``node_uuid`` over ``broker_url`` (another
    node's user), its mac keyed with ``key`` (not the node's token)."""
    oslo_messaging.set_transport_defaults('rescue_worker')
    conf = cfg.ConfigOpts()
    conf([], project='rw-forger', default_config_files=[],
         default_config_dirs=[])
    transport = oslo_messaging.get_notification_transport(conf,
                                                          url=broker_url)
    try:
        publisher = 'rescue-worker.%s' % node_uuid
        data = {'node_id': node_uuid, 'request_id': request_id,
                'replayed': False, 'username': 'rescue',
                'hash_scheme': 'sha256_crypt', 'steps': [],
                'interfaces': [], 'duration_ms': 1.0, 'error': None}
        envelope = {
            payloads.NAME_KEY: 'FinalizeRescuePayload',
            payloads.NAMESPACE_KEY: 'rescue_worker',
            payloads.VERSION_KEY: '1.1',
            payloads.DATA_KEY: data,
            payloads.MAC_KEY: payloads.event_mac(
                payloads.EVENT_END, publisher, data, key)}
        notifier = oslo_messaging.Notifier(
            transport, publisher_id=publisher, driver='messagingv2',
            topics=['notifications'], retry=3,
            serializer=oslo_messaging.NoOpSerializer())
        notifier.info({}, payloads.EVENT_END, envelope)
    finally:
        transport.cleanup()


# -- tests -------------------------------------------------------------------

def test_rescue_and_unrescue_through_the_api(api, ironic, broker):
    node_uuid = active_node(api)
    password = rescue(api, node_uuid)
    box = Sandbox(ironic, node_uuid)
    node = wait_state(api, node_uuid, 'rescue')
    assert node.last_error is None

    # The worker got exactly the three boot parameters of DESIGN section
    # 10, its URL with the node's own user and the vhost "/" encoded.
    given = box.cmdline()
    assert sorted(given) == sorted([boot.NODE_ID, boot.TRANSPORT_URL,
                                    boot.TOKEN])
    assert given[boot.NODE_ID] == node_uuid
    url = urllib.parse.urlsplit(given[boot.TRANSPORT_URL])
    assert url.username == 'rw-%s' % node_uuid
    assert (url.scheme, url.hostname, url.port, url.path) == (
        'rabbit', '127.0.0.1', broker.port, '/%2F')
    assert len(given[boot.TOKEN]) >= 32

    password_hash = assert_rescued_with(box, password)
    assert_secrets_dropped(api, broker, node_uuid)
    assert 'rescue_password' not in api.node.get(node_uuid).instance_info

    api.node.set_provision_state(node_uuid, 'unrescue')
    node = wait_state(api, node_uuid, 'active')
    assert node.last_error is None
    assert_no_secrets(ironic, [box], [password, password_hash])
    # Transient queues (the default) are a risk the operator must see.
    assert ("Rescue workers' broker: queues are transient"
            in ironic.log_of_run())


def test_failed_account_step_ends_in_rescue_failed(api, ironic, broker):
    node_uuid = active_node(api, rw_test_foreign_rescue_user=True)
    password = rescue(api, node_uuid)
    box = Sandbox(ironic, node_uuid)
    node = wait_state(api, node_uuid, 'rescue failed')
    assert node.last_error.startswith(
        'Rescue worker failed (account_failed): '), node.last_error
    assert_secrets_dropped(api, broker, node_uuid)
    # The image's own rescue user is left alone, and the worker stopped.
    assert 'rescue:x:1000:1000:image maintainer:' in box.read(
        'root', 'etc', 'passwd')
    wait_until('the failed worker to be stopped',
               lambda: not box.worker_alive())
    assert_no_secrets(ironic, [box], [password])


def test_worker_that_never_starts_times_out(api, ironic, broker):
    ironic.restart(rescue_callback_timeout=5)
    try:
        node_uuid = active_node(api, rw_test_no_worker=True)
        password = rescue(api, node_uuid)
        wait_state(api, node_uuid, 'rescue wait')
        # The user was made for the ramdisk that never came.
        assert broker.user_exists('rw-%s' % node_uuid)
        node = wait_state(api, node_uuid, 'rescue failed')
        assert 'timeout' in node.last_error.lower(), node.last_error
        assert_secrets_dropped(api, broker, node_uuid)
    finally:
        ironic.restart()
    assert_no_secrets(ironic, [Sandbox(ironic, node_uuid)], [password])


def test_abort_in_rescue_wait_drops_the_broker_user(api, ironic, broker):
    node_uuid = active_node(api, rw_test_no_worker=True)
    password = rescue(api, node_uuid)
    wait_state(api, node_uuid, 'rescue wait')
    assert broker.user_exists('rw-%s' % node_uuid)
    api.node.set_provision_state(node_uuid, 'abort')
    wait_state(api, node_uuid, 'rescue failed')
    assert_secrets_dropped(api, broker, node_uuid)
    assert_no_secrets(ironic, [Sandbox(ironic, node_uuid)], [password])


def test_ironic_restarted_before_the_end_still_completes(api, ironic,
                                                         broker):
    node_uuid = active_node(api, rw_test_steps=HOLD_STEPS)
    password = rescue(api, node_uuid)
    box = Sandbox(ironic, node_uuid)
    # The cast arrived: the worker runs the request Ironic recorded.
    request_id = box.wait_in_hold()
    info = api.node.get(node_uuid).driver_internal_info
    assert info['rescue_worker_request_id'] == request_id
    assert info['rescue_worker_secret_token'] == MASK

    ironic.stop()
    box.release()
    # The worker published its end with every conductor down, then locked
    # down and exited: the end waits in the listener's pool queue.
    wait_until('the worker to publish its end and exit',
               lambda: not box.worker_alive())
    waiting = [m['event_type'] for m in broker.peek('/',
                                                    'rescue-worker-ironic')
               if m['publisher_id'] == 'rescue-worker.%s' % node_uuid]
    assert payloads.EVENT_END in waiting, waiting

    ironic.start()
    wait_state(api, node_uuid, 'rescue')
    password_hash = assert_rescued_with(box, password)
    assert_secrets_dropped(api, broker, node_uuid)
    assert_no_secrets(ironic, [box], [password, password_hash])


def test_forged_end_from_another_nodes_user_changes_nothing(api, ironic,
                                                            broker):
    victim = active_node(api, rw_test_steps=HOLD_STEPS)
    other = active_node(api, rw_test_steps=HOLD_STEPS)
    victim_password = rescue(api, victim)
    other_password = rescue(api, other)
    victim_box, other_box = Sandbox(ironic, victim), Sandbox(ironic, other)
    request_id = victim_box.wait_in_hold()
    other_box.wait_in_hold()

    # The other node's tenant, holding its kernel command line, forges the
    # victim's end: right node, right request, a mac of its own token.
    forge_end(other_box.broker_url(), victim, request_id, other_box.token())
    wait_until('the listener to drop the forged end',
               lambda: 'rescue_worker.finalize_rescue.end for node %s is '
               'not authenticated by its token: dropped' % victim
               in ironic.log_of_run())
    for node_uuid in (victim, other):
        assert api.node.get(node_uuid).provision_state == 'rescue wait'
    assert broker.user_exists('rw-%s' % victim)

    # The real outcomes still complete both nodes.
    victim_box.release()
    other_box.release()
    wait_state(api, victim, 'rescue')
    wait_state(api, other, 'rescue')
    hashes = [assert_rescued_with(victim_box, victim_password),
              assert_rescued_with(other_box, other_password)]
    assert_no_secrets(ironic, [victim_box, other_box],
                      [victim_password, other_password] + hashes)


def test_broker_restart_with_durable_queues_still_completes(api, ironic,
                                                            broker):
    # The workers and the conductors declare the same exchange, so they
    # must agree on durability: a virtual host of their own, where both
    # use durable queues, as doc/source/ironic.rst tells operators to.
    broker.add_vhost('rw-durable')
    ironic.restart(vhost='rw-durable', durable_queues=True)
    try:
        node_uuid = active_node(api, rw_test_steps=HOLD_STEPS,
                                rw_test_durable_queues=True)
        password = rescue(api, node_uuid)
        box = Sandbox(ironic, node_uuid)
        box.wait_in_hold()
        assert urllib.parse.urlsplit(box.broker_url()).path == '/rw-durable'
        assert broker.queue('rw-durable', 'rescue-worker-ironic')['durable']

        # The worker reconnects and publishes its end as soon as the broker
        # is back, possibly before the conductor's listener has reconnected:
        # only a queue that outlived the restart can hold it meanwhile.
        broker.restart()
        box.release()
        wait_state(api, node_uuid, 'rescue', timeout=2 * TIMEOUT)
        password_hash = assert_rescued_with(box, password)
        assert_secrets_dropped(api, broker, node_uuid)
        assert_no_secrets(ironic, [box], [password, password_hash])
    finally:
        ironic.restart()


@pytest.fixture(autouse=True)
def _no_workers_left(ironic):
    yield
    # A failed test may leave its worker running; the next must not see it.
    from tests.ironic.integration.conftest import stop_workers
    stop_workers(ironic.sandboxes)
