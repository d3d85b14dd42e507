"""The ``rescue-worker`` rescue interface of Ironic.

It does what ``AgentRescue`` does to the node (power, instance boot clean-up,
rescuing network, ramdisk boot), but the ramdisk runs a rescue worker
instead of ironic-python-agent: what differs per node reaches it as boot
parameters (``rescue_worker.boot``), and the rescue completes when the
worker's authenticated ``end`` reaches this conductor's notification
listener (``rescue_worker.ironic.listener``), not through a heartbeat.

Secrets of a node in rescue, and where they live:

- the node token, in ``driver_internal_info['rescue_worker_secret_token']``:
  Ironic's API masks keys with ``token`` or ``secret`` in their name, as it
  masks ``agent_secret_token``;
- the node's broker password: nowhere in Ironic; only in the boot
  parameters given to the boot interface.

Both are dropped (user deleted, token removed) by ``clean_up``, which Ironic
calls on success, failure, abort and timeout alike.
"""

from __future__ import annotations

import logging
import secrets
import urllib.parse
import uuid

from ironic.common import exception
from ironic.common import states
from ironic.conductor import periodics
from ironic.conductor import task_manager
from ironic.conductor import utils as manager_utils
from ironic.conf import CONF
from ironic.drivers import base
from ironic.drivers import utils as driver_utils
from ironic.drivers.modules import agent

from rescue_worker import boot
from rescue_worker.ironic import broker
from rescue_worker.ironic import conf as rw_conf

LOG = logging.getLogger(__name__)

rw_conf.register_opts(CONF)

INTERFACE_NAME = 'rescue-worker'
#: driver_internal_info keys; the first is masked by the API ("token")
TOKEN_KEY = 'rescue_worker_secret_token'
REQUEST_ID_KEY = 'rescue_worker_request_id'
TOKEN_BYTES = 32  # token_urlsafe(32): 43 characters, the worker wants >= 32


def broker_admin() -> broker.BrokerAdmin:
    """The management API client of the configuration.

    Replaced in tests (``BROKER_ADMIN_FACTORY``) to fake the HTTP layer.
    """
    group = CONF.rescue_worker
    if not group.management_url:
        raise exception.InvalidParameterValue(
            '[rescue_worker] management_url is not set')
    try:
        return broker.BrokerAdmin(
            group.management_url, vhost=group.vhost, topic=group.topic,
            notification_topic=group.notification_topic,
            timeout=group.management_timeout)
    except broker.BrokerAdminError as exc:
        # An Ironic exception, so that the API shows the operator what to
        # fix; the message never holds the URL (it has a password).
        raise exception.InvalidParameterValue(str(exc)) from None


BROKER_ADMIN_FACTORY = broker_admin


def ramdisk_transport_url(user: str, password: str) -> str:
    """The ramdisk's broker URL: the configured scheme, host and port, with
    the node user's credentials and the vhost, percent-encoded."""
    group = CONF.rescue_worker
    if not group.ramdisk_transport_url:
        raise exception.InvalidParameterValue(
            '[rescue_worker] ramdisk_transport_url is not set')
    parts = urllib.parse.urlsplit(group.ramdisk_transport_url)
    netloc = '%s:%s@%s' % (urllib.parse.quote(user, safe=''),
                           urllib.parse.quote(password, safe=''),
                           parts.netloc.rpartition('@')[2])
    return urllib.parse.urlunsplit(
        (parts.scheme, netloc, '/' + urllib.parse.quote(group.vhost, safe=''),
         '', ''))


def drop_secrets(task: task_manager.TaskManager) -> None:
    """Delete the node's broker user and drop its token and request id.

    The token goes even when the user cannot be deleted: the worker's
    outcome can no longer be authenticated, so nothing more is acted on.
    """
    node = task.node
    node.del_driver_internal_info(TOKEN_KEY)
    node.del_driver_internal_info(REQUEST_ID_KEY)
    node.save()
    BROKER_ADMIN_FACTORY().delete_node_user(node.uuid)


class RescueWorkerRescue(base.RescueInterface):
    """Rescue through a rescue-worker ramdisk (oslo.messaging)."""

    def get_properties(self) -> dict:
        return {}

    def validate(self, task: task_manager.TaskManager) -> None:
        """As ``AgentRescue.validate``, and the broker settings."""
        group = CONF.rescue_worker
        missing = [name for name in ('transport_url',
                                     'ramdisk_transport_url',
                                     'management_url')
                   if not getattr(group, name)]
        if missing:
            raise exception.InvalidParameterValue(
                'rescue-worker needs [rescue_worker] %s in ironic.conf' %
                ', '.join(missing))
        agent.AgentRescue().validate(task)

    @task_manager.require_exclusive_lock
    def rescue(self, task: task_manager.TaskManager) -> str:
        """Boot the rescue ramdisk with the node's worker parameters.

        :returns: ``states.RESCUEWAIT``; the listener completes the rescue.
        """
        from rescue_worker.ironic import listener

        node = task.node
        admin = BROKER_ADMIN_FACTORY()
        token = secrets.token_urlsafe(TOKEN_BYTES)
        node.set_driver_internal_info(TOKEN_KEY, token)
        # One request id per rescue: a re-cast of the same id is not run
        # twice by the worker (its journal), whoever sends it.
        node.set_driver_internal_info(REQUEST_ID_KEY,
                                      'req-%s' % uuid.uuid4())
        node.save()
        try:
            user, password = admin.create_node_user(node.uuid)
        except broker.BrokerAdminError as exc:
            node.del_driver_internal_info(TOKEN_KEY)
            node.del_driver_internal_info(REQUEST_ID_KEY)
            node.save()
            raise exception.InstanceRescueFailure(
                node=node.uuid, instance=node.instance_uuid,
                reason=str(exc)) from None
        try:
            params = {
                boot.NODE_ID: node.uuid,
                boot.TRANSPORT_URL: ramdisk_transport_url(user, password),
                boot.TOKEN: token,
            }
            # The listener must consume before the worker can publish
            # ready.
            listener.ensure_started()
            self._boot(task, params)
        except Exception:
            # Ironic's failure path does not call clean_up after rescue().
            try:
                drop_secrets(task)
            except Exception:
                LOG.warning('Could not delete the broker user of node %s '
                            'after a failed rescue', node.uuid)
            raise
        LOG.info('Node %s boots its rescue worker (user %s)', node.uuid,
                 user)
        return states.RESCUEWAIT

    def _boot(self, task: task_manager.TaskManager, params: dict) -> None:
        # AgentRescue.rescue, with our boot parameters instead of
        # ironic-python-agent's.
        with _power_off_and_on(task):
            task.node.power_state = states.POWER_ON
            task.node.save()
            task.driver.boot.clean_up_instance(task)
            with manager_utils.power_state_for_network_configuration(task):
                task.driver.network.unconfigure_tenant_networks(task)
                task.driver.network.add_rescuing_network(task)
            task.driver.boot.prepare_ramdisk(task, params)

    @task_manager.require_exclusive_lock
    def unrescue(self, task: task_manager.TaskManager) -> str:
        """As ``AgentRescue.unrescue`` (it calls our ``clean_up``)."""
        return agent.AgentRescue.unrescue(self, task)

    def clean_up(self, task: task_manager.TaskManager) -> None:
        """As ``AgentRescue.clean_up``, and the node's secrets dropped."""
        try:
            drop_secrets(task)
        finally:
            agent.AgentRescue.clean_up(self, task)

    @periodics.periodic(spacing=lambda: CONF.rescue_worker.reconcile_interval,
                        enabled=lambda: (
                            CONF.rescue_worker.reconcile_interval > 0),
                        run_immediately=True)
    def _reconcile_rescue_workers(self, manager, context) -> None:
        """Start the listener with the conductor, and re-cast to nodes
        waiting for an outcome (a lost cast or notification, a conductor
        restart)."""
        from rescue_worker.ironic import listener

        listener.ensure_started()
        filters = {'provision_state': states.RESCUEWAIT,
                   'reserved': False, 'maintenance': False}
        for node_uuid, _driver, _group in manager.iter_nodes(filters=filters):
            try:
                listener.get().recast(context, node_uuid)
            except Exception:
                LOG.exception('Could not re-cast to node %s', node_uuid)


def _power_off_and_on(task: task_manager.TaskManager):
    return driver_utils.power_off_and_on(task)
