"""The tenant network keeper as a program of its own.

After lockdown the worker process still holds the node token, the broker
credentials and its whole configuration in memory, and the tenant (with sudo)
can read a process's memory and environment. So the worker does not keep the
tenant network itself: it replaces its own program with this one
(``exec_keeper``), keeping its PID for the service manager but nothing else.
Everything the keeper needs arrives on its command line, and none of it is
secret: the ``[rescue_worker]`` options the DHCP backend reads, the
interfaces that leased, and where to log. It opens no broker connection.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence

from oslo_config import cfg

from rescue_worker import conf as rw_conf
from rescue_worker import errors
from rescue_worker.network import base as net_base
from rescue_worker.network import keeper

LOG = logging.getLogger(__name__)

#: what the keeper's environment keeps of the worker's (PYTHONPATH: a DHCP
#: backend plug-in may live there); the worker's own may hold OS_* option
#: overrides with credentials
ENVIRONMENT_KEEPS = ('PATH', 'PYTHONPATH', 'LANG', 'LC_ALL', 'TZ')


def keeper_argv(conf: cfg.ConfigOpts, interfaces: Sequence[str]) -> list[str]:
    """The keeper's command line for the worker configured by ``conf``."""
    group = conf.rescue_worker
    settings = {opt.dest: getattr(group, opt.dest)
                for opt in rw_conf.ALL_OPTS}
    argv = [sys.executable, '-m', 'rescue_worker.cmd.keeper',
            '--settings', json.dumps(settings, sort_keys=True)]
    log_file = getattr(conf, 'log_file', None)
    if log_file:
        argv += ['--log-file', log_file]
    return argv + ['--'] + list(interfaces)


def exec_keeper(conf: cfg.ConfigOpts, interfaces: Sequence[str]) -> None:
    """Replace this process with the keeper; does not return."""
    environment = {key: os.environ[key] for key in ENVIRONMENT_KEEPS
                   if key in os.environ}
    argv = keeper_argv(conf, interfaces)
    LOG.info('Handing %s to the tenant network keeper (a fresh program '
             'with no configuration, token or broker connection)',
             ', '.join(interfaces))
    logging.shutdown()
    os.execve(argv[0], argv, environment)


def _conf_from(settings: dict) -> cfg.ConfigOpts:
    conf = cfg.ConfigOpts()
    rw_conf.register_opts(conf)
    known = {opt.dest for opt in rw_conf.ALL_OPTS}
    for name, value in settings.items():
        if name in known:
            conf.set_override(name, value, group=rw_conf.GROUP)
    # No file and no environment: what the worker handed over is all.
    conf([], project='rescue-worker', default_config_files=[],
         default_config_dirs=[], use_env=False)
    return conf


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog='rescue-worker-keeper',
        description='Renew DHCP leases after a rescue until the tenant '
                    'network answers (started by rescue-worker itself).')
    parser.add_argument('--settings', required=True,
                        help='the [rescue_worker] options, as JSON')
    parser.add_argument('--log-file')
    parser.add_argument('interfaces', nargs='*')
    args = parser.parse_args(argv)
    logging.basicConfig(
        filename=args.log_file, level=logging.INFO,
        format='%(asctime)s %(process)d %(levelname)s %(name)s %(message)s')
    conf = _conf_from(json.loads(args.settings))
    group = conf.rescue_worker
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        backend = net_base.load_backend(conf)
    except errors.ConfigurationError as exc:
        LOG.error('Cannot keep the tenant network: %s', exc)
        return 2
    result = keeper.TenantNetworkKeeper(
        backend, args.interfaces,
        interval=group.tenant_renew_interval,
        period=group.tenant_renew_period,
        renew_timeout=keeper.renew_timeout(group.dhcp_timeout,
                                           group.tenant_renew_interval),
        stop_event=stop).run()
    LOG.info('Tenant network keeper done (%s)', result)
    return 0


if __name__ == '__main__':
    sys.exit(main())
