"""The ``dib`` image: diskimage-builder with elements/rescue-worker."""

IMAGE = {
    'init': 'systemd',
    'backend': 'networkd',
    'cmdline': 'console=ttyS0 rootfstype=ramfs',
    'target_ram_mib': 384,
}


def build(spec, work, out, args, repo, tools):
    raise RuntimeError('not yet')
