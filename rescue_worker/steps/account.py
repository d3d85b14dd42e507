"""The account step: create or update the tenant's account in the files.

The user ``[rescue_worker] username`` gets, under ``[rescue_worker]
root_dir``:

- ``etc/passwd``: home ``/home/<user>``, shell ``/bin/bash`` (``/bin/sh``
  when the system has no bash), a uid and a user private group from the
  first free id >= 1000 (kept when the user exists);
- ``etc/shadow``: the hash the password step left in ``state``, the date of
  the change, and useradd's defaults for the rest (``:0:99999:7:::``);
- ``etc/group`` (and ``etc/gshadow`` when the system has one): the private
  group, and membership of ``sudo`` when ``[rescue_worker] sudo`` is set
  (the group is created, as gid 27 when free, if missing), none otherwise;
- ``etc/sudoers.d/<user>`` (0440): ``<user> ALL=(ALL) NOPASSWD: ALL`` when
  ``sudo`` is set, removed otherwise;
- the home directory ``home/<user>`` (0700, filled from ``etc/skel``).

The files are written directly, never through useradd or chpasswd, so the
hash is never on a command line. Each file is replaced atomically (see
``rescue_worker.atomic``) and only when its content changes, keeping its
mode and owner; every line but the user's own is kept byte for byte. A run
with the same hash as the previous one changes nothing at all, not even a
modification time.

A name that belongs to a system account (uid or gid outside 1000..60000)
is refused: that account is not the worker's to change.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import stat
import tempfile

from rescue_worker import accounts
from rescue_worker import atomic
from rescue_worker import errors
from rescue_worker import pipeline

LOG = logging.getLogger(__name__)

SUDO_GROUP = 'sudo'
#: Debian's gid of the sudo group (base-passwd), used when it is free
SUDO_GID = 27
SHADOW_GROUP = 'shadow'

HOME_MODE = 0o700
HOME_PARENT_MODE = 0o755
SUDOERS_MODE = 0o440
SUDOERS_DIR_MODE = 0o750
GROUP_FILE_MODE = 0o644


def login_shell(root_dir: str) -> str:
    """``/bin/bash`` when the system under ``root_dir`` has it, else
    ``/bin/sh``."""
    if os.path.exists(os.path.join(root_dir, 'bin', 'bash')):
        return '/bin/bash'
    return '/bin/sh'


@dataclasses.dataclass
class _Paths:
    root: str
    username: str

    def __post_init__(self) -> None:
        self.etc = os.path.join(self.root, 'etc')
        self.passwd = os.path.join(self.etc, 'passwd')
        self.shadow = os.path.join(self.etc, 'shadow')
        self.group = os.path.join(self.etc, 'group')
        self.gshadow = os.path.join(self.etc, 'gshadow')
        self.sudoers_dir = os.path.join(self.etc, 'sudoers.d')
        self.sudoers = os.path.join(self.sudoers_dir, self.username)
        self.skel = os.path.join(self.etc, 'skel')
        self.home_parent = os.path.join(self.root, 'home')
        self.home = os.path.join(self.home_parent, self.username)

    def show(self, path: str) -> str:
        """``path`` relative to the root, for the report."""
        return os.path.relpath(path, self.root)


@dataclasses.dataclass
class _Write:
    """One account file to replace; mode and owner apply to a new file."""

    table: accounts.Table
    mode: int
    uid: int | None
    gid: int | None


@dataclasses.dataclass
class _Plan:
    uid: int
    gid: int
    created: bool
    hash_changed: bool
    writes: list[_Write]
    home: str | None = None        # 'create' or 'chown'
    sudoers: str | None = None     # 'write' or 'remove'

    @property
    def changes(self) -> bool:
        return bool(self.writes or self.home or self.sudoers)


def _failed(message: str) -> errors.RescueError:
    return errors.RescueError(errors.ACCOUNT_FAILED, message)


@contextlib.contextmanager
def _io(action: str, path: str):
    """Turn an OSError into ``account_failed`` naming the file."""
    try:
        yield
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise _failed('cannot %s %s: %s' % (action, path, reason)) from None


class AccountStep(pipeline.Step):
    """Create or update the rescue account (see the module docstring)."""

    name = 'account'

    def run(self, request: pipeline.RescueRequest,
            state: pipeline.RescueState) -> str:
        opts = self.conf.rescue_worker
        username = state.username
        if not accounts.USERNAME_RE.match(username or ''):
            raise _failed(
                'the user name is not a valid login name (lower-case '
                'letters, digits, "_" and "-", starting with a letter or '
                '"_", at most 31 characters); fix [rescue_worker] username')
        if not state.password_hash:
            raise _failed(
                'there is no password hash for the account: the password '
                'step must run before the account step ([rescue_worker] '
                'steps)')
        problem = accounts.hash_problem(state.password_hash)
        if problem is not None:
            # Defence in depth: the password step refuses such a value.
            raise _failed('%s, which would break its /etc/shadow entry; '
                          'nothing was written' % problem)
        paths = _Paths(opts.root_dir, username)
        # Files are owned as on a real system, except in a scratch root of
        # an unprivileged test, where nobody else could own them anyway.
        owners = (os.geteuid() == 0 or
                  os.path.realpath(opts.root_dir) == '/')

        plan = self._plan(paths, state.password_hash, opts.sudo, owners)
        if not plan.changes:
            return 'user %s (uid %d) unchanged' % (username, plan.uid)
        lock = accounts.PasswdLock(paths.etc)
        with _io('lock', lock.path):
            lock.acquire()
        try:
            # Planned again under the lock: useradd or passwd may have
            # changed the files in between.
            plan = self._plan(paths, state.password_hash, opts.sudo, owners)
            changed = self._apply(paths, plan, owners)
        finally:
            lock.release()
        LOG.info('Account %s (uid %d): %s', username, plan.uid,
                 ', '.join(changed) or 'nothing changed')
        if plan.created:
            return 'created user %s (uid %d)' % (username, plan.uid)
        detail = ('updated password of %s' if plan.hash_changed
                  else 'updated %s') % username
        others = [c for c in changed
                  if c != 'rewrote %s' % paths.show(paths.shadow)]
        if others or not plan.hash_changed:
            detail += ' (%s)' % ', '.join(changed)
        return detail

    # -- planning: read the files, decide, change nothing on disk ----------

    def _plan(self, paths: _Paths, password_hash: str, sudo: bool,
              owners: bool) -> _Plan:
        user = paths.username
        try:
            passwd = accounts.Table.load(paths.passwd,
                                         accounts.PASSWD_FIELDS)
        except FileNotFoundError:
            raise _failed(
                '%s does not exist, so %s is not the root of an installed '
                'system; set [rescue_worker] root_dir to the root of the '
                'rescue system' % (paths.passwd, paths.root)) from None
        except OSError as exc:
            raise _failed('cannot read %s: %s' % (
                paths.passwd, exc.strerror or type(exc).__name__)) from None
        with _io('read', paths.shadow):
            shadow = accounts.Table.load(paths.shadow,
                                         accounts.SHADOW_FIELDS,
                                         missing_ok=True)
        with _io('read', paths.group):
            group = accounts.Table.load(paths.group, accounts.GROUP_FIELDS,
                                        missing_ok=True)
        with _io('read', paths.gshadow):
            gshadow: accounts.Table | None = accounts.Table.load(
                paths.gshadow, accounts.GSHADOW_FIELDS, missing_ok=True)
        if not gshadow.exists:
            gshadow = None

        self._refuse_system_account(paths, passwd, group)
        old = passwd.get(user)
        if old is not None and (accounts.parse_id(old[2]) is None or
                                accounts.parse_id(old[3]) is None):
            old = None  # malformed: replaced as if there were none
        created = old is None
        uid, gid, private = self._ids(paths, passwd, group, old)

        # group and gshadow: the private group, then sudo
        if private is not None:
            group.put(private)
            if gshadow is not None:
                gshadow.put([user, '!', '', ''])
        elif gshadow is not None and group.has(user) and \
                gshadow.get(user) is None:
            gshadow.put([user, '!', '', ''])
        self._sudo_membership(paths, group, gshadow, sudo)

        # shadow: the hash; the date only moves when the hash does
        old_shadow = shadow.get(user)
        hash_changed = old_shadow is None or old_shadow[1] != password_hash
        lastchg = str(accounts.days_since_epoch())
        if not hash_changed and accounts.parse_id(old_shadow[2]):
            lastchg = old_shadow[2]
        shadow.put([user, password_hash, lastchg,
                    *accounts.SHADOW_DEFAULTS])

        # passwd last, as it makes the user exist
        gecos = old[4] if old is not None else ''
        passwd.put([user, 'x', str(uid), str(gid), gecos,
                    '/home/%s' % user, login_shell(paths.root)])

        root_uid = 0 if owners else None
        shadow_mode, shadow_gid = 0o600, root_uid
        shadow_group = group.get(SHADOW_GROUP)
        if shadow_group is not None and \
                accounts.parse_id(shadow_group[2]) is not None:
            shadow_mode = 0o640
            if owners:
                shadow_gid = accounts.parse_id(shadow_group[2])
        writes = [
            _Write(group, GROUP_FILE_MODE, root_uid, root_uid),
            _Write(gshadow, 0o640, root_uid, shadow_gid),
            _Write(shadow, shadow_mode, root_uid, shadow_gid),
            _Write(passwd, GROUP_FILE_MODE, root_uid, root_uid),
        ]
        writes = [w for w in writes
                  if w.table is not None and w.table.changed]

        return _Plan(uid=uid, gid=gid, created=created,
                     hash_changed=hash_changed, writes=writes,
                     home=self._home_action(paths, uid, gid, owners),
                     sudoers=self._sudoers_action(paths, sudo, owners))

    @staticmethod
    def _refuse_system_account(paths: _Paths, passwd: accounts.Table,
                               group: accounts.Table) -> None:
        """Refuse a name that is a system user or a system group."""
        user = paths.username
        how = ('set [rescue_worker] username to a name that is not taken '
               '(the default is "rescue") or rebuild the ramdisk without '
               'that account')
        for line in passwd.lines_of(user):
            fields = line.split(':')
            uid = accounts.parse_id(fields[2]) if len(fields) > 2 else None
            if uid is not None and not accounts.is_user_id(uid):
                raise _failed(
                    'user %s exists in %s as a system account (uid %d, '
                    'outside %d..%d), which the rescue worker will not take '
                    'over; %s' % (user, paths.passwd, uid,
                                  accounts.USER_ID_MIN,
                                  accounts.USER_ID_MAX, how))
        if passwd.get(user) is not None:
            return
        for line in group.lines_of(user):
            fields = line.split(':')
            gid = accounts.parse_id(fields[2]) if len(fields) > 2 else None
            if gid is not None and not accounts.is_user_id(gid):
                raise _failed(
                    '%s is the name of a system group in %s (gid %d), which '
                    'cannot become the private group of the account; %s' %
                    (user, paths.group, gid, how))

    @staticmethod
    def _ids(paths: _Paths, passwd: accounts.Table, group: accounts.Table,
             old: list[str] | None
             ) -> tuple[int, int, list[str] | None]:
        """uid, primary gid and the private group entry to write (None
        when the group file is fine as it is)."""
        user = paths.username
        others = [f for f in passwd.entries() if f[0] != user]
        groups = [f for f in group.entries() if f[0] != user]
        used_uids = {accounts.parse_id(f[2]) for f in others}
        group_gids = {accounts.parse_id(f[2]) for f in groups}
        # gids that passwd refers to count too, even without their group
        used_gids = group_gids | {accounts.parse_id(f[3]) for f in others}
        own_group = group.get(user)
        own_gid = (accounts.parse_id(own_group[2])
                   if own_group is not None else None)

        if old is not None:
            uid, gid = accounts.parse_id(old[2]), accounts.parse_id(old[3])
            if gid in group_gids or gid == own_gid:
                return uid, gid, None
            if own_gid is not None:
                # The user's primary group is gone but a group of its name
                # is there: make that the primary group.
                return uid, own_gid, None
            return uid, gid, [user, 'x', str(gid), '']

        if own_gid is not None:
            # A group of the name, left by a previous run interrupted before
            # passwd was written (or by an operator): reuse it.
            uid = own_gid
            if uid in used_uids:
                uid = accounts.first_free_id(used_uids | used_gids)
            gid, private = own_gid, None
        else:
            uid = accounts.first_free_id(used_uids | used_gids)
            gid = uid
            private = [user, 'x', str(gid), '']
        if uid is None:
            raise _failed(
                'no free uid or gid left in %d..%d in %s and %s' %
                (accounts.USER_ID_MIN, accounts.USER_ID_MAX, paths.passwd,
                 paths.group))
        return uid, gid, private

    @staticmethod
    def _sudo_membership(paths: _Paths, group: accounts.Table,
                         gshadow: accounts.Table | None, sudo: bool) -> None:
        user = paths.username
        entry = group.get(SUDO_GROUP)
        if group.has(SUDO_GROUP) and entry is None:
            if not sudo:
                return  # nobody is a member of a line no tool can read
            raise _failed(
                'the %s group entry in %s is malformed (not 4 fields '
                'name:password:gid:members); fix it, or set [rescue_worker] '
                'sudo = false' % (SUDO_GROUP, paths.group))
        if entry is not None and accounts.parse_id(entry[2]) is None:
            raise _failed('the %s group entry in %s has no numeric gid; fix '
                          'it' % (SUDO_GROUP, paths.group))
        if sudo:
            if entry is None:
                used = {accounts.parse_id(f[2]) for f in group.entries()}
                gid = accounts.free_system_gid(used, SUDO_GID)
                if gid is None:
                    raise _failed('no free system gid for the %s group in '
                                  '%s' % (SUDO_GROUP, paths.group))
                entry = [SUDO_GROUP, 'x', str(gid), '']
            if user not in accounts.members(entry[3]):
                entry[3] = ','.join(accounts.members(entry[3]) + [user])
            group.put(entry, dedupe=False)
        elif entry is not None and user in accounts.members(entry[3]):
            entry[3] = ','.join(m for m in accounts.members(entry[3])
                                if m != user)
            group.put(entry, dedupe=False)

        if gshadow is None:
            return
        shadow_entry = gshadow.get(SUDO_GROUP)
        if gshadow.has(SUDO_GROUP) and shadow_entry is None:
            if not sudo:
                return
            raise _failed(
                'the %s group entry in %s is malformed (not 4 fields '
                'name:password:administrators:members); fix it, or set '
                '[rescue_worker] sudo = false' % (SUDO_GROUP, paths.gshadow))
        if sudo:
            if shadow_entry is None:
                shadow_entry = [SUDO_GROUP, '*', '',
                                group.get(SUDO_GROUP)[3]]
            elif user not in accounts.members(shadow_entry[3]):
                shadow_entry[3] = ','.join(
                    accounts.members(shadow_entry[3]) + [user])
            gshadow.put(shadow_entry, dedupe=False)
        elif shadow_entry is not None:
            # Neither a member nor an administrator (who could add itself).
            for i in (2, 3):
                if user in accounts.members(shadow_entry[i]):
                    shadow_entry[i] = ','.join(
                        m for m in accounts.members(shadow_entry[i])
                        if m != user)
            gshadow.put(shadow_entry, dedupe=False)

    @staticmethod
    def _home_action(paths: _Paths, uid: int, gid: int,
                     owners: bool) -> str | None:
        try:
            st = os.lstat(paths.home)
        except FileNotFoundError:
            return 'create'
        except OSError as exc:
            raise _failed('cannot inspect %s: %s' %
                          (paths.home, exc.strerror)) from None
        if not stat.S_ISDIR(st.st_mode):
            raise _failed('%s exists and is not a directory (a symbolic link '
                          'or a file); remove it' % paths.home)
        if owners and (st.st_uid, st.st_gid) != (uid, gid):
            return 'chown'
        return None

    @staticmethod
    def _sudoers_action(paths: _Paths, sudo: bool,
                        owners: bool) -> str | None:
        try:
            st = os.lstat(paths.sudoers)
        except FileNotFoundError:
            st = None
        except OSError as exc:
            raise _failed('cannot inspect %s: %s' %
                          (paths.sudoers, exc.strerror)) from None
        if not sudo:
            return 'remove' if st is not None else None
        if st is None or not stat.S_ISREG(st.st_mode):
            return 'write'
        if stat.S_IMODE(st.st_mode) != SUDOERS_MODE or \
                (owners and (st.st_uid, st.st_gid) != (0, 0)):
            return 'write'
        with _io('read', paths.sudoers):
            with open(paths.sudoers, 'rb') as f:
                current = f.read()
        return None if current == accounts.sudoers_content(paths.username) \
            else 'write'

    # -- applying: in an order where a crash leaves a usable system ----------

    def _apply(self, paths: _Paths, plan: _Plan, owners: bool) -> list[str]:
        changed = []
        if plan.sudoers == 'remove':
            # Rights go first, before anything else changes.
            with _io('remove', paths.sudoers):
                atomic.remove_durably(paths.sudoers)
            changed.append('removed %s' % paths.show(paths.sudoers))
        for write in plan.writes:
            table = write.table
            with _io('write', table.path):
                if table.exists:
                    atomic.write_atomically(table.path, table.to_bytes())
                else:
                    atomic.write_atomically(table.path, table.to_bytes(),
                                            mode=write.mode, uid=write.uid,
                                            gid=write.gid)
            changed.append('rewrote %s' % paths.show(table.path))
        if plan.home == 'create':
            self._create_home(paths, plan.uid, plan.gid, owners)
            changed.append('created %s' % paths.show(paths.home))
        elif plan.home == 'chown':
            with _io('change the owner of', paths.home):
                os.chown(paths.home, plan.uid, plan.gid,
                         follow_symlinks=False)
            changed.append('owner of %s' % paths.show(paths.home))
        if plan.sudoers == 'write':
            self._write_sudoers(paths, owners)
            changed.append('wrote %s' % paths.show(paths.sudoers))
        return changed

    @staticmethod
    def _write_sudoers(paths: _Paths, owners: bool) -> None:
        root = 0 if owners else None
        if not os.path.isdir(paths.sudoers_dir):
            with _io('create', paths.sudoers_dir):
                os.mkdir(paths.sudoers_dir, SUDOERS_DIR_MODE)
                os.chmod(paths.sudoers_dir, SUDOERS_DIR_MODE)  # umask
                if owners:
                    os.chown(paths.sudoers_dir, 0, 0)
        with _io('write', paths.sudoers):
            atomic.write_atomically(paths.sudoers,
                                    accounts.sudoers_content(paths.username),
                                    mode=SUDOERS_MODE, uid=root, gid=root)

    @staticmethod
    def _create_home(paths: _Paths, uid: int, gid: int,
                     owners: bool) -> None:
        """Build the home in a temp directory next to it, then rename it
        into place, so that a crash never leaves a half-made home."""
        if not os.path.isdir(paths.home_parent):
            with _io('create', paths.home_parent):
                os.makedirs(paths.home_parent, HOME_PARENT_MODE)
                os.chmod(paths.home_parent, HOME_PARENT_MODE)
        with _io('create', paths.home):
            tmp = tempfile.mkdtemp(prefix='.%s.' % paths.username,
                                   suffix='.tmp', dir=paths.home_parent)
        try:
            with _io('create', paths.home):
                os.chmod(tmp, HOME_MODE)
            with _io('copy %s into' % paths.skel, paths.home):
                _copy_skel(paths.skel, tmp, uid if owners else None,
                           gid if owners else None)
            with _io('create', paths.home):
                if owners:
                    os.chown(tmp, uid, gid)
                os.rename(tmp, paths.home)
                atomic.fsync_dir(paths.home_parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def _copy_skel(skel: str, target: str, uid: int | None,
               gid: int | None) -> None:
    """Copy the skeleton files into a new home, as useradd -m does:
    directories, regular files and symbolic links, owned by the user."""
    if not os.path.isdir(skel):
        return
    for dirpath, dirnames, filenames in os.walk(skel):
        rel = os.path.relpath(dirpath, skel)
        dest_dir = os.path.normpath(os.path.join(target, rel))
        for name in list(dirnames) + filenames:
            src = os.path.join(dirpath, name)
            dst = os.path.join(dest_dir, name)
            st = os.lstat(src)
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                os.symlink(os.readlink(src), dst)
            elif stat.S_ISDIR(st.st_mode):
                os.mkdir(dst, 0o700)
                os.chmod(dst, mode)
            elif stat.S_ISREG(st.st_mode):
                with open(src, 'rb') as f:
                    data = f.read()
                atomic.write_atomically(dst, data, mode=mode)
            else:
                continue  # devices, fifos, sockets: not for a home
            if uid is not None:
                os.chown(dst, uid, gid, follow_symlinks=False)
