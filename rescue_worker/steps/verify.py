"""The verify step: read the account back as a login would, before success
is reported.

Under ``[rescue_worker] root_dir`` it checks that:

- ``etc/passwd`` has a well-formed entry for the user, with its password in
  shadow (``x``), the home ``/home/<user>`` (which exists, as a directory
  of the user) and a login shell (listed in ``etc/shells`` when there is
  one; an executable file when the root is ``/``);
- ``etc/shadow`` has a well-formed entry whose hash verifies the plaintext
  password (passlib) when the request carried one, or equals the request's
  hash when it was pre-hashed, and the account has not expired; when the
  account step writes it locked until the lockdown
  (``accounts.locked_until_lockdown``), the entry must be locked and the
  hash behind the ``!`` is the one checked, and the report says "locked
  until the lockdown";
- the user's primary group is in ``etc/group``;
- ``etc/shadow`` can be read by none but root and the ``shadow`` group,
  and changed by none but root (``accounts.secret_file_problem``, the rule
  the account step fixes it by);
- with ``[rescue_worker] sudo``: the user is a member of the ``sudo``
  group, and ``etc/sudoers.d/<user>`` is a regular file, mode 0440 (owned
  by root:root), that grants the user every command without a password and,
  unless it is byte for byte what the account step writes (which a unit
  test runs through visudo), passes ``visudo -cf`` (a syntax check by
  regular expression when visudo is not installed), and ``etc/sudoers``
  includes ``/etc/sudoers.d`` (so "sudo ok" means sudo reads that file);
  without it: neither the membership nor the file.

Any mismatch fails with ``verify_failed``, naming the file and what is
wrong, never the password or the hash.
"""

from __future__ import annotations

import hmac
import logging
import os
import re
import shutil
import stat
import subprocess

from passlib import context as passlib_context

from rescue_worker import accounts
from rescue_worker import conf as rw_conf
from rescue_worker import errors
from rescue_worker import pipeline

LOG = logging.getLogger(__name__)

VISUDO_TIMEOUT = 30.0
#: where visudo lives on Debian, searched after PATH
SYSTEM_SBIN = ('/usr/sbin', '/sbin')

_CONTEXT = passlib_context.CryptContext(schemes=list(rw_conf.HASH_SCHEMES))

# A sudoers user specification or Defaults line, loosely: enough to catch
# a truncated or garbled file when visudo is not there to parse it.
_NAME = r'[%+]?[\w.@$-]+'
_SUDOERS_LINE = re.compile(
    r'^(?:Defaults(?:[:@>!]\S+)?\s+\S.*'
    r'|' + _NAME + r'(?:\s*,\s*' + _NAME + r')*'
    r'\s+[\w.!-]+(?:\s*,\s*[\w.!-]+)*\s*=\s*'
    r'(?:\(\s*[^()\s][^()]*\)\s*)?'
    r'(?:[A-Z_]+\s*:\s*)*'
    r'[^\s:=()][^=()]*)$')

# What makes sudo read the files of /etc/sudoers.d ("#includedir" before
# sudo 1.9.1, "@includedir" since).
_INCLUDEDIR = re.compile(r'^[ \t]*[@#]includedir[ \t]+/etc/sudoers\.d/?'
                         r'[ \t]*$', re.MULTILINE)


def _failed(message: str) -> errors.RescueError:
    return errors.RescueError(errors.VERIFY_FAILED, message)


def grant_pattern(username: str) -> re.Pattern:
    """A sudoers line giving ``username`` every command, no password."""
    return re.compile(
        r'^[ \t]*%s[ \t]+ALL[ \t]*=[ \t]*\([ \t]*ALL[ \t]*(?::[ \t]*ALL'
        r'[ \t]*)?\)[ \t]*NOPASSWD[ \t]*:[ \t]*ALL[ \t]*$' %
        re.escape(username), re.MULTILINE)


def sudoers_syntax_problem(text: str) -> str | None:
    """The first line of a sudoers file the fallback check cannot parse,
    as its number, or None when every line looks right."""
    logical = ''
    start = 0
    lines = text.split('\n')
    if lines[-1] == '':
        lines.pop()  # the end of the last line, not a line of its own
    for number, line in enumerate(lines, 1):
        if not logical:
            start = number
        if line.endswith('\\'):
            logical += line[:-1] + ' '
            continue
        logical = (logical + line).strip()
        if logical and not logical.startswith('#') and \
                not logical.startswith(('@include', '#include')) and \
                not _SUDOERS_LINE.match(logical):
            return 'line %d is not a sudoers rule' % start
        logical = ''
    if logical:
        return 'line %d ends with a continuation' % start
    return None


def find_visudo() -> str | None:
    path = os.environ.get('PATH', os.defpath)
    return shutil.which('visudo', path=os.pathsep.join(
        [path, *SYSTEM_SBIN]))


class VerifyStep(pipeline.Step):
    """Check the account the way a login would (see the module docstring).
    """

    name = 'verify'

    def run(self, request: pipeline.RescueRequest,
            state: pipeline.RescueState) -> str:
        opts = self.conf.rescue_worker
        root = opts.root_dir
        user = state.username
        etc = os.path.join(root, 'etc')
        real_root = os.path.realpath(root) == '/'
        owners = accounts.owners_apply(root)

        passwd = self._load(os.path.join(etc, 'passwd'),
                            accounts.PASSWD_FIELDS)
        uid, gid = self._check_passwd(passwd, user, root, real_root, owners)
        group = self._load(os.path.join(etc, 'group'), accounts.GROUP_FIELDS)
        shadow = self._load(os.path.join(etc, 'shadow'),
                            accounts.SHADOW_FIELDS)
        _check_shadow_file(shadow.path, group, owners)
        locked = accounts.locked_until_lockdown(self.conf)
        self._check_shadow(shadow, user, request, state, locked)
        if not any(accounts.parse_id(f[2]) == gid for f in group.entries()):
            raise _failed('the primary group (gid %d) of %s is not in %s' %
                          (gid, user, group.path))
        sudoers = os.path.join(etc, 'sudoers.d', user)
        if opts.sudo:
            self._check_sudo(group, sudoers, user, gid, owners)
            _check_includedir(os.path.join(etc, 'sudoers'))
        else:
            self._check_no_sudo(group, sudoers, user)
        return '%s can log in (uid %d%s); %s' % (
            user, uid, ', locked until the lockdown' if locked else '',
            'sudo ok' if opts.sudo else 'no sudo')

    @staticmethod
    def _load(path: str, nfields: int) -> accounts.Table:
        try:
            return accounts.Table.load(path, nfields)
        except FileNotFoundError:
            raise _failed('%s does not exist' % path) from None
        except OSError as exc:
            raise _failed('cannot read %s: %s' % (
                path, exc.strerror or type(exc).__name__)) from None

    @staticmethod
    def _entry(table: accounts.Table, user: str) -> list[str]:
        lines = table.lines_of(user)
        if not lines:
            raise _failed('%s has no entry for %s' % (table.path, user))
        fields = table.parse(lines[0])
        if fields is None:
            raise _failed('the entry for %s in %s is malformed (%d fields '
                          'instead of %d)' % (user, table.path,
                                              len(lines[0].split(':')),
                                              table.nfields))
        return fields

    def _check_passwd(self, passwd: accounts.Table, user: str, root: str,
                      real_root: bool, owners: bool) -> tuple[int, int]:
        fields = self._entry(passwd, user)
        uid, gid = accounts.parse_id(fields[2]), accounts.parse_id(fields[3])
        if uid is None or gid is None:
            raise _failed('the entry for %s in %s has a non-numeric uid or '
                          'gid' % (user, passwd.path))
        if fields[1] != 'x':
            # Never quote the field: it could be a hash.
            raise _failed('the password field of %s in %s is not "x", so '
                          'its shadow entry is not used' %
                          (user, passwd.path))
        home = '/home/%s' % user
        if fields[5] != home:
            raise _failed('the home of %s in %s is %s instead of %s' %
                          (user, passwd.path, fields[5] or '(empty)', home))
        self._check_shell(fields[6], user, passwd.path, root, real_root)

        home_dir = os.path.join(root, 'home', user)
        try:
            st = os.stat(home_dir)
        except OSError as exc:
            raise _failed('the home directory %s of %s is missing (%s)' %
                          (home_dir, user, exc.strerror)) from None
        if not stat.S_ISDIR(st.st_mode):
            raise _failed('the home %s of %s is not a directory' %
                          (home_dir, user))
        if owners and st.st_uid != uid:
            raise _failed('the home directory %s belongs to uid %d, not to '
                          '%s (uid %d)' % (home_dir, st.st_uid, user, uid))
        return uid, gid

    @staticmethod
    def _check_shell(shell: str, user: str, passwd_path: str, root: str,
                     real_root: bool) -> None:
        if not shell.startswith('/'):
            raise _failed('the shell of %s in %s is %s, not an absolute '
                          'path' % (user, passwd_path, shell or '(empty)'))
        shells_path = os.path.join(root, 'etc', 'shells')
        listed = _listed_shells(shells_path)
        if listed is not None and shell not in listed:
            raise _failed('the shell %s of %s is not listed in %s' %
                          (shell, user, shells_path))
        if real_root and not (os.path.isfile(shell) and
                              os.access(shell, os.X_OK)):
            raise _failed('the shell %s of %s is not an executable file' %
                          (shell, user))

    def _check_shadow(self, shadow: accounts.Table, user: str,
                      request: pipeline.RescueRequest,
                      state: pipeline.RescueState, locked: bool) -> None:
        fields = self._entry(shadow, user)
        stored = fields[1]
        if locked:
            if not stored.startswith(accounts.LOCK_PREFIX):
                raise _failed(
                    'the account %s is not locked in %s, so it can be '
                    'logged into before the lockdown removed the secrets '
                    '([rescue_worker] unlock_after_lockdown)' %
                    (user, shadow.path))
            # The hash the lockdown will unlock is what must verify.
            stored = stored[len(accounts.LOCK_PREFIX):]
        if request.hashed:
            _check_same_hash(stored, request.rescue_password, user,
                             shadow.path)
        else:
            _check_verifies(stored, request.rescue_password, user,
                            shadow.path, state.hash_scheme)
        expire = accounts.parse_id(fields[7])
        if fields[7] and expire is not None and \
                expire <= accounts.days_since_epoch():
            raise _failed('the account %s expired (field 8 of its entry in '
                          '%s)' % (user, shadow.path))

    def _check_sudo(self, group: accounts.Table, sudoers: str, user: str,
                    gid: int, owners: bool) -> None:
        entry = group.get(accounts.SUDO_GROUP)
        if entry is None:
            raise _failed('%s has no (well-formed) %s group' %
                          (group.path, accounts.SUDO_GROUP))
        if user not in accounts.members(entry[3]) and \
                accounts.parse_id(entry[2]) != gid:
            raise _failed('%s is not a member of the %s group in %s' %
                          (user, accounts.SUDO_GROUP, group.path))
        text = _read_sudoers(sudoers, owners)
        if not grant_pattern(user).search(text):
            raise _failed('%s does not contain "%s ALL=(ALL) NOPASSWD: ALL"'
                          % (sudoers, user))
        if text.encode('utf-8') == accounts.sudoers_content(user):
            # The account step's own file, which a unit test runs through
            # visudo: a fork and exec of visudo per request would be half
            # of the worker's CPU for a request (doc/source/performance.rst).
            return
        self._check_sudoers_syntax(sudoers, text)

    @staticmethod
    def _check_sudoers_syntax(sudoers: str, text: str) -> None:
        visudo = find_visudo()
        if visudo is None:
            problem = sudoers_syntax_problem(text)
            if problem is not None:
                raise _failed('%s does not parse: %s (visudo is not '
                              'installed, so it was checked loosely)' %
                              (sudoers, problem))
            return
        try:
            result = subprocess.run(
                [visudo, '-c', '-f', sudoers], capture_output=True,
                text=True, errors='replace', timeout=VISUDO_TIMEOUT,
                env={'PATH': '/usr/sbin:/usr/bin:/sbin:/bin',
                     'LC_ALL': 'C'}, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise _failed('cannot run %s -cf %s: %s' % (
                visudo, sudoers, type(exc).__name__)) from None
        if result.returncode != 0:
            output = (result.stderr.strip() or result.stdout.strip() or
                      'exit status %d' % result.returncode)
            raise _failed('visudo -cf %s rejects it: %s' % (
                sudoers, output.splitlines()[0]))

    @staticmethod
    def _check_no_sudo(group: accounts.Table, sudoers: str,
                       user: str) -> None:
        entry = group.get(accounts.SUDO_GROUP)
        if entry is not None and user in accounts.members(entry[3]):
            raise _failed('%s is a member of the %s group in %s although '
                          '[rescue_worker] sudo is false' %
                          (user, accounts.SUDO_GROUP, group.path))
        if os.path.lexists(sudoers):
            raise _failed('%s exists although [rescue_worker] sudo is '
                          'false' % sudoers)


def _check_same_hash(stored: str, requested: str, user: str,
                     path: str) -> None:
    matches = hmac.compare_digest(stored.encode('utf-8', 'replace'),
                                  requested.encode('utf-8', 'replace'))
    if not matches:
        raise _failed('the password hash of %s in %s is not the one the '
                      'request carried' % (user, path))


def _check_verifies(stored: str, password: str, user: str, path: str,
                    scheme: str | None) -> None:
    verdict = _verifies(password, stored)
    if verdict is None:
        raise _failed('the password field of %s in %s is not a usable %s '
                      'hash (locked, empty or malformed)' % (
                          user, path, ', '.join(rw_conf.HASH_SCHEMES)))
    if not verdict:
        raise _failed('the password hash of %s in %s does not verify the '
                      'password of the request' % (user, path))
    if scheme and _CONTEXT.identify(stored) != scheme:
        raise _failed('the password hash of %s in %s is not a %s hash' %
                      (user, path, scheme))


def _listed_shells(path: str) -> set[str] | None:
    """The shells ``etc/shells`` lists; None when there is no such file
    (then any absolute path will do, as for a login)."""
    try:
        with open(path, encoding='utf-8', errors='replace') as f:
            return {line.strip() for line in f
                    if line.strip() and not line.startswith('#')}
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _failed('cannot read %s: %s' % (path, exc.strerror)) from None


def _check_shadow_file(path: str, group: accounts.Table,
                       owners: bool) -> None:
    """Fail when others than root and the shadow group can read or change
    the shadow file, whose hashes they could then crack or replace."""
    allowed = accounts.secret_file_ownership(group)
    try:
        st = os.stat(path)
    except OSError as exc:
        raise _failed('cannot inspect %s: %s' % (path, exc.strerror)) \
            from None
    problem = accounts.secret_file_problem(st, allowed, owners)
    if problem is not None:
        raise _failed('%s %s; make it %04o root:%s or stricter' % (
            path, problem, allowed.mode,
            accounts.SHADOW_GROUP if allowed.gid else 'root'))


def _check_includedir(path: str) -> None:
    """Fail unless the main sudoers file reads sudoers.d, where the
    account step grants the rights: without it, sudo ignores them."""
    try:
        with open(path, 'rb') as f:
            text = f.read().decode('utf-8', 'replace')
    except OSError as exc:
        raise _failed('cannot read %s (%s), so sudo cannot work; the image '
                      'needs the sudo package' % (
                          path, exc.strerror or type(exc).__name__)) \
            from None
    if not _INCLUDEDIR.search(text):
        raise _failed('%s does not include /etc/sudoers.d, so sudo ignores '
                      'the rights of the account there; add the line '
                      '"@includedir /etc/sudoers.d" to it in the image' %
                      path)


def _read_sudoers(path: str, owners: bool) -> str:
    """The text of the user's sudoers.d file, once its type, mode and
    owner are what sudo needs."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise _failed('%s does not exist' % path) from None
    except OSError as exc:
        raise _failed('cannot inspect %s: %s' % (path, exc.strerror)) \
            from None
    problem = accounts.sudoers_file_problem(st, owners)
    if problem is not None:
        raise _failed('%s %s' % (path, problem))
    try:
        with open(path, 'rb') as f:
            return f.read().decode('utf-8', 'replace')
    except OSError as exc:
        raise _failed('cannot read %s: %s' % (path, exc.strerror)) from None


def _verifies(plaintext: str, stored: str) -> bool | None:
    """Whether ``stored`` verifies ``plaintext``; None when it is no hash
    of a supported scheme.

    Only a bool leaves: a passlib exception could quote the hash, and it
    must not become the context of the error raised by the caller.
    """
    try:
        if _CONTEXT.identify(stored) is None:
            return None
        return bool(_CONTEXT.verify(plaintext, stored))
    except Exception:
        return None
