"""ironic.conf options of the ``rescue-worker`` rescue interface.

Group ``[rescue_worker]`` of the conductor's configuration (not to be
confused with the worker's own ``[rescue_worker]`` group: the two never share
a file).
"""

from __future__ import annotations

from oslo_config import cfg

GROUP = 'rescue_worker'

opts = [
    cfg.StrOpt('transport_url', secret=True,
               help='The conductor\'s connection to the workers\' broker, '
                    'as an oslo.messaging transport URL with the '
                    'conductor\'s own credentials. Its virtual host is '
                    'replaced by [rescue_worker] vhost.'),
    cfg.StrOpt('ramdisk_transport_url',
               help='Scheme, host and port of the workers\' broker as the '
                    'rescue ramdisk reaches it, e.g. '
                    'rabbit://192.0.2.10:5672/ . No credentials and no '
                    'virtual host: each node gets its own broker user, and '
                    'the virtual host is [rescue_worker] vhost.'),
    cfg.StrOpt('vhost', default='/',
               help='The RabbitMQ virtual host of the workers, used by the '
                    'conductor and by the ramdisks alike.'),
    cfg.StrOpt('management_url', secret=True,
               help='Root of the RabbitMQ management HTTP API, with an '
                    'administrator\'s credentials in its userinfo, e.g. '
                    'http://admin:PASS@192.0.2.10:15672/ ("/api" is '
                    'appended unless the URL already ends with it). Used to '
                    'create and delete the per-node users rw-<node uuid>.'),
    cfg.IntOpt('management_timeout', default=30, min=1,
               help='Seconds to wait for an answer of the management API.'),
    cfg.StrOpt('topic', default='rescue_worker',
               help='The workers\' RPC topic ([rescue_worker] topic of '
                    'their configuration).'),
    cfg.StrOpt('notification_topic', default='notifications',
               help='The topic the workers publish their notifications on '
                    '([oslo_messaging_notifications] topics of their '
                    'configuration).'),
    cfg.IntOpt('reconcile_interval', default=60, min=0,
               help='Seconds between two runs of the reconciliation that '
                    'casts finalize_rescue again (same request id) to nodes '
                    'in "rescue wait" whose outcome has not come. Also '
                    'starts the notification listener when the conductor '
                    'starts. 0 disables both: then the listener starts '
                    'with the first rescue of this conductor.'),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_opts(opts, group=GROUP)


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    """For oslo-config-generator (namespace ``rescue_worker.ironic``)."""
    return [(GROUP, list(opts))]
