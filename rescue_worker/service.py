"""The worker's life cycle: start-up checks, recovery, serving, stopping and
lockdown.

``RescueWorker`` wires the parts together (configuration, token, journal,
pipeline, endpoint, RPC server, notifier). The ``rescue-worker`` command and
the test fixtures both run a worker through it, so a test exercises the same
sequence as the daemon.
"""

from __future__ import annotations

import logging
import os
import threading

import oslo_messaging
from oslo_config import cfg

from rescue_worker import agent_token
from rescue_worker import endpoint as rw_endpoint
from rescue_worker import journal as rw_journal
from rescue_worker import lockdown
from rescue_worker import notify
from rescue_worker import pipeline as rw_pipeline
from rescue_worker import rpc
from rescue_worker import version
from rescue_worker.network import base as net_base
from rescue_worker.network import keeper

LOG = logging.getLogger(__name__)

STOP_RESCUED = 'rescued'
STOP_SIGNAL = 'signal'
STOP_REQUESTED = 'requested'


class ShutdownTimeout(Exception):
    """The running request did not finish within ``shutdown_timeout``."""


class RescueWorker:
    """One node's worker. Raises at construction when it must not start:
    ``lockdown.AlreadyRescued`` or ``errors.ConfigurationError``."""

    def __init__(self, conf: cfg.ConfigOpts,
                 rpc_transport: oslo_messaging.Transport | None = None,
                 notification_transport: oslo_messaging.Transport | None
                 = None,
                 cmdline_path: str = agent_token.PROC_CMDLINE) -> None:
        self.conf = conf
        group = conf.rescue_worker
        self.node_id = group.node_id
        self.marker = lockdown.LockdownMarker(group.state_dir)
        if self.marker.exists():
            # A crash between the marker and the end of the scrub left
            # secrets behind: finish the scrub, then refuse to serve.
            self._scrub_safely(lambda: rw_journal.Journal(group.state_dir))
        self.marker.check()
        self.token_check = agent_token.TokenCheck(
            agent_token.load_token(conf, cmdline_path))
        self.pipeline = rw_pipeline.Pipeline.from_conf(conf)
        self.journal = rw_journal.Journal(group.state_dir)

        self._owned_transports = []
        if rpc_transport is None:
            rpc_transport = rpc.get_rpc_transport(conf)
            self._owned_transports.append(rpc_transport)
        if notification_transport is None:
            notification_transport = rpc.get_notification_transport(conf)
            self._owned_transports.append(notification_transport)
        self.rpc_transport = rpc_transport
        self.notifications = notify.Notifications(
            rpc.get_notifier(conf, notification_transport))
        self._stop_requested = threading.Event()
        self.endpoint = rw_endpoint.RescueEndpoint(
            node_id=self.node_id, topic=group.topic, username=group.username,
            token_check=self.token_check, journal=self.journal,
            pipeline=self.pipeline, notifications=self.notifications,
            on_rescued=self._rescued, stopping=self._stop_requested,
            outcome_retry_timeout=group.outcome_retry_timeout)
        self.server: oslo_messaging.MessageHandlingServer | None = None
        self.stop_reason: str | None = None
        self._terminate = threading.Event()
        self.leased_interfaces: list[str] = []
        #: how the tenant network keeper ended, once it has run
        self.keeper_result: str | None = None
        #: set once the server consumes (after ``worker.ready``)
        self.ready = threading.Event()
        #: set once the worker has stopped for good
        self.stopped = threading.Event()

    # -- life cycle --------------------------------------------------------

    def start(self) -> None:
        """Recover interrupted requests, then serve (unless recovery
        finished a rescue and the worker locked down)."""
        recovered = self.endpoint.recover()
        if recovered:
            LOG.info('Recovered %d interrupted request(s)', len(recovered))
        last = self.journal.last()
        if (not self._stop_requested.is_set() and last is not None
                and last.ended and last.outcome.get('error') is None
                and self.conf.rescue_worker.exit_after_rescue):
            # The node was rescued but the process died before its
            # lockdown was complete (no marker yet): lock down now rather
            # than serve a node the tenant already owns.
            LOG.warning('Request %s rescued this node before a restart; '
                        'completing the lockdown', last.request_id)
            self._rescued(last.outcome)
        if self._stop_requested.is_set():
            return
        self.server = rpc.get_server(self.conf, self.rpc_transport,
                                     [self.endpoint])
        # start() declares and binds the queue before it returns, so from
        # here on a cast to this node is never dropped.
        self.server.start()
        LOG.info('Serving RPC API %s on topic %s, server %s',
                 rw_endpoint.RPC_API_VERSION, self.conf.rescue_worker.topic,
                 self.node_id)
        risk = rpc.broker_restart_risk(self.conf)
        if risk:
            LOG.warning('Broker restarts can lose this rescue: %s', risk)
        self.ready.set()
        self.notifications.ready(self._worker_data('waiting'))

    def request_stop(self, reason: str = STOP_REQUESTED) -> None:
        """Ask the worker to stop; safe from a signal handler or any
        thread."""
        if self.stop_reason is None:
            self.stop_reason = reason
        if reason != STOP_RESCUED:
            # Also ends the tenant network keeper, if it runs.
            self._terminate.set()
        self._stop_requested.set()

    def wait_for_stop_request(self, timeout: float | None = None) -> bool:
        return self._stop_requested.wait(timeout)

    def stop(self) -> None:
        """Stop consuming, finish the running request, publish
        ``worker.stopped``; then lock down if the node was rescued."""
        if self.server is not None:
            self.server.stop()
            waiter = threading.Thread(target=self.server.wait,
                                      name='rescue-worker-drain',
                                      daemon=True)
            waiter.start()
            waiter.join(self.conf.rescue_worker.shutdown_timeout)
            if waiter.is_alive():
                raise ShutdownTimeout(
                    'the running request did not finish within %d s; the '
                    'journal keeps it and the next start runs it again' %
                    self.conf.rescue_worker.shutdown_timeout)
        rescued = self.stop_reason == STOP_RESCUED
        self.notifications.stopped(self._worker_data(
            'rescued' if rescued else 'stopped', reason=self.stop_reason))
        for transport in self._owned_transports:
            transport.cleanup()
        self.stopped.set()
        LOG.info('Worker stopped (%s)', self.stop_reason)

    def run(self) -> int:
        """Serve until stopped; returns the process exit status."""
        self.start()
        while not self._stop_requested.wait(1.0):
            # A bounded wait keeps the main thread responsive to signals.
            pass
        LOG.info('Stopping (%s)', self.stop_reason)
        self.stop()
        if self.stop_reason == STOP_RESCUED:
            self.keep_tenant_network()
        return 0

    def keep_tenant_network(self) -> str:
        """After lockdown: renew the leases until the tenant network's DHCP
        answers (DESIGN.md section 5), with no RPC."""
        group = self.conf.rescue_worker
        keeper_ = keeper.TenantNetworkKeeper(
            net_base.get_backend(self.conf), self.leased_interfaces,
            interval=group.tenant_renew_interval,
            period=group.tenant_renew_period,
            renew_timeout=min(group.dhcp_timeout,
                              group.tenant_renew_interval),
            stop_event=self._terminate)
        self.keeper_result = keeper_.run()
        LOG.info('Tenant network keeper done (%s)', self.keeper_result)
        return self.keeper_result

    # -- lockdown ----------------------------------------------------------

    def _rescued(self, outcome: dict) -> bool:
        if not self.conf.rescue_worker.exit_after_rescue:
            return False
        # The marker first: if the process dies from here on, it never
        # serves again.
        self.marker.write(outcome['request_id'])
        # Then the scrub, at once: not after the server drained and
        # worker.stopped went out, which takes seconds (minutes with the
        # broker away) during which a crash left the secrets on disk for
        # good.
        self._scrub_safely(lambda: self.journal)
        self.leased_interfaces = [entry['name']
                                  for entry in outcome.get('interfaces', [])
                                  if entry.get('dhcp') == net_base.LEASED]
        LOG.info('Rescue succeeded; locking down')
        self.request_stop(STOP_RESCUED)
        return True

    def scrub_paths(self) -> list[str]:
        group = self.conf.rescue_worker
        paths = [group.agent_token_file] if group.agent_token_file else []
        if group.scrub_paths is not None:
            return paths + list(group.scrub_paths)
        paths.extend(os.path.abspath(p) for p in self.conf.config_file)
        for directory in self.conf.config_dir or []:
            if os.path.isdir(directory):
                paths.extend(os.path.join(directory, name)
                             for name in sorted(os.listdir(directory))
                             if name.endswith('.conf'))
        return paths

    def _scrub_safely(self, journal) -> None:
        """Scrub; a failure is logged, never raised: lockdown goes on."""
        try:
            scrubbed = journal().scrub()
        except (OSError, ValueError) as exc:
            scrubbed = 0
            LOG.error('Lockdown could not scrub the journal in %s (%s); '
                      'remove it by hand before handing the node to the '
                      'tenant.', self.conf.rescue_worker.state_dir,
                      type(exc).__name__)
        # scrub_files logs each file it cannot remove.
        removed = lockdown.scrub_files(self.scrub_paths())
        LOG.info('Lockdown: removed %s; dropped the request data of %d '
                 'journal record(s)', ', '.join(removed) or 'no files',
                 scrubbed)

    # -- helpers -----------------------------------------------------------

    def _worker_data(self, state: str, reason: str | None = None) -> dict:
        return notify.worker_data(
            node_id=self.node_id, state=state,
            topic=self.conf.rescue_worker.topic,
            version=version.version_string(),
            rpc_api_version=rw_endpoint.RPC_API_VERSION, reason=reason)
