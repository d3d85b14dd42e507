"""A complete node in a directory: root file system, state, token, config.

The demo and the test fixtures run real workers without touching the
machine: each node gets its own root (with a small Debian-like ``etc``), its
own state directory, a 0600 token file and a real configuration file, and
``dhcp_backend = none`` unless told otherwise.
"""

from __future__ import annotations

import configparser
import os
import secrets
import uuid

from oslo_config import cfg

from rescue_worker import rpc

# Enough of a Debian 12 /etc for the account step: root, a system user, the
# groups it looks for. Real images have many more lines; the step keeps
# them all byte for byte.
SEED_FILES = {
    'etc/passwd': (0o644, 'root:x:0:0:root:/root:/bin/bash\n'
                          'daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n'
                          'nobody:x:65534:65534:nobody:/nonexistent:'
                          '/usr/sbin/nologin\n'),
    'etc/shadow': (0o640, 'root:*:19700:0:99999:7:::\n'
                          'daemon:*:19700:0:99999:7:::\n'
                          'nobody:*:19700:0:99999:7:::\n'),
    'etc/group': (0o644, 'root:x:0:\n'
                         'daemon:x:1:\n'
                         'sudo:x:27:\n'
                         'shadow:x:42:\n'
                         'nogroup:x:65534:\n'),
    # What Debian's sudo package ships, less the comments: verify insists
    # that sudoers.d is included, or "sudo ok" would mean nothing.
    'etc/sudoers': (0o440, 'Defaults\tenv_reset\n'
                           'root\tALL=(ALL:ALL) ALL\n'
                           '%sudo\tALL=(ALL:ALL) ALL\n'
                           '@includedir /etc/sudoers.d\n'),
}


def seed_root(root_dir: str) -> None:
    """Create a minimal ``etc`` under ``root_dir`` (existing files kept)."""
    for relative, (mode, content) in SEED_FILES.items():
        path = os.path.join(root_dir, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if os.path.exists(path):
            continue
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, 'w') as f:
            f.write(content)
        os.chmod(path, mode)


class SandboxNode:
    """Paths and configuration of one node living under ``base_dir``.

    ``options`` become ``[rescue_worker]`` options, ``defaults`` become
    ``[DEFAULT]`` ones (``transport_url`` among them).
    """

    def __init__(self, base_dir: str, node_id: str | None = None,
                 transport_url: str = 'fake://',
                 defaults: dict | None = None, **options) -> None:
        self.node_id = node_id or 'node-%s' % uuid.uuid4().hex[:12]
        self.base_dir = base_dir
        self.root_dir = os.path.join(base_dir, 'root')
        self.state_dir = os.path.join(base_dir, 'state')
        self.token_file = os.path.join(base_dir, 'agent-token')
        self.config_file = os.path.join(base_dir, 'rescue-worker.conf')
        self.cmdline_file = os.path.join(base_dir, 'cmdline')
        self.transport_url = transport_url
        self.defaults = dict(defaults or {})
        self.options = options
        self.token = secrets.token_hex(32)

    def create(self) -> SandboxNode:
        os.makedirs(self.root_dir, exist_ok=True)
        seed_root(self.root_dir)
        fd = os.open(self.token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                     0o600)
        with os.fdopen(fd, 'w') as f:
            f.write(self.token + '\n')
        # The kernel command line the worker reads: an empty one, so the
        # host's own /proc/cmdline never matters.
        with open(self.cmdline_file, 'w') as f:
            f.write('\n')
        self.write_config()
        return self

    def write_config(self) -> None:
        parser = configparser.ConfigParser(interpolation=None)
        parser['DEFAULT'] = dict(self.defaults,
                                 transport_url=self.transport_url)
        section = {'node_id': self.node_id,
                   'root_dir': self.root_dir,
                   'state_dir': self.state_dir,
                   'agent_token_file': self.token_file,
                   'dhcp_backend': 'none'}
        for key, value in self.options.items():
            section[key] = _ini_value(value)
        parser['rescue_worker'] = section
        with open(self.config_file, 'w') as f:
            parser.write(f)

    def load_config(self) -> cfg.ConfigOpts:
        conf = cfg.ConfigOpts()
        rpc.register_opts(conf)
        conf(['--config-file', self.config_file], project='rescue-worker',
             default_config_files=[], default_config_dirs=[])
        return conf


def _ini_value(value: object) -> str:
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, (list, tuple)):
        return ','.join(str(v) for v in value)
    return str(value)
