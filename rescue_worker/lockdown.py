"""Lockdown: what happens to the worker once the tenant owns the ramdisk.

After a successful rescue the tenant logs in with sudo, so the worker leaves
a marker that keeps it from ever serving again, and removes what the tenant
must not read: the node token, the journal's request data and the files in
``scrub_paths`` (by default its own configuration, which holds the broker
credentials). ``Lockdown`` owns that sequence; the endpoint hands it the
outcome of a successful rescue and asks it whether it may still serve.

Every part fails closed: a marker that cannot be written, a file that cannot
be removed or a journal that cannot be scrubbed is logged loudly and the
rest still happens. Serving again is never the answer to a failed part.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import stat
import threading
from collections.abc import Callable
from collections.abc import Sequence

from rescue_worker import atomic
from rescue_worker import payloads

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


@dataclasses.dataclass
class ScrubReport:
    """What a scrub removed, and what it could not."""

    removed: list[str] = dataclasses.field(default_factory=list)
    emptied: list[str] = dataclasses.field(default_factory=list)
    failed: list[str] = dataclasses.field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.failed


def _empty(path: str) -> None:
    """Truncate the regular file ``path`` in place and sync it.

    The name is only one way to the data: a hard link elsewhere, or the
    file a symlink points to (a config drive, a secrets mount), still
    holds it after an unlink.
    """
    fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK
                 | os.O_CLOEXEC)
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.ftruncate(fd, 0)
            os.fsync(fd)
    finally:
        os.close(fd)


def _data_elsewhere(path: str, st: os.stat_result) -> str | None:
    """The regular file whose data another name would keep readable after
    ``path`` is unlinked: a symlink's target, or ``path`` itself when it
    has a second hard link. None when unlinking is enough."""
    if stat.S_ISLNK(st.st_mode):
        target = os.path.realpath(path)
        try:
            # A dangling link, or one to a directory, holds no file data.
            return target if stat.S_ISREG(os.stat(target).st_mode) else None
        except OSError:
            return None
    return path if stat.S_ISREG(st.st_mode) and st.st_nlink > 1 else None


def _scrub_one(path: str, report: ScrubReport) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        LOG.error('Lockdown could not look at %s (%s)', path, exc.strerror)
        report.failed.append(path)
        return
    target = _data_elsewhere(path, st)
    if target is not None:
        try:
            _empty(target)
            report.emptied.append(target)
        except OSError as exc:
            LOG.error('Lockdown could not empty %s, which %s reaches (%s); '
                      'the tenant may be able to read it: remove it by '
                      'hand or revoke what it holds.', target, path,
                      exc.strerror)
            report.failed.append(target)
    try:
        if atomic.remove_durably(path):
            report.removed.append(path)
    except OSError as exc:
        LOG.error('Lockdown could not remove %s (%s); remove it by hand '
                  'before handing the node to the tenant.', path,
                  exc.strerror)
        report.failed.append(path)


def scrub_files(paths: Sequence[str]) -> ScrubReport:
    """Remove each existing file of ``paths``, emptying first what another
    name (a hard link, the target of a symlink) would keep readable."""
    report = ScrubReport()
    for path in paths:
        _scrub_one(path, report)
    return report


class Lockdown:
    """Locks the worker down after a successful rescue.

    ``engage(outcome)`` runs once the ``end`` of a successful request is
    out: the marker, the scrub, the hooks that wait for the scrub (the
    account step's unlock), then the stop request. ``engaged`` tells the
    endpoint to take nothing more. The interfaces that leased are kept
    for the tenant network keeper.
    """

    def __init__(self, *, state_dir: str, scrub_paths: Sequence[str],
                 scrub_journal: Callable[[], int],
                 request_stop: Callable[[], None],
                 after_scrub: Sequence[Callable[[], None]] = (),
                 cmdline_secrets: Sequence[str] = ()) -> None:
        self.marker = LockdownMarker(state_dir)
        self.state_dir = state_dir
        self.scrub_paths = list(scrub_paths)
        self._scrub_journal = scrub_journal
        self._request_stop = request_stop
        self._after_scrub = list(after_scrub)
        self._cmdline_secrets = list(cmdline_secrets)
        self._engaged = threading.Event()
        #: the interfaces that held a lease at the end of the rescue
        self.leased_interfaces: list[str] = []
        #: what the last scrub did
        self.report: ScrubReport | None = None

    @property
    def engaged(self) -> bool:
        return self._engaged.is_set()

    def engage(self, outcome: payloads.FinalizeRescuePayload) -> None:
        """Lock down after ``outcome`` (a successful rescue) went out."""
        if self._engaged.is_set():
            return
        # In memory first: from here on the endpoint refuses, whatever
        # fails on disk below.
        self._engaged.set()
        LOG.info('Request %s rescued this node; locking down',
                 outcome.request_id)
        # "configured" counts: a daemon (networkd) holds that lease, and
        # the keeper must still see the tenant network take it over.
        self.leased_interfaces = [
            entry.name for entry in outcome.interfaces
            if entry.dhcp in payloads.DHCP_SUCCESSFUL]
        try:
            # Before the scrub: if the process dies from here on, the next
            # start finishes the scrub and never serves.
            self.marker.write(outcome.request_id)
        except OSError as exc:
            LOG.critical('Lockdown could not write its marker %s (%s); '
                         'going on with the lockdown. If this worker is '
                         'started again it may serve: keep it stopped, or '
                         'fix %s.', self.marker.path, exc.strerror,
                         self.state_dir)
        self.scrub()
        self._request_stop()

    def finish_interrupted(self) -> None:
        """At start: a marker means a lockdown began; finish its scrub and
        refuse to serve.

        :raises AlreadyRescued: the marker exists.
        """
        if self.marker.exists():
            self.scrub()
            self.marker.check()

    def scrub(self) -> ScrubReport:
        """Scrub the journal and the files, then run the hooks that must
        wait for it. Never raises: lockdown goes on."""
        try:
            dropped = self._scrub_journal()
        except (OSError, ValueError) as exc:
            dropped = 0
            LOG.error('Lockdown could not scrub the journal in %s (%s); '
                      'remove it by hand before handing the node to the '
                      'tenant.', self.state_dir, type(exc).__name__)
        report = self.report = scrub_files(self.scrub_paths)
        LOG.info('Lockdown: removed %s; emptied %s; dropped the request '
                 'data of %d journal record(s)',
                 ', '.join(report.removed) or 'no files',
                 ', '.join(report.emptied) or 'nothing else', dropped)
        for secret in self._cmdline_secrets:
            LOG.warning('The %s came from the kernel command line, which '
                        'every user can read and no scrub can reach; it is '
                        'worth nothing once the conductor has the outcome '
                        '(revoke it there)', secret)
        if report.failed:
            # Fail closed: the tenant's login waits until nothing secret
            # is left for it to read.
            LOG.critical('Lockdown could not scrub %s; the rescue account '
                         'stays locked. Remove them by hand, then unlock '
                         'the account (usermod -U) or run the worker once '
                         'more with its configuration to finish the '
                         'lockdown.', ', '.join(report.failed))
            return report
        for hook in self._after_scrub:
            try:
                hook()
            except Exception:
                LOG.exception('A lockdown step after the scrub failed')
        return report
