"""Journal: durable, private request records that survive a restart."""

import glob
import json
import logging
import os
import stat

import pytest

from rescue_worker import journal as rw_journal

PASSWORD = 'correct horse battery staple'
OUTCOME = {'request_id': 'req-1', 'error': None, 'steps': []}


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def _journal_dir(state_dir):
    return os.path.join(state_dir, 'journal')


def _files(state_dir):
    return sorted(os.listdir(_journal_dir(state_dir)))


def _all_bytes(state_dir):
    """Every file under ``state_dir``, concatenated."""
    data = b''
    for dirpath, _dirnames, filenames in os.walk(state_dir):
        for name in filenames:
            with open(os.path.join(dirpath, name), 'rb') as f:
                data += f.read()
    return data


def _request(password=PASSWORD):
    return {'rescue_password': password, 'hashed': False}


@pytest.fixture
def state_dir(tmp_path):
    return str(tmp_path / 'state')


@pytest.fixture
def journal(state_dir):
    return rw_journal.Journal(state_dir)


# -- permissions -----------------------------------------------------------

def test_journal_dir_is_created_with_mode_0700(journal, state_dir):
    assert _mode(_journal_dir(state_dir)) == 0o700


def test_state_dir_is_set_to_mode_0700(journal, state_dir):
    assert _mode(state_dir) == 0o700


def test_existing_loose_dirs_are_tightened_to_0700(state_dir):
    os.makedirs(_journal_dir(state_dir))
    os.chmod(state_dir, 0o755)
    os.chmod(_journal_dir(state_dir), 0o777)

    rw_journal.Journal(state_dir)

    assert _mode(state_dir) == 0o700
    assert _mode(_journal_dir(state_dir)) == 0o700


def test_record_file_has_mode_0600(journal, state_dir):
    journal.record_request('req-1', _request())

    [name] = _files(state_dir)
    assert _mode(os.path.join(_journal_dir(state_dir), name)) == 0o600


def test_record_file_keeps_mode_0600_after_outcome(journal, state_dir):
    journal.record_request('req-1', _request())
    journal.record_outcome('req-1', OUTCOME)
    journal.mark_notified('req-1')

    [name] = _files(state_dir)
    assert _mode(os.path.join(_journal_dir(state_dir), name)) == 0o600


# -- durability ------------------------------------------------------------

def test_running_request_survives_a_new_journal_instance(journal, state_dir):
    journal.record_request('req-1', _request())

    record = rw_journal.Journal(state_dir).get('req-1')

    assert record is not None
    assert record.status == rw_journal.RUNNING
    assert not record.ended
    assert record.request == _request()
    assert record.outcome is None
    assert record.notified is False


def test_outcome_survives_a_new_journal_instance(journal, state_dir):
    journal.record_request('req-1', _request())
    journal.record_outcome('req-1', OUTCOME)

    record = rw_journal.Journal(state_dir).get('req-1')

    assert record.ended
    assert record.outcome == OUTCOME
    assert record.notified is False


def test_notified_flag_survives_a_new_journal_instance(journal, state_dir):
    journal.record_request('req-1', _request())
    journal.record_outcome('req-1', OUTCOME)
    journal.mark_notified('req-1')

    record = rw_journal.Journal(state_dir).get('req-1')

    assert record.notified is True
    assert record.outcome == OUTCOME


def test_get_of_an_unknown_request_is_none(journal):
    assert journal.get('req-unknown') is None


def test_one_file_per_request(journal, state_dir):
    journal.record_request('req-1', _request())
    journal.record_request('req-2', _request())
    journal.record_outcome('req-1', OUTCOME)

    assert len(_files(state_dir)) == 2


# -- secrets ---------------------------------------------------------------

def test_password_is_on_disk_while_the_request_runs(journal, state_dir):
    journal.record_request('req-1', _request())

    assert PASSWORD.encode() in _all_bytes(state_dir)


def test_record_outcome_removes_the_password_from_the_file(journal,
                                                           state_dir):
    journal.record_request('req-1', _request())

    journal.record_outcome('req-1', OUTCOME)

    assert PASSWORD.encode() not in _all_bytes(state_dir)
    assert journal.get('req-1').request is None


def test_record_outcome_leaves_no_temp_file_behind(journal, state_dir):
    journal.record_request('req-1', _request())
    journal.record_outcome('req-1', OUTCOME)

    assert all(name.endswith('.json') for name in _files(state_dir))


def test_password_is_gone_after_outcome_and_restart(journal, state_dir):
    journal.record_request('req-1', _request())
    journal.record_outcome('req-1', OUTCOME)

    assert rw_journal.Journal(state_dir).get('req-1').request is None


def test_record_repr_does_not_show_the_password(journal):
    record = journal.record_request('req-1', _request())

    assert PASSWORD not in repr(record)


def test_scrub_removes_every_password_from_disk(journal, state_dir):
    journal.record_request('req-1', _request('first-password-1'))
    journal.record_request('req-2', _request('second-password-2'))
    journal.record_request('req-3', _request('third-password-3'))
    journal.record_outcome('req-3', OUTCOME)

    journal.scrub()

    data = _all_bytes(state_dir)
    assert b'first-password-1' not in data
    assert b'second-password-2' not in data
    assert b'third-password-3' not in data


def test_scrub_returns_how_many_records_it_changed(journal):
    journal.record_request('req-1', _request())
    journal.record_request('req-2', _request())
    journal.record_request('req-3', _request())
    journal.record_outcome('req-3', OUTCOME)

    assert journal.scrub() == 2
    assert journal.scrub() == 0


def test_scrub_drops_the_request_in_memory_and_after_restart(journal,
                                                             state_dir):
    journal.record_request('req-1', _request())

    journal.scrub()

    assert journal.get('req-1').request is None
    assert rw_journal.Journal(state_dir).get('req-1').request is None


def test_scrub_keeps_status_and_outcome(journal):
    journal.record_request('req-1', _request())
    journal.record_request('req-2', _request())
    journal.record_outcome('req-2', OUTCOME)

    journal.scrub()

    assert journal.get('req-1').status == rw_journal.RUNNING
    assert journal.get('req-2').ended
    assert journal.get('req-2').outcome == OUTCOME


def test_scrub_leaves_no_password_in_a_record_moved_aside_as_corrupt(
        journal, state_dir):
    journal.record_request('req-1', _request())
    [name] = _files(state_dir)
    path = os.path.join(_journal_dir(state_dir), name)
    with open(path, 'rb') as f:
        data = f.read()
    with open(path, 'wb') as f:
        f.write(data[:-1])  # truncated: unreadable, password still inside
    reloaded = rw_journal.Journal(state_dir)

    reloaded.scrub()

    assert PASSWORD.encode() not in _all_bytes(state_dir)


# -- unfinished and last ---------------------------------------------------

def test_unfinished_is_empty_for_a_new_journal(journal):
    assert journal.unfinished() == []


def test_unfinished_lists_running_requests(journal):
    journal.record_request('req-1', _request())

    assert [r.request_id for r in journal.unfinished()] == ['req-1']


def test_unfinished_lists_ended_but_not_notified_requests(journal):
    journal.record_request('req-1', _request())
    journal.record_outcome('req-1', OUTCOME)

    [record] = journal.unfinished()
    assert record.request_id == 'req-1'
    assert record.ended
    assert record.outcome == OUTCOME


def test_unfinished_excludes_notified_requests(journal):
    journal.record_request('req-1', _request())
    journal.record_outcome('req-1', OUTCOME)
    journal.mark_notified('req-1')

    assert journal.unfinished() == []


def test_unfinished_is_oldest_first(journal):
    for request_id in ('req-c', 'req-a', 'req-d', 'req-b'):
        journal.record_request(request_id, _request())
    journal.record_outcome('req-a', OUTCOME)
    journal.record_outcome('req-d', OUTCOME)
    journal.mark_notified('req-d')

    assert [r.request_id for r in journal.unfinished()] == [
        'req-c', 'req-a', 'req-b']


def test_unfinished_order_survives_a_restart(journal, state_dir):
    for request_id in ('req-c', 'req-a', 'req-b'):
        journal.record_request(request_id, _request())

    reloaded = rw_journal.Journal(state_dir)

    assert [r.request_id for r in reloaded.unfinished()] == [
        'req-c', 'req-a', 'req-b']


def test_unfinished_running_record_still_holds_its_request(journal,
                                                           state_dir):
    journal.record_request('req-1', _request())

    [record] = rw_journal.Journal(state_dir).unfinished()

    assert record.request == _request()


def test_last_of_an_empty_journal_is_none(journal):
    assert journal.last() is None


def test_last_is_the_most_recently_received_request(journal):
    journal.record_request('req-b', _request())
    journal.record_request('req-a', _request())
    journal.record_outcome('req-a', OUTCOME)
    journal.record_outcome('req-b', OUTCOME)

    assert journal.last().request_id == 'req-a'


def test_last_survives_a_restart(journal, state_dir):
    journal.record_request('req-b', _request())
    journal.record_request('req-a', _request())

    assert rw_journal.Journal(state_dir).last().request_id == 'req-a'


def test_a_request_after_a_restart_comes_after_the_earlier_ones(journal,
                                                                state_dir):
    journal.record_request('req-1', _request())
    journal.record_request('req-2', _request())
    reloaded = rw_journal.Journal(state_dir)

    reloaded.record_request('req-0', _request())

    assert reloaded.last().request_id == 'req-0'
    assert [r.request_id for r in reloaded.unfinished()] == [
        'req-1', 'req-2', 'req-0']


# -- request ids as file names ---------------------------------------------

ODD_REQUEST_IDS = [
    'req/with/slashes',
    '../../../escape',
    '..',
    '.',
    '/etc/passwd',
    'req-ünïcødé-✓-日本',
    'r' * 255,
    'r' * 4096,
    '.hidden.tmp',
    'req.json',
]


@pytest.mark.parametrize('request_id', ODD_REQUEST_IDS)
def test_odd_request_id_is_stored_inside_the_journal_dir(tmp_path,
                                                         request_id):
    state_dir = str(tmp_path / 'state')
    journal = rw_journal.Journal(state_dir)

    journal.record_request(request_id, _request())

    created = []
    for dirpath, _dirnames, filenames in os.walk(tmp_path):
        created += [os.path.join(dirpath, name) for name in filenames]
    assert len(created) == 1
    assert os.path.dirname(created[0]) == _journal_dir(state_dir)
    assert created[0].endswith('.json')


@pytest.mark.parametrize('request_id', ODD_REQUEST_IDS)
def test_odd_request_id_survives_a_restart(state_dir, request_id):
    journal = rw_journal.Journal(state_dir)
    journal.record_request(request_id, _request())
    journal.record_outcome(request_id, OUTCOME)

    record = rw_journal.Journal(state_dir).get(request_id)

    assert record.request_id == request_id
    assert record.outcome == OUTCOME


def test_similar_request_ids_get_separate_records(journal, state_dir):
    ids = ['req-1', 'req-1 ', 'REQ-1', 'req/1', 'req-1/']
    for request_id in ids:
        journal.record_request(request_id, _request(request_id))

    reloaded = rw_journal.Journal(state_dir)

    assert len(_files(state_dir)) == len(ids)
    for request_id in ids:
        assert reloaded.get(request_id).request == _request(request_id)


# -- crash leftovers -------------------------------------------------------

def test_stale_temp_file_is_removed_at_load(journal, state_dir):
    journal.record_request('req-1', _request())
    [name] = _files(state_dir)
    stale = os.path.join(_journal_dir(state_dir), '.%s.k3j2h1.tmp' % name)
    with open(stale, 'w') as f:
        f.write('{"request_id": "req-1", "seq"')  # torn write

    rw_journal.Journal(state_dir)

    assert _files(state_dir) == [name]


def test_previous_record_is_intact_beside_a_stale_temp_file(journal,
                                                            state_dir):
    journal.record_request('req-1', _request())
    journal.record_outcome('req-1', OUTCOME)
    [name] = _files(state_dir)
    stale = os.path.join(_journal_dir(state_dir), '.%s.k3j2h1.tmp' % name)
    with open(stale, 'w') as f:
        f.write('{"request_id": "req-1", "notif')

    record = rw_journal.Journal(state_dir).get('req-1')

    assert record.ended
    assert record.outcome == OUTCOME
    assert record.notified is False


CORRUPT_CONTENTS = [
    b'{"request_id": "req-x", "seq": 1, "sta',  # truncated
    b'',  # empty
    b'[1, 2, 3]',  # not an object
    b'{"request_id": "req-x"}',  # missing fields
    b'{"request_id": "req-x", "seq": 1, "status": "running", '
    b'"received_at": 0, "surprise": 1}',  # unknown field
    b'\xff\xfe\x00garbage',  # not UTF-8
]


@pytest.mark.parametrize('content', CORRUPT_CONTENTS)
def test_corrupt_file_is_moved_aside(state_dir, content):
    rw_journal.Journal(state_dir)
    path = os.path.join(_journal_dir(state_dir), 'a' * 64 + '.json')
    with open(path, 'wb') as f:
        f.write(content)

    rw_journal.Journal(state_dir)

    assert not os.path.exists(path)
    [aside] = glob.glob(path + '.*.corrupt')
    with open(aside, 'rb') as f:
        assert f.read() == content


@pytest.mark.parametrize('content', CORRUPT_CONTENTS)
def test_corrupt_file_does_not_stop_loading_the_others(journal, state_dir,
                                                       content):
    journal.record_request('req-1', _request())
    journal.record_request('req-2', _request())
    journal.record_outcome('req-2', OUTCOME)
    path = os.path.join(_journal_dir(state_dir), '0' * 64 + '.json')
    with open(path, 'wb') as f:
        f.write(content)

    reloaded = rw_journal.Journal(state_dir)

    assert reloaded.get('req-1').status == rw_journal.RUNNING
    assert reloaded.get('req-2').outcome == OUTCOME
    assert reloaded.get('req-x') is None
    assert [r.request_id for r in reloaded.unfinished()] == [
        'req-1', 'req-2']


def test_corrupt_file_is_logged_without_its_content(state_dir, caplog):
    rw_journal.Journal(state_dir)
    path = os.path.join(_journal_dir(state_dir), 'b' * 64 + '.json')
    with open(path, 'w') as f:
        f.write('{"request": {"rescue_password": "%s"' % PASSWORD)

    with caplog.at_level(logging.ERROR, logger='rescue_worker.journal'):
        rw_journal.Journal(state_dir)

    assert path in caplog.text
    assert PASSWORD not in caplog.text


def test_a_file_moved_aside_is_not_retried_at_the_next_load(state_dir):
    rw_journal.Journal(state_dir)
    path = os.path.join(_journal_dir(state_dir), 'c' * 64 + '.json')
    with open(path, 'w') as f:
        f.write('not json')
    rw_journal.Journal(state_dir)

    journal = rw_journal.Journal(state_dir)

    assert journal.last() is None
    assert len(glob.glob(path + '.*.corrupt')) == 1


def test_a_second_corrupt_file_does_not_overwrite_the_first(state_dir):
    rw_journal.Journal(state_dir)
    path = os.path.join(_journal_dir(state_dir), 'd' * 64 + '.json')
    for content in ('first', 'second'):
        with open(path, 'w') as f:
            f.write(content)
        rw_journal.Journal(state_dir)

    kept = []
    for aside in glob.glob(path + '.*.corrupt'):
        with open(aside) as f:
            kept.append(f.read())
    assert sorted(kept) == ['first', 'second']


def test_records_on_disk_are_json_objects(journal, state_dir):
    journal.record_request('req-1', _request())
    [name] = _files(state_dir)

    with open(os.path.join(_journal_dir(state_dir), name)) as f:
        data = json.load(f)

    assert data['request_id'] == 'req-1'
    assert data['status'] == rw_journal.RUNNING
