"""The baseline: a bare oslo.messaging RPC server with a no-op endpoint.

It listens where a rescue worker would (``Target(topic, server=node_id)``,
threading executor, the same serializer and access policy as
``rescue_worker.rpc.get_server``), and its ``finalize_rescue`` does nothing
but publish one notification carrying the request id. Whatever a rescue
worker costs beyond this is rescue-worker's own.

This module imports oslo.messaging and oslo.config only (not even the
``rescue_worker`` package), so that the bare server process (``python -m
benchmarks bare-server``) weighs what oslo.messaging weighs.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import threading
import time

import oslo_messaging
from oslo_config import cfg

EXCHANGE = 'rescue_worker'
#: the baseline fleet's RPC topic (rescue workers listen on rescue_worker)
TOPIC = 'rescue_worker_bare'
#: the baseline fleet's notification topic, so that its notifications never
#: reach the rescue fleet's waiter
NOTIFICATION_TOPIC = 'notifications_bare'
EVENT_READY = 'bench.bare.ready'
EVENT_END = 'bench.bare.end'
URL_ENV = 'RESCUE_WORKER_BENCH_TRANSPORT_URL'


def make_conf(url: str) -> cfg.ConfigOpts:
    """A private configuration with oslo.messaging's options, the given
    transport URL and the rescue-worker control exchange (what
    ``rescue_worker.rpc.register_messaging_opts`` does for a worker)."""
    from oslo_messaging import opts as messaging_opts

    oslo_messaging.set_transport_defaults(EXCHANGE)
    conf = cfg.ConfigOpts()
    for group, opts in messaging_opts.list_opts():
        conf.register_opts(opts, group=group)
    # oslo.messaging reads these groups from the transport's conf but only
    # registers them on the global one (see rescue_worker.rpc).
    for module_name, group in (
            ('oslo_messaging._tracing.client', 'oslo_messaging_tracing'),
            ('oslo_messaging._metrics.client', 'oslo_messaging_metrics')):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        opts = getattr(module, group, None)
        if opts:
            conf.register_opts(opts, group=group)
    conf([], project='rescue-worker-bench', default_config_files=[],
         default_config_dirs=[])
    conf.set_override('transport_url', url)
    return conf


class BareEndpoint:
    """``finalize_rescue`` that only publishes one notification."""

    target = oslo_messaging.Target(version='1.0')

    def __init__(self, node_id: str, notifier: oslo_messaging.Notifier
                 ) -> None:
        self.node_id = node_id
        self.notifier = notifier

    def finalize_rescue(self, ctxt, **kwargs):
        request_id = ctxt.get('request_id') if isinstance(ctxt, dict) \
            else None
        self.notifier.info({}, EVENT_END, {'node_id': self.node_id,
                                           'request_id': request_id})


class BareServer:
    """One node's bare server, with its own transports (as each rescue
    worker has)."""

    def __init__(self, conf: cfg.ConfigOpts, node_id: str,
                 topic: str = TOPIC,
                 notification_topic: str = NOTIFICATION_TOPIC) -> None:
        self.node_id = node_id
        self.transport = oslo_messaging.get_rpc_transport(conf)
        self.notification_transport = \
            oslo_messaging.get_notification_transport(conf)
        self.notifier = oslo_messaging.Notifier(
            self.notification_transport, publisher_id='bare.%s' % node_id,
            driver='messagingv2', topics=[notification_topic],
            serializer=oslo_messaging.NoOpSerializer(), retry=10)
        self.server = oslo_messaging.get_rpc_server(
            self.transport,
            oslo_messaging.Target(topic=topic, server=node_id),
            [BareEndpoint(node_id, self.notifier)],
            serializer=oslo_messaging.NoOpSerializer(),
            access_policy=oslo_messaging.DefaultRPCAccessPolicy)

    def start(self) -> None:
        self.server.start()
        self.notifier.info({}, EVENT_READY, {'node_id': self.node_id})

    def stop(self) -> None:
        self.server.stop()
        self.server.wait()
        self.transport.cleanup()
        self.notification_transport.cleanup()


def main(argv: list[str]) -> int:
    """``bare-server --node-id N [--topic T] [--notification-topic T]``;
    the broker URL comes from $RESCUE_WORKER_BENCH_TRANSPORT_URL (never the
    command line, where ``ps`` shows it). Serves until SIGTERM."""
    import argparse

    parser = argparse.ArgumentParser(prog='benchmarks bare-server',
                                     allow_abbrev=False)
    parser.add_argument('--node-id', required=True)
    parser.add_argument('--topic', default=TOPIC)
    parser.add_argument('--notification-topic', default=NOTIFICATION_TOPIC)
    args = parser.parse_args(argv)
    url = os.environ.get(URL_ENV)
    if not url:
        print('bare-server: set %s' % URL_ENV, file=sys.stderr)
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    started = time.monotonic()
    server = BareServer(make_conf(url), args.node_id, args.topic,
                        args.notification_topic)
    server.start()
    print(json.dumps({'event': 'ready',
                      'seconds': time.monotonic() - started}), flush=True)
    while not stop.wait(1.0):
        pass
    server.stop()
    return 0
