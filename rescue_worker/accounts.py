"""The account databases of a Debian system: passwd, shadow, group, gshadow.

Shared by the account step (which rewrites them) and the verify step (which
reads them back as a login would). Each file is held as its lines, so that
a change to one entry leaves every other line as it was, byte for byte:
comments, blank lines, odd spacing, lines that are not even entries, and a
missing newline at the end of the file.

The account step reads the files, hands them to ``plan_account`` (no I/O:
tables in, the planned tables out) and writes what changed with
``rescue_worker.atomic.write_atomically``. The rules both steps apply (the
sudo group, the mode and owner each file gets, the lock) live here, once.

The account can be written locked (``!`` before the hash, as ``usermod -L``
does) so that the tenant cannot log in while the worker's secrets are still
on disk; the lockdown calls ``unlock_account`` once they are gone, the one
function here that writes a file.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import os
import re
import stat
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from rescue_worker import atomic

if TYPE_CHECKING:
    from oslo_config import cfg

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

#: the comment (GECOS) field of the account the worker creates: the record
#: that it created it, kept in the entry itself so that it survives a
#: crash and a restart of the worker, and an entry without it is refused
ACCOUNT_GECOS = 'rescue-worker rescue account'

#: what ``usermod -L`` puts before the hash: no password verifies it then,
#: and removing it restores the hash as it was
LOCK_PREFIX = '!'

#: the group whose members sudo lets run anything (Debian's sudoers)
SUDO_GROUP = 'sudo'
#: Debian's gid of the sudo group (base-passwd), used when it is free
SUDO_GID = 27
#: the group that may read shadow and gshadow (unix_chkpwd, for screen
#: lockers and the like)
SHADOW_GROUP = 'shadow'

SUDOERS_MODE = 0o440
SUDOERS_DIR_MODE = 0o750


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

    def copy(self) -> Table:
        """A table with the same lines, to change without touching this
        one."""
        other = Table(self.path, self.nfields, self.original, self.exists)
        other.lines = list(self.lines)
        other.final_newline = self.final_newline
        return other

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


# -- locked until the lockdown ---------------------------------------------

def locked_until_lockdown(conf: cfg.ConfigOpts) -> bool:
    """Whether the account step writes the account locked, for the lockdown
    to unlock once the secrets are gone (``unlock_account``).

    Only when there is a lockdown (``exit_after_rescue``): without one
    nothing would ever unlock it.
    """
    opts = conf.rescue_worker
    return bool(opts.unlock_after_lockdown and opts.exit_after_rescue)


def password_field(password_hash: str, locked: bool) -> str:
    """The second field of the shadow entry for ``password_hash``."""
    return LOCK_PREFIX + password_hash if locked else password_hash


def is_locked(root_dir: str, username: str) -> bool:
    """Whether the shadow entry of ``username`` under ``root_dir`` is
    locked (its password field starts with ``!``), so no password logs in.

    :raises LookupError: etc/shadow has no well-formed entry for the user.
    :raises OSError: etc/shadow cannot be read.
    """
    shadow = Table.load(os.path.join(root_dir, 'etc', 'shadow'),
                        SHADOW_FIELDS)
    return _shadow_entry(shadow, username)[1].startswith(LOCK_PREFIX)


def unlock_account(root_dir: str, username: str) -> bool:
    """Remove the lock the account step wrote (the ``!`` before the hash),
    so that the tenant's password logs in; for the lockdown, once the
    secrets are gone.

    etc/shadow is rewritten atomically under the lock of lckpwdf(3),
    keeping its mode, its owner, the date of the last change and every
    other line byte for byte. The hash goes nowhere else: no command line,
    no log, no exception message.

    :returns: True when it removed the lock; False when the entry was not
        locked, so a second call changes nothing.
    :raises LookupError: etc/shadow has no well-formed entry for the user.
    :raises ValueError: no crypt hash follows the ``!`` (locked by someone
        else, or with no password at all): unlocking would not give the
        tenant a working password, or would give one to anybody.
    :raises OSError: the lock, the read or the write failed.
    """
    etc = os.path.join(root_dir, 'etc')
    with PasswdLock(etc):
        shadow = Table.load(os.path.join(etc, 'shadow'), SHADOW_FIELDS)
        fields = _shadow_entry(shadow, username)
        if not fields[1].startswith(LOCK_PREFIX):
            return False
        unlocked = fields[1][len(LOCK_PREFIX):]
        if hash_problem(unlocked) is not None or \
                not unlocked.startswith('$'):
            raise ValueError(
                'the password field of %s in %s holds no crypt hash behind '
                'its "!", so unlocking it would not give it a working '
                'password; set its password again' % (username, shadow.path))
        fields[1] = unlocked
        shadow.put(fields, dedupe=False)
        atomic.write_atomically(shadow.path, shadow.to_bytes())
    return True


def _shadow_entry(shadow: Table, username: str) -> list[str]:
    fields = shadow.get(username)
    if fields is None:
        raise LookupError('%s has no well-formed entry for %s' %
                          (shadow.path, username))
    return fields


# -- the mode and owner of each file ----------------------------------------

@dataclasses.dataclass(frozen=True)
class Ownership:
    """The mode and owner (root unless said) a file gets when it is
    written new, or rewritten because what it had was unsafe."""

    mode: int
    uid: int = 0
    gid: int = 0

    def for_write(self, owners: bool) -> tuple[int, int | None, int | None]:
        """``mode, uid, gid`` for ``atomic.write_atomically``; without
        ``owners`` (an unprivileged run on a scratch root, where nobody
        else could own the files anyway) the writer's owner is kept."""
        if not owners:
            return self.mode, None, None
        return self.mode, self.uid, self.gid


def owners_apply(root_dir: str) -> bool:
    """Whether files under ``root_dir`` are owned as on a real system: not
    in a scratch root of an unprivileged run, where nobody else could own
    them anyway."""
    return os.geteuid() == 0 or os.path.realpath(root_dir) == '/'


#: passwd and group: everybody reads them
PUBLIC_FILE = Ownership(0o644)
#: etc/sudoers.d/<user>: sudo ignores a file root does not own, or that
#: others could write
SUDOERS_FILE = Ownership(SUDOERS_MODE)
SUDOERS_DIR = Ownership(SUDOERS_DIR_MODE)


def secret_file_ownership(group: Table) -> Ownership:
    """shadow and gshadow: 0640 root:shadow, or 0600 root:root on a system
    without a shadow group."""
    entry = group.get(SHADOW_GROUP)
    gid = parse_id(entry[2]) if entry is not None else None
    if gid is None:
        return Ownership(0o600)
    return Ownership(0o640, gid=gid)


def secret_file_problem(st: os.stat_result, allowed: Ownership,
                        owners: bool) -> str | None:
    """What lets anyone but root and the shadow group read or change a
    shadow or gshadow file of these stats, worded to follow its path;
    None when nothing does. ``allowed`` is ``secret_file_ownership``."""
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022:
        return 'is writable by its group or by others (mode %04o)' % mode
    if mode & 0o004:
        return 'is readable by others (mode %04o)' % mode
    if not owners:
        return None
    if st.st_uid != 0:
        return 'belongs to uid %d instead of root' % st.st_uid
    if mode & 0o040 and st.st_gid not in (0, allowed.gid):
        return ('is readable by its group, gid %d, which is not the %s '
                'group' % (st.st_gid, SHADOW_GROUP))
    return None


def sudoers_file_problem(st: os.stat_result, owners: bool) -> str | None:
    """What is wrong with a sudoers.d file of these stats (lstat), worded
    to follow its path, or None when it is as the account step writes
    it."""
    if not stat.S_ISREG(st.st_mode):
        return 'is not a regular file, so sudo ignores it'
    mode = stat.S_IMODE(st.st_mode)
    if mode != SUDOERS_FILE.mode:
        return 'has mode %04o instead of %04o' % (mode, SUDOERS_FILE.mode)
    if owners and st.st_uid != SUDOERS_FILE.uid:
        return ('belongs to uid %d instead of root, so sudo ignores it' %
                st.st_uid)
    if owners and st.st_gid != SUDOERS_FILE.gid:
        return 'belongs to gid %d instead of root' % st.st_gid
    return None


# -- planning: tables in, planned tables out, no I/O ------------------------

class AccountConflict(Exception):
    """The files do not allow the account as asked; the message names the
    file and says what to fix, never the hash."""


@dataclasses.dataclass(frozen=True)
class WantedAccount:
    """What the account must look like once planned."""

    username: str
    #: the second field of the shadow entry
    password_field: str = dataclasses.field(repr=False)
    shell: str
    sudo: bool
    #: shadow's date of the last change, in days since the epoch
    today: int


@dataclasses.dataclass
class AccountTables:
    """The account databases of one system, as read."""

    passwd: Table
    shadow: Table
    group: Table
    #: None on a system without gshadow, where none is created
    gshadow: Table | None = None

    def copy(self) -> AccountTables:
        return AccountTables(
            self.passwd.copy(), self.shadow.copy(), self.group.copy(),
            self.gshadow.copy() if self.gshadow is not None else None)

    def in_write_order(self) -> list[Table]:
        """passwd last: the entry there makes the user exist, so a crash
        before it leaves no half-made user for a login to find."""
        tables = [self.group, self.gshadow, self.shadow, self.passwd]
        return [table for table in tables if table is not None]

    def is_secret(self, table: Table) -> bool:
        return table is self.shadow or table is self.gshadow


@dataclasses.dataclass
class AccountPlan:
    """The outcome of ``plan_account``."""

    uid: int
    gid: int
    created: bool
    password_changed: bool
    #: the planned content; a table whose ``changed`` is true needs writing
    tables: AccountTables


def plan_account(tables: AccountTables,
                 wanted: WantedAccount) -> AccountPlan:
    """Plan the entries of ``wanted`` in copies of ``tables``.

    Every line but the user's own (and the sudo group's) is kept byte for
    byte. The user's uid and gid are kept when it exists, else the first
    id free in both passwd and group from ``USER_ID_MIN``.

    :raises AccountConflict: a system account or group holds the name, a
        user the worker did not create has it, the sudo group's entry is
        malformed, or no id is free.
    """
    planned = tables.copy()
    user = wanted.username
    refuse_system_account(planned.passwd, planned.group, user)
    old = _usable_entry(planned.passwd, user)
    if old is not None and old[4] != ACCOUNT_GECOS:
        raise AccountConflict(
            'user %s exists in %s but the rescue worker did not create it '
            '(its comment field is not "%s"), and its home and '
            'authorized_keys are not the tenant\'s to take over; remove '
            'that account from the image, or set [rescue_worker] username '
            'to a name the image does not use' %
            (user, planned.passwd.path, ACCOUNT_GECOS))
    uid, gid, private = allocate_ids(planned.passwd, planned.group, user,
                                     old)
    _put_private_group(planned.group, planned.gshadow, user, private)
    set_sudo_membership(planned.group, planned.gshadow, user, wanted.sudo)
    password_changed = _put_shadow(planned.shadow, wanted)
    planned.passwd.put([user, 'x', str(uid), str(gid), ACCOUNT_GECOS,
                        '/home/%s' % user, wanted.shell])
    return AccountPlan(uid=uid, gid=gid, created=old is None,
                       password_changed=password_changed, tables=planned)


_TAKEN_NAME_HOW = ('set [rescue_worker] username to a name that is not '
                   'taken (the default is "rescue") or rebuild the ramdisk '
                   'without that account')


def refuse_system_account(passwd: Table, group: Table, user: str) -> None:
    """:raises AccountConflict: ``user`` is a system user, or (when it is
    no user at all) the name of a system group."""
    uid = _system_id(passwd, user)
    if uid is not None:
        raise AccountConflict(
            'user %s exists in %s as a system account (uid %d, outside '
            '%d..%d), which the rescue worker will not take over; %s' %
            (user, passwd.path, uid, USER_ID_MIN, USER_ID_MAX,
             _TAKEN_NAME_HOW))
    if passwd.get(user) is not None:
        return
    gid = _system_id(group, user)
    if gid is not None:
        raise AccountConflict(
            '%s is the name of a system group in %s (gid %d), which cannot '
            'become the private group of the account; %s' %
            (user, group.path, gid, _TAKEN_NAME_HOW))


def _system_id(table: Table, name: str) -> int | None:
    """The first id outside the users' range on a line for ``name``, even
    a malformed one: such a line is not the worker's to replace."""
    for line in table.lines_of(name):
        fields = line.split(':')
        value = parse_id(fields[2]) if len(fields) > 2 else None
        if value is not None and not is_user_id(value):
            return value
    return None


def _usable_entry(passwd: Table, user: str) -> list[str] | None:
    """The user's passwd entry, or None when there is none or it is
    malformed (then it is replaced as if there were none)."""
    entry = passwd.get(user)
    if entry is None or parse_id(entry[2]) is None or \
            parse_id(entry[3]) is None:
        return None
    return entry


def allocate_ids(passwd: Table, group: Table, user: str,
                 old: list[str] | None
                 ) -> tuple[int, int, list[str] | None]:
    """uid, primary gid and the private group entry to write (None when
    the group file is fine as it is).

    :raises AccountConflict: no id is free.
    """
    others = [f for f in passwd.entries() if f[0] != user]
    group_gids = {parse_id(f[2]) for f in group.entries() if f[0] != user}
    own_group = group.get(user)
    own_gid = parse_id(own_group[2]) if own_group is not None else None
    if old is not None:
        return _existing_user_ids(old, group_gids, own_gid)
    used_uids = {parse_id(f[2]) for f in others}
    # gids that passwd refers to count too, even without their group
    used_gids = group_gids | {parse_id(f[3]) for f in others}
    ids = _new_user_ids(user, used_uids, used_gids, own_gid)
    if ids is None:
        raise AccountConflict(
            'no free uid or gid left in %d..%d in %s and %s' %
            (USER_ID_MIN, USER_ID_MAX, passwd.path, group.path))
    return ids


def _existing_user_ids(old: list[str], group_gids: set[int | None],
                       own_gid: int | None
                       ) -> tuple[int, int, list[str] | None]:
    uid, gid = int(old[2]), int(old[3])
    if gid in group_gids or gid == own_gid:
        return uid, gid, None
    if own_gid is not None:
        # The user's primary group is gone but a group of its name is
        # there: make that the primary group.
        return uid, own_gid, None
    return uid, gid, [old[0], 'x', str(gid), '']


def _new_user_ids(user: str, used_uids: set[int | None],
                  used_gids: set[int | None], own_gid: int | None
                  ) -> tuple[int, int, list[str] | None] | None:
    if own_gid is None:
        uid = first_free_id(used_uids | used_gids)
        return None if uid is None else (uid, uid, [user, 'x', str(uid), ''])
    # A group of the name, left by a previous run interrupted before
    # passwd was written (or by an operator): reuse it.
    uid = own_gid
    if uid in used_uids:
        uid = first_free_id(used_uids | used_gids)
    return None if uid is None else (uid, own_gid, None)


def _put_private_group(group: Table, gshadow: Table | None, user: str,
                       private: list[str] | None) -> None:
    if private is not None:
        group.put(private)
    if gshadow is None or not group.has(user):
        return
    if private is not None or gshadow.get(user) is None:
        gshadow.put([user, '!', '', ''])


def _put_shadow(shadow: Table, wanted: WantedAccount) -> bool:
    """Write the user's shadow entry; returns whether the password field
    changed. The date of the last change only moves when it does."""
    user = wanted.username
    old = shadow.get(user)
    changed = old is None or old[1] != wanted.password_field
    lastchg = str(wanted.today)
    if not changed and parse_id(old[2]):
        lastchg = old[2]
    shadow.put([user, wanted.password_field, lastchg, *SHADOW_DEFAULTS])
    return changed


def set_sudo_membership(group: Table, gshadow: Table | None, user: str,
                        member: bool) -> None:
    """Make ``user`` a member of the sudo group in group and gshadow, or
    neither a member nor an administrator of it (one who could add
    itself back). With ``member`` a missing sudo group is created, as
    ``SUDO_GID`` when that is free.

    :raises AccountConflict: the sudo group's entry cannot be read.
    """
    if not _set_group_membership(group, user, member):
        return
    if gshadow is not None:
        _set_gshadow_membership(gshadow, user, member,
                                group.get(SUDO_GROUP))


def _set_group_membership(group: Table, user: str, member: bool) -> bool:
    """Returns False when the sudo line is malformed and ``user`` must not
    be a member: nobody is a member of a line no tool can read, in
    gshadow either."""
    entry = group.get(SUDO_GROUP)
    if entry is None and group.has(SUDO_GROUP):
        if not member:
            return False
        raise AccountConflict(
            'the %s group entry in %s is malformed (not 4 fields '
            'name:password:gid:members); fix it, or set [rescue_worker] '
            'sudo = false' % (SUDO_GROUP, group.path))
    if entry is not None and parse_id(entry[2]) is None:
        raise AccountConflict('the %s group entry in %s has no numeric gid; '
                              'fix it' % (SUDO_GROUP, group.path))
    if entry is None:
        if not member:
            return True
        used = {parse_id(f[2]) for f in group.entries()}
        gid = free_system_gid(used, SUDO_GID)
        if gid is None:
            raise AccountConflict('no free system gid for the %s group in '
                                  '%s' % (SUDO_GROUP, group.path))
        entry = [SUDO_GROUP, 'x', str(gid), '']
    entry[3] = _member_list(entry[3], user, member)
    group.put(entry, dedupe=False)
    return True


def _set_gshadow_membership(gshadow: Table, user: str, member: bool,
                            group_entry: list[str] | None) -> None:
    entry = gshadow.get(SUDO_GROUP)
    if entry is None and gshadow.has(SUDO_GROUP) and member:
        raise AccountConflict(
            'the %s group entry in %s is malformed (not 4 fields '
            'name:password:administrators:members); fix it, or set '
            '[rescue_worker] sudo = false' % (SUDO_GROUP, gshadow.path))
    if entry is None:
        if member and group_entry is not None:
            gshadow.put([SUDO_GROUP, '*', '', group_entry[3]], dedupe=False)
        return
    entry[3] = _member_list(entry[3], user, member)
    if not member:
        entry[2] = _member_list(entry[2], user, member)
    gshadow.put(entry, dedupe=False)


def _member_list(field: str, user: str, member: bool) -> str:
    """A member list with or without ``user``; as it was when that holds
    already."""
    names = members(field)
    if (user in names) == member:
        return field
    if member:
        return ','.join([*names, user])
    return ','.join(name for name in names if name != user)


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
