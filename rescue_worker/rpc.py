"""Transports, the RPC server, the notifier: everything oslo.messaging.

The rest of the package asks this module for messaging objects and never
imports a driver. Works with a private ``ConfigOpts`` (one per worker), so
many workers, each with its own configuration, can live in one process.
"""

from __future__ import annotations

import importlib
import logging
import re
import threading

import oslo_messaging
from oslo_config import cfg
from oslo_messaging import opts as messaging_opts

from rescue_worker import conf as rw_conf

NOTIFICATIONS_GROUP = 'oslo_messaging_notifications'


# oslo.messaging 18.x registers these groups on the global cfg.CONF only,
# yet reads them from the transport's conf on every send: without this a
# private ConfigOpts fails the first cast with NoSuchOptError. The list is
# the one oslo.messaging's own ConfFixture imports.
_GLOBAL_ONLY_OPTS = (
    ('oslo_messaging._tracing.client', 'oslo_messaging_tracing'),
    ('oslo_messaging._metrics.client', 'oslo_messaging_metrics'),
)


def _register_global_only_opts(conf: cfg.ConfigOpts) -> None:
    for module_name, group in _GLOBAL_ONLY_OPTS:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        opts = getattr(module, group, None)
        if opts:
            conf.register_opts(opts, group=group)


#: option names that hold a secret whether or not the library says so
#: (oslo.messaging 18 leaves ``ssl_client_key_password`` in clear)
_SECRET_NAME = re.compile(r'(password|passwd|secret|token)$')


def _mask_forgotten_secrets(opts) -> None:
    """Mark secret-looking options secret, so that ``log_opt_values`` (the
    worker logs every value at DEBUG) masks them."""
    for opt in opts:
        if _SECRET_NAME.search(opt.name):
            opt.secret = True


def register_messaging_opts(conf: cfg.ConfigOpts) -> None:
    """Register oslo.messaging's options with rescue-worker's defaults.

    Enough for a conductor-side tool; call before parsing, so that a
    config file can override the defaults.
    """
    oslo_messaging.set_transport_defaults(rw_conf.CONTROL_EXCHANGE)
    for group, opts in messaging_opts.list_opts():
        _mask_forgotten_secrets(opts)
        conf.register_opts(opts, group=group)
    _register_global_only_opts(conf)
    # Without a driver oslo.messaging silently drops notifications, and
    # notifications are how the conductor learns every outcome.
    conf.set_default('driver', ['messagingv2'], group=NOTIFICATIONS_GROUP)


#: (group, option) of the messaging drivers' options naming a private key:
#: lockdown scrubs those files with the configuration
_PRIVATE_KEY_OPTS = (
    ('oslo_messaging_rabbit', 'ssl_key_file'),
    ('oslo_messaging_kafka', 'ssl_client_key_file'),
)


def private_key_files(conf: cfg.ConfigOpts) -> list[str]:
    """The TLS private keys the messaging drivers are configured with."""
    paths = []
    for group, name in _PRIVATE_KEY_OPTS:
        try:
            value = getattr(getattr(conf, group), name)
        except (cfg.NoSuchOptError, cfg.NoSuchGroupError, AttributeError):
            continue
        if value:
            paths.append(value)
    return paths


def check_option_values(conf: cfg.ConfigOpts) -> None:
    """Read every option of the worker and of oslo.messaging once, so that
    a value of the wrong type fails now, as one configuration error,
    rather than as a traceback from wherever it is first used.

    :raises cfg.Error: the first value that cannot be used.
    """
    groups = [(rw_conf.GROUP, rw_conf.ALL_OPTS)]
    groups.extend(messaging_opts.list_opts())
    for group, opts in groups:
        holder = conf if group is None else getattr(conf, group)
        for opt in opts:
            getattr(holder, opt.dest)


def register_opts(conf: cfg.ConfigOpts) -> None:
    """Register the worker's own and oslo.messaging's options."""
    rw_conf.register_opts(conf)
    register_messaging_opts(conf)


def broker_restart_risk(conf: cfg.ConfigOpts,
                        url: str | None = None) -> str | None:
    """What a RabbitMQ restart would lose with this configuration, and
    the fix; None when queues outlive a restart (or the driver is not
    rabbit). See doc/source/reliability.rst."""
    url = url or conf.transport_url or ''
    if not url.startswith('rabbit'):
        return None
    rabbit = conf.oslo_messaging_rabbit
    if rabbit.amqp_durable_queues or rabbit.rabbit_quorum_queue:
        return None
    return ('queues are transient: a RabbitMQ restart deletes the casts '
            'and notifications waiting in them, and a conductor may never '
            'see this node\'s outcome. Set [oslo_messaging_rabbit] '
            'amqp_durable_queues = true (one broker node) or '
            'rabbit_quorum_queue = true (a cluster) on the workers and the '
            'conductors alike (rescue-worker\'s documentation, '
            '"Reliability")')


def get_rpc_transport(conf: cfg.ConfigOpts,
                      url: str | None = None) -> oslo_messaging.Transport:
    return oslo_messaging.get_rpc_transport(conf, url=url)


def get_notification_transport(conf: cfg.ConfigOpts,
                               url: str | None = None
                               ) -> oslo_messaging.Transport:
    return oslo_messaging.get_notification_transport(conf, url=url)


def server_target(conf: cfg.ConfigOpts) -> oslo_messaging.Target:
    return oslo_messaging.Target(topic=conf.rescue_worker.topic,
                                 server=conf.rescue_worker.node_id)


def get_server(conf: cfg.ConfigOpts, transport: oslo_messaging.Transport,
               endpoints: list) -> oslo_messaging.MessageHandlingServer:
    # No executor argument: the default is threading (eventlet is
    # deprecated upstream). One request at a time is enforced by the
    # endpoint, not by the pool size, so get_status stays answerable while
    # a request runs.
    return oslo_messaging.get_rpc_server(
        transport, server_target(conf), endpoints,
        serializer=oslo_messaging.NoOpSerializer(),
        access_policy=oslo_messaging.DefaultRPCAccessPolicy)


class DriverLogWatch(logging.Handler):
    """A handler on oslo.messaging's loggers, for what its drivers only log
    and never raise (a send that failed, a login refused); a subclass says
    what a record of ``LOGGERS`` means."""

    LOGGERS: tuple[str, ...] = ()

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        #: set once a record ``matches``
        self.seen = threading.Event()

    def matches(self, record: logging.LogRecord) -> bool:
        return True

    def emit(self, record: logging.LogRecord) -> None:
        if self.matches(record):
            self.seen.set()

    def attach(self) -> None:
        for name in self.LOGGERS:
            logger = logging.getLogger(name)
            if self not in logger.handlers:
                logger.addHandler(self)

    def detach(self) -> None:
        for name in self.LOGGERS:
            logging.getLogger(name).removeHandler(self)


class CredentialsRefused(DriverLogWatch):
    """Notices that RabbitMQ refused the credentials of ``transport_url``.

    The rabbit driver retries a refused login for ever, as it does an
    unreachable broker, and only logs it (``ACCESS_REFUSED``). Retrying
    cannot fix wrong credentials, so the worker watches for that log while
    it starts and exits with a configuration error instead.
    """

    # The rabbit driver's logger, under both names oslo.messaging's
    # modules are known by.
    LOGGERS = ('oslo_messaging._drivers.impl_rabbit',
               'oslo.messaging._drivers.impl_rabbit')

    def matches(self, record: logging.LogRecord) -> bool:
        return 'ACCESS_REFUSED' in record.getMessage() or bool(
            record.exc_info and record.exc_info[1] is not None
            and credentials_refused(record.exc_info[1]))

    def __enter__(self) -> CredentialsRefused:
        self.attach()
        return self

    def __exit__(self, *exc_info) -> None:
        self.detach()


def credentials_refused(exc: BaseException) -> bool:
    """Whether ``exc`` is the broker refusing the login (AMQP 403)."""
    return (type(exc).__name__ == 'AccessRefused'
            or 'ACCESS_REFUSED' in str(exc))


def broker_user(conf: cfg.ConfigOpts) -> str:
    """The user name(s) of ``transport_url``, for an operator's message."""
    try:
        url = oslo_messaging.TransportURL.parse(conf)
    except oslo_messaging.InvalidTransportURL:
        return '(an invalid transport_url)'
    return ', '.join(sorted({str(host.username) for host in url.hosts}))


def broker_hosts(conf: cfg.ConfigOpts) -> str:
    """The broker's host:port list from ``transport_url``, for logs: never
    the credentials."""
    try:
        url = oslo_messaging.TransportURL.parse(conf)
    except oslo_messaging.InvalidTransportURL:
        return '(an invalid transport_url)'
    hosts = ['%s:%s' % (host.hostname, host.port) if host.port
             else str(host.hostname) for host in url.hosts]
    return ', '.join(hosts) or url.transport or '(no host)'


def publisher_id(node_id: str) -> str:
    return 'rescue-worker.%s' % node_id


def get_notifier(conf: cfg.ConfigOpts, transport: oslo_messaging.Transport
                 ) -> oslo_messaging.Notifier:
    return oslo_messaging.Notifier(
        transport, publisher_id=publisher_id(conf.rescue_worker.node_id),
        serializer=oslo_messaging.NoOpSerializer(),
        retry=conf.rescue_worker.notification_retry)
