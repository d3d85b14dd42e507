"""A fleet helper process: K in-process nodes, rescue workers or bare
servers, started from a spec file.

``python -m benchmarks fleet-helper --spec FILE`` reads the spec
(JSON: ``kind`` ``rescue`` or ``bare``, ``nodes``), starts every node with
its own transports, and reports on standard output, one JSON object a line:
``{"event": "ready", ...}`` once every node consumes, then
``{"event": "stopped"}`` after ``stop`` (or end of file) on standard input,
and exits at once, without stopping the nodes one by one.
A failure is ``{"event": "error", "message": ...}`` and exit status 1.
The broker URL of the bare servers comes from the environment
(``bare.URL_ENV``); each rescue worker reads its own from its config file.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
import threading
import time

LOG = logging.getLogger(__name__)


def emit(event: str, **fields) -> None:
    sys.stdout.write(json.dumps(dict(fields, event=event)) + '\n')
    sys.stdout.flush()


def proc_status() -> dict:
    """VmRSS (bytes) and Threads of this process, from /proc."""
    found = {}
    with open('/proc/self/status', encoding='ascii') as f:
        for line in f:
            key, _, value = line.partition(':')
            if key == 'VmRSS':
                found['rss_bytes'] = int(value.split()[0]) * 1024
            elif key == 'Threads':
                found['threads'] = int(value)
    return found


def raise_fd_limit() -> None:
    """Each node holds a few sockets; 250 nodes would pass 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class RescueNodes:
    """In-process ``RescueWorker``s, one per sandbox node."""

    def __init__(self, spec: dict) -> None:
        from oslo_config import cfg

        from rescue_worker import rpc
        from rescue_worker import service

        self.workers = []
        for node in spec['nodes']:
            conf = cfg.ConfigOpts()
            rpc.register_opts(conf)
            conf(['--config-file', node['config_file']],
                 project='rescue-worker', default_config_files=[],
                 default_config_dirs=[])
            worker = service.RescueWorker(
                conf, cmdline_path=node['cmdline_file'])
            worker.start()
            self.workers.append(worker)
            if spec.get('lockdown'):
                # As the daemon does: a worker that asks to stop (after a
                # rescue, exit_after_rescue) is stopped and locks down.
                threading.Thread(target=self._serve, args=(worker,),
                                 daemon=True).start()

    @staticmethod
    def _serve(worker) -> None:
        worker.wait_for_stop_request()
        worker.stop()

    def __len__(self) -> int:
        return len(self.workers)


class BareNodes:
    """In-process bare servers, each with its own transports."""

    def __init__(self, spec: dict) -> None:
        from benchmarks import bare

        url = os.environ.get(bare.URL_ENV)
        if not url:
            raise RuntimeError('%s is not set' % bare.URL_ENV)
        conf = bare.make_conf(url)
        self.servers = []
        for node in spec['nodes']:
            server = bare.BareServer(conf, node['node_id'])
            server.start()
            self.servers.append(server)

    def __len__(self) -> int:
        return len(self.servers)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog='benchmarks fleet-helper',
                                     allow_abbrev=False)
    parser.add_argument('--spec', required=True)
    args = parser.parse_args(argv)
    # What a worker logs per request is not what is measured here; the
    # rescue-worker process comparison runs with the daemon's logging.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format='%(asctime)s %(levelname)s %(name)s '
                               '%(message)s')
    for name in ('oslo.messaging', 'oslo_messaging', 'kombu', 'amqp'):
        logging.getLogger(name).setLevel(logging.ERROR)
    raise_fd_limit()
    with open(args.spec, encoding='utf-8') as f:
        spec = json.load(f)
    started = time.monotonic()
    try:
        kinds = {'rescue': RescueNodes, 'bare': BareNodes}
        nodes = kinds[spec['kind']](spec)
    except Exception as exc:
        LOG.exception('fleet helper failed to start its nodes')
        emit('error', message='%s: %s' % (type(exc).__name__, exc))
        sys.stderr.flush()
        os._exit(1)
    emit('ready', nodes=len(nodes), pid=os.getpid(),
         start_seconds=round(time.monotonic() - started, 3),
         **proc_status())
    # Serve until told to stop, or until the conductor goes away.
    for line in sys.stdin:
        if line.strip() == 'stop':
            break
    # No graceful stop: a measured round is over, and stopping hundreds
    # of servers one by one takes longer than the round (about 0.4 s
    # each); the broker drops the connections and their queues.
    emit('stopped', threads=threading.active_count())
    sys.stderr.flush()
    os._exit(0)
