"""The account databases of a Debian system: passwd, shadow, group, gshadow.

Shared by the account step (which rewrites them) and the verify step (which
reads them back as a login would). Each file is held as its lines, so that
a change to one entry leaves every other line as it was, byte for byte:
comments, blank lines, odd spacing, lines that are not even entries, and a
missing newline at the end of the file.

Nothing here writes a file; the account step does that with
``rescue_worker.atomic.write_atomically``.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import time
from collections.abc import Iterator

#: number of fields of an entry, per file
PASSWD_FIELDS = 7
SHADOW_FIELDS = 9
GROUP_FIELDS = 4
GSHADOW_FIELDS = 4

#: ids of regular users (Debian's login.defs UID_MIN/UID_MAX and
#: GID_MIN/GID_MAX); anything else is a system account
USER_ID_MIN = 1000
USER_ID_MAX = 60000

#: range groupadd -r allocates system groups from (SYS_GID_MIN/MAX)
SYSTEM_GID_MIN = 100
SYSTEM_GID_MAX = 999

#: what useradd leaves in a new shadow entry after the hash and the date:
#: min, max, warn, inactive, expire, reserved (PASS_MIN_DAYS,
#: PASS_MAX_DAYS, PASS_WARN_AGE of Debian's login.defs)
SHADOW_DEFAULTS = ('0', '99999', '7', '', '', '')


def sudoers_content(username: str) -> bytes:
    """What the account step writes to ``etc/sudoers.d/<username>``."""
    return ('# Written by rescue-worker: the tenant account of rescue '
            'mode.\n%s ALL=(ALL) NOPASSWD: ALL\n' % username).encode('ascii')

#: names useradd accepts by default (NAME_REGEX of Debian's adduser.conf,
#: the same as ``[rescue_worker] username``)
USERNAME_RE = re.compile(r'^[a-z_][a-z0-9_-]{0,30}$')

#: the lock file of lckpwdf(3), which useradd, passwd and vipw take too
LOCK_FILE = '.pwd.lock'
LOCK_TIMEOUT = 15.0  # seconds, as lckpwdf(3)

_ENCODING = 'utf-8'
_ERRORS = 'surrogateescape'  # any byte survives a decode/encode round trip


class Table:
    """One colon-separated account file, as lines.

    ``lines`` hold the text of each line without its newline; the file
    ends with a newline unless ``final_newline`` is false. An *entry* is a
    line whose first field is a name; a *well-formed* entry has exactly
    ``nfields`` fields. Lookups go by the first line with the name, as
    getpwnam(3) and friends do.
    """

    def __init__(self, path: str, nfields: int, data: bytes = b'',
                 exists: bool = True) -> None:
        self.path = path
        self.nfields = nfields
        self.exists = exists
        self.original = data
        text = data.decode(_ENCODING, _ERRORS)
        lines = text.split('\n')
        self.final_newline = lines[-1] == ''
        if self.final_newline:
            lines.pop()
        self.lines: list[str] = lines

    @classmethod
    def load(cls, path: str, nfields: int,
             missing_ok: bool = False) -> Table:
        """Read ``path``; a missing file is an empty table if
        ``missing_ok``, else ``FileNotFoundError``."""
        try:
            with open(path, 'rb') as f:
                data = f.read()
        except FileNotFoundError:
            if not missing_ok:
                raise
            return cls(path, nfields, b'', exists=False)
        return cls(path, nfields, data)

    # -- reading -------------------------------------------------------------

    def to_bytes(self) -> bytes:
        text = '\n'.join(self.lines)
        if self.lines and self.final_newline:
            text += '\n'
        return text.encode(_ENCODING, _ERRORS)

    @property
    def changed(self) -> bool:
        """Whether the file must be written: new content, or no file yet
        while there is something to write."""
        if not self.exists:
            return bool(self.lines)
        return self.to_bytes() != self.original

    def indexes(self, name: str) -> list[int]:
        """Index of every line whose first field is ``name``."""
        return [i for i, line in enumerate(self.lines)
                if line.split(':', 1)[0] == name]

    def lines_of(self, name: str) -> list[str]:
        return [self.lines[i] for i in self.indexes(name)]

    def get(self, name: str) -> list[str] | None:
        """Fields of the first line for ``name`` if it is well-formed."""
        for i in self.indexes(name):
            return self.parse(self.lines[i])
        return None

    def has(self, name: str) -> bool:
        return bool(self.indexes(name))

    def parse(self, line: str) -> list[str] | None:
        """Fields of ``line``, or None when it is not a well-formed entry."""
        fields = line.split(':')
        if len(fields) != self.nfields or not fields[0]:
            return None
        return fields

    def entries(self) -> Iterator[list[str]]:
        """The fields of every well-formed entry, comments skipped."""
        for line in self.lines:
            if line.startswith('#'):
                continue
            fields = self.parse(line)
            if fields is not None:
                yield fields

    # -- changing ------------------------------------------------------------

    def put(self, fields: list[str], dedupe: bool = True) -> bool:
        """Make ``fields`` the entry for their name.

        The first line for the name is replaced in place, or the entry is
        appended. With ``dedupe``, later lines for the same name (which no
        lookup would ever see) are removed. Returns whether anything
        changed.
        """
        line = ':'.join(fields)
        found = self.indexes(fields[0])
        if not found:
            self.final_newline = True
            self.lines.append(line)
            return True
        changed = self.lines[found[0]] != line
        self.lines[found[0]] = line
        if dedupe and len(found) > 1:
            self._delete(found[1:])
            changed = True
        return changed

    def remove(self, name: str) -> bool:
        """Remove every line for ``name``; returns whether there was one."""
        found = self.indexes(name)
        self._delete(found)
        return bool(found)

    def _delete(self, indexes: list[int]) -> None:
        if not indexes:
            return
        if indexes[-1] == len(self.lines) - 1:
            # The line before the last keeps the newline it had.
            self.final_newline = True
        for i in reversed(indexes):
            del self.lines[i]


def members(field: str) -> list[str]:
    """The names of a comma-separated member list."""
    return [name for name in field.split(',') if name]


def parse_id(value: str) -> int | None:
    """A uid or gid field as an int, or None when it is not one."""
    if not value.isascii() or not value.isdigit():
        return None
    return int(value)


def is_user_id(value: int) -> bool:
    return USER_ID_MIN <= value <= USER_ID_MAX


def first_free_id(used: set[int]) -> int | None:
    """The lowest id of the regular users' range not in ``used``."""
    for candidate in range(USER_ID_MIN, USER_ID_MAX + 1):
        if candidate not in used:
            return candidate
    return None


def free_system_gid(used: set[int], preferred: int) -> int | None:
    """``preferred`` if free, else the highest free system gid (as
    groupadd -r allocates)."""
    if preferred not in used:
        return preferred
    for candidate in range(SYSTEM_GID_MAX, SYSTEM_GID_MIN - 1, -1):
        if candidate not in used:
            return candidate
    return None


def days_since_epoch() -> int:
    """Today as shadow's "date of last password change" counts it."""
    return int(time.time()) // 86400


def hash_problem(value: str | None) -> str | None:
    """Why ``value`` cannot be put in a shadow entry, or None.

    Describes the kind of problem only, never the value.
    """
    if not value:
        return 'there is no password hash'
    if ':' in value:
        return "the password hash contains ':'"
    if any(char < ' ' or char == '\x7f' for char in value):
        return 'the password hash contains a line break or control character'
    if not value.isascii():
        return 'the password hash contains a non-ASCII character'
    return None


class PasswdLock:
    """The lock of lckpwdf(3) on an ``etc`` directory (``.pwd.lock``).

    useradd, usermod, passwd, chpasswd and vipw take the same lock, so
    they never edit the files at the same time as the worker. The lock
    file is created (0600, empty) if missing, as lckpwdf(3) does.
    """

    def __init__(self, etc_dir: str, timeout: float | None = None) -> None:
        self.path = os.path.join(etc_dir, LOCK_FILE)
        self.timeout = LOCK_TIMEOUT if timeout is None else timeout
        self._fd: int | None = None

    def acquire(self) -> None:
        """:raises TimeoutError: another program held the lock for
            ``timeout`` seconds.
        :raises OSError: the lock file cannot be opened or locked."""
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC,
                     0o600)
        try:
            deadline = time.monotonic() + self.timeout
            while True:
                try:
                    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EACCES, errno.EAGAIN):
                        raise
                    if time.monotonic() >= deadline:
                        raise TimeoutError(
                            errno.ETIMEDOUT,
                            'another program (useradd, passwd, vipw...) '
                            'held it for %g seconds' % self.timeout,
                            self.path) from None
                time.sleep(0.05)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                fcntl.lockf(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    def __enter__(self) -> PasswdLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()
