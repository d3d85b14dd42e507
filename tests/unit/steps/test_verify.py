"""The verify step: the account is read back as a login would read it, and
anything a login or sudo would trip over fails the request with
``verify_failed``, naming the file and the problem but never the password
or the hash.

The scratch Debian 12 root and the account come from the account step's
specification (``test_account``).
"""

import os
import shutil
import traceback

import pytest
from passlib import hash as passlib_hash

from rescue_worker import errors
from rescue_worker import pipeline
from rescue_worker.steps import verify
from tests.unit.steps import test_account as spec

PASSWORD = spec.PASSWORD
HASH = spec.HASH
OTHER_HASH = spec.NEW_HASH  # the hash of another password


@pytest.fixture
def root(tmp_path):
    return spec.seed_debian_root(tmp_path / 'root')


@pytest.fixture
def conf(root):
    """Options for an account written unlocked (see ``spec.make_conf``)."""
    return spec.make_conf(root)


@pytest.fixture
def provisioned(root, conf):
    """The root after the account step created ``rescue`` with HASH."""
    spec.run_account(conf)
    return root


def plaintext_request():
    return pipeline.RescueRequest('req-1', PASSWORD, hashed=False)


def hashed_request(value=HASH):
    return pipeline.RescueRequest('req-1', value, hashed=True)


def run_verify(conf, req=None):
    state = pipeline.RescueState(username='rescue',
                                 hash_scheme='sha512_crypt',
                                 password_hash=HASH)
    return verify.VerifyStep(conf).run(req or plaintext_request(), state)


def failure(conf, req=None):
    """The verify_failed error of a run; it never shows the secrets."""
    req = req or plaintext_request()
    with pytest.raises(errors.RescueError) as info:
        run_verify(conf, req)
    exc = info.value
    assert exc.code == errors.VERIFY_FAILED
    shown = [str(exc), repr(exc), exc.message,
             ''.join(traceback.format_exception(exc))]
    for secret in (PASSWORD, HASH, OTHER_HASH, HASH.rsplit('$', 1)[1],
                   req.rescue_password):
        for text in shown:
            assert secret not in text
    return exc


def replace_line(root, rel, name, new_line):
    """Replace the line for ``name`` in ``rel`` (None: remove it)."""
    out = []
    for line in spec.read(root, rel).decode().splitlines(keepends=True):
        if line.split(':', 1)[0] == name:
            if new_line is not None:
                out.append(new_line + '\n')
        else:
            out.append(line)
    (root / rel).write_text(''.join(out))


def edit_field(root, rel, name, index, value):
    fields = spec.entry(root, rel, name).split(':')
    fields[index] = value
    replace_line(root, rel, name, ':'.join(fields))


def sudoers(root):
    return root / 'etc' / 'sudoers.d' / 'rescue'


def visudo_or_skip():
    if verify.find_visudo() is None:
        message = 'visudo is not installed (Debian package sudo)'
        if os.environ.get('CI') == 'true':
            pytest.fail(message)
        pytest.skip(message)


# -- the step ----------------------------------------------------------

def test_the_step_is_registered_as_verify(conf):
    step = pipeline.load_step('verify', conf)

    assert isinstance(step, verify.VerifyStep)
    assert step.name == 'verify'


# -- what passes -------------------------------------------------------

def test_the_account_passes_after_the_account_step(provisioned, conf):
    assert run_verify(conf) == 'rescue can log in (uid 1001); sudo ok'


def test_a_hashed_request_passes_when_shadow_holds_that_hash(provisioned,
                                                             conf):
    assert run_verify(conf, hashed_request()) == \
        'rescue can log in (uid 1001); sudo ok'


def test_the_account_without_sudo_passes(root, conf):
    spec.configure(conf, sudo=False)
    spec.run_account(conf)

    assert run_verify(conf) == 'rescue can log in (uid 1001); no sudo'


def test_a_system_without_etc_shells_takes_any_absolute_shell(provisioned,
                                                              conf):
    os.unlink(provisioned / 'etc' / 'shells')

    run_verify(conf)


def test_verify_changes_nothing(provisioned, conf):
    before = spec.tree(provisioned, mtimes='all')

    run_verify(conf)

    assert spec.tree(provisioned, mtimes='all') == before


def test_password_account_and_verify_run_together_from_the_entry_points(
        root, conf):
    # The only test at passlib's default cost (about a second).
    spec.configure(conf, steps=['password', 'account', 'verify'])
    steps = pipeline.Pipeline.from_conf(conf)

    result = steps.run(plaintext_request())

    assert result.succeeded, result.error
    assert [(s.name, s.status) for s in result.steps] == [
        ('password', 'done'), ('account', 'done'), ('verify', 'done')]
    assert result.steps[1].detail == 'created user rescue (uid 1001)'
    assert result.steps[2].detail == 'rescue can log in (uid 1001); sudo ok'


# -- the password ----------------------------------------------------------

def test_a_tampered_shadow_hash_fails(provisioned, conf):
    edit_field(provisioned, 'etc/shadow', 'rescue', 1, OTHER_HASH)

    exc = failure(conf)

    assert str(provisioned / 'etc' / 'shadow') in exc.message
    assert 'does not verify' in exc.message


def test_a_locked_shadow_hash_fails(provisioned, conf):
    edit_field(provisioned, 'etc/shadow', 'rescue', 1, '!' + HASH)

    exc = failure(conf)

    assert 'not a usable' in exc.message


# -- locked until the lockdown -----------------------------------------

@pytest.fixture
def locked_conf(root):
    return spec.locked_conf(root)


@pytest.fixture
def locked(root, locked_conf):
    """The root after the account step wrote ``rescue`` locked."""
    spec.run_account(locked_conf)
    return root


def test_a_locked_account_passes_and_the_report_says_it_is_locked(
        locked, locked_conf):
    assert run_verify(locked_conf) == \
        'rescue can log in (uid 1001, locked until the lockdown); sudo ok'


def test_a_locked_account_passes_a_hashed_request_for_its_hash(
        locked, locked_conf):
    run_verify(locked_conf, hashed_request())


def test_a_locked_account_whose_hash_is_another_fails(locked, locked_conf):
    edit_field(locked, 'etc/shadow', 'rescue', 1, '!' + OTHER_HASH)

    exc = failure(locked_conf)

    assert 'does not verify' in exc.message


def test_an_unlocked_account_fails_when_it_must_stay_locked(locked,
                                                           locked_conf):
    edit_field(locked, 'etc/shadow', 'rescue', 1, HASH)

    exc = failure(locked_conf)

    assert exc.message == (
        'the account rescue is not locked in %s, so it can be logged into '
        'before the lockdown removed the secrets ([rescue_worker] '
        'unlock_after_lockdown)' % (locked / 'etc' / 'shadow'))


def test_a_hashed_request_fails_when_shadow_holds_another_hash(provisioned,
                                                              conf):
    exc = failure(conf, hashed_request(OTHER_HASH))

    assert 'not the one the request carried' in exc.message


def test_a_hash_of_another_scheme_than_the_password_step_s_fails(
        provisioned, conf):
    bcrypt = passlib_hash.bcrypt.using(rounds=4).hash(PASSWORD)
    edit_field(provisioned, 'etc/shadow', 'rescue', 1, bcrypt)

    exc = failure(conf)

    assert 'not a sha512_crypt hash' in exc.message


def test_a_missing_shadow_entry_fails(provisioned, conf):
    replace_line(provisioned, 'etc/shadow', 'rescue', None)

    exc = failure(conf)

    assert exc.message == '%s has no entry for rescue' % (
        provisioned / 'etc' / 'shadow')


def test_an_expired_account_fails(provisioned, conf):
    edit_field(provisioned, 'etc/shadow', 'rescue', 7, '1')

    exc = failure(conf)

    assert 'expired' in exc.message


def test_a_shadow_others_can_read_fails_saying_what_to_make_it(
        provisioned, conf):
    os.chmod(provisioned / 'etc' / 'shadow', 0o644)

    exc = failure(conf)

    assert exc.message == '%s is readable by others (mode 0644); make it ' \
        '0640 root:shadow or stricter' % (provisioned / 'etc' / 'shadow')


def test_a_shadow_its_group_can_write_fails(provisioned, conf):
    os.chmod(provisioned / 'etc' / 'shadow', 0o660)

    exc = failure(conf)

    assert 'is writable by its group or by others (mode 0660)' in \
        exc.message


@spec.needs_root
def test_a_shadow_another_group_can_read_fails(provisioned, conf):
    os.chown(provisioned / 'etc' / 'shadow', 0, 100)

    exc = failure(conf)

    assert 'is readable by its group, gid 100, which is not the shadow ' \
        'group' in exc.message


def test_a_0600_shadow_passes(provisioned, conf):
    os.chmod(provisioned / 'etc' / 'shadow', 0o600)

    run_verify(conf)


# -- passwd, group, home -----------------------------------------------

def test_a_missing_user_line_fails(provisioned, conf):
    replace_line(provisioned, 'etc/passwd', 'rescue', None)

    exc = failure(conf)

    assert exc.message == '%s has no entry for rescue' % (
        provisioned / 'etc' / 'passwd')


def test_a_malformed_user_line_fails(provisioned, conf):
    replace_line(provisioned, 'etc/passwd', 'rescue', 'rescue:x:1001:1001')

    exc = failure(conf)

    assert 'malformed' in exc.message


def test_a_password_in_passwd_instead_of_shadow_fails(provisioned, conf):
    edit_field(provisioned, 'etc/passwd', 'rescue', 1, HASH)

    exc = failure(conf)

    assert 'not "x"' in exc.message


def test_another_home_fails(provisioned, conf):
    edit_field(provisioned, 'etc/passwd', 'rescue', 5, '/root')

    exc = failure(conf)

    assert 'home' in exc.message
    assert '/home/rescue' in exc.message


def test_a_shell_not_in_etc_shells_fails(provisioned, conf):
    edit_field(provisioned, 'etc/passwd', 'rescue', 6, '/usr/sbin/nologin')

    exc = failure(conf)

    assert exc.message == 'the shell /usr/sbin/nologin of rescue is not ' \
        'listed in %s' % (provisioned / 'etc' / 'shells')


def test_a_missing_home_directory_fails(provisioned, conf):
    shutil.rmtree(provisioned / 'home' / 'rescue')

    exc = failure(conf)

    assert str(provisioned / 'home' / 'rescue') in exc.message


@spec.needs_root
def test_a_home_directory_of_another_user_fails(provisioned, conf):
    os.chown(provisioned / 'home' / 'rescue', 1000, 1000)

    exc = failure(conf)

    assert 'belongs to uid 1000' in exc.message


def test_a_primary_group_missing_from_group_fails(provisioned, conf):
    replace_line(provisioned, 'etc/group', 'rescue', None)

    exc = failure(conf)

    assert exc.message == 'the primary group (gid 1001) of rescue is not ' \
        'in %s' % (provisioned / 'etc' / 'group')


def test_a_missing_passwd_fails(provisioned, conf):
    os.unlink(provisioned / 'etc' / 'passwd')

    exc = failure(conf)

    assert exc.message == '%s does not exist' % (
        provisioned / 'etc' / 'passwd')


# -- sudo ----------------------------------------------------------------

def test_a_sudoers_file_with_the_wrong_mode_fails(provisioned, conf):
    os.chmod(sudoers(provisioned), 0o644)

    exc = failure(conf)

    assert exc.message == '%s has mode 0644 instead of 0440' % (
        sudoers(provisioned))


@spec.needs_root
def test_a_sudoers_file_not_owned_by_root_fails(provisioned, conf):
    os.chown(sudoers(provisioned), 1001, 0)

    exc = failure(conf)

    assert 'instead of root' in exc.message


@spec.needs_root
def test_a_sudoers_file_of_another_group_fails(provisioned, conf):
    # The account step writes it root:root and rewrites it otherwise.
    os.chown(sudoers(provisioned), 0, 1001)

    exc = failure(conf)

    assert exc.message == '%s belongs to gid 1001 instead of root' % (
        sudoers(provisioned))


def test_a_missing_sudoers_file_fails(provisioned, conf):
    os.unlink(sudoers(provisioned))

    exc = failure(conf)

    assert exc.message == '%s does not exist' % sudoers(provisioned)


def test_a_sudoers_file_without_the_rule_fails(provisioned, conf):
    os.chmod(sudoers(provisioned), 0o640)
    sudoers(provisioned).write_text('rescue ALL=(ALL) ALL\n')
    os.chmod(sudoers(provisioned), 0o440)

    exc = failure(conf)

    assert 'NOPASSWD' in exc.message


def _write_sudoers(root, text):
    os.chmod(sudoers(root), 0o640)
    sudoers(root).write_text(text)
    os.chmod(sudoers(root), 0o440)


BROKEN_SUDOERS = ('rescue ALL=(ALL) NOPASSWD: ALL\n'
                  'rescue ALL=(ALL NOPASSWD: ALL\n')


def test_a_sudoers_file_visudo_rejects_fails(provisioned, conf):
    visudo_or_skip()
    _write_sudoers(provisioned, BROKEN_SUDOERS)

    exc = failure(conf)

    assert exc.message.startswith('visudo -cf %s rejects it: ' %
                                  sudoers(provisioned))


def test_the_account_step_s_own_sudoers_file_needs_no_visudo_run(
        provisioned, conf, monkeypatch):
    # test_account runs that exact file through visudo once; forking
    # visudo for each request would be half the worker's CPU.
    monkeypatch.setattr(verify, 'find_visudo', lambda: '/bin/false')
    run_verify(conf)

    _write_sudoers(provisioned, '# changed by hand\n'
                   'rescue ALL=(ALL) NOPASSWD: ALL\n')
    exc = failure(conf)

    assert exc.message.startswith('visudo -cf %s rejects it: ' %
                                  sudoers(provisioned))


def test_without_visudo_a_sudoers_file_is_checked_by_pattern(
        provisioned, conf, monkeypatch):
    monkeypatch.setattr(verify, 'find_visudo', lambda: None)
    run_verify(conf)
    _write_sudoers(provisioned, BROKEN_SUDOERS)

    exc = failure(conf)

    assert 'line 2 is not a sudoers rule' in exc.message


def test_the_pattern_check_accepts_debian_s_own_sudoers():
    text = (spec.DEBIAN_ETC / 'sudoers').read_text()

    assert verify.sudoers_syntax_problem(text) is None


@pytest.mark.parametrize('text', [
    'rescue ALL=(ALL NOPASSWD: ALL\n', 'rescue ALL\n', 'rescue\n',
    'rescue ALL=(ALL) NOPASSWD: ALL \\\n'])
def test_the_pattern_check_refuses_broken_rules(text):
    assert verify.sudoers_syntax_problem(text) is not None


def _main_sudoers_without_includedir(root):
    main = root / 'etc' / 'sudoers'
    kept = [line for line in main.read_text().splitlines(keepends=True)
            if 'includedir' not in line]
    os.chmod(main, 0o640)
    main.write_text(''.join(kept))
    os.chmod(main, 0o440)
    return main


def test_a_main_sudoers_without_includedir_fails(provisioned, conf):
    main = _main_sudoers_without_includedir(provisioned)

    exc = failure(conf)

    assert exc.message == '%s does not include /etc/sudoers.d, so sudo ' \
        'ignores the rights of the account there; add the line ' \
        '"@includedir /etc/sudoers.d" to it in the image' % main


def test_the_older_hash_includedir_passes_too(provisioned, conf):
    main = _main_sudoers_without_includedir(provisioned)
    os.chmod(main, 0o640)
    with open(main, 'a') as f:
        f.write('#includedir /etc/sudoers.d\n')

    run_verify(conf)


def test_a_commented_out_includedir_fails(provisioned, conf):
    main = _main_sudoers_without_includedir(provisioned)
    os.chmod(main, 0o640)
    with open(main, 'a') as f:
        f.write('# includedir /etc/sudoers.d\n')

    exc = failure(conf)

    assert 'does not include /etc/sudoers.d' in exc.message


def test_a_missing_main_sudoers_fails(provisioned, conf):
    os.unlink(provisioned / 'etc' / 'sudoers')

    exc = failure(conf)

    assert exc.message.startswith('cannot read %s (' % (
        provisioned / 'etc' / 'sudoers'))


def test_without_sudo_the_main_sudoers_is_not_needed(root, conf):
    spec.configure(conf, sudo=False)
    spec.run_account(conf)
    os.unlink(root / 'etc' / 'sudoers')

    assert run_verify(conf) == 'rescue can log in (uid 1001); no sudo'


def test_a_user_outside_the_sudo_group_fails(provisioned, conf):
    edit_field(provisioned, 'etc/group', 'sudo', 3, 'debian')

    exc = failure(conf)

    assert exc.message == 'rescue is not a member of the sudo group in ' \
        '%s' % (provisioned / 'etc' / 'group')


def test_sudo_rights_left_when_sudo_is_off_fail(provisioned, conf):
    spec.configure(conf, sudo=False)

    exc = failure(conf)

    assert 'sudo' in exc.message


def test_a_sudoers_file_left_when_sudo_is_off_fails(provisioned, conf):
    edit_field(provisioned, 'etc/group', 'sudo', 3, 'debian')
    spec.configure(conf, sudo=False)

    exc = failure(conf)

    assert exc.message == '%s exists although [rescue_worker] sudo is ' \
        'false' % sudoers(provisioned)
