"""The conductor's tools on a real RabbitMQ: RescueWorkerClient against a
``rescue-worker`` process, and ``rescue-worker-ctl finalize --wait`` over a
fleet of workers."""

import os
import subprocess
import sys
import threading
import uuid

import pytest
from oslo_config import cfg

from rescue_worker import client as rw_client
from rescue_worker import rpc
from rescue_worker import sandbox
from rescue_worker import service
from tests.functional.conftest import transport_url

PASSWORD = 'fleet password %s' % uuid.uuid4()


@pytest.fixture
def conductor():
    conf = cfg.ConfigOpts()
    rpc.register_messaging_opts(conf)
    conf([], default_config_files=[], default_config_dirs=[])
    conf.set_override('transport_url', transport_url())
    transport = rpc.get_rpc_transport(conf)
    notification_transport = rpc.get_notification_transport(conf)
    client = rw_client.RescueWorkerClient(transport, hash_rounds=5000)
    with rw_client.CompletionWaiter(notification_transport) as waiter:
        yield client, waiter
    transport.cleanup()
    notification_transport.cleanup()


def test_client_rescues_a_worker_process(bus, started_worker, conductor,
                                         secrets_used):
    secrets_used.append(PASSWORD)
    client, waiter = conductor
    worker = started_worker()

    request_id = client.finalize_rescue({}, worker.node_id, PASSWORD,
                                        agent_token=worker.token)
    outcome = waiter.wait([request_id], timeout=60, client=client)[request_id]

    assert outcome.succeeded, outcome
    assert worker.wait() == 0  # locked down after the rescue


def test_cast_to_a_node_that_never_started_raises_at_once(conductor):
    client, _ = conductor
    node_id = 'node-never-booted-%s' % uuid.uuid4().hex[:8]

    with pytest.raises(rw_client.WorkerNotListening) as raised:
        client.finalize_rescue({}, node_id, PASSWORD, agent_token='t' * 32)
    assert node_id in str(raised.value)


def test_get_status_over_the_broker(started_worker, conductor):
    client, _ = conductor
    worker = started_worker()

    status = client.get_status(worker.node_id, agent_token=worker.token)

    assert status['state'] == 'waiting'
    worker.signal(15)
    assert worker.wait() == 0


class Fleet:
    """In-process workers on the broker, one sandbox node each."""

    def __init__(self, base_dir, count):
        self.nodes = [sandbox.SandboxNode(
            os.path.join(base_dir, 'n%02d' % i),
            node_id='fleet-%s-%02d' % (uuid.uuid4().hex[:6], i),
            transport_url=transport_url()).create() for i in range(count)]
        self.workers = []
        for node in self.nodes:
            worker = service.RescueWorker(node.load_config(),
                                          cmdline_path=node.cmdline_file)
            worker.start()
            threading.Thread(target=self._serve, args=(worker,),
                             daemon=True).start()
            self.workers.append(worker)

    @staticmethod
    def _serve(worker):
        worker.wait_for_stop_request()
        worker.stop()

    def stop(self):
        for worker in self.workers:
            worker.request_stop()
        for worker in self.workers:
            worker.stopped.wait(60)


@pytest.fixture
def fleet(tmp_path):
    fleets = []

    def make(count):
        fleets.append(Fleet(str(tmp_path / ('fleet%d' % len(fleets))),
                            count))
        return fleets[-1]

    yield make
    for fleet in fleets:
        fleet.stop()


def ctl_finalize(tmp_path, nodes, *extra):
    nodes_file = tmp_path / 'nodes'
    nodes_file.write_text(''.join('%s %s\n' % pair for pair in nodes))
    password_file = tmp_path / 'password'
    password_file.write_text(PASSWORD + '\n')
    return subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), 'rescue-worker-ctl'),
         'finalize', '--nodes-file', str(nodes_file), '--password-file',
         str(password_file), '--transport-url', transport_url(), '--wait',
         '--timeout', '240', *extra],
        capture_output=True, text=True, timeout=300,
        stdin=subprocess.DEVNULL)


def test_ctl_finalize_wait_over_20_nodes(tmp_path, fleet):
    workers = fleet(20)

    result = ctl_finalize(tmp_path, [(n.node_id, n.token)
                                     for n in workers.nodes])

    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line.split() for line in result.stdout.splitlines()]
    for node in workers.nodes:
        assert [node.node_id, 'end'] in [row[:2] for row in rows], \
            result.stdout
    assert '20 of 20 nodes rescued' in result.stdout
    assert PASSWORD not in result.stdout + result.stderr


def test_ctl_finalize_with_a_wrong_token_cannot_see_the_refusal(tmp_path,
                                                                 fleet):
    # The worker refuses the request (unauthorized) and signs its error
    # with its own token; the ctl holds another, so it cannot tell that
    # error from a forgery: it ignores it, says so, and times out.
    workers = fleet(3)
    nodes = [(n.node_id, n.token) for n in workers.nodes]
    nodes[1] = (nodes[1][0], 'not-the-token-of-this-node-at-all-x')

    result = ctl_finalize(tmp_path, nodes, '--timeout', '20')

    assert result.returncode == 4, result.stdout + result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines()
            if line.startswith('fleet-')}
    assert 'timeout' in rows[nodes[1][0]]
    assert ' end ' in rows[nodes[0][0]]
    assert '2 of 3 nodes rescued' in result.stdout
    assert 'ignored 1 notification(s) whose mac does not match' in \
        result.stderr
