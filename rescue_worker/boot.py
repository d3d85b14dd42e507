"""Boot parameters: what the kernel command line tells a worker.

A rescue ramdisk is one image for every node, so what differs per node
reaches it on the kernel command line, as ironic passes its agent's
parameters (``prepare_ramdisk(task, ramdisk_params)``):

``rescue_worker.node_id=<id>``
    ``[rescue_worker] node_id``
``rescue_worker.transport_url=<url>``
    ``[DEFAULT] transport_url`` (percent-encoded as in any URL)
``rescue_worker_token=<token>``
    the node token (``agent_token``)

A value in a configuration file wins: these only become the defaults, so an
image needs no per-node file at all. ``/proc/cmdline`` stays readable by
every user after lockdown and cannot be scrubbed; the lockdown says which
secrets came from there.
"""

from __future__ import annotations

from oslo_config import cfg

PROC_CMDLINE = '/proc/cmdline'

NODE_ID = 'rescue_worker.node_id'
TRANSPORT_URL = 'rescue_worker.transport_url'
# No dot: the kernel hands it to PID 1 as an environment variable too, which
# is why images clear it from every other process's environment.
TOKEN = 'rescue_worker_token'

#: parameter -> what it is, for the lockdown's warning
SECRETS = {TOKEN: 'node token',
           TRANSPORT_URL: 'broker URL (with its credentials)'}


def parameters(path: str = PROC_CMDLINE) -> dict[str, str]:
    """The ``key=value`` words of the kernel command line (the last one
    wins); empty if it cannot be read."""
    try:
        with open(path, encoding='utf-8', errors='replace') as f:
            words = f.read().split()
    except OSError:
        return {}
    return dict(word.split('=', 1) for word in words if '=' in word)


def set_defaults(conf: cfg.ConfigOpts, path: str = PROC_CMDLINE) -> None:
    """Make the boot parameters the defaults of the options they set.

    Call after the options are registered and before the configuration
    files are parsed, so that a file's value wins.
    """
    given = parameters(path)
    if given.get(NODE_ID):
        conf.set_default('node_id', given[NODE_ID], group='rescue_worker')
    if given.get(TRANSPORT_URL):
        conf.set_default('transport_url', given[TRANSPORT_URL])


def secrets_given(path: str = PROC_CMDLINE) -> list[str]:
    """What secrets the kernel command line holds, by name."""
    given = parameters(path)
    return [name for key, name in SECRETS.items() if given.get(key)]
