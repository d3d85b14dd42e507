"""The listener: a real worker on fake:// drives a node of Ironic's DB."""

from __future__ import annotations

import logging
from unittest import mock

import fixtures
from ironic.common import states
from ironic.conductor import task_manager

from rescue_worker import fixture as rw_fixture
from rescue_worker import payloads
from rescue_worker.ironic import listener
from rescue_worker.ironic import rescue
from tests.ironic.unit import base


class ListenerTestCase(base.RescueWorkerTestCase):

    def setUp(self):
        super().setUp()
        self.log = self.useFixture(fixtures.FakeLogger(level=logging.DEBUG))
        self.node = self.create_node()
        # The worker is the one the node would boot; start it only once
        # the node waits for it, as a real boot would.
        self.worker = self.useFixture(rw_fixture.RescueWorkerFixture(
            node_id=self.node.uuid, start=False))
        self.events = self.useFixture(rw_fixture.NotificationCapture(
            self.worker.notification_transport))
        self.listener = base.RecordingListener(
            self.worker.transport, self.worker.notification_transport)
        listener.install(self.listener)
        self.listener.start()
        self.addCleanup(self.listener.stop)
        self._rescue()

    def _rescue(self):
        with task_manager.acquire(self.context, self.node.uuid) as task:
            self.assertEqual(states.RESCUEWAIT,
                             task.driver.rescue.rescue(task))
            task.process_event('wait')
        self.node.refresh()
        self.assertEqual(states.RESCUEWAIT, self.node.provision_state)
        # The worker holds the token the boot parameters gave it.
        self.token = self.prepare_ramdisk.call_args.args[2][
            'rescue_worker_token']
        with open(self.worker.token_file, 'w') as f:
            f.write(self.token + '\n')
        self.request_id = self.node.driver_internal_info[
            rescue.REQUEST_ID_KEY]
        self.broker_password = self.broker.users[
            'rw-%s' % self.node.uuid]['password']

    def _publisher(self):
        return 'rescue-worker.%s' % self.node.uuid

    def _envelope(self, event_type, token, **data):
        fields = dict(node_id=self.node.uuid, request_id=self.request_id)
        fields.update(data)
        return payloads.FinalizeRescuePayload(**fields).envelope(
            event_type, self._publisher(), token)

    def _shadow_entry(self, user='rescue'):
        with open('%s/etc/shadow' % self.worker.root_dir) as f:
            for line in f:
                if line.startswith(user + ':'):
                    return line.split(':')[1]
        return None

    def test_ready_casts_the_conductors_hash_and_end_rescues_the_node(self):
        conductors_hash = self.node.instance_info['hashed_rescue_password']
        self.worker.start()
        self.listener.wait_handled(payloads.EVENT_READY)
        end = self.events.wait_for_outcome(self.request_id)
        self.assertEqual(payloads.EVENT_END, end.event_type)
        self.listener.wait_handled(payloads.EVENT_END)
        self.node.refresh()
        self.assertEqual(states.RESCUE, self.node.provision_state)
        self.assertIsNone(self.node.last_error)
        # The worker got the hash Ironic made (hashed=True), not a new one.
        self.assertEqual(conductors_hash, self._shadow_entry())
        self.assertEqual('sha256_crypt', end.data['hash_scheme'])
        # Dropped by clean_up, as AgentRescue does.
        self.assertNotIn('hashed_rescue_password', self.node.instance_info)
        # The node's secrets are gone with the outcome.
        self.assertEqual({}, self.broker.users)
        self.assertNotIn(rescue.TOKEN_KEY, self.node.driver_internal_info)
        for secret in (self.token, self.broker_password, conductors_hash):
            self.assertNotIn(secret, self.log.output)
            self.assertNotIn(secret, str(self.node.driver_internal_info))

    def test_worker_error_fails_the_rescue_with_its_code(self):
        with task_manager.acquire(self.context, self.node.uuid) as task:
            info = dict(task.node.instance_info)
            info['hashed_rescue_password'] = '$5$broken'
            task.node.instance_info = info
            task.node.save()
        self.worker.start()
        outcome = self.events.wait_for_outcome(self.request_id)
        self.assertEqual(payloads.EVENT_ERROR, outcome.event_type)
        self.listener.wait_handled(payloads.EVENT_ERROR)
        self.node.refresh()
        self.assertEqual(states.RESCUEFAIL, self.node.provision_state)
        code = outcome.data['error']['code']
        self.assertIn(code, self.node.last_error)
        self.assertIn(outcome.data['error']['message'][:40],
                      self.node.last_error)
        self.assertEqual({}, self.broker.users)
        self.assertNotIn(rescue.TOKEN_KEY, self.node.driver_internal_info)

    def test_forged_end_changes_nothing(self):
        forged = self._envelope(payloads.EVENT_END, 'x' * 43)
        self.listener.handle(self._publisher(), payloads.EVENT_END, forged)
        self.node.refresh()
        self.assertEqual(states.RESCUEWAIT, self.node.provision_state)
        self.assertIn('rw-%s' % self.node.uuid, self.broker.users)
        self.assertEqual(self.token,
                         self.node.driver_internal_info[rescue.TOKEN_KEY])

    def test_end_of_another_publisher_changes_nothing(self):
        # The right mac for the data, but published as another node.
        end = self._envelope(payloads.EVENT_END, self.token)
        self.listener.handle('rescue-worker.other', payloads.EVENT_END, end)
        self.node.refresh()
        self.assertEqual(states.RESCUEWAIT, self.node.provision_state)

    def test_end_of_another_request_changes_nothing(self):
        end = self._envelope(payloads.EVENT_END, self.token,
                             request_id='req-other')
        self.listener.handle(self._publisher(), payloads.EVENT_END, end)
        self.node.refresh()
        self.assertEqual(states.RESCUEWAIT, self.node.provision_state)

    def test_duplicate_and_replayed_end_change_nothing_more(self):
        end = self._envelope(payloads.EVENT_END, self.token)
        self.listener.handle(self._publisher(), payloads.EVENT_END, end)
        self.node.refresh()
        self.assertEqual(states.RESCUE, self.node.provision_state)
        requests = list(self.broker.requests)
        updated = self.node.updated_at
        replayed = self._envelope(payloads.EVENT_END, self.token,
                                  replayed=True)
        for envelope in (end, replayed):
            self.listener.handle(self._publisher(), payloads.EVENT_END,
                                 envelope)
        self.node.refresh()
        self.assertEqual(states.RESCUE, self.node.provision_state)
        self.assertEqual(updated, self.node.updated_at)
        self.assertEqual(requests, self.broker.requests)

    def test_end_for_a_node_not_waiting_changes_nothing(self):
        with task_manager.acquire(self.context, self.node.uuid) as task:
            task.node.provision_state = states.ACTIVE
            task.node.save()
        end = self._envelope(payloads.EVENT_END, self.token)
        self.listener.handle(self._publisher(), payloads.EVENT_END, end)
        self.node.refresh()
        self.assertEqual(states.ACTIVE, self.node.provision_state)
        self.assertIn('rw-%s' % self.node.uuid, self.broker.users)

    def test_reconciliation_casts_when_ready_was_lost(self):
        self.listener.lose.add(payloads.EVENT_READY)
        self.worker.start()
        self.listener.wait_handled(payloads.EVENT_READY)
        self.node.refresh()
        self.assertEqual(states.RESCUEWAIT, self.node.provision_state)
        self.listener.recast(self.context, self.node.uuid)
        self.listener.wait_handled(payloads.EVENT_END)
        self.node.refresh()
        self.assertEqual(states.RESCUE, self.node.provision_state)

    def test_reconciliation_leaves_nodes_not_waiting_alone(self):
        with task_manager.acquire(self.context, self.node.uuid) as task:
            task.node.provision_state = states.ACTIVE
            task.node.save()
        self.worker.start()
        self.listener.wait_handled(payloads.EVENT_READY)
        with mock.patch.object(self.listener.client, 'finalize_rescue',
                               wraps=self.listener.client.finalize_rescue
                               ) as cast:
            self.listener.recast(self.context, self.node.uuid)
        cast.assert_not_called()
        self.assertEqual('waiting', self._worker_state())

    def _worker_state(self):
        return self.worker.rpc_client().call(
            {}, 'get_status', agent_token=self.token)['state']

    def test_conductor_periodic_starts_listener_and_recasts(self):
        from futurist import periodics
        from ironic import objects
        from ironic.conductor import periodics as ironic_periodics

        class Manager:
            # What the conductor's iter_nodes yields, from the database.
            def iter_nodes(inner, filters):
                return [(n.uuid, n.driver, n.conductor_group)
                        for n in objects.Node.list(self.context,
                                                   filters=filters)]

        self.listener.lose.add(payloads.EVENT_READY)
        self.worker.start()
        self.listener.wait_handled(payloads.EVENT_READY)
        with task_manager.acquire(self.context, self.node.uuid,
                                  shared=True) as task:
            interface = task.driver.rescue
        method = interface._reconcile_rescue_workers
        ironic_periodics.refresh_periodic_attributes(method)
        self.assertTrue(periodics.is_periodic(method))
        self.assertEqual(60, method._periodic_spacing)
        method(Manager(), self.context)
        self.listener.wait_handled(payloads.EVENT_END)
        self.node.refresh()
        self.assertEqual(states.RESCUE, self.node.provision_state)

    def test_forged_ready_casts_nothing_and_the_real_one_does(self):
        self.listener.lose.add(payloads.EVENT_READY)
        self.worker.start()
        self.listener.wait_handled(payloads.EVENT_READY)
        self.listener.lose.clear()
        ready = self.events.wait_for(payloads.EVENT_READY)
        forged = payloads.WorkerPayload(**ready.data).envelope(
            payloads.EVENT_READY, self._publisher(), 'y' * 43)
        with mock.patch.object(self.listener.client, 'finalize_rescue',
                               wraps=self.listener.client.finalize_rescue
                               ) as cast:
            self.listener.handle(self._publisher(), payloads.EVENT_READY,
                                 forged)
            cast.assert_not_called()
            # The genuine ready, handled the same way, does cast.
            self.listener.handle(ready.publisher_id, ready.event_type,
                                 ready.payload)
            cast.assert_called_once()
        self.assertEqual(self.request_id, cast.call_args.kwargs['request_id'])
        self.assertTrue(cast.call_args.kwargs['hashed'])
