"""The account planner: given the account files of a system as tables,
what the rescue account's entries become, and what is refused.

The planner does no I/O, so each test states the files it starts from
(a few lines of a Debian 12 system) and reads the planned lines back.
The account step's own tests (``tests/unit/steps/test_account.py``) run
the same rules against files on disk.
"""

import os
import stat

import pytest
from oslo_config import cfg

from rescue_worker import accounts
from rescue_worker import conf as rw_conf

HASH = '$6$rounds=1000$salt$' + 'h' * 86
NEW_HASH = '$6$rounds=1000$salt$' + 'n' * 86
TODAY = 20000

PASSWD = ('root:x:0:0:root:/root:/bin/bash\n'
          'daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n'
          'debian:x:1000:1000:Debian,,,:/home/debian:/bin/bash\n')
SHADOW = ('root:*:19657:0:99999:7:::\n'
          'daemon:*:19657:0:99999:7:::\n'
          'debian:!:19657:0:99999:7:::\n')
GROUP = ('root:x:0:\n'
         'daemon:x:1:\n'
         'sudo:x:27:debian\n'
         'shadow:x:42:\n'
         'users:x:100:debian\n'
         'debian:x:1000:\n')
GSHADOW = ('root:*::\n'
           'daemon:*::\n'
           'sudo:*::debian\n'
           'shadow:*::\n'
           'users:*::debian\n'
           'debian:!::\n')


def tables(passwd=PASSWD, shadow=SHADOW, group=GROUP, gshadow=GSHADOW):
    """The account files as read; ``gshadow=None``: the system has none."""
    return accounts.AccountTables(
        passwd=accounts.Table('/etc/passwd', accounts.PASSWD_FIELDS,
                              passwd.encode()),
        shadow=accounts.Table('/etc/shadow', accounts.SHADOW_FIELDS,
                              shadow.encode()),
        group=accounts.Table('/etc/group', accounts.GROUP_FIELDS,
                             group.encode()),
        gshadow=None if gshadow is None else accounts.Table(
            '/etc/gshadow', accounts.GSHADOW_FIELDS, gshadow.encode()))


def wanted(**overrides):
    fields = {'username': 'rescue', 'password_field': HASH,
              'shell': '/bin/bash', 'sudo': True, 'today': TODAY}
    fields.update(overrides)
    return accounts.WantedAccount(**fields)


def text(table):
    return table.to_bytes().decode()


def line_of(table, name):
    [line] = table.lines_of(name)
    return line


def conflict(start, **overrides):
    with pytest.raises(accounts.AccountConflict) as info:
        accounts.plan_account(start, wanted(**overrides))
    return str(info.value)


# -- a new user ----------------------------------------------------------

def test_a_new_user_gets_an_entry_in_each_file_after_the_others():
    plan = accounts.plan_account(tables(), wanted())

    assert (plan.uid, plan.gid, plan.created) == (1001, 1001, True)
    assert text(plan.tables.passwd) == PASSWD + \
        'rescue:x:1001:1001:rescue-worker rescue account:/home/rescue:' \
        '/bin/bash\n'
    assert text(plan.tables.shadow) == SHADOW + \
        'rescue:%s:%d:0:99999:7:::\n' % (HASH, TODAY)
    assert text(plan.tables.group).endswith('debian:x:1000:\n'
                                            'rescue:x:1001:\n')
    assert text(plan.tables.gshadow).endswith('debian:!::\nrescue:!::\n')


def test_planning_leaves_the_tables_it_was_given_as_they_were():
    start = tables()

    plan = accounts.plan_account(start, wanted())

    assert [text(t) for t in start.in_write_order()] == \
        [GROUP, GSHADOW, SHADOW, PASSWD]
    assert not any(t.changed for t in start.in_write_order())
    assert all(t.changed for t in plan.tables.in_write_order())


def test_the_uid_is_the_first_id_free_as_uid_and_as_gid():
    start = tables(
        passwd=PASSWD + 'alice:x:1001:1003::/home/alice:/bin/sh\n',
        group=GROUP + 'project:x:1002:\n')

    plan = accounts.plan_account(start, wanted())

    # 1001 is alice's uid, 1002 a group's gid, 1003 alice's primary gid
    assert (plan.uid, plan.gid) == (1004, 1004)
    assert line_of(plan.tables.group, 'rescue') == 'rescue:x:1004:'


def test_a_group_of_the_name_left_by_an_interrupted_run_is_reused():
    plan = accounts.plan_account(
        tables(group=GROUP + 'rescue:x:1007:'), wanted())

    assert (plan.uid, plan.gid) == (1007, 1007)
    assert plan.tables.group.lines_of('rescue') == ['rescue:x:1007:']


def test_without_a_free_id_the_user_is_refused():
    users = ''.join('u%d:x:%d:%d::/home/u:/bin/sh\n' % (i, i, i)
                    for i in range(accounts.USER_ID_MIN,
                                   accounts.USER_ID_MAX + 1))

    message = conflict(tables(passwd=PASSWD + users))

    assert message == ('no free uid or gid left in 1000..60000 in '
                       '/etc/passwd and /etc/group')


def test_a_system_without_gshadow_gets_none():
    plan = accounts.plan_account(tables(gshadow=None), wanted())

    assert plan.tables.gshadow is None
    assert [t.path for t in plan.tables.in_write_order()] == [
        '/etc/group', '/etc/shadow', '/etc/passwd']


# -- an existing user -----------------------------------------------------

#: how the worker marks the account it created (the GECOS field)
MARKER = 'rescue-worker rescue account'


def own(uid, gid, home='/home/rescue', shell='/bin/bash'):
    """A passwd line of an account the worker created."""
    return 'rescue:x:%d:%d:%s:%s:%s\n' % (uid, gid, MARKER, home, shell)


def test_the_worker_s_own_account_keeps_its_ids_and_gets_the_contract():
    start = tables(passwd=PASSWD + own(1500, 1500, '/srv/rescue', '/bin/sh'),
                   group=GROUP + 'rescue:x:1500:\n')

    plan = accounts.plan_account(start, wanted())

    assert (plan.uid, plan.gid, plan.created) == (1500, 1500, False)
    assert line_of(plan.tables.passwd, 'rescue') == own(1500, 1500).strip()


@pytest.mark.parametrize('comment', ['', 'Rescue,,,'])
def test_an_account_the_worker_did_not_create_is_refused(comment):
    start = tables(passwd=PASSWD + 'rescue:x:1500:1500:%s:/home/rescue:'
                   '/bin/bash\n' % comment)

    message = conflict(start)

    assert message.startswith('user rescue exists in /etc/passwd but the '
                              'rescue worker did not create it')
    assert 'remove that account from the image' in message
    assert '[rescue_worker] username' in message


def test_a_user_whose_primary_group_is_gone_gets_it_back():
    start = tables(passwd=PASSWD + own(1500, 1500))

    plan = accounts.plan_account(start, wanted())

    assert line_of(plan.tables.group, 'rescue') == 'rescue:x:1500:'
    assert line_of(plan.tables.gshadow, 'rescue') == 'rescue:!::'


def test_a_group_of_the_name_replaces_a_primary_group_that_is_gone():
    start = tables(passwd=PASSWD + own(1500, 1600),
                   group=GROUP + 'rescue:x:1500:\n')

    plan = accounts.plan_account(start, wanted())

    assert plan.gid == 1500
    assert line_of(plan.tables.passwd, 'rescue').startswith(
        'rescue:x:1500:1500:')


def test_a_malformed_entry_is_replaced_as_if_there_were_none():
    start = tables(passwd=PASSWD + 'rescue:x:1001\n')

    plan = accounts.plan_account(start, wanted())

    assert plan.created
    assert line_of(plan.tables.passwd, 'rescue') == own(1001, 1001).strip()


# -- the password ----------------------------------------------------------

def test_the_same_password_field_keeps_the_date_of_the_last_change():
    start = tables(shadow=SHADOW + 'rescue:%s:19000:0:99999:7:::\n' % HASH)

    plan = accounts.plan_account(start, wanted())

    assert not plan.password_changed
    assert not plan.tables.shadow.changed


def test_a_new_password_field_moves_the_date_and_resets_the_ageing():
    start = tables(shadow=SHADOW + 'rescue:%s:19000:1:30:3:5:19001:\n' %
                   HASH)

    plan = accounts.plan_account(start, wanted(password_field=NEW_HASH))

    assert plan.password_changed
    assert line_of(plan.tables.shadow, 'rescue') == \
        'rescue:%s:%d:0:99999:7:::' % (NEW_HASH, TODAY)


# -- sudo ------------------------------------------------------------------

def test_with_sudo_the_user_joins_the_sudo_group_in_group_and_gshadow():
    plan = accounts.plan_account(tables(), wanted())

    assert line_of(plan.tables.group, 'sudo') == 'sudo:x:27:debian,rescue'
    assert line_of(plan.tables.gshadow, 'sudo') == 'sudo:*::debian,rescue'


def test_a_missing_sudo_group_is_created_as_gid_27_in_both_files():
    start = tables(group=GROUP.replace('sudo:x:27:debian\n', ''),
                   gshadow=GSHADOW.replace('sudo:*::debian\n', ''))

    plan = accounts.plan_account(start, wanted())

    assert line_of(plan.tables.group, 'sudo') == 'sudo:x:27:rescue'
    assert line_of(plan.tables.gshadow, 'sudo') == 'sudo:*::rescue'


def test_a_missing_sudo_group_takes_the_highest_free_system_gid_if_27_is_not():
    start = tables(group=GROUP.replace('sudo:x:27:debian\n',
                                       'wheel:x:27:\nlate:x:999:\n'))

    plan = accounts.plan_account(start, wanted())

    assert line_of(plan.tables.group, 'sudo') == 'sudo:x:998:rescue'


def test_without_sudo_the_user_is_neither_member_nor_administrator():
    start = tables(group=GROUP.replace('sudo:x:27:debian',
                                       'sudo:x:27:rescue,debian'),
                   gshadow=GSHADOW.replace('sudo:*::debian',
                                           'sudo:*:rescue:debian,rescue'))

    plan = accounts.plan_account(start, wanted(sudo=False))

    assert line_of(plan.tables.group, 'sudo') == 'sudo:x:27:debian'
    assert line_of(plan.tables.gshadow, 'sudo') == 'sudo:*::debian'


def test_without_sudo_a_missing_sudo_group_stays_missing():
    start = tables(group=GROUP.replace('sudo:x:27:debian\n', ''),
                   gshadow=GSHADOW.replace('sudo:*::debian\n', ''))

    plan = accounts.plan_account(start, wanted(sudo=False))

    assert not plan.tables.group.has('sudo')
    assert not plan.tables.gshadow.has('sudo')


def test_a_member_list_already_holding_the_user_is_kept_as_it_is():
    start = tables(group=GROUP.replace('sudo:x:27:debian',
                                       'sudo:x:27:debian,,rescue'))

    plan = accounts.plan_account(start, wanted())

    assert line_of(plan.tables.group, 'sudo') == 'sudo:x:27:debian,,rescue'


def test_a_malformed_sudo_group_is_refused_with_sudo():
    start = tables(group=GROUP.replace('sudo:x:27:debian', 'sudo:x:27'))

    message = conflict(start)

    assert message == ('the sudo group entry in /etc/group is malformed '
                       '(not 4 fields name:password:gid:members); fix it, '
                       'or set [rescue_worker] sudo = false')


def test_a_malformed_sudo_group_is_left_alone_without_sudo():
    start = tables(group=GROUP.replace('sudo:x:27:debian', 'sudo:x:27'))

    plan = accounts.plan_account(start, wanted(sudo=False))

    assert plan.tables.group.lines_of('sudo') == ['sudo:x:27']
    assert line_of(plan.tables.gshadow, 'sudo') == 'sudo:*::debian'


def test_a_sudo_group_without_a_numeric_gid_is_refused():
    start = tables(group=GROUP.replace('sudo:x:27:', 'sudo:x::'))

    assert 'has no numeric gid' in conflict(start)


# -- locked until the lockdown ---------------------------------------------

def test_a_locked_password_field_is_the_hash_behind_a_bang():
    plan = accounts.plan_account(tables(), wanted(
        password_field=accounts.password_field(HASH, locked=True)))

    assert line_of(plan.tables.shadow, 'rescue') == \
        'rescue:!%s:%d:0:99999:7:::' % (HASH, TODAY)
    assert accounts.password_field(HASH, locked=False) == HASH


@pytest.mark.parametrize('unlock_after_lockdown, exit_after_rescue, locked', [
    (True, True, True),
    (True, False, False),  # no lockdown would ever unlock it
    (False, True, False),
    (False, False, False),
])
def test_the_account_is_locked_only_when_a_lockdown_will_unlock_it(
        unlock_after_lockdown, exit_after_rescue, locked):
    conf = cfg.ConfigOpts()
    rw_conf.register_opts(conf)
    conf.set_override('unlock_after_lockdown', unlock_after_lockdown,
                      group=rw_conf.GROUP)
    conf.set_override('exit_after_rescue', exit_after_rescue,
                      group=rw_conf.GROUP)

    assert accounts.locked_until_lockdown(conf) is locked


def test_by_default_the_account_is_locked_until_the_lockdown():
    conf = cfg.ConfigOpts()
    rw_conf.register_opts(conf)

    assert accounts.locked_until_lockdown(conf) is True


# -- refusals -------------------------------------------------------------

def test_a_system_user_of_the_name_is_refused():
    message = conflict(tables(), username='daemon')

    assert message.startswith('user daemon exists in /etc/passwd as a '
                              'system account (uid 1, outside 1000..60000)')
    assert '[rescue_worker] username' in message


def test_a_system_group_of_the_name_is_refused():
    message = conflict(tables(), username='shadow')

    assert message.startswith('shadow is the name of a system group in '
                              '/etc/group (gid 42)')


# -- the mode and owner of the files ---------------------------------------

def test_shadow_files_are_0640_root_shadow_where_there_is_a_shadow_group():
    ownership = accounts.secret_file_ownership(tables().group)

    assert ownership == accounts.Ownership(0o640, uid=0, gid=42)


def test_shadow_files_are_0600_root_root_without_a_shadow_group():
    group = tables(group=GROUP.replace('shadow:x:42:\n', '')).group

    assert accounts.secret_file_ownership(group) == \
        accounts.Ownership(0o600, uid=0, gid=0)


def test_an_unprivileged_run_keeps_its_own_owner():
    ownership = accounts.Ownership(0o640, uid=0, gid=42)

    assert ownership.for_write(owners=False) == (0o640, None, None)
    assert ownership.for_write(owners=True) == (0o640, 0, 42)


def _stat(mode, uid=0, gid=0):
    return os.stat_result((mode, 0, 0, 1, uid, gid, 0, 0, 0, 0))


@pytest.mark.parametrize('st, problem', [
    (_stat(stat.S_IFREG | 0o440), None),
    (_stat(stat.S_IFREG | 0o644), 'has mode 0644 instead of 0440'),
    (_stat(stat.S_IFLNK | 0o777), 'is not a regular file, so sudo ignores '
                                  'it'),
    (_stat(stat.S_IFREG | 0o440, uid=1001),
     'belongs to uid 1001 instead of root, so sudo ignores it'),
    (_stat(stat.S_IFREG | 0o440, gid=1001),
     'belongs to gid 1001 instead of root'),
], ids=['as-written', 'mode', 'symlink', 'uid', 'gid'])
def test_a_sudoers_file_is_right_only_as_the_account_step_writes_it(
        st, problem):
    assert accounts.sudoers_file_problem(st, owners=True) == problem


def test_an_unprivileged_run_does_not_check_the_sudoers_owner():
    st = _stat(stat.S_IFREG | 0o440, uid=1001, gid=1001)

    assert accounts.sudoers_file_problem(st, owners=False) is None


SHADOW_RULE = accounts.Ownership(0o640, uid=0, gid=42)


@pytest.mark.parametrize('st, problem', [
    (_stat(0o640, gid=42), None),
    (_stat(0o600), None),
    (_stat(0o400), None),
    (_stat(0o640), None),  # root's own group
    (_stat(0o644, gid=42), 'is readable by others (mode 0644)'),
    (_stat(0o660, gid=42),
     'is writable by its group or by others (mode 0660)'),
    (_stat(0o602), 'is writable by its group or by others (mode 0602)'),
    (_stat(0o640, gid=100),
     'is readable by its group, gid 100, which is not the shadow group'),
    (_stat(0o600, uid=1000), 'belongs to uid 1000 instead of root'),
], ids=['debian', '0600', '0400', 'root-group', 'world-readable',
        'group-writable', 'world-writable', 'other-group', 'other-owner'])
def test_a_shadow_file_is_safe_when_only_root_and_shadow_can_read_it(
        st, problem):
    assert accounts.secret_file_problem(st, SHADOW_RULE, owners=True) == \
        problem


def test_an_unprivileged_run_checks_the_shadow_mode_but_not_its_owner():
    assert accounts.secret_file_problem(_stat(0o640, uid=1000, gid=100),
                                        SHADOW_RULE, owners=False) is None
    assert accounts.secret_file_problem(_stat(0o644, uid=1000, gid=100),
                                        SHADOW_RULE, owners=False) == \
        'is readable by others (mode 0644)'
