"""The account step: what it writes to passwd, shadow, group, gshadow,
sudoers.d and the home directory, what it leaves alone, and what it refuses.

Every test runs against a scratch copy of a Debian 12 system's account
files (``debian_etc``: the base-passwd accounts, sshd, messagebus, the
systemd users and a normal user ``debian``, uid 1000, member of sudo), with
Debian's modes and owners. The user is created by writing the files, never
by running useradd, so the hash is never on a command line.
"""

import errno
import os
import pathlib
import shutil
import stat
import subprocess
import sys

import pytest
from oslo_config import cfg
from passlib import hash as passlib_hash

from rescue_worker import accounts
from rescue_worker import atomic
from rescue_worker import conf as rw_conf
from rescue_worker import errors
from rescue_worker import pipeline
from rescue_worker.steps import account

DEBIAN_ETC = pathlib.Path(__file__).resolve().parent / 'debian_etc'
SHADOW_GID = 42  # the shadow group of Debian's base-passwd
TODAY = 20000    # days since the epoch: 2024-10-04
PASSWORD = 'correct horse battery staple'


def sha512(secret=PASSWORD):
    return passlib_hash.sha512_crypt.using(rounds=1000).hash(secret)


HASH = sha512()
NEW_HASH = sha512('Tr0ub4dor&3')
#: the comment that marks the account as the worker's own
MARKER = 'rescue-worker rescue account'

needs_root = pytest.mark.skipif(os.geteuid() != 0,
                                reason='owners can only be set by root')

# -- a scratch Debian 12 root ----------------------------------------------

# path under the root -> (mode, group), owner root, as on Debian 12
DEBIAN_FILES = {
    'etc/passwd': (0o644, 0),
    'etc/group': (0o644, 0),
    'etc/shadow': (0o640, SHADOW_GID),
    'etc/gshadow': (0o640, SHADOW_GID),
    'etc/shells': (0o644, 0),
    'etc/sudoers': (0o440, 0),
    'etc/sudoers.d/README': (0o440, 0),
    'etc/skel/.bashrc': (0o644, 0),
    'etc/skel/.profile': (0o644, 0),
    'etc/skel/.bash_logout': (0o644, 0),
}
ACCOUNT_FILES = ('etc/passwd', 'etc/shadow', 'etc/group', 'etc/gshadow')


def _chown(path, uid, gid):
    if os.geteuid() == 0:
        os.chown(path, uid, gid, follow_symlinks=False)


def seed_debian_root(root):
    """Make ``root`` look like a Debian 12 system as far as accounts go:
    the files of ``debian_etc`` with their Debian modes and owners, the
    lckpwdf lock file, /bin -> usr/bin with a bash, and the home of
    ``debian``."""
    for directory, mode in (('etc', 0o755), ('etc/sudoers.d', 0o750),
                            ('etc/skel', 0o755), ('home', 0o755),
                            ('usr/bin', 0o755)):
        path = root / directory
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, mode)
    for rel, (mode, gid) in DEBIAN_FILES.items():
        target = root / rel
        shutil.copyfile(DEBIAN_ETC / rel[len('etc/'):], target)
        os.chmod(target, mode)
        _chown(target, 0, gid)
    lock = root / 'etc' / '.pwd.lock'
    lock.touch()
    os.chmod(lock, 0o600)
    bash = root / 'usr' / 'bin' / 'bash'
    bash.write_bytes(b'')
    os.chmod(bash, 0o755)
    os.symlink('usr/bin', root / 'bin')
    home = root / 'home' / 'debian'
    home.mkdir()
    os.chmod(home, 0o700)
    _chown(home, 1000, 1000)
    return root


def make_conf(root, **overrides):
    """The worker's options at their defaults, root_dir at ``root`` and
    the account written unlocked (``unlock_after_lockdown = false``), so
    that the entries read as the tenant finds them after the lockdown;
    ``locked_conf`` is the default, with tests of its own.

    Registered options are read without parsing, so the required node_id
    never has to be supplied.
    """
    conf = cfg.ConfigOpts()
    rw_conf.register_opts(conf)
    configure(conf, root_dir=str(root), unlock_after_lockdown=False,
              **overrides)
    return conf


def locked_conf(root, **overrides):
    """The worker's options at their defaults, root_dir at ``root``."""
    conf = make_conf(root, **overrides)
    conf.clear_override('unlock_after_lockdown', group=rw_conf.GROUP)
    return conf


def configure(conf, **overrides):
    for name, value in overrides.items():
        conf.set_override(name, value, group=rw_conf.GROUP)


def run_account(conf, password_hash=HASH, username='rescue'):
    state = pipeline.RescueState(username=username,
                                 hash_scheme='sha512_crypt',
                                 password_hash=password_hash)
    req = pipeline.RescueRequest('req-1', PASSWORD)
    return account.AccountStep(conf).run(req, state)


def refusal(conf, **kwargs):
    with pytest.raises(errors.RescueError) as info:
        run_account(conf, **kwargs)
    assert info.value.code == errors.ACCOUNT_FAILED
    return info.value


def read(root, rel):
    return (root / rel).read_bytes()


def lines(root, rel):
    return read(root, rel).decode().splitlines()


def entry(root, rel, name):
    """The one line for ``name`` in ``rel``."""
    found = [line for line in lines(root, rel)
             if line.split(':', 1)[0] == name]
    assert len(found) == 1, found
    return found[0]


def tree(root, mtimes=True):
    """Every path under ``root``: type and mode, owner, content, and (for
    files) inode and modification time, to compare before and after."""
    seen = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in ['', *dirnames, *filenames]:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            content = None
            if stat.S_ISREG(st.st_mode):
                with open(path, 'rb') as f:
                    content = f.read()
            elif stat.S_ISLNK(st.st_mode):
                content = os.readlink(path)
            times = None
            if mtimes and (not stat.S_ISDIR(st.st_mode) or mtimes == 'all'):
                times = (st.st_ino, st.st_mtime_ns)
            seen[os.path.relpath(path, root)] = (
                st.st_mode, st.st_uid, st.st_gid, content, times)
    return seen


def owner(path):
    st = os.stat(path)
    return st.st_uid, st.st_gid


def mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture(autouse=True)
def today(monkeypatch):
    monkeypatch.setattr(accounts, 'days_since_epoch', lambda: TODAY)


@pytest.fixture
def root(tmp_path):
    return seed_debian_root(tmp_path / 'root')


@pytest.fixture
def conf(root):
    return make_conf(root)


# -- the step --------------------------------------------------------------

def test_the_step_is_registered_as_account(conf):
    step = pipeline.load_step('account', conf)

    assert isinstance(step, account.AccountStep)
    assert step.name == 'account'


# -- creating the account --------------------------------------------------

def test_a_new_user_gets_a_line_in_each_account_file(root, conf):
    detail = run_account(conf)

    assert detail == 'created user rescue (uid 1001)'
    assert entry(root, 'etc/passwd', 'rescue') == \
        'rescue:x:1001:1001:rescue-worker rescue account:/home/rescue:' \
        '/bin/bash'
    assert entry(root, 'etc/shadow', 'rescue') == \
        'rescue:%s:%d:0:99999:7:::' % (HASH, TODAY)
    assert entry(root, 'etc/group', 'rescue') == 'rescue:x:1001:'
    assert entry(root, 'etc/gshadow', 'rescue') == 'rescue:!::'


def test_a_new_user_joins_the_sudo_group_after_its_members(root, conf):
    run_account(conf)

    assert entry(root, 'etc/group', 'sudo') == 'sudo:x:27:debian,rescue'
    assert entry(root, 'etc/gshadow', 'sudo') == 'sudo:*::debian,rescue'


def test_every_other_line_is_kept_byte_for_byte(root, conf):
    before = {rel: read(root, rel) for rel in ACCOUNT_FILES}

    run_account(conf)

    for rel in ('etc/passwd', 'etc/shadow'):
        # The new entry is appended; everything before it is the old file.
        after = read(root, rel)
        assert after.startswith(before[rel])
        assert after[len(before[rel]):].count(b'\n') == 1
    for rel in ('etc/group', 'etc/gshadow'):
        old = before[rel].decode().splitlines()
        new = lines(root, rel)
        assert new[-1].startswith('rescue:')
        assert len(new) == len(old) + 1
        changed = [(a, b) for a, b in zip(old, new[:-1], strict=True)
                   if a != b]
        assert [a.split(':')[0] for a, _ in changed] == ['sudo']


def test_the_uid_is_the_first_id_from_1000_free_in_passwd_and_group(
        root, conf):
    with open(root / 'etc' / 'passwd', 'a') as f:
        f.write('alice:x:1002:1002::/home/alice:/bin/bash\n')
    with open(root / 'etc' / 'group', 'a') as f:
        f.write('alice:x:1002:\nproject:x:1001:\n')

    detail = run_account(conf)

    assert detail == 'created user rescue (uid 1003)'
    assert entry(root, 'etc/passwd', 'rescue').startswith(
        'rescue:x:1003:1003:')
    assert entry(root, 'etc/group', 'rescue') == 'rescue:x:1003:'


def test_a_gap_in_the_ids_is_filled(root, conf):
    with open(root / 'etc' / 'passwd', 'a') as f:
        f.write('carol:x:1005:1005::/home/carol:/bin/bash\n')

    run_account(conf)

    assert entry(root, 'etc/passwd', 'rescue').startswith('rescue:x:1001:')


def test_the_shell_is_bin_sh_when_the_system_has_no_bash(root, conf):
    os.unlink(root / 'usr' / 'bin' / 'bash')

    run_account(conf)

    assert entry(root, 'etc/passwd', 'rescue').endswith(':/bin/sh')


@needs_root
def test_the_home_is_created_0700_for_the_user_with_the_skeleton(root,
                                                                 conf):
    run_account(conf)

    home = root / 'home' / 'rescue'
    assert home.is_dir()
    assert mode(home) == 0o700
    assert owner(home) == (1001, 1001)
    for name in ('.bashrc', '.profile', '.bash_logout'):
        assert (home / name).read_bytes() == \
            (root / 'etc' / 'skel' / name).read_bytes()
        assert owner(home / name) == (1001, 1001)
        assert mode(home / name) == 0o644
    assert sorted(os.listdir(root / 'home')) == ['debian', 'rescue']


def test_the_home_parent_is_created_when_missing(root, conf):
    shutil.rmtree(root / 'home')

    run_account(conf)

    assert mode(root / 'home') == 0o755
    assert (root / 'home' / 'rescue').is_dir()


def test_an_existing_home_is_left_as_it_is(root, conf):
    home = root / 'home' / 'rescue'
    home.mkdir(mode=0o750)
    (home / 'notes.txt').write_text('the tenant was here\n')
    _chown(home, 1001, 1001)

    run_account(conf)

    assert os.listdir(home) == ['notes.txt']
    assert mode(home) == 0o750


@needs_root
def test_an_existing_home_of_another_owner_is_given_to_the_user(root, conf):
    home = root / 'home' / 'rescue'
    home.mkdir()
    os.chown(home, 0, 0)

    run_account(conf)

    assert owner(home) == (1001, 1001)


def test_a_home_that_is_a_symlink_is_refused(root, conf, tmp_path):
    os.symlink(tmp_path, root / 'home' / 'rescue')

    exc = refusal(conf)

    assert 'not a directory' in exc.message


@needs_root
def test_the_sudoers_file_is_0440_root_and_grants_everything(root, conf):
    run_account(conf)

    sudoers = root / 'etc' / 'sudoers.d' / 'rescue'
    assert mode(sudoers) == 0o440
    assert owner(sudoers) == (0, 0)
    rules = [line for line in sudoers.read_text().splitlines()
             if line and not line.startswith('#')]
    assert rules == ['rescue ALL=(ALL) NOPASSWD: ALL']


def test_sudoers_d_is_created_0750_when_missing(root, conf):
    shutil.rmtree(root / 'etc' / 'sudoers.d')

    run_account(conf)

    assert mode(root / 'etc' / 'sudoers.d') == 0o750
    assert mode(root / 'etc' / 'sudoers.d' / 'rescue') == 0o440


def test_visudo_accepts_the_sudoers_file(root, conf):
    visudo = shutil.which('visudo', path=os.environ.get('PATH', '') +
                          ':/usr/sbin:/sbin')
    if visudo is None:
        message = 'visudo is not installed (Debian package sudo)'
        if os.environ.get('CI') == 'true':
            pytest.fail(message)
        pytest.skip(message)
    run_account(conf)

    result = subprocess.run(
        [visudo, '-cf', str(root / 'etc' / 'sudoers.d' / 'rescue')],
        capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stdout + result.stderr


def test_a_missing_sudo_group_is_created_as_debian_s_gid_27(root, conf):
    _drop(root, 'etc/group', 'sudo')
    _drop(root, 'etc/gshadow', 'sudo')

    run_account(conf)

    assert entry(root, 'etc/group', 'sudo') == 'sudo:x:27:rescue'
    assert entry(root, 'etc/gshadow', 'sudo') == 'sudo:*::rescue'


def test_a_missing_sudo_group_gets_a_free_system_gid_when_27_is_taken(
        root, conf):
    _drop(root, 'etc/group', 'sudo')
    _drop(root, 'etc/gshadow', 'sudo')
    with open(root / 'etc' / 'group', 'a') as f:
        f.write('wheel:x:27:\n')

    run_account(conf)

    # 999 and 998 belong to systemd-journal and systemd-network
    assert entry(root, 'etc/group', 'sudo') == 'sudo:x:997:rescue'


@needs_root
def test_the_files_keep_their_modes_and_owners(root, conf):
    before = {rel: (mode(root / rel), owner(root / rel))
              for rel in ACCOUNT_FILES}

    run_account(conf)

    after = {rel: (mode(root / rel), owner(root / rel))
             for rel in ACCOUNT_FILES}
    assert after == before
    assert after['etc/shadow'] == (0o640, (0, SHADOW_GID))


def test_the_files_keep_unusual_modes_too(root, conf):
    os.chmod(root / 'etc' / 'shadow', 0o600)
    os.chmod(root / 'etc' / 'passwd', 0o444)

    run_account(conf)

    assert mode(root / 'etc' / 'shadow') == 0o600
    assert mode(root / 'etc' / 'passwd') == 0o444


@needs_root
def test_a_missing_shadow_is_created_0640_root_shadow(root, conf):
    os.unlink(root / 'etc' / 'shadow')

    run_account(conf)

    assert mode(root / 'etc' / 'shadow') == 0o640
    assert owner(root / 'etc' / 'shadow') == (0, SHADOW_GID)
    assert lines(root, 'etc/shadow') == [
        'rescue:%s:%d:0:99999:7:::' % (HASH, TODAY)]


@needs_root
def test_a_missing_shadow_is_created_0600_root_without_a_shadow_group(
        root, conf):
    os.unlink(root / 'etc' / 'shadow')
    _drop(root, 'etc/group', 'shadow')

    run_account(conf)

    assert mode(root / 'etc' / 'shadow') == 0o600
    assert owner(root / 'etc' / 'shadow') == (0, 0)


@pytest.mark.parametrize('rel', ['etc/shadow', 'etc/gshadow'])
def test_a_shadow_file_others_can_read_is_made_0640(root, conf, rel):
    os.chmod(root / rel, 0o644)

    run_account(conf)

    assert mode(root / rel) == 0o640


@needs_root
@pytest.mark.parametrize('rel', ['etc/shadow', 'etc/gshadow'])
def test_a_shadow_file_another_group_can_read_goes_to_root_shadow(
        root, conf, rel):
    os.chown(root / rel, 0, 100)  # users

    run_account(conf)

    assert (mode(root / rel), owner(root / rel)) == \
        (0o640, (0, SHADOW_GID))


@needs_root
def test_an_open_shadow_is_made_0600_root_without_a_shadow_group(root,
                                                                conf):
    _drop(root, 'etc/group', 'shadow')
    os.chmod(root / 'etc' / 'shadow', 0o664)
    os.chown(root / 'etc' / 'shadow', 1000, 1000)

    run_account(conf)

    assert (mode(root / 'etc' / 'shadow'), owner(root / 'etc' / 'shadow')) \
        == (0o600, (0, 0))


def test_a_shadow_opened_after_a_run_is_closed_by_the_next(root, conf):
    run_account(conf)
    content = read(root, 'etc/shadow')
    os.chmod(root / 'etc' / 'shadow', 0o644)

    detail = run_account(conf)

    assert detail == 'updated rescue (rewrote etc/shadow)'
    assert mode(root / 'etc' / 'shadow') == 0o640
    assert read(root, 'etc/shadow') == content
    assert run_account(conf) == 'user rescue (uid 1001) unchanged'


def test_no_gshadow_is_created_on_a_system_without_one(root, conf):
    os.unlink(root / 'etc' / 'gshadow')

    run_account(conf)

    assert not (root / 'etc' / 'gshadow').exists()


def test_the_hash_is_never_on_a_command_line(conf, monkeypatch):
    def no_subprocess(*args, **kwargs):
        raise AssertionError('the account step ran a program')

    monkeypatch.setattr(subprocess, 'Popen', no_subprocess)
    monkeypatch.setattr(os, 'system', no_subprocess)

    run_account(conf)


# -- updating it -----------------------------------------------------------

def test_a_new_hash_changes_only_the_shadow_line(root, conf):
    run_account(conf)
    before = tree(root)

    detail = run_account(conf, password_hash=NEW_HASH)

    assert detail == 'updated password of rescue'
    after = tree(root)
    assert {path for path in after if after[path] != before[path]} == \
        {'etc/shadow'}
    old, new = (before['etc/shadow'][3].decode().splitlines(),
                after['etc/shadow'][3].decode().splitlines())
    assert [(a, b) for a, b in zip(old, new, strict=True) if a != b] == [
        ('rescue:%s:%d:0:99999:7:::' % (HASH, TODAY),
         'rescue:%s:%d:0:99999:7:::' % (NEW_HASH, TODAY))]


def test_a_new_hash_moves_the_date_of_the_last_change(root, conf,
                                                      monkeypatch):
    run_account(conf)
    monkeypatch.setattr(accounts, 'days_since_epoch', lambda: TODAY + 3)

    run_account(conf, password_hash=NEW_HASH)

    assert entry(root, 'etc/shadow', 'rescue') == \
        'rescue:%s:%d:0:99999:7:::' % (NEW_HASH, TODAY + 3)


def test_the_same_hash_on_a_later_day_keeps_the_date(root, conf,
                                                     monkeypatch):
    run_account(conf)
    before = tree(root)
    monkeypatch.setattr(accounts, 'days_since_epoch', lambda: TODAY + 3)

    detail = run_account(conf)

    assert detail == 'user rescue (uid 1001) unchanged'
    assert tree(root) == before


def test_the_worker_s_own_account_keeps_its_uid_and_gid(root, conf):
    own = 'rescue:x:1500:1500:%s:/home/rescue:/bin/bash' % MARKER
    with open(root / 'etc' / 'passwd', 'a') as f:
        f.write(own + '\n')
    with open(root / 'etc' / 'group', 'a') as f:
        f.write('rescue:x:1500:\n')

    detail = run_account(conf)

    assert detail.startswith('updated password of rescue')
    assert entry(root, 'etc/passwd', 'rescue') == own
    assert entry(root, 'etc/group', 'rescue') == 'rescue:x:1500:'


def test_an_existing_user_gets_the_home_and_shell_of_the_contract(root,
                                                                 conf):
    with open(root / 'etc' / 'passwd', 'a') as f:
        f.write('rescue:x:1500:1500:%s:/srv/rescue:/usr/sbin/nologin\n' %
                MARKER)

    run_account(conf)

    assert entry(root, 'etc/passwd', 'rescue') == \
        'rescue:x:1500:1500:%s:/home/rescue:/bin/bash' % MARKER
    # its primary group did not exist: it is created with that gid
    assert entry(root, 'etc/group', 'rescue') == 'rescue:x:1500:'


@pytest.mark.parametrize('comment', ['', 'Rescue,,,', 'rescue-worker'])
def test_an_account_the_worker_did_not_create_is_refused_untouched(
        root, conf, comment):
    with open(root / 'etc' / 'passwd', 'a') as f:
        f.write('rescue:x:1500:1500:%s:/home/rescue:/bin/bash\n' % comment)
    with open(root / 'etc' / 'group', 'a') as f:
        f.write('rescue:x:1500:\n')
    ssh = root / 'home' / 'rescue' / '.ssh'
    ssh.mkdir(parents=True)
    (ssh / 'authorized_keys').write_text('ssh-ed25519 AAAA... builder\n')
    before = tree(root, mtimes='all')

    exc = refusal(conf)

    assert exc.message == (
        'user rescue exists in %s but the rescue worker did not create it '
        '(its comment field is not "rescue-worker rescue account"), and its '
        'home and authorized_keys are not the tenant\'s to take over; '
        'remove that account from the image, or set [rescue_worker] '
        'username to a name the image does not use' %
        (root / 'etc' / 'passwd'))
    assert tree(root, mtimes='all') == before


def test_the_worker_s_own_account_takes_a_new_password(root, conf):
    run_account(conf)

    detail = run_account(conf, password_hash=NEW_HASH)

    assert detail == 'updated password of rescue'
    assert entry(root, 'etc/shadow', 'rescue').startswith(
        'rescue:%s:' % NEW_HASH)


def test_a_locked_or_expired_shadow_entry_is_reset(root, conf):
    with open(root / 'etc' / 'shadow', 'a') as f:
        f.write('rescue:!%s:19000:0:99999:7::19001:\n' % HASH)

    run_account(conf)

    assert entry(root, 'etc/shadow', 'rescue') == \
        'rescue:%s:%d:0:99999:7:::' % (HASH, TODAY)


def test_a_malformed_line_for_the_user_is_replaced(root, conf):
    with open(root / 'etc' / 'passwd', 'a') as f:
        f.write('rescue:x:1001\n')
    with open(root / 'etc' / 'shadow', 'a') as f:
        f.write('rescue:%s\n' % HASH)
    with open(root / 'etc' / 'group', 'a') as f:
        f.write('rescue\n')

    run_account(conf)

    assert entry(root, 'etc/passwd', 'rescue') == \
        'rescue:x:1001:1001:%s:/home/rescue:/bin/bash' % MARKER
    assert entry(root, 'etc/shadow', 'rescue') == \
        'rescue:%s:%d:0:99999:7:::' % (HASH, TODAY)
    assert entry(root, 'etc/group', 'rescue') == 'rescue:x:1001:'


def test_a_second_line_for_the_user_is_removed(root, conf):
    with open(root / 'etc' / 'shadow', 'a') as f:
        f.write('rescue:*:19000:0:99999:7:::\nrescue:!:19000::::::\n')

    run_account(conf)

    assert entry(root, 'etc/shadow', 'rescue') == \
        'rescue:%s:%d:0:99999:7:::' % (HASH, TODAY)


def test_a_group_of_the_name_left_by_an_earlier_run_is_reused(root, conf):
    with open(root / 'etc' / 'group', 'a') as f:
        f.write('rescue:x:1007:\n')

    detail = run_account(conf)

    assert detail == 'created user rescue (uid 1007)'
    assert entry(root, 'etc/passwd', 'rescue').startswith(
        'rescue:x:1007:1007:')
    assert entry(root, 'etc/group', 'rescue') == 'rescue:x:1007:'


# -- running twice -----------------------------------------------------------

def test_a_second_run_with_the_same_hash_changes_no_byte_and_no_mtime(
        root, conf):
    run_account(conf)
    before = tree(root, mtimes='all')

    detail = run_account(conf)

    assert detail == 'user rescue (uid 1001) unchanged'
    assert tree(root, mtimes='all') == before


def test_a_second_run_writes_no_file_at_all(conf, monkeypatch):
    run_account(conf)

    def no_write(*args, **kwargs):
        raise AssertionError('a file was written')

    monkeypatch.setattr(atomic, 'write_atomically', no_write)
    monkeypatch.setattr(atomic, 'remove_durably', no_write)

    run_account(conf)


def test_running_twice_gives_the_same_files_as_running_once(root, conf,
                                                            tmp_path):
    other = seed_debian_root(tmp_path / 'other')
    run_account(make_conf(other))

    run_account(conf)
    run_account(conf)

    for rel in ACCOUNT_FILES + ('etc/sudoers.d/rescue',):
        assert read(root, rel) == read(other, rel)


# -- locked until the lockdown ---------------------------------------------

LOCKED_ENTRY = 'rescue:!%s:%d:0:99999:7:::' % (HASH, TODAY)
UNLOCKED_ENTRY = 'rescue:%s:%d:0:99999:7:::' % (HASH, TODAY)


@pytest.fixture
def locked(root):
    """``root`` after the account step ran at the default options."""
    run_account(locked_conf(root))
    return root


def test_by_default_the_account_is_written_locked(locked):
    assert entry(locked, 'etc/shadow', 'rescue') == LOCKED_ENTRY
    assert accounts.is_locked(str(locked), 'rescue')


def test_without_a_lockdown_the_account_is_written_unlocked(root):
    # With exit_after_rescue off there is no lockdown to unlock it.
    run_account(locked_conf(root, exit_after_rescue=False))

    assert entry(root, 'etc/shadow', 'rescue') == UNLOCKED_ENTRY
    assert not accounts.is_locked(str(root), 'rescue')


def test_a_second_locked_run_changes_nothing(locked):
    before = tree(locked, mtimes='all')

    detail = run_account(locked_conf(locked))

    assert detail == 'user rescue (uid 1001) unchanged'
    assert tree(locked, mtimes='all') == before


def test_unlocking_gives_the_files_an_unlocked_run_writes(
        locked, tmp_path, monkeypatch):
    unlocked = seed_debian_root(tmp_path / 'unlocked')
    run_account(make_conf(unlocked))
    # The lockdown comes later; the date of the change stays the hash's.
    monkeypatch.setattr(accounts, 'days_since_epoch', lambda: TODAY + 1)

    assert accounts.unlock_account(str(locked), 'rescue') is True

    assert entry(locked, 'etc/shadow', 'rescue') == UNLOCKED_ENTRY
    assert not accounts.is_locked(str(locked), 'rescue')
    for rel in ACCOUNT_FILES + ('etc/sudoers.d/rescue',):
        assert read(locked, rel) == read(unlocked, rel)


def test_unlocking_changes_only_the_user_s_line_and_keeps_mode_and_owner(
        locked):
    shadow = locked / 'etc' / 'shadow'
    os.chmod(shadow, 0o600)
    before = (read(locked, 'etc/shadow'), mode(shadow), owner(shadow))

    accounts.unlock_account(str(locked), 'rescue')

    assert (read(locked, 'etc/shadow'), mode(shadow), owner(shadow)) == (
        before[0].replace(LOCKED_ENTRY.encode(), UNLOCKED_ENTRY.encode()),
        before[1], before[2])
    assert not [path for path in tree(locked) if path.endswith('.tmp')]


def test_unlocking_twice_changes_nothing_the_second_time(locked):
    accounts.unlock_account(str(locked), 'rescue')
    before = tree(locked, mtimes='all')

    assert accounts.unlock_account(str(locked), 'rescue') is False

    assert tree(locked, mtimes='all') == before


def test_unlocking_runs_no_program_and_logs_no_hash(locked, monkeypatch,
                                                    caplog):
    def no_subprocess(*args, **kwargs):
        raise AssertionError('unlock_account ran a program')

    monkeypatch.setattr(subprocess, 'Popen', no_subprocess)
    monkeypatch.setattr(os, 'system', no_subprocess)
    caplog.set_level('DEBUG')

    accounts.unlock_account(str(locked), 'rescue')

    assert HASH not in caplog.text
    assert HASH.rsplit('$', 1)[1] not in caplog.text


def test_unlocking_a_user_without_a_shadow_entry_raises_lookup_error(root):
    with pytest.raises(LookupError) as info:
        accounts.unlock_account(str(root), 'rescue')

    assert str(info.value) == '%s has no well-formed entry for rescue' % (
        root / 'etc' / 'shadow')


@pytest.mark.parametrize('field', ['!', '!!', '!*', '!!' + HASH])
def test_a_lock_with_no_hash_behind_it_is_not_unlocked(root, field):
    with open(root / 'etc' / 'shadow', 'a') as f:
        f.write('rescue:%s:%d:0:99999:7:::\n' % (field, TODAY))
    before = tree(root, mtimes='all')

    with pytest.raises(ValueError) as info:
        accounts.unlock_account(str(root), 'rescue')

    assert 'no crypt hash behind' in str(info.value)
    assert HASH not in str(info.value)
    assert tree(root, mtimes='all') == before


def test_unlocking_waits_for_the_password_file_lock(locked, monkeypatch):
    monkeypatch.setattr(accounts, 'LOCK_TIMEOUT', 0.2)
    holder = subprocess.Popen(
        [sys.executable, '-c',
         'import fcntl, sys\n'
         'f = open(sys.argv[1], "w")\n'
         'fcntl.lockf(f, fcntl.LOCK_EX)\n'
         'print("locked", flush=True)\n'
         'sys.stdin.read()\n', str(locked / 'etc' / '.pwd.lock')],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == 'locked\n'

        with pytest.raises(TimeoutError):
            accounts.unlock_account(str(locked), 'rescue')
    finally:
        holder.communicate('', timeout=30)

    assert entry(locked, 'etc/shadow', 'rescue') == LOCKED_ENTRY


# -- the edges of the file format ----------------------------------------

def test_a_file_without_a_final_newline_gets_the_entry_on_a_new_line(
        root, conf):
    for rel in ACCOUNT_FILES:
        (root / rel).write_bytes(read(root, rel).rstrip(b'\n'))
    before = {rel: read(root, rel) for rel in ACCOUNT_FILES}

    run_account(conf)

    assert read(root, 'etc/passwd') == before['etc/passwd'] + \
        b'\nrescue:x:1001:1001:%s:/home/rescue:/bin/bash\n' % \
        MARKER.encode()
    assert read(root, 'etc/shadow') == before['etc/shadow'] + \
        b'\nrescue:%s:%d:0:99999:7:::\n' % (HASH.encode(), TODAY)
    assert read(root, 'etc/group').endswith(b'\ndebian:x:1000:\n'
                                            b'rescue:x:1001:\n')


def test_a_last_line_without_newline_stays_without_it_when_replaced(
        root, conf):
    shadow = read(root, 'etc/shadow') + b'rescue:*:19000:0:99999:7:::'
    (root / 'etc' / 'shadow').write_bytes(shadow)

    run_account(conf)

    assert read(root, 'etc/shadow') == shadow.replace(
        b'rescue:*:19000:',
        b'rescue:%s:%d:' % (HASH.encode(), TODAY))


def test_comments_blank_lines_and_odd_bytes_are_kept(root, conf):
    odd = (b'# managed by hand\n\n'
           b'   \n'
           b'+@netgroup::::::\n'
           b'caf\xe9:x:1300:1300:latin-1 comment \xe9:/home/cafe:/bin/sh\n'
           b'crlf:x:1301:1301::/home/crlf:/bin/sh\r\n')
    passwd = odd + read(root, 'etc/passwd')
    (root / 'etc' / 'passwd').write_bytes(passwd)

    run_account(conf)

    assert read(root, 'etc/passwd') == passwd + \
        b'rescue:x:1001:1001:%s:/home/rescue:/bin/bash\n' % MARKER.encode()


def test_an_empty_group_file_gets_the_groups(root, conf):
    (root / 'etc' / 'group').write_bytes(b'')
    (root / 'etc' / 'gshadow').write_bytes(b'')

    run_account(conf)

    assert lines(root, 'etc/group') == ['rescue:x:1001:', 'sudo:x:27:rescue']


# -- sudo off ------------------------------------------------------------

def test_without_sudo_there_is_no_sudoers_file_nor_sudo_membership(root,
                                                                   conf):
    configure(conf, sudo=False)

    run_account(conf)

    assert not (root / 'etc' / 'sudoers.d' / 'rescue').exists()
    assert entry(root, 'etc/group', 'sudo') == 'sudo:x:27:debian'
    assert entry(root, 'etc/gshadow', 'sudo') == 'sudo:*::debian'
    assert read(root, 'etc/group') == \
        (DEBIAN_ETC / 'group').read_bytes() + b'rescue:x:1001:\n'


def test_turning_sudo_off_takes_the_rights_back(root, conf):
    run_account(conf)
    configure(conf, sudo=False)

    detail = run_account(conf)

    assert detail == ('updated rescue (removed etc/sudoers.d/rescue, '
                      'rewrote etc/group, rewrote etc/gshadow)')
    assert not (root / 'etc' / 'sudoers.d' / 'rescue').exists()
    assert entry(root, 'etc/group', 'sudo') == 'sudo:x:27:debian'
    assert entry(root, 'etc/gshadow', 'sudo') == 'sudo:*::debian'


def test_turning_sudo_off_removes_the_user_as_group_administrator(root,
                                                                  conf):
    text = read(root, 'etc/gshadow').replace(b'sudo:*::debian',
                                             b'sudo:*:rescue:rescue,debian')
    (root / 'etc' / 'gshadow').write_bytes(text)
    configure(conf, sudo=False)

    run_account(conf)

    assert entry(root, 'etc/gshadow', 'sudo') == 'sudo:*::debian'


def test_a_sudoers_file_with_the_wrong_mode_is_rewritten(root, conf):
    run_account(conf)
    os.chmod(root / 'etc' / 'sudoers.d' / 'rescue', 0o644)

    detail = run_account(conf)

    assert detail == 'updated rescue (wrote etc/sudoers.d/rescue)'
    assert mode(root / 'etc' / 'sudoers.d' / 'rescue') == 0o440


# -- refusals --------------------------------------------------------------

@pytest.mark.parametrize('username', ['daemon', 'sshd', 'nobody'])
def test_a_system_account_is_refused_and_nothing_changes(root, conf,
                                                         username):
    before = tree(root, mtimes='all')

    exc = refusal(conf, username=username)

    assert 'system account' in exc.message
    assert '[rescue_worker] username' in exc.message
    assert tree(root, mtimes='all') == before


@pytest.mark.parametrize('username', ['sudo', 'shadow', 'users'])
def test_the_name_of_a_system_group_is_refused(root, conf, username):
    before = tree(root, mtimes='all')

    exc = refusal(conf, username=username)

    assert 'system group' in exc.message
    assert tree(root, mtimes='all') == before


def test_a_broken_line_with_uid_0_is_refused_not_replaced(root, conf):
    with open(root / 'etc' / 'passwd', 'a') as f:
        f.write('rescue:x:0:0\n')

    exc = refusal(conf)

    assert 'uid 0' in exc.message


def test_a_missing_passwd_is_refused_naming_root_dir(root, conf):
    os.unlink(root / 'etc' / 'passwd')

    exc = refusal(conf)

    assert str(root / 'etc' / 'passwd') in exc.message
    assert 'root_dir' in exc.message
    assert not (root / 'home' / 'rescue').exists()


def test_an_invalid_username_is_refused(conf):
    exc = refusal(conf, username='../etc')

    assert 'username' in exc.message


@pytest.mark.parametrize('value', [
    None, '', HASH + ':', HASH[:20] + '\n' + HASH[20:], HASH + '\x00'],
    ids=['none', 'empty', 'colon', 'newline', 'nul'])
def test_a_hash_unfit_for_shadow_is_refused_before_any_write(root, conf,
                                                             value):
    before = tree(root, mtimes='all')

    exc = refusal(conf, password_hash=value)

    assert tree(root, mtimes='all') == before
    if value:
        assert HASH not in exc.message
        assert HASH[20:] not in exc.message


def test_a_malformed_sudo_group_is_refused(root, conf):
    text = read(root, 'etc/group').replace(b'sudo:x:27:debian', b'sudo:x:27')
    (root / 'etc' / 'group').write_bytes(text)

    exc = refusal(conf)

    assert 'sudo group' in exc.message
    assert str(root / 'etc' / 'group') in exc.message


def test_a_write_error_names_the_file_and_not_the_hash(root, conf,
                                                       monkeypatch):
    def full(src, dst):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, 'rename', full)

    exc = refusal(conf)

    assert exc.message == 'cannot write %s: No space left on device' % (
        root / 'etc' / 'group')
    assert HASH not in str(exc)


def test_a_password_file_locked_by_another_program_is_reported(
        root, conf, monkeypatch):
    monkeypatch.setattr(accounts, 'LOCK_TIMEOUT', 0.2)
    holder = subprocess.Popen(
        [sys.executable, '-c',
         'import fcntl, sys\n'
         'f = open(sys.argv[1], "w")\n'
         'fcntl.lockf(f, fcntl.LOCK_EX)\n'
         'print("locked", flush=True)\n'
         'sys.stdin.read()\n', str(root / 'etc' / '.pwd.lock')],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == 'locked\n'

        exc = refusal(conf)
    finally:
        holder.communicate('', timeout=30)

    assert 'cannot lock %s' % (root / 'etc' / '.pwd.lock') in exc.message
    assert 'rescue' not in lines(root, 'etc/passwd')[-1]


# -- crashes -----------------------------------------------------------------

def test_a_crash_before_the_rename_leaves_the_old_files_and_no_temp_file(
        root, conf, monkeypatch):
    before = tree(root)

    def crash(src, dst):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, 'rename', crash)

    refusal(conf)

    # Same files, same inodes and times; only directory times moved.
    assert tree(root) == before


def test_a_run_that_crashed_half_way_is_completed_by_the_next(
        root, conf, monkeypatch, tmp_path):
    real_rename = os.rename
    renames = []

    def crash_on_the_third(src, dst):
        renames.append(dst)
        if len(renames) == 3:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_rename(src, dst)

    monkeypatch.setattr(os, 'rename', crash_on_the_third)
    exc = refusal(conf)
    assert exc.message.startswith('cannot write %s' % (root / 'etc' /
                                                       'shadow'))
    monkeypatch.setattr(os, 'rename', real_rename)

    detail = run_account(conf)

    assert detail == 'created user rescue (uid 1001)'
    clean = seed_debian_root(tmp_path / 'clean')
    run_account(make_conf(clean))
    for rel in ACCOUNT_FILES + ('etc/sudoers.d/rescue',):
        assert read(root, rel) == read(clean, rel)
    assert not [path for path in tree(root) if path.endswith('.tmp')]


def _drop(root, rel, name):
    """Remove the line for ``name`` from ``rel``."""
    kept = [line for line in read(root, rel).splitlines(keepends=True)
            if line.split(b':', 1)[0] != name.encode()]
    (root / rel).write_bytes(b''.join(kept))
