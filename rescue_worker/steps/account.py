"""The account step: create or update the tenant's account in the files.

The user ``[rescue_worker] username`` gets, under ``[rescue_worker]
root_dir``:

- ``etc/passwd``: home ``/home/<user>``, shell ``/bin/bash`` (``/bin/sh``
  when the system has no bash), a uid and a user private group from the
  first free id >= 1000 (kept when the user exists), and the comment
  ``rescue-worker rescue account``, the worker's record that it created
  the account;
- ``etc/shadow``: the hash the password step left in ``state``, the date of
  the change, and useradd's defaults for the rest (``:0:99999:7:::``); the
  hash is locked (``!`` before it, as ``usermod -L`` does) when
  ``[rescue_worker] unlock_after_lockdown`` and ``exit_after_rescue`` are
  set, so that nobody logs in with it while the worker's secrets are on
  disk, and the lockdown unlocks it (``accounts.unlock_account``) once they
  are gone;
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
modification time. The exception is a shadow or gshadow file that others
can read or change (0644 in a careless image): it is rewritten 0640
root:shadow (0600 root:root on a system without a shadow group), the rule
verify checks (``accounts.secret_file_problem``).

A name that belongs to a system account (uid or gid outside 1000..60000)
is refused: that account is not the worker's to change. So is a regular
user the worker did not create (its passwd entry lacks that comment): it
comes with the image, and adopting it would hand the tenant its home and
its ``authorized_keys`` with whoever else's keys are in there. The step
fails with ``account_failed``, changing nothing; the operator removes the
account from the image or sets ``[rescue_worker] username`` to another
name. The worker's own account, found again by its comment, is updated,
so a new request (a new password) or a run after a crash goes through.

What the entries become is decided by ``accounts.plan_account`` on the
tables as read, without I/O; this module reads the files, and writes the
plan with the home and sudoers.d around it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator

from rescue_worker import accounts
from rescue_worker import atomic
from rescue_worker import errors
from rescue_worker import pipeline

LOG = logging.getLogger(__name__)

HOME_MODE = 0o700
HOME_PARENT_MODE = 0o755


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
    """One account file to replace, and the mode and owner it gets (None:
    it keeps its own)."""

    table: accounts.Table
    ownership: accounts.Ownership | None


@dataclasses.dataclass
class _Plan:
    account: accounts.AccountPlan
    writes: list[_Write]
    home: str | None = None        # 'create' or 'chown'
    sudoers: str | None = None     # 'write' or 'remove'

    @property
    def changes(self) -> bool:
        return bool(self.writes or self.home or self.sudoers)


def _failed(message: str) -> errors.RescueError:
    return errors.RescueError(errors.ACCOUNT_FAILED, message)


@contextlib.contextmanager
def _io(action: str, path: str) -> Iterator[None]:
    """Turn an OSError into ``account_failed`` naming the file."""
    try:
        yield
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise _failed('cannot %s %s: %s' % (action, path, reason)) from None


def _check_state(state: pipeline.RescueState) -> None:
    """Refuse what the earlier steps should have refused already."""
    if not accounts.USERNAME_RE.match(state.username or ''):
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


class AccountStep(pipeline.Step):
    """Create or update the rescue account (see the module docstring)."""

    name = 'account'

    def run(self, request: pipeline.RescueRequest,
            state: pipeline.RescueState) -> str:
        _check_state(state)
        paths = _Paths(self.conf.rescue_worker.root_dir, state.username)
        owners = accounts.owners_apply(paths.root)
        plan = self._plan(paths, state.password_hash, owners)
        if not plan.changes:
            return 'user %s (uid %d) unchanged' % (paths.username,
                                                  plan.account.uid)
        lock = accounts.PasswdLock(paths.etc)
        with _io('lock', lock.path):
            lock.acquire()
        try:
            # Planned again under the lock: useradd or passwd may have
            # changed the files in between.
            plan = self._plan(paths, state.password_hash, owners)
            changed = _apply(paths, plan, owners)
        finally:
            lock.release()
        LOG.info('Account %s (uid %d): %s', paths.username, plan.account.uid,
                 ', '.join(changed) or 'nothing changed')
        return _detail(paths, plan.account, changed)

    # -- planning: read the files, decide, change nothing on disk ----------

    def _plan(self, paths: _Paths, password_hash: str, owners: bool) -> _Plan:
        sudo = self.conf.rescue_worker.sudo
        locked = accounts.locked_until_lockdown(self.conf)
        wanted = accounts.WantedAccount(
            username=paths.username,
            password_field=accounts.password_field(password_hash, locked),
            shell=login_shell(paths.root), sudo=sudo,
            today=accounts.days_since_epoch())
        try:
            account = accounts.plan_account(_read_tables(paths), wanted)
        except accounts.AccountConflict as exc:
            raise _failed(str(exc)) from None
        return _Plan(account=account,
                     writes=_writes(account.tables, owners),
                     home=_home_action(paths, account, owners),
                     sudoers=_sudoers_action(paths, sudo, owners))


def _read_tables(paths: _Paths) -> accounts.AccountTables:
    def load(path: str, nfields: int) -> accounts.Table:
        with _io('read', path):
            return accounts.Table.load(path, nfields, missing_ok=True)

    passwd = load(paths.passwd, accounts.PASSWD_FIELDS)
    if not passwd.exists:
        raise _failed(
            '%s does not exist, so %s is not the root of an installed '
            'system; set [rescue_worker] root_dir to the root of the '
            'rescue system' % (paths.passwd, paths.root))
    gshadow = load(paths.gshadow, accounts.GSHADOW_FIELDS)
    return accounts.AccountTables(
        passwd=passwd, shadow=load(paths.shadow, accounts.SHADOW_FIELDS),
        group=load(paths.group, accounts.GROUP_FIELDS),
        gshadow=gshadow if gshadow.exists else None)


def _writes(tables: accounts.AccountTables, owners: bool) -> list[_Write]:
    """The tables to write: those whose content changed, and a shadow or
    gshadow that others can read or change even if it did not."""
    secret = accounts.secret_file_ownership(tables.group)
    writes = []
    for table in tables.in_write_order():
        if tables.is_secret(table) and table.exists and \
                _unsafe(table.path, secret, owners):
            writes.append(_Write(table, secret))
        elif table.changed:
            rule = secret if tables.is_secret(table) else \
                accounts.PUBLIC_FILE
            writes.append(_Write(table, None if table.exists else rule))
    return writes


def _unsafe(path: str, allowed: accounts.Ownership, owners: bool) -> bool:
    # stat, not lstat: the mode a rewrite would keep is the target's.
    with _io('inspect', path):
        st = os.stat(path)
    return accounts.secret_file_problem(st, allowed, owners) is not None


def _lstat(path: str) -> os.stat_result | None:
    """lstat of ``path``; None when it does not exist."""
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _failed('cannot inspect %s: %s' % (path, exc.strerror)) \
            from None


def _home_action(paths: _Paths, account: accounts.AccountPlan,
                 owners: bool) -> str | None:
    st = _lstat(paths.home)
    if st is None:
        return 'create'
    if not stat.S_ISDIR(st.st_mode):
        raise _failed('%s exists and is not a directory (a symbolic link '
                      'or a file); remove it' % paths.home)
    if owners and (st.st_uid, st.st_gid) != (account.uid, account.gid):
        return 'chown'
    return None


def _sudoers_action(paths: _Paths, sudo: bool, owners: bool) -> str | None:
    st = _lstat(paths.sudoers)
    if not sudo:
        return 'remove' if st is not None else None
    if st is None or accounts.sudoers_file_problem(st, owners) is not None:
        return 'write'
    with _io('read', paths.sudoers):
        with open(paths.sudoers, 'rb') as f:
            current = f.read()
    if current == accounts.sudoers_content(paths.username):
        return None
    return 'write'


def _detail(paths: _Paths, account: accounts.AccountPlan,
            changed: list[str]) -> str:
    """The report of a run that changed something."""
    user = paths.username
    if account.created:
        return 'created user %s (uid %d)' % (user, account.uid)
    if not account.password_changed:
        return 'updated %s (%s)' % (user, ', '.join(changed))
    detail = 'updated password of %s' % user
    shadow = 'rewrote %s' % paths.show(paths.shadow)
    if any(change != shadow for change in changed):
        detail += ' (%s)' % ', '.join(changed)
    return detail


# -- applying: in an order where a crash leaves a usable system --------------

def _apply(paths: _Paths, plan: _Plan, owners: bool) -> list[str]:
    changed = []
    if plan.sudoers == 'remove':
        # Rights go first, before anything else changes.
        with _io('remove', paths.sudoers):
            atomic.remove_durably(paths.sudoers)
        changed.append('removed %s' % paths.show(paths.sudoers))
    for write in plan.writes:
        _write_table(write, owners)
        changed.append('rewrote %s' % paths.show(write.table.path))
    if plan.home == 'create':
        _create_home(paths, plan.account.uid, plan.account.gid, owners)
        changed.append('created %s' % paths.show(paths.home))
    elif plan.home == 'chown':
        with _io('change the owner of', paths.home):
            os.chown(paths.home, plan.account.uid, plan.account.gid,
                     follow_symlinks=False)
        changed.append('owner of %s' % paths.show(paths.home))
    if plan.sudoers == 'write':
        _write_sudoers(paths, owners)
        changed.append('wrote %s' % paths.show(paths.sudoers))
    return changed


def _write_table(write: _Write, owners: bool) -> None:
    mode = uid = gid = None
    if write.ownership is not None:
        mode, uid, gid = write.ownership.for_write(owners)
    with _io('write', write.table.path):
        atomic.write_atomically(write.table.path, write.table.to_bytes(),
                                mode=mode, uid=uid, gid=gid)


def _write_sudoers(paths: _Paths, owners: bool) -> None:
    if not os.path.isdir(paths.sudoers_dir):
        mode, uid, gid = accounts.SUDOERS_DIR.for_write(owners)
        with _io('create', paths.sudoers_dir):
            os.mkdir(paths.sudoers_dir, mode)
            os.chmod(paths.sudoers_dir, mode)  # umask
            if uid is not None:
                os.chown(paths.sudoers_dir, uid, gid)
    mode, uid, gid = accounts.SUDOERS_FILE.for_write(owners)
    with _io('write', paths.sudoers):
        atomic.write_atomically(paths.sudoers,
                                accounts.sudoers_content(paths.username),
                                mode=mode, uid=uid, gid=gid)


def _create_home(paths: _Paths, uid: int, gid: int, owners: bool) -> None:
    """Build the home in a temp directory next to it, then rename it into
    place, so that a crash never leaves a half-made home."""
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
