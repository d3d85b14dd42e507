"""The conductor's notification listener: rescue outcomes from workers.

One listener per conductor process, on the workers' broker, in the pool
``rescue-worker-ironic``: every conductor consumes the same queue (a fixed
name, not auto-deleted, so an ``end`` published while every conductor is
down waits there for the next one), and each notification goes to one of
them. Any conductor can act on any node: it locks the node through Ironic's
database, as the heartbeat API does.

What starts it: the rescue interface's periodic
``_reconcile_rescue_workers``, which Ironic's conductor runs at start
(``run_immediately``) and then every ``[rescue_worker] reconcile_interval``
seconds; and ``rescue()``, so that a rescue never waits for the periodic.
Periodics run in the conductor only, so the API service never listens.

For a node of the ``rescue-worker`` interface in ``rescue wait``, and only
for an event whose ``mac`` is right for the node's token:

- ``worker.ready``: cast ``finalize_rescue`` with the conductor's hash
  (``hashed=True``) and the node's request id;
- ``finalize_rescue.end`` of the node's request: the rescue completes
  (``resume``, ``clean_up``, tenant networks, ``done``, as Ironic's
  ``agent_base`` does after ironic-python-agent's answer);
- ``finalize_rescue.error`` of the node's request: ``rescue failed``, with
  the error code and message in ``last_error``.

Anything else (another node's key, a node no longer waiting, another
request, a duplicate) is dropped: the node is not touched.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import urllib.parse
from collections.abc import Iterator
from typing import Any

import oslo_messaging
from ironic.common import context as ironic_context
from ironic.common import exception
from ironic.common import states
from ironic.conductor import task_manager
from ironic.conductor import utils as manager_utils
from ironic.conf import CONF
from oslo_utils import uuidutils

from rescue_worker import client as rw_client
from rescue_worker import contract
from rescue_worker import payloads
from rescue_worker import rpc
from rescue_worker.ironic import rescue as rw_rescue

LOG = logging.getLogger(__name__)

POOL = 'rescue-worker-ironic'
PUBLISHER_PREFIX = 'rescue-worker.'
#: last_error is a Text column, but the worker's message is kept short
MAX_MESSAGE = 500

_EVENTS = (payloads.EVENT_READY, payloads.EVENT_END, payloads.EVENT_ERROR)


def conductor_transport_url() -> str:
    """``[rescue_worker] transport_url`` with ``vhost`` as its path."""
    group = CONF.rescue_worker
    parts = urllib.parse.urlsplit(group.transport_url)
    return urllib.parse.urlunsplit(
        (parts.scheme, parts.netloc,
         '/' + urllib.parse.quote(group.vhost, safe=''), parts.query, ''))


class RescueWorkerListener:
    """Acts on workers' notifications and casts to workers."""

    def __init__(self, transport: oslo_messaging.Transport,
                 notification_transport: oslo_messaging.Transport,
                 topic: str = contract.DEFAULT_TOPIC,
                 notification_topic: str = 'notifications') -> None:
        self.client = rw_client.RescueWorkerClient(transport, topic=topic)
        target = oslo_messaging.Target(topic=notification_topic,
                                       exchange=contract.CONTROL_EXCHANGE)
        self._listener = oslo_messaging.get_notification_listener(
            notification_transport, [target],
            [rw_client.NotificationRelay(self.handle)],
            serializer=oslo_messaging.NoOpSerializer(),
            pool=POOL)

    def start(self) -> RescueWorkerListener:
        self._listener.start()
        return self

    def stop(self) -> None:
        self._listener.stop()
        self._listener.wait()

    # -- notifications -----------------------------------------------------

    def handle(self, publisher_id: str, event_type: str,
               payload: Any) -> None:
        """Act on one notification (never raises: a failure is logged and
        the reconciliation's re-cast brings the outcome again)."""
        if event_type not in _EVENTS:
            return
        try:
            data = payloads.payload_data(payload)
            node_id = data['node_id']
        except (KeyError, TypeError):
            return
        # The mac covers the publisher and the data: the node named in
        # both must be the node whose token checks it.
        if (not isinstance(node_id, str)
                or not uuidutils.is_uuid_like(node_id)
                or publisher_id != PUBLISHER_PREFIX + node_id):
            return
        try:
            self._handle(node_id, publisher_id, event_type, payload, data)
        except exception.NodeNotFound:
            return
        except Exception:
            LOG.exception('Could not act on %s for node %s', event_type,
                          node_id)

    def _handle(self, node_id: str, publisher_id: str, event_type: str,
                payload: Any, data: dict) -> None:
        event = (publisher_id, event_type, payload, data)
        with self._acquired(node_id, event, shared=True) as task:
            if task is None:
                return
            if event_type == payloads.EVENT_READY:
                self._cast(task)
                return
        # An outcome: take the node exclusively (waiting for a periodic
        # or the API to let go of it) and check again, since another
        # conductor may have acted on a duplicate in between.
        with self._acquired(node_id, event, shared=False) as task:
            if task is None:
                return
            if event_type == payloads.EVENT_END:
                self._complete(task)
            else:
                self._fail(task, data.get('error'))

    @contextlib.contextmanager
    def _acquired(self, node_id: str, event: tuple, shared: bool
                  ) -> Iterator[task_manager.TaskManager | None]:
        """The node's task if ``event`` is acceptable for it, else None;
        exclusive (and patient) unless ``shared``."""
        context = ironic_context.get_admin_context()
        with task_manager.acquire(
                context, node_id, shared=shared, patient=not shared,
                purpose='rescue-worker %s' % (
                    'notification' if shared else 'outcome')) as task:
            yield task if self._acceptable(task, *event) else None

    @staticmethod
    def _acceptable(task: task_manager.TaskManager, publisher_id: str,
                    event_type: str, payload: Any, data: dict) -> bool:
        node = task.node
        if (node.rescue_interface != rw_rescue.INTERFACE_NAME
                or node.provision_state != states.RESCUEWAIT):
            LOG.debug('%s for node %s, which does not wait for a rescue '
                      'worker: dropped', event_type, node.uuid)
            return False
        info = node.driver_internal_info
        token = info.get(rw_rescue.TOKEN_KEY)
        if not token or not payloads.authentic(event_type, publisher_id,
                                               payload, token):
            LOG.warning('%s for node %s is not authenticated by its token: '
                        'dropped', event_type, node.uuid)
            return False
        if (event_type != payloads.EVENT_READY
                and data.get('request_id') != info.get(
                    rw_rescue.REQUEST_ID_KEY)):
            LOG.debug('%s for node %s is not of its request: dropped',
                      event_type, node.uuid)
            return False
        return True

    def _complete(self, task: task_manager.TaskManager) -> None:
        # As agent_base's _finalize_rescue after the agent's success, and
        # its caller's error handling.
        node = task.node
        try:
            task.process_event('resume')
            task.driver.rescue.clean_up(task)
            with manager_utils.power_state_for_network_configuration(task):
                task.driver.network.configure_tenant_networks(task)
            task.process_event('done')
        except Exception as exc:
            LOG.exception('Could not finish the rescue of node %s',
                          node.uuid)
            manager_utils.rescuing_error_handler(
                task, 'Rescue worker succeeded, but the conductor could not '
                'finish the rescue: %s' % exc.__class__.__name__)
            return
        LOG.info('Node %s is rescued by its rescue worker', node.uuid)

    def _fail(self, task: task_manager.TaskManager,
              error: dict | None) -> None:
        error = error if isinstance(error, dict) else {}
        code = str(error.get('code') or 'unknown')
        message = str(error.get('message') or '')[:MAX_MESSAGE]
        msg = 'Rescue worker failed (%s): %s' % (code, message)
        LOG.error('Rescue of node %s failed: %s', task.node.uuid, msg)
        manager_utils.rescuing_error_handler(task, msg)

    # -- casts -------------------------------------------------------------

    def recast(self, context, node_id: str) -> None:
        """Cast the node's request again if it still waits for one."""
        with task_manager.acquire(context, node_id, shared=True,
                                  purpose='rescue-worker re-cast') as task:
            node = task.node
            if (node.rescue_interface == rw_rescue.INTERFACE_NAME
                    and node.provision_state == states.RESCUEWAIT
                    and node.driver_internal_info.get(rw_rescue.TOKEN_KEY)):
                self._cast(task)

    def _cast(self, task: task_manager.TaskManager) -> None:
        node = task.node
        info = node.driver_internal_info
        request_id = info.get(rw_rescue.REQUEST_ID_KEY)
        password = node.instance_info.get('hashed_rescue_password')
        hashed = bool(password)
        if not hashed:
            # An older conductor's plaintext: hashed here, never sent.
            password = node.instance_info.get('rescue_password')
        if not password or not request_id:
            LOG.warning('Node %s waits for a rescue worker but has no '
                        'rescue password or request id', node.uuid)
            return
        try:
            self.client.finalize_rescue(
                {}, node.uuid, password, hashed=hashed,
                agent_token=info[rw_rescue.TOKEN_KEY], request_id=request_id)
            LOG.info('finalize_rescue %s cast to node %s', request_id,
                     node.uuid)
        except rw_client.WorkerNotListening:
            LOG.info('The rescue worker of node %s does not listen yet; '
                     'its ready notification brings the cast', node.uuid)
        finally:
            # The client keeps casts for re-casting, with the hash: the
            # node's record is what this conductor re-casts from.
            self.client.forget(request_id)


_LOCK = threading.Lock()
_LISTENER: RescueWorkerListener | None = None


def install(listener: RescueWorkerListener | None) -> None:
    """Make ``listener`` the process's listener (tests); None forgets."""
    global _LISTENER
    with _LOCK:
        _LISTENER = listener


def ensure_started() -> RescueWorkerListener:
    """The process's listener, created and started on first use."""
    global _LISTENER
    with _LOCK:
        if _LISTENER is None:
            url = conductor_transport_url()
            group = CONF.rescue_worker
            transport = oslo_messaging.get_rpc_transport(CONF, url=url)
            notification_transport = \
                oslo_messaging.get_notification_transport(CONF, url=url)
            _LISTENER = RescueWorkerListener(
                transport, notification_transport, topic=group.topic,
                notification_topic=group.notification_topic).start()
            LOG.info('Listening to rescue workers in pool %s', POOL)
            # The workers warn about it too, but only in ramdisks' logs:
            # the operator reads the conductor's.
            risk = rpc.broker_restart_risk(CONF, url)
            if risk:
                LOG.warning('Rescue workers\' broker: %s', risk)
        return _LISTENER


get = ensure_started
