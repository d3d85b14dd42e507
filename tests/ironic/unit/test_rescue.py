"""rescue() and clean_up() of the rescue-worker interface."""

from __future__ import annotations

import logging

import fixtures
from ironic.common import exception
from ironic.common import states
from ironic.conductor import task_manager
from ironic.conductor import utils as conductor_utils
from oslo_utils import strutils

from rescue_worker import boot
from rescue_worker.ironic import broker
from rescue_worker.ironic import listener
from rescue_worker.ironic import rescue
from tests.ironic.unit import base


class FakeStartedListener:
    """rescue() starts the listener; no broker is needed for that here."""

    def __init__(self):
        self.recasts = []

    def recast(self, context, node_uuid):
        self.recasts.append(node_uuid)


def doc_permissions(node: str) -> dict:
    """doc/source/broker-permissions.rst's recipe, for node ``node``."""
    n = node.replace('.', '\\.')
    fanout = 'rescue_worker_fanout_[0-9a-f]{32}'
    notif = 'notifications\\.(?:info|error)'
    return {
        'configure': '^(rescue_worker|rescue_worker\\.%s|rescue_worker_fanout'
                     '|%s|%s)$' % (n, fanout, notif),
        'write': '^(rescue_worker|rescue_worker\\.%s|%s|%s)$' % (
            n, fanout, notif),
        'read': '^(rescue_worker|rescue_worker\\.%s|rescue_worker_fanout|'
                '%s)$' % (n, fanout),
        'topic_write': '^(%s)$' % notif,
        'topic_read': '^(rescue_worker|rescue_worker\\.%s|%s)$' % (n, notif),
    }


class RescueTestCase(base.RescueWorkerTestCase):

    def setUp(self):
        super().setUp()
        self.log = self.useFixture(fixtures.FakeLogger(level=logging.DEBUG))
        listener.install(FakeStartedListener())
        self.node = self.create_node()

    def _rescue(self):
        with task_manager.acquire(self.context, self.node.uuid) as task:
            return task.driver.rescue.rescue(task)

    def test_rescue_returns_rescuewait_and_boots_with_exact_parameters(self):
        self.assertEqual(states.RESCUEWAIT, self._rescue())
        self.node.refresh()
        user = 'rw-%s' % self.node.uuid
        password = self.broker.users[user]['password']
        token = self.node.driver_internal_info[rescue.TOKEN_KEY]
        self.assertGreaterEqual(len(token), 32)
        self.prepare_ramdisk.assert_called_once()
        params = self.prepare_ramdisk.call_args.args[2]
        self.assertEqual({
            boot.NODE_ID: self.node.uuid,
            boot.TRANSPORT_URL: 'rabbit://%s:%s@192.0.2.10:5672/%%2F' % (
                user, password),
            boot.TOKEN: token}, params)

    def test_rescue_creates_user_with_exactly_the_documented_rights(self):
        self._rescue()
        user = 'rw-%s' % self.node.uuid
        expected = doc_permissions(self.node.uuid)
        self.assertEqual([user], list(self.broker.users))
        self.assertEqual('', self.broker.users[user]['tags'])
        self.assertGreaterEqual(len(self.broker.users[user]['password']), 32)
        self.assertEqual({('/', user): {
            'configure': expected['configure'], 'write': expected['write'],
            'read': expected['read']}}, self.broker.permissions)
        self.assertEqual({('/', user): {
            'exchange': 'rescue_worker', 'write': expected['topic_write'],
            'read': expected['topic_read']}}, self.broker.topic_permissions)
        self.assertEqual({(user, 'max-connections'): 10,
                          (user, 'max-channels'): 40}, self.broker.limits)
        self.assertEqual({('admin', 'ADMIN-SECRET')}, self.broker.auth)

    def test_each_rescue_gets_a_fresh_token_and_password(self):
        self._rescue()
        self.node.refresh()
        first = (self.node.driver_internal_info[rescue.TOKEN_KEY],
                 self.broker.users['rw-%s' % self.node.uuid]['password'])
        self._rescue()
        self.node.refresh()
        second = (self.node.driver_internal_info[rescue.TOKEN_KEY],
                  self.broker.users['rw-%s' % self.node.uuid]['password'])
        self.assertNotEqual(first[0], second[0])
        self.assertNotEqual(first[1], second[1])

    def test_no_secret_in_logs_api_fields_or_last_error(self):
        self._rescue()
        self.node.refresh()
        token = self.node.driver_internal_info[rescue.TOKEN_KEY]
        password = self.broker.users['rw-%s' % self.node.uuid]['password']
        secrets = (token, password, 'ADMIN-SECRET')
        # What GET /v1/nodes/<node> shows: driver_internal_info is masked
        # as the API masks it (agent_secret_token's mechanism).
        shown = str((strutils.mask_dict_password(
            self.node.driver_internal_info, '******'),
            strutils.mask_dict_password(self.node.instance_info, '******'),
            self.node.last_error))
        for secret in secrets:
            self.assertNotIn(secret, shown)
            self.assertNotIn(secret, self.log.output)

    def test_failed_user_creation_fails_without_secrets_or_token(self):
        self.broker.fail_with = 500
        error = self.assertRaises(exception.InstanceRescueFailure,
                                  self._rescue)
        self.assertIn('500', str(error))
        self.assertNotIn('ADMIN-SECRET', str(error))
        self.node.refresh()
        self.assertNotIn(rescue.TOKEN_KEY, self.node.driver_internal_info)
        self.prepare_ramdisk.assert_not_called()

    def test_failed_boot_deletes_the_user(self):
        self.prepare_ramdisk.side_effect = exception.InstanceDeployFailure(
            'no TFTP')
        self.assertRaises(exception.InstanceDeployFailure, self._rescue)
        self.assertEqual({}, self.broker.users)
        self.node.refresh()
        self.assertNotIn(rescue.TOKEN_KEY, self.node.driver_internal_info)

    def test_clean_up_deletes_user_and_drops_token_and_password(self):
        self._rescue()
        with task_manager.acquire(self.context, self.node.uuid) as task:
            task.driver.rescue.clean_up(task)
        self.node.refresh()
        self.assertEqual({}, self.broker.users)
        self.assertEqual({}, self.broker.permissions)
        self.assertNotIn(rescue.TOKEN_KEY, self.node.driver_internal_info)
        self.assertNotIn(rescue.REQUEST_ID_KEY,
                         self.node.driver_internal_info)
        self.assertNotIn('rescue_password', self.node.instance_info)
        self.assertNotIn('hashed_rescue_password', self.node.instance_info)
        self.assertEqual(('DELETE', 'users/rw-%s' % self.node.uuid, None),
                         self.broker.requests[-1])

    def test_timeout_cleanup_deletes_user(self):
        # What Ironic's rescue-wait timeout does (conductor.utils).
        self._rescue()
        with task_manager.acquire(self.context, self.node.uuid) as task:
            task.node.provision_state = states.RESCUEWAIT
            conductor_utils.cleanup_rescuewait_timeout(task)
        self.assertEqual({}, self.broker.users)
        self.node.refresh()
        self.assertNotIn(rescue.TOKEN_KEY, self.node.driver_internal_info)

    def test_management_url_ending_in_api_works(self):
        admin = broker.BrokerAdmin('http://admin:ADMIN-SECRET@192.0.2.10'
                                   ':15672/api/', http=self.broker)
        admin.delete_node_user(self.node.uuid)
        self.assertEqual('http://192.0.2.10:15672/api', admin.api)


class UnrescueTestCase(base.RescueWorkerTestCase):

    def test_unrescue_returns_active_and_leaves_no_user(self):
        listener.install(FakeStartedListener())
        node = self.create_node()
        with task_manager.acquire(self.context, node.uuid) as task:
            task.driver.rescue.rescue(task)
        node.refresh()
        self.assertIn('rw-%s' % node.uuid, self.broker.users)
        with task_manager.acquire(self.context, node.uuid) as task:
            self.assertEqual(states.ACTIVE,
                             task.driver.rescue.unrescue(task))
        node.refresh()
        self.assertEqual({}, self.broker.users)
        self.assertNotIn(rescue.TOKEN_KEY, node.driver_internal_info)
        self.prepare_instance.assert_called_once()


class HardwareTypesTestCase(base.RescueWorkerTestCase):

    def test_each_type_accepts_rescue_worker_and_keeps_its_own(self):
        from ironic.drivers import generic
        from ironic.drivers import ipmi
        from ironic.drivers import redfish

        from rescue_worker.ironic import hardware
        for ours, theirs in (
                (hardware.IPMIRescueWorkerHardware, ipmi.IPMIHardware),
                (hardware.RedfishRescueWorkerHardware,
                 redfish.RedfishHardware),
                (hardware.ManualManagementRescueWorkerHardware,
                 generic.ManualManagementHardware)):
            self.assertEqual(
                [rescue.RescueWorkerRescue]
                + theirs().supported_rescue_interfaces,
                ours().supported_rescue_interfaces)
            self.assertEqual(theirs().supported_power_interfaces,
                             ours().supported_power_interfaces)

    def test_entry_points_name_them(self):
        from importlib import metadata
        points = metadata.entry_points()
        rescues = {p.name: p.load() for p in points.select(
            group='ironic.hardware.interfaces.rescue')}
        self.assertIs(rescue.RescueWorkerRescue, rescues['rescue-worker'])
        types = {p.name for p in points.select(group='ironic.hardware.types')}
        self.assertLessEqual({'ipmi-rescue-worker', 'redfish-rescue-worker',
                              'manual-management-rescue-worker'}, types)


class ValidateTestCase(base.RescueWorkerTestCase):

    def test_validate_names_missing_broker_settings(self):
        self.config(management_url=None, group='rescue_worker')
        self.config(ramdisk_transport_url=None, group='rescue_worker')
        node = self.create_node()
        with task_manager.acquire(self.context, node.uuid) as task:
            error = self.assertRaises(exception.InvalidParameterValue,
                                      task.driver.rescue.validate, task)
        self.assertIn('ramdisk_transport_url, management_url', str(error))

    def test_management_url_without_credentials_is_refused_plainly(self):
        self.config(management_url='http://192.0.2.10:15672/',
                    group='rescue_worker')
        error = self.assertRaises(exception.InvalidParameterValue,
                                  rescue.broker_admin)
        self.assertIn('userinfo', str(error))
