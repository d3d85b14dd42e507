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
import time

import oslo_messaging
from oslo_config import cfg

from rescue_worker import accounts
from rescue_worker import agent_token
from rescue_worker import boot
from rescue_worker import contract
from rescue_worker import endpoint as rw_endpoint
from rescue_worker import errors
from rescue_worker import journal as rw_journal
from rescue_worker import lockdown
from rescue_worker import notify
from rescue_worker import payloads
from rescue_worker import pipeline as rw_pipeline
from rescue_worker import rpc
from rescue_worker import version
from rescue_worker.cmd import keeper as keeper_cmd

LOG = logging.getLogger(__name__)

STOP_RESCUED = 'rescued'
STOP_SIGNAL = 'signal'
STOP_REQUESTED = 'requested'

#: exit status of ``run`` when an outcome was left unpublished (the
#: service manager's Restart=on-failure finishes the job)
EXIT_OUTCOME_UNPUBLISHED = 4


class StartAbandoned(Exception):
    """Asked to stop while the broker had not answered yet."""


class ShutdownTimeout(Exception):
    """The running request did not finish within ``shutdown_timeout``."""


class RescueWorker:
    """One node's worker. Raises at construction when it must not start:
    ``lockdown.AlreadyRescued`` or ``errors.ConfigurationError``.

    Every part is built from ``conf`` unless given: tests hand in a fake
    pipeline, journal, notifications or token check (or transports), and
    the rest is the real thing.
    """

    #: seconds between the warnings that the broker has not answered yet
    BROKER_REPORT_INTERVAL = 30.0

    def __init__(self, conf: cfg.ConfigOpts,
                 rpc_transport: oslo_messaging.Transport | None = None,
                 notification_transport: oslo_messaging.Transport | None
                 = None,
                 cmdline_path: str = boot.PROC_CMDLINE, *,
                 pipeline: rw_pipeline.Pipeline | None = None,
                 journal: rw_journal.Journal | None = None,
                 notifications: notify.Notifications | None = None,
                 token_check: agent_token.TokenCheck | None = None) -> None:
        self.conf = conf
        group = conf.rescue_worker
        self.node_id = group.node_id
        self._stop_requested = threading.Event()
        self._journal = journal
        self.lockdown = lockdown.Lockdown(
            state_dir=group.state_dir, scrub_paths=self.scrub_paths(),
            scrub_journal=lambda: self._get_journal().scrub(),
            request_stop=lambda: self.request_stop(STOP_RESCUED),
            after_scrub=([self._unlock_account]
                         if accounts.locked_until_lockdown(conf) else []),
            cmdline_secrets=boot.secrets_given(cmdline_path))
        # A crash between the marker and the end of the scrub left secrets
        # behind: finish the scrub, then refuse to serve.
        self.lockdown.finish_interrupted()
        token = None
        if token_check is None or notifications is None:
            token = agent_token.load_token(conf, cmdline_path)
        self.token_check = token_check or agent_token.TokenCheck(token)
        self.pipeline = pipeline or rw_pipeline.Pipeline.from_conf(conf)
        self.journal = self._get_journal()

        self._owned_transports = []
        if rpc_transport is None:
            rpc_transport = rpc.get_rpc_transport(conf)
            self._owned_transports.append(rpc_transport)
        self.rpc_transport = rpc_transport
        if notifications is None:
            if notification_transport is None:
                notification_transport = rpc.get_notification_transport(
                    conf)
                self._owned_transports.append(notification_transport)
            notifications = notify.Notifications(
                rpc.get_notifier(conf, notification_transport),
                rpc.publisher_id(self.node_id), token)
        self.notifications = notifications
        self.endpoint = rw_endpoint.RescueEndpoint(
            node_id=self.node_id, username=group.username,
            token_check=self.token_check, journal=self.journal,
            pipeline=self.pipeline, notifications=self.notifications,
            lockdown=self.lockdown if group.exit_after_rescue else None,
            stopping=self._stop_requested,
            outcome_retry_timeout=group.outcome_retry_timeout)
        self.server: oslo_messaging.MessageHandlingServer | None = None
        self.stop_reason: str | None = None
        #: set once the server consumes (after ``worker.ready``)
        self.ready = threading.Event()
        #: set once the worker has stopped for good
        self.stopped = threading.Event()

    def _get_journal(self) -> rw_journal.Journal:
        if self._journal is None:
            self._journal = rw_journal.Journal(
                self.conf.rescue_worker.state_dir)
        return self._journal

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
            self.lockdown.engage(
                payloads.FinalizeRescuePayload.from_data(last.outcome))
        if self._stop_requested.is_set():
            return
        self.server = rpc.get_server(self.conf, self.rpc_transport,
                                     [self.endpoint])
        # start() declares and binds the queue before it returns, so from
        # here on a cast to this node is never dropped.
        self.server.start()
        LOG.info('Serving RPC API %s on topic %s, server %s',
                 contract.RPC_API_VERSION, self.conf.rescue_worker.topic,
                 self.node_id)
        risk = rpc.broker_restart_risk(self.conf)
        if risk:
            LOG.warning('Broker restarts can lose this rescue: %s', risk)
        self.ready.set()
        self.notifications.ready(self._worker_payload(contract.WAITING))

    def request_stop(self, reason: str = STOP_REQUESTED) -> None:
        """Ask the worker to stop; safe from a signal handler or any
        thread."""
        if self.stop_reason is None:
            self.stop_reason = reason
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
        self.notifications.stopped(self._worker_payload(
            contract.RESCUED if self.lockdown.engaged else 'stopped',
            reason=self.stop_reason))
        for transport in self._owned_transports:
            transport.cleanup()
        self.stopped.set()
        LOG.info('Worker stopped (%s)', self.stop_reason)

    def run(self) -> int:
        """Serve until stopped; returns the process exit status.

        :raises StartAbandoned: asked to stop before the broker answered.
        """
        self._start_in_background()
        while not self._stop_requested.wait(1.0):
            # A bounded wait keeps the main thread responsive to signals.
            pass
        LOG.info('Stopping (%s)', self.stop_reason)
        self.stop()
        if self.stop_reason == STOP_RESCUED:
            interfaces = self.lockdown.leased_interfaces
            if interfaces and self.conf.rescue_worker.tenant_renew_period:
                # Does not return: the keeper replaces this process, and
                # with it every secret this one holds in memory.
                keeper_cmd.exec_keeper(self.conf, interfaces)
            return 0
        return self.exit_status_after_stop()

    def exit_status_after_stop(self) -> int:
        """0, or ``EXIT_OUTCOME_UNPUBLISHED`` when an outcome the journal
        holds never reached the broker: the service manager restarts the
        worker, which publishes it and (after a rescue) locks down. An
        exit 0 here would leave the token and the broker credentials on
        disk of a node the tenant may already own."""
        pending = [record.request_id for record in self.journal.unfinished()
                   if record.ended]
        if not pending:
            return 0
        LOG.error('Exiting with the outcome of %s unpublished; exit status '
                  '%d asks the service manager to start the worker again, '
                  'which publishes it and finishes the lockdown',
                  ', '.join(pending), EXIT_OUTCOME_UNPUBLISHED)
        return EXIT_OUTCOME_UNPUBLISHED

    def _start_in_background(self) -> None:
        """``start()`` in a thread, so that the main thread keeps taking
        SIGTERM: oslo.messaging retries an unreachable broker for ever, in
        the thread that connects."""
        failure: list[BaseException] = []

        def start() -> None:
            try:
                self.start()
            except BaseException as exc:
                failure.append(exc)
        starter = threading.Thread(target=start, name='rescue-worker-start',
                                   daemon=True)
        began = time.monotonic()
        with rpc.CredentialsRefused() as refused:
            starter.start()
            next_report = self.BROKER_REPORT_INTERVAL
            while starter.is_alive():
                if self._check_start(starter, refused):
                    break
                waited = time.monotonic() - began
                if starter.is_alive() and waited >= next_report:
                    LOG.warning('Still connecting to the broker at %s '
                                'after %d s', rpc.broker_hosts(self.conf),
                                waited)
                    next_report += self.BROKER_REPORT_INTERVAL
        if failure:
            if rpc.credentials_refused(failure[0]):
                raise self._credentials_refused() from None
            raise failure[0]

    def _credentials_refused(self) -> errors.ConfigurationError:
        return errors.ConfigurationError(
            'the broker at %s refused the credentials of user %s; fix '
            'transport_url (or the broker user) and start the worker '
            'again' % (rpc.broker_hosts(self.conf),
                       rpc.broker_user(self.conf)))

    def _check_start(self, starter: threading.Thread,
                     refused: rpc.CredentialsRefused) -> bool:
        """Wait a moment for the start; raise if it cannot end well.
        True: stop waiting for it."""
        stop_requested = self._stop_requested.wait(1.0)
        if not starter.is_alive():
            return True
        if refused.seen.is_set():
            raise self._credentials_refused()
        if stop_requested and self.stop_reason == STOP_RESCUED:
            # Not waiting for the broker: the start itself rescued the node
            # (it finished a journaled request, or served a cast while
            # worker.ready was going out) and is returning. Abandoning it
            # here would skip worker.stopped and the tenant network keeper.
            starter.join(self.conf.rescue_worker.shutdown_timeout)
            if starter.is_alive():
                LOG.warning('The start did not return within %d s of the '
                            'lockdown; stopping without it',
                            self.conf.rescue_worker.shutdown_timeout)
            return True
        if stop_requested:
            raise StartAbandoned(
                'stopped (%s) before the broker at %s answered; no request '
                'was taken' % (self.stop_reason,
                               rpc.broker_hosts(self.conf)))
        return False

    # -- lockdown ----------------------------------------------------------

    def scrub_paths(self) -> list[str]:
        """The files lockdown removes: the token file, the configured
        ``scrub_paths`` (or else the configuration files in use) and the
        messaging drivers' private keys."""
        group = self.conf.rescue_worker
        paths = [group.agent_token_file] if group.agent_token_file else []
        if group.scrub_paths is not None:
            paths.extend(group.scrub_paths)
        else:
            paths.extend(os.path.abspath(p) for p in self.conf.config_file)
            for directory in self.conf.config_dir or []:
                if os.path.isdir(directory):
                    paths.extend(os.path.join(directory, name)
                                 for name in sorted(os.listdir(directory))
                                 if name.endswith('.conf'))
        return paths + rpc.private_key_files(self.conf)

    def _unlock_account(self) -> None:
        """The account step wrote the account locked: the tenant's
        password works only from here on, with the secrets gone."""
        group = self.conf.rescue_worker
        try:
            if accounts.unlock_account(group.root_dir, group.username):
                LOG.info('Unlocked the %s account: the tenant can log in',
                         group.username)
        except LookupError:
            LOG.info('No %s account to unlock (the account step did not '
                     'run)', group.username)

    # -- helpers -----------------------------------------------------------

    def _worker_payload(self, state: str, reason: str | None = None
                        ) -> payloads.WorkerPayload:
        return payloads.WorkerPayload(
            node_id=self.node_id, state=state,
            topic=self.conf.rescue_worker.topic,
            version=version.version_string(),
            rpc_api_version=contract.RPC_API_VERSION, reason=reason)
