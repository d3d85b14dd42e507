"""Lockdown: the marker keeps a rescued worker from serving; scrubbing."""

import logging
import os
import stat

import pytest

from rescue_worker import lockdown


@pytest.fixture
def state_dir(tmp_path):
    return str(tmp_path / 'state')


# -- the marker ------------------------------------------------------------

def test_marker_path_is_in_the_state_dir(state_dir):
    marker = lockdown.LockdownMarker(state_dir)

    assert marker.path == os.path.join(state_dir, lockdown.MARKER_NAME)


def test_check_passes_without_a_marker(state_dir):
    marker = lockdown.LockdownMarker(state_dir)

    assert marker.exists() is False
    marker.check()


def test_check_does_not_create_anything(tmp_path, state_dir):
    lockdown.LockdownMarker(state_dir).check()

    assert os.listdir(tmp_path) == []


def test_write_creates_the_marker(state_dir):
    marker = lockdown.LockdownMarker(state_dir)

    marker.write('req-1')

    assert marker.exists() is True


def test_check_after_write_raises_already_rescued(state_dir):
    marker = lockdown.LockdownMarker(state_dir)
    marker.write('req-1')

    with pytest.raises(lockdown.AlreadyRescued):
        marker.check()


def test_already_rescued_message_names_the_marker_path(state_dir):
    marker = lockdown.LockdownMarker(state_dir)
    marker.write('req-1')

    with pytest.raises(lockdown.AlreadyRescued) as exc_info:
        marker.check()

    assert marker.path in str(exc_info.value)


def test_marker_is_seen_by_a_new_instance(state_dir):
    lockdown.LockdownMarker(state_dir).write('req-1')

    with pytest.raises(lockdown.AlreadyRescued):
        lockdown.LockdownMarker(state_dir).check()


def test_marker_records_the_request_id(state_dir):
    marker = lockdown.LockdownMarker(state_dir)

    marker.write('req-1')

    with open(marker.path) as f:
        assert f.read() == 'req-1\n'


def test_marker_has_mode_0600(state_dir):
    marker = lockdown.LockdownMarker(state_dir)

    marker.write('req-1')

    assert stat.S_IMODE(os.stat(marker.path).st_mode) == 0o600


def test_write_creates_a_missing_state_dir_with_mode_0700(state_dir):
    old = os.umask(0o022)
    try:
        lockdown.LockdownMarker(state_dir).write('req-1')
    finally:
        os.umask(old)

    assert stat.S_IMODE(os.stat(state_dir).st_mode) == 0o700


def test_write_again_replaces_the_request_id(state_dir):
    marker = lockdown.LockdownMarker(state_dir)
    marker.write('req-1')

    marker.write('req-2')

    with open(marker.path) as f:
        assert f.read() == 'req-2\n'


# -- scrub_files -----------------------------------------------------------

def _touch(path, content='secret'):
    with open(path, 'w') as f:
        f.write(content)
    return str(path)


def test_scrub_files_removes_existing_files(tmp_path):
    paths = [_touch(tmp_path / 'a.conf'), _touch(tmp_path / 'b.conf')]

    lockdown.scrub_files(paths)

    assert os.listdir(tmp_path) == []


def test_scrub_files_reports_the_removed_files_in_order(tmp_path):
    paths = [_touch(tmp_path / 'b.conf'), _touch(tmp_path / 'a.conf')]

    assert lockdown.scrub_files(paths).removed == paths


def test_scrub_files_ignores_missing_files(tmp_path):
    present = _touch(tmp_path / 'present.conf')
    missing = str(tmp_path / 'missing.conf')

    removed = lockdown.scrub_files([missing, present]).removed

    assert removed == [present]


def test_scrub_files_with_only_missing_files_reports_nothing(tmp_path):
    assert lockdown.scrub_files([str(tmp_path / 'missing')]).removed == []


def test_scrub_files_with_no_paths_reports_nothing():
    assert lockdown.scrub_files([]).removed == []


def test_scrub_files_leaves_other_files_alone(tmp_path):
    keep = _touch(tmp_path / 'keep.conf')
    drop = _touch(tmp_path / 'drop.conf')

    lockdown.scrub_files([drop])

    assert os.path.exists(keep)


def test_scrub_files_reports_a_path_listed_twice_once(tmp_path):
    path = _touch(tmp_path / 'a.conf')

    assert lockdown.scrub_files([path, path]).removed == [path]


def test_unremovable_path_is_logged_and_does_not_stop_the_rest(tmp_path,
                                                               caplog):
    directory = tmp_path / 'a-directory'
    directory.mkdir()
    after = _touch(tmp_path / 'after.conf')

    with caplog.at_level(logging.ERROR, logger='rescue_worker.lockdown'):
        removed = lockdown.scrub_files([str(directory), after]).removed

    assert removed == [after]
    assert directory.is_dir()
    assert str(directory) in caplog.text
