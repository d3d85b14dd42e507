"""Lockdown: what happens to the worker once the tenant owns the ramdisk.

After a successful rescue the tenant logs in with sudo, so the worker leaves
a marker that keeps it from ever serving again, and removes what the tenant
must not read: the node token, the journal's request data and the files in
``scrub_paths`` (by default its own configuration, which holds the broker
credentials).
"""

from __future__ import annotations

import logging
import os

from rescue_worker import atomic

LOG = logging.getLogger(__name__)

MARKER_NAME = 'rescued'


class AlreadyRescued(Exception):
    """The lockdown marker exists: this worker must not serve."""


class LockdownMarker:
    def __init__(self, state_dir: str) -> None:
        self.path = os.path.join(state_dir, MARKER_NAME)

    def exists(self) -> bool:
        return os.path.exists(self.path)

    def check(self) -> None:
        if self.exists():
            raise AlreadyRescued(
                'Lockdown marker %s exists: this node was rescued and the '
                'worker will not serve again. Remove the marker only on a '
                'freshly booted rescue ramdisk.' % self.path)

    def write(self, request_id: str) -> None:
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        atomic.write_atomically(self.path,
                                ('%s\n' % request_id).encode('utf-8'),
                                mode=0o600)


def scrub_files(paths: list[str]) -> list[str]:
    """Remove each existing file of ``paths``; returns the removed ones."""
    removed = []
    for path in paths:
        try:
            if atomic.remove_durably(path):
                removed.append(path)
        except OSError as exc:
            LOG.error('Lockdown could not remove %s (%s); remove it by hand '
                      'before handing the node to the tenant.', path,
                      exc.strerror)
    return removed
