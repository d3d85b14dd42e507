"""A real 3-node RabbitMQ cluster with quorum queues: one node stops while a
fleet is being rescued.

The module starts its own cluster (pifpaf's driver, as ``pifpaf run rabbitmq
--cluster``). Workers and conductor all list the three nodes in
``transport_url`` and declare quorum queues (``[oslo_messaging_rabbit]
rabbit_quorum_queue``, ``rabbit_transient_quorum_queue``), which outlive the
loss of one node out of three.
"""

import threading

import pytest

from tests.functional import broker


@pytest.fixture(scope='module')
def cluster():
    nodes = broker.RabbitBroker(cluster=True).start()
    yield nodes
    nodes.close()


@pytest.fixture
def quorum(tmp_path, cluster):
    """Witness, conductor, fleets and processes, all with quorum queues."""
    options = broker.QUORUM_OPTIONS
    conf = broker.messaging_conf(cluster.url, options)
    witness = broker.Witness(conf)
    conductor = broker.Conductor(conf)
    fleets = broker.FleetSet(str(tmp_path), cluster.url, options)
    processes = broker.ProcessSet(str(tmp_path), cluster.url, options)
    yield witness, conductor, fleets, processes
    processes.close()
    fleets.close()
    conductor.close()
    witness.close()


def test_node_stop_mid_fleet_loses_nothing_and_workers_fail_over(
        cluster, quorum):
    witness, conductor, fleet, processes = quorum
    # ``served`` serves before and after the node stop (no lockdown);
    # ``gated`` holds a request inside a step across it.
    served = processes(exit_after_rescue=False)
    gated = processes(steps='password,gate,account,verify')
    for worker in (served, gated):
        worker.start()
    workers = fleet(12)
    for worker in (served, gated):
        broker.wait_process_ready(witness, worker)
    broker.wait_fleet_ready(witness, workers)
    queue = 'rescue_worker.%s' % served.node_id
    queues = cluster.ctl('list_queues', '--no-table-headers', 'name', 'type')
    queue_types = dict(line.split('\t') for line in queues.splitlines())
    assert queue_types[queue] == 'quorum'
    assert queue_types['notifications.info'] == 'quorum'

    before_id = conductor.cast(served.node_id, served.token)
    gated_id = conductor.cast(gated.node_id, gated.token)
    assert gated.wait_in_gate() == gated_id
    conductor.wait([before_id])
    # The node that carries the served worker's own consumer.
    [victim] = cluster.consumer_nodes(queue)
    half = len(workers.nodes) // 2
    request_ids = [conductor.cast(node.node_id, node.token)
                   for node in workers.nodes[:half]]
    stopping = threading.Thread(target=cluster.stop_node, args=(victim,))
    stopping.start()
    request_ids += [conductor.cast(node.node_id, node.token)
                    for node in workers.nodes[half:]]
    stopping.join(120)
    assert victim in cluster.down
    gated.open_gate()

    # The same process, never restarted, consumes on another node.
    pid = served.proc.pid
    after_id = conductor.cast(served.node_id, served.token)
    request_ids += [before_id, gated_id, after_id]
    outcomes = conductor.wait(request_ids)
    witness.settle(request_ids)
    assert served.proc.pid == pid and served.proc.poll() is None
    consumer_now = cluster.consumer_nodes(queue)

    runs = {r: workers.runs(r) for r in request_ids[:len(workers.nodes)]}
    for worker, request_id in ((served, before_id), (gated, gated_id),
                               (served, after_id)):
        runs[request_id] = broker.completed_runs(worker, request_id)
    counts = witness.counts(request_ids)
    ends = {r: counts[r].get('end', 0) for r in request_ids}
    print(broker.record(
        'cluster: node stop mid-fleet (quorum queues)',
        'rabbitmqctl stop_app on the node carrying a worker\'s consumer, '
        'between casts to 12 workers, with 1 request inside a step',
        request_ids, outcomes, runs, ends, witness=witness,
        replays={r: counts[r].get('replay', 0) for r in request_ids},
        stopped_node=victim, consumer_moved_to=consumer_now))
    assert {r: o.status for r, o in outcomes.items()
            if not o.succeeded} == {}
    assert runs == {r: 1 for r in request_ids}
    assert ends == {r: 1 for r in request_ids}, counts
    assert len(consumer_now) == 1 and victim not in consumer_now
