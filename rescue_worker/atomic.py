"""Crash-safe file replacement.

Every file the worker writes (the journal, the lockdown marker, the account
files) is replaced whole: a reader, or the worker itself after a crash, sees
either the old content or the new one, never a mix.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from typing import BinaryIO


def fsync_dir(path: str) -> None:
    """Make a rename or unlink in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: str, data: bytes, mode: int | None = None,
                     uid: int | None = None, gid: int | None = None) -> None:
    """Replace ``path`` with ``data`` via a temp file, fsync and rename.

    The mode and owner of an existing file are kept unless given; a new file
    gets ``mode`` (default 0600) and the caller's owner. The temp file is
    created 0600 so the content is never readable by others in between.
    """
    directory = os.path.dirname(os.path.abspath(path))
    mode, uid, gid = _kept_or_given(path, mode, uid, gid)
    fd, tmp_path = tempfile.mkstemp(
        prefix='.%s.' % os.path.basename(path), suffix='.tmp', dir=directory)
    try:
        with os.fdopen(fd, 'wb') as tmp:
            _fill(tmp, data, mode, uid, gid)
        os.rename(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_path)
        raise
    fsync_dir(directory)


def _kept_or_given(path: str, mode: int | None, uid: int | None,
                   gid: int | None) -> tuple[int, int | None, int | None]:
    """The mode and owner the new content of ``path`` gets: what is
    given, else what the current file has (mode 0600 for a new file)."""
    try:
        current = os.stat(path)
    except FileNotFoundError:
        return (0o600 if mode is None else mode), uid, gid
    return (stat.S_IMODE(current.st_mode) if mode is None else mode,
            current.st_uid if uid is None else uid,
            current.st_gid if gid is None else gid)


def _fill(tmp: BinaryIO, data: bytes, mode: int, uid: int | None,
          gid: int | None) -> None:
    """Write, own and sync the temp file before it is renamed over the
    target."""
    tmp.write(data)
    tmp.flush()
    if uid is not None or gid is not None:
        # Owner before mode: chown clears the setuid and setgid bits.
        os.fchown(tmp.fileno(), -1 if uid is None else uid,
                  -1 if gid is None else gid)
    os.fchmod(tmp.fileno(), mode)
    os.fsync(tmp.fileno())


def remove_durably(path: str) -> bool:
    """Unlink ``path`` and sync its directory; False if it was not there."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    fsync_dir(os.path.dirname(os.path.abspath(path)))
    return True
