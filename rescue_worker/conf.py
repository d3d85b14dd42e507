"""Every configuration option of rescue-worker, in one place.

The names and defaults of the ``[rescue_worker]`` group are part of the
contract with conductors and image builders; add options freely, never
rename or re-type one.
"""

from __future__ import annotations

import copy
import itertools

from oslo_config import cfg
from oslo_config import types

from rescue_worker import contract
from rescue_worker import passwords

GROUP = 'rescue_worker'

CONTROL_EXCHANGE = contract.CONTROL_EXCHANGE

# Kept importable from here; the schemes live with the hashing code.
HASH_SCHEMES = passwords.HASH_SCHEMES

#: the DHCP backends rescue-worker itself registers (setup.cfg), with what
#: each does, for the help of ``dhcp_backend``
DHCP_BACKENDS = (
    ('dhclient', 'run ISC dhclient on each interface and wait for a lease'),
    ('networkd', 'write systemd-networkd .network files and reload'),
    ('udhcpc', "run busybox's udhcpc on each interface and wait for a "
               'lease (images without systemd, like TinyIPA)'),
    ('none', 'configure nothing, only report the interfaces'),
)

identity_opts = [
    cfg.StrOpt('node_id',
               required=True,
               help='Identifier of the bare-metal node this worker runs on. '
                    'It is the RPC server name: the conductor casts to '
                    'topic "<topic>.<node_id>".'),
    cfg.StrOpt('topic',
               default=contract.DEFAULT_TOPIC,
               help='RPC topic the worker listens on.'),
]

path_opts = [
    cfg.StrOpt('root_dir',
               default='/',
               help='Root of the file system the provisioning steps write '
                    'to. Every file they touch (etc/passwd, etc/shadow, '
                    'etc/sudoers.d, ...) lives under it. Tests and the demo '
                    'point it at a temporary directory.'),
    cfg.StrOpt('state_dir',
               default='/var/lib/rescue-worker',
               help='Directory holding the request journal and the '
                    'lockdown marker. Created with mode 0700.'),
]

security_opts = [
    cfg.StrOpt('agent_token_file',
               default='/etc/rescue-worker/agent-token',
               help='File holding the node token that every request must '
                    'carry as "agent_token" (at least 32 characters). It '
                    'must not be readable by group or others. When the file '
                    'does not exist, the token is read from the kernel '
                    'command line (rescue_worker_token=...).'),
    cfg.BoolOpt('allow_unauthenticated',
                default=False,
                help='Serve requests without any token check. Only for '
                     'closed test set-ups: anyone who can publish to the '
                     'broker can then set the rescue password.'),
    cfg.BoolOpt('require_hashed',
                default=False,
                help='Refuse plaintext passwords (hashed=False) with '
                     '"plaintext_refused"; only crypt hashes are accepted.'),
    cfg.StrOpt('hash_scheme',
               default=passwords.DEFAULT_SCHEME,
               choices=HASH_SCHEMES,
               help='passlib scheme used to hash a plaintext password.'),
    cfg.ListOpt('accepted_hash_schemes',
                default=list(HASH_SCHEMES),
                item_type=types.String(choices=HASH_SCHEMES),
                help='Schemes accepted for a pre-hashed password '
                     '(hashed=True). MD5-crypt and DES are never accepted.'),
    cfg.IntOpt('max_sha_crypt_rounds',
               default=passwords.DEFAULT_CAPS.sha_crypt_rounds,
               min=passwords.MIN_SHA_CRYPT_ROUNDS,
               help='Highest "rounds" of a sha512_crypt or sha256_crypt '
                    'hash: a pre-hashed password above it is refused with '
                    '"invalid_hash", since every login would spend that '
                    'many rounds (999999999 takes minutes). Plaintext is '
                    'hashed at passlib\'s default (656000 for sha512_crypt) '
                    'or at this cap if it is lower.'),
    cfg.IntOpt('max_bcrypt_cost',
               default=passwords.DEFAULT_CAPS.bcrypt_cost,
               min=passwords.MIN_BCRYPT_COST,
               max=31,
               help='Highest cost (log2 of the rounds) of a bcrypt hash: a '
                    'pre-hashed password above it is refused with '
                    '"invalid_hash", since every login would take that '
                    'long (each step doubles the time; 31 takes days). '
                    'Plaintext is hashed at passlib\'s default (12) or at '
                    'this cap if it is lower.'),
]

account_opts = [
    cfg.StrOpt('username',
               default='rescue',
               regex=r'^[a-z_][a-z0-9_-]{0,30}$',
               help='Name of the account created for the tenant.'),
    cfg.BoolOpt('unlock_after_lockdown',
                default=True,
                help='Write the account locked ("!" before the hash in '
                     'etc/shadow, as "usermod -L" does) and unlock it only '
                     'when the lockdown has removed the secrets (the token, '
                     'the broker credentials), so the tenant can never log '
                     'in while they are on disk. Takes effect only with '
                     'exit_after_rescue: without a lockdown, nothing would '
                     'unlock it, so it is written unlocked.'),
    cfg.BoolOpt('sudo',
                default=True,
                help='Give the account sudo rights '
                     '(etc/sudoers.d/<username> and the sudo group).'),
]

pipeline_opts = [
    cfg.ListOpt('steps',
                default=['password', 'account', 'network', 'verify'],
                help='Provisioning steps to run, in order. Each name is an '
                     'entry point in the "rescue_worker.steps" namespace, '
                     'so a step can be added without editing the package.'),
]

network_opts = [
    cfg.StrOpt('dhcp_backend',
               default='dhclient',
               help='How the network step configures interfaces: the name '
                    'of an entry point in the "rescue_worker.dhcp_backends" '
                    'namespace. Built in: %s. To add one, install a package '
                    'that registers a subclass of '
                    'rescue_worker.network.base.DhcpBackend under that '
                    'namespace, and name it here. A name that is not '
                    'installed stops the worker at start (exit status 2).'
                    % '; '.join('"%s" to %s' % backend
                                for backend in DHCP_BACKENDS)),
    cfg.IntOpt('dhcp_timeout', default=30, min=1,
               help='Seconds to wait for a DHCP lease; interfaces are '
                    'configured in parallel.'),
    cfg.ListOpt('skip_interfaces',
                default=['lo'],
                help='Glob patterns of interface names never configured.'),
    cfg.BoolOpt('skip_generated_mac',
                default=True,
                help='Skip interfaces whose MAC address is not permanent '
                     '(addr_assign_type != 0), as ironic images do.'),
    cfg.BoolOpt('ipv6',
                default=True,
                help='Configure IPv6 too: accept router advertisements '
                     '(SLAAC) and, where the router asks for it (the '
                     '"managed" flag), lease an address by DHCPv6 '
                     '(dhclient -6; udhcpc6 where the image has it). An '
                     'interface with only an IPv6 address counts as '
                     'leased. With dhclient and udhcpc an interface waits '
                     'a few seconds for a router advertisement; turn this '
                     'off on networks that are IPv4 only to save them. '
                     'networkd: IPv6AcceptRA and DHCPv6 in the .network '
                     'files.'),
    cfg.StrOpt('networkd_reload_command',
               default='networkctl reload',
               help='Command that makes systemd-networkd read the .network '
                    'files once they are written (dhcp_backend = '
                    'networkd); split like a shell would, run without '
                    'one. It runs only on the live system (root_dir = /). '
                    'Empty: write the files only (networkd starts after '
                    'the worker). Example for systemd older than 244, '
                    'whose networkctl has no "reload": "systemctl restart '
                    'systemd-networkd".'),
]

lifecycle_opts = [
    cfg.BoolOpt('exit_after_rescue',
                default=True,
                help='After a successful rescue, stop serving RPC and lock '
                     'the worker down so its endpoint is never exposed to '
                     'the tenant network.'),
    cfg.ListOpt('scrub_paths',
                default=None,
                help='Files removed at lockdown. Unset means the '
                     'configuration files the worker was started with, '
                     'which hold the broker credentials.'),
    cfg.IntOpt('tenant_renew_interval',
               default=10,
               min=1,
               help='Seconds between DHCP lease renewals after lockdown.'),
    cfg.IntOpt('tenant_renew_period',
               default=600,
               min=0,
               help='How long, in seconds, the network keeper renews '
                    'leases after lockdown (0: not at all).'),
    cfg.IntOpt('notification_retry',
               default=10,
               min=0,
               help='Connection retries for one notification before it is '
                    'given up (logged), so a dead broker never blocks the '
                    'worker forever.'),
    cfg.IntOpt('outcome_retry_timeout',
               default=600,
               min=0,
               help='Seconds the worker keeps publishing an end or error '
                    'notification the broker did not take (with a backoff '
                    'from 1 to 30 s) before it gives up, logs an error and '
                    'goes on, to its lockdown after a rescue. Until then a '
                    'rescued node does not lock down, so the conductor '
                    'always learns its outcome from a broker that comes '
                    'back in time.'),
    cfg.IntOpt('shutdown_timeout',
               default=300,
               min=1,
               help='Seconds SIGTERM waits for the running request to '
                    'finish before the worker exits anyway.'),
]

ALL_OPTS = list(itertools.chain(identity_opts, path_opts, security_opts,
                                account_opts, pipeline_opts, network_opts,
                                lifecycle_opts))


def register_opts(conf: cfg.ConfigOpts) -> None:
    """Register the worker's own options on ``conf``."""
    conf.register_opts(ALL_OPTS, group=GROUP)


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    """Options for oslo-config-generator (entry point oslo.config.opts)."""
    return [(GROUP, copy.deepcopy(ALL_OPTS))]


def set_library_defaults() -> None:
    """Defaults rescue-worker sets on oslo.messaging's own options.

    Registered as the ``oslo.config.opts.defaults`` entry point so that the
    generated sample shows the values the worker really runs with.
    """
    import oslo_messaging

    oslo_messaging.set_transport_defaults(CONTROL_EXCHANGE)
    from oslo_messaging.notify import notifier

    # Without a driver oslo.messaging drops notifications silently; the
    # conductor learns every outcome from them.
    cfg.set_defaults(notifier._notifier_opts, driver=['messagingv2'])
