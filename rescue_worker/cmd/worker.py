"""``rescue-worker``: the daemon that runs in the rescue ramdisk."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from oslo_config import cfg
from oslo_log import log

from rescue_worker import boot
from rescue_worker import errors
from rescue_worker import lockdown
from rescue_worker import rpc
from rescue_worker import service
from rescue_worker import version

LOG = logging.getLogger(__name__)

EXIT_CONFIG = 2
EXIT_SHUTDOWN_TIMEOUT = 3

DESCRIPTION = (
    'The rescue agent of a bare-metal node, run inside its rescue ramdisk: '
    'an oslo.messaging worker that listens on its own node\'s topic for the '
    'conductor\'s finalize_rescue, checks the agent token, creates the '
    'rescue account with the password it is sent, brings the network up by '
    'DHCP, publishes start/end/error notifications, then locks itself down '
    '(removes its token and configuration) so that the tenant who gets the '
    'node gets no broker credentials with it.')
EPILOG = (
    'Every option of the configuration file, with its help and default, is '
    'in etc/rescue-worker/rescue-worker.conf.sample of the source tree; '
    'generate it with "oslo-config-generator --namespace rescue_worker '
    '--namespace oslo.messaging --namespace oslo.log". A node needs at '
    'least [DEFAULT] transport_url and [rescue_worker] node_id, and its '
    'agent token in the file [rescue_worker] agent_token_file names (mode '
    '0600); or all three on the kernel command line, with no file at all. '
    'Exit '
    'status: 0 after a rescue or SIGTERM, 2 when the configuration or the '
    'token cannot be used, 3 when SIGTERM gave up on a running request, 4 '
    'when SIGTERM came while an outcome was still unpublished.')


KERNEL_CMDLINE_OPT = cfg.StrOpt(
    'kernel-cmdline', default=boot.PROC_CMDLINE,
    help='File holding the kernel command line, whose rescue_worker.node_id=, '
         'rescue_worker.transport_url= and rescue_worker_token= stand in '
         'for options the configuration files leave unset.')


def parse_config(argv: list[str] | None) -> cfg.ConfigOpts:
    argv = list(sys.argv[1:] if argv is None else argv)
    conf = cfg.ConfigOpts()
    rpc.register_opts(conf)
    log.register_options(conf)
    conf.register_cli_opt(KERNEL_CMDLINE_OPT)
    # The boot parameters are defaults, so they must be known before the
    # files are read: find --kernel-cmdline ahead of oslo.config.
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument('--kernel-cmdline', default=boot.PROC_CMDLINE)
    boot.set_defaults(conf, early.parse_known_args(argv)[0].kernel_cmdline)
    conf(argv, project='rescue-worker', prog='rescue-worker',
         version=version.version_string(), description=DESCRIPTION,
         epilog=EPILOG)
    rpc.check_option_values(conf)
    return conf


def _exit_now(status: int) -> None:
    """Exit without waiting for threads that never end (a connection
    retried for ever, a request stuck in a step)."""
    logging.shutdown()
    os._exit(status)


def main(argv: list[str] | None = None) -> int:
    try:
        conf = parse_config(sys.argv[1:] if argv is None else argv)
    except cfg.Error as exc:
        print('rescue-worker: %s' % exc, file=sys.stderr)
        return EXIT_CONFIG
    log.setup(conf, 'rescue-worker')
    LOG.info('rescue-worker %s starting for node %s',
             version.version_string(), conf.rescue_worker.node_id)
    # Secret options (transport_url among them) are masked by oslo.config.
    conf.log_opt_values(LOG, logging.DEBUG)
    # Each failure is logged after its except block: oslo.log appends the
    # exception being handled to WARNING and ERROR lines, which would say
    # the same thing twice on the one line an operator reads.
    try:
        worker = service.RescueWorker(conf,
                                      cmdline_path=conf.kernel_cmdline)
    except lockdown.AlreadyRescued as exc:
        refusal = exc
    except errors.ConfigurationError as exc:
        refusal = exc
    else:
        refusal = None
    if isinstance(refusal, lockdown.AlreadyRescued):
        # Not a failure: a rescued node simply has nothing to serve, and a
        # non-zero status would make systemd restart us in a loop.
        LOG.warning('%s', refusal)
        return 0
    if refusal is not None:
        LOG.error('Cannot start: %s', refusal)
        return EXIT_CONFIG

    def _on_signal(signum, frame):
        worker.request_stop(service.STOP_SIGNAL)

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        return worker.run()
    except (service.StartAbandoned, errors.ConfigurationError,
            service.ShutdownTimeout) as exc:
        failure = exc
    _exit_after(failure)


def _exit_after(failure: Exception) -> None:
    """Log why the worker gives up, in one line, and exit at once."""
    if isinstance(failure, service.StartAbandoned):
        LOG.warning('Exiting: %s', failure)
        # The thread that connects retries for ever; nothing to wait for.
        _exit_now(0)
    elif isinstance(failure, errors.ConfigurationError):
        LOG.error('Cannot start: %s', failure)
        _exit_now(EXIT_CONFIG)
    LOG.error('Exiting with a request still running: %s', failure)
    _exit_now(EXIT_SHUTDOWN_TIMEOUT)

if __name__ == '__main__':
    sys.exit(main())
