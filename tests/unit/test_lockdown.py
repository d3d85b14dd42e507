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


# -- what a path points to ---------------------------------------------------

def test_a_symlinked_secret_is_emptied_at_its_target(tmp_path):
    mount = tmp_path / 'secrets-mount'
    mount.mkdir()
    target = mount / 'rescue-worker.conf'
    target.write_text('transport_url = rabbit://u:secret@h/\n')
    link = tmp_path / 'rescue-worker.conf'
    link.symlink_to(target)

    report = lockdown.scrub_files([str(link)])

    assert not os.path.lexists(link)
    assert target.read_bytes() == b''
    assert report.emptied == [str(target)]
    assert report.removed == [str(link)]


def test_a_hard_linked_secret_is_emptied_for_every_name(tmp_path):
    path = tmp_path / 'agent-token'
    path.write_text('s' * 40)
    other_name = tmp_path / 'copy-elsewhere'
    os.link(path, other_name)

    lockdown.scrub_files([str(path)])

    assert not path.exists()
    assert other_name.read_bytes() == b''


def test_a_link_to_a_directory_is_removed_and_the_directory_kept(tmp_path):
    (tmp_path / 'a-directory').mkdir()
    link = tmp_path / 'link'
    link.symlink_to(tmp_path / 'a-directory')

    report = lockdown.scrub_files([str(link)])

    assert report.removed == [str(link)]
    assert report.complete
    assert (tmp_path / 'a-directory').is_dir()


# -- Lockdown --------------------------------------------------------------

class _Stops:
    def __init__(self):
        self.count = 0

    def __call__(self):
        self.count += 1


def _lockdown(tmp_path, **kwargs):
    secret = tmp_path / 'rescue-worker.conf'
    secret.write_text('transport_url = rabbit://u:secret@h/\n')
    stops = _Stops()
    kwargs.setdefault('scrub_paths', [str(secret)])
    locked = lockdown.Lockdown(state_dir=str(tmp_path / 'state'),
                               scrub_journal=lambda: 0, request_stop=stops,
                               **kwargs)
    return locked, secret, stops


def _outcome(interfaces=()):
    from rescue_worker import payloads
    return payloads.FinalizeRescuePayload(
        node_id='n', request_id='req-1', interfaces=list(interfaces))


def test_engage_writes_the_marker_scrubs_and_asks_to_stop(tmp_path):
    locked, secret, stops = _lockdown(tmp_path)

    locked.engage(_outcome())

    assert locked.engaged
    assert locked.marker.exists()
    assert not secret.exists()
    assert stops.count == 1


def test_engage_twice_does_it_once(tmp_path):
    locked, secret, stops = _lockdown(tmp_path)

    locked.engage(_outcome())
    locked.engage(_outcome())

    assert stops.count == 1


def test_a_marker_that_cannot_be_written_still_scrubs_and_stops(
        tmp_path, monkeypatch, caplog):
    locked, secret, stops = _lockdown(tmp_path)

    def disk_full(request_id):
        raise OSError(28, 'No space left on device')
    monkeypatch.setattr(locked.marker, 'write', disk_full)

    with caplog.at_level(logging.CRITICAL, logger='rescue_worker.lockdown'):
        locked.engage(_outcome())

    assert locked.engaged
    assert not secret.exists()
    assert stops.count == 1
    assert 'could not write its marker' in caplog.text


def test_hooks_after_the_scrub_run_once_it_is_complete(tmp_path):
    order = []
    locked, secret, stops = _lockdown(
        tmp_path, after_scrub=[lambda: order.append(secret.exists())])

    locked.engage(_outcome())

    assert order == [False]


def test_hooks_wait_when_the_scrub_is_incomplete(tmp_path, caplog):
    ran = []
    stuck = tmp_path / 'not-removable'
    stuck.mkdir()
    locked, secret, stops = _lockdown(
        tmp_path, scrub_paths=[str(stuck)], after_scrub=[
            lambda: ran.append(True)])

    with caplog.at_level(logging.CRITICAL, logger='rescue_worker.lockdown'):
        locked.engage(_outcome())

    assert ran == []
    assert 'stays locked' in caplog.text
    assert stops.count == 1


def test_secrets_from_the_kernel_command_line_are_named_at_lockdown(
        tmp_path, caplog):
    locked, secret, stops = _lockdown(tmp_path,
                                      cmdline_secrets=['node token'])

    with caplog.at_level(logging.WARNING, logger='rescue_worker.lockdown'):
        locked.engage(_outcome())

    assert 'node token came from the kernel command line' in caplog.text


def test_leased_and_configured_interfaces_are_kept_for_the_keeper(
        tmp_path):
    from rescue_worker import payloads
    locked, secret, stops = _lockdown(tmp_path)

    locked.engage(_outcome([
        payloads.InterfaceReport('eth0', None, payloads.DHCP_LEASED),
        payloads.InterfaceReport('eth1', None, payloads.DHCP_NO_CARRIER),
        # networkd's: a daemon leases, the keeper must follow it too
        payloads.InterfaceReport('ens3', None, payloads.DHCP_CONFIGURED),
        payloads.InterfaceReport('ens4', None, payloads.DHCP_FAILED)]))

    assert locked.leased_interfaces == ['eth0', 'ens3']


def test_finish_interrupted_scrubs_and_refuses_when_marked(tmp_path):
    locked, secret, stops = _lockdown(tmp_path)
    locked.marker.write('req-1')

    with pytest.raises(lockdown.AlreadyRescued):
        locked.finish_interrupted()

    assert not secret.exists()
