"""Atomic writes: a file is replaced whole, keeping its mode and owner."""

import os
import stat

import pytest

from rescue_worker import atomic


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def _read(path):
    with open(path, 'rb') as f:
        return f.read()


def _existing(tmp_path, content=b'old content\n', mode=0o644):
    path = tmp_path / 'file'
    path.write_bytes(content)
    os.chmod(path, mode)
    return str(path)


needs_root = pytest.mark.skipif(os.geteuid() != 0,
                                reason='changing owners needs root')


# -- new files -------------------------------------------------------------

def test_new_file_gets_mode_0600_by_default(tmp_path):
    path = str(tmp_path / 'new')

    atomic.write_atomically(path, b'data')

    assert _mode(path) == 0o600


@pytest.mark.parametrize('mode', [0o640, 0o644, 0o440, 0o400, 0o755])
def test_new_file_gets_the_given_mode(tmp_path, mode):
    path = str(tmp_path / 'new')

    atomic.write_atomically(path, b'data', mode=mode)

    assert _mode(path) == mode


def test_new_file_mode_ignores_the_umask(tmp_path):
    path = str(tmp_path / 'new')
    old = os.umask(0o077)
    try:
        atomic.write_atomically(path, b'data', mode=0o644)
    finally:
        os.umask(old)

    assert _mode(path) == 0o644


def test_new_file_has_the_data(tmp_path):
    path = str(tmp_path / 'new')

    atomic.write_atomically(path, b'line one\nline two\n')

    assert _read(path) == b'line one\nline two\n'


def test_new_file_belongs_to_the_caller(tmp_path):
    path = str(tmp_path / 'new')

    atomic.write_atomically(path, b'data')

    st = os.stat(path)
    assert (st.st_uid, st.st_gid) == (os.geteuid(), os.getegid())


@needs_root
def test_new_file_gets_the_given_owner(tmp_path):
    path = str(tmp_path / 'new')

    atomic.write_atomically(path, b'data', uid=12345, gid=23456)

    st = os.stat(path)
    assert (st.st_uid, st.st_gid) == (12345, 23456)


def test_relative_path_is_written_in_the_working_directory(tmp_path,
                                                           monkeypatch):
    monkeypatch.chdir(tmp_path)

    atomic.write_atomically('relative', b'data')

    assert _read(str(tmp_path / 'relative')) == b'data'
    assert os.listdir(tmp_path) == ['relative']


# -- existing files --------------------------------------------------------

def test_existing_0644_file_keeps_0644(tmp_path):
    path = _existing(tmp_path, mode=0o644)

    atomic.write_atomically(path, b'new')

    assert _mode(path) == 0o644


def test_existing_0440_file_keeps_0440(tmp_path):
    path = _existing(tmp_path, mode=0o440)

    atomic.write_atomically(path, b'new')

    assert _mode(path) == 0o440


def test_given_mode_overrides_the_existing_mode(tmp_path):
    path = _existing(tmp_path, mode=0o644)

    atomic.write_atomically(path, b'new', mode=0o600)

    assert _mode(path) == 0o600


def test_existing_file_keeps_its_owner(tmp_path):
    path = _existing(tmp_path)
    before = os.stat(path)

    atomic.write_atomically(path, b'new')

    after = os.stat(path)
    assert (after.st_uid, after.st_gid) == (before.st_uid, before.st_gid)


@needs_root
def test_existing_file_owned_by_someone_else_keeps_that_owner(tmp_path):
    path = _existing(tmp_path, mode=0o640)
    os.chown(path, 12345, 23456)

    atomic.write_atomically(path, b'new')

    st = os.stat(path)
    assert (st.st_uid, st.st_gid) == (12345, 23456)
    assert _mode(path) == 0o640


@needs_root
def test_given_owner_overrides_the_existing_owner(tmp_path):
    path = _existing(tmp_path)
    os.chown(path, 12345, 23456)

    atomic.write_atomically(path, b'new', uid=0, gid=0)

    st = os.stat(path)
    assert (st.st_uid, st.st_gid) == (0, 0)


@needs_root
def test_setgid_bit_of_an_existing_file_survives_the_chown(tmp_path):
    path = _existing(tmp_path, mode=0o2755)
    os.chown(path, 12345, 23456)
    os.chmod(path, 0o2755)

    atomic.write_atomically(path, b'new')

    assert _mode(path) == 0o2755


def test_content_is_replaced_whole(tmp_path):
    path = _existing(tmp_path, content=b'a much longer old content\n' * 100)

    atomic.write_atomically(path, b'short')

    assert _read(path) == b'short'


def test_empty_data_empties_the_file(tmp_path):
    path = _existing(tmp_path)

    atomic.write_atomically(path, b'')

    assert _read(path) == b''


def test_file_is_replaced_by_a_new_inode(tmp_path):
    path = _existing(tmp_path)
    with open(path, 'rb') as reader:
        atomic.write_atomically(path, b'new')

        assert reader.read() == b'old content\n'
    assert _read(path) == b'new'


def test_successful_write_leaves_no_temp_file(tmp_path):
    path = _existing(tmp_path)

    atomic.write_atomically(path, b'new')

    assert os.listdir(tmp_path) == ['file']


# -- failures --------------------------------------------------------------

def _failing_rename(*args, **kwargs):
    raise OSError(28, 'No space left on device')


def test_failed_rename_raises(tmp_path, monkeypatch):
    path = _existing(tmp_path)
    monkeypatch.setattr(os, 'rename', _failing_rename)

    with pytest.raises(OSError):
        atomic.write_atomically(path, b'new')


def test_failed_rename_leaves_the_old_file_byte_identical(tmp_path,
                                                          monkeypatch):
    path = _existing(tmp_path, content=b'old\x00bytes\n', mode=0o644)
    before = os.stat(path)
    monkeypatch.setattr(os, 'rename', _failing_rename)

    with pytest.raises(OSError):
        atomic.write_atomically(path, b'new content', mode=0o600)

    after = os.stat(path)
    assert _read(path) == b'old\x00bytes\n'
    assert after.st_ino == before.st_ino
    assert _mode(path) == 0o644


def test_failed_rename_leaves_no_temp_file(tmp_path, monkeypatch):
    path = _existing(tmp_path)
    monkeypatch.setattr(os, 'rename', _failing_rename)

    with pytest.raises(OSError):
        atomic.write_atomically(path, b'new')

    assert os.listdir(tmp_path) == ['file']


def test_failed_rename_of_a_new_file_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(os, 'rename', _failing_rename)

    with pytest.raises(OSError):
        atomic.write_atomically(str(tmp_path / 'new'), b'data')

    assert os.listdir(tmp_path) == []


def test_interrupt_during_rename_leaves_no_temp_file(tmp_path, monkeypatch):
    path = _existing(tmp_path)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, 'rename', interrupted)

    with pytest.raises(KeyboardInterrupt):
        atomic.write_atomically(path, b'new')

    assert os.listdir(tmp_path) == ['file']
    assert _read(path) == b'old content\n'


def test_temp_file_is_complete_and_private_before_the_rename(tmp_path,
                                                             monkeypatch):
    path = _existing(tmp_path, mode=0o600)
    seen = {}
    real_rename = os.rename

    def spying_rename(src, dst):
        seen['dir'] = os.path.dirname(os.path.abspath(src))
        seen['mode'] = _mode(src)
        seen['content'] = _read(src)
        return real_rename(src, dst)

    monkeypatch.setattr(os, 'rename', spying_rename)

    atomic.write_atomically(path, b'new')

    assert seen == {'dir': str(tmp_path), 'mode': 0o600, 'content': b'new'}


def test_missing_directory_raises_and_creates_nothing(tmp_path):
    with pytest.raises(FileNotFoundError):
        atomic.write_atomically(str(tmp_path / 'no' / 'file'), b'data')

    assert os.listdir(tmp_path) == []


# -- remove_durably --------------------------------------------------------

def test_remove_durably_removes_an_existing_file(tmp_path):
    path = _existing(tmp_path)

    assert atomic.remove_durably(path) is True
    assert not os.path.exists(path)


def test_remove_durably_of_a_missing_file_returns_false(tmp_path):
    assert atomic.remove_durably(str(tmp_path / 'missing')) is False
