"""Fixtures of the virtual-machine tests (``tox -e vm``).

Each image of ``build/images`` (``tox -e image``) is a parameter; the two
reference images (systemd, busybox) are expected even when absent, so
that a missing one fails under ``CI=true`` (locally it skips and says
what is missing), as does a missing part of the machine: root, QEMU, the
SSH client, dnsmasq, RabbitMQ, zstd.

The numbers every run measures go to ``build/vm-results.json`` (merged
per image with what an earlier run wrote) and to the terminal.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time

import pytest

from tests import parts
from tests.vm import lab

#: the images ``tox -e image`` always builds (``dib`` only when it can)
EXPECTED_IMAGES = ('busybox', 'systemd')
RESULTS_FILE = os.path.join(os.path.dirname(lab.IMAGES_DIR),
                            'vm-results.json')
#: program -> the Debian package that has it (bindep.txt)
PROGRAMS = {'qemu-system-x86_64': 'qemu-system-x86',
            'ssh': 'openssh-client', 'dnsmasq': 'dnsmasq-base',
            'ip': 'iproute2', 'zstd': 'zstd'}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        '--min-ram', action='store_true', default=False,
        help='also find each image\'s minimum RAM: bisect in 32 MiB steps '
             'below target_ram_mib for the least that still rescues and '
             'lets the tenant log in (several boots per image)')
    parser.addoption(
        '--images-dir', default=lab.IMAGES_DIR,
        help='where the images are (default: build/images)')


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if 'image_name' in metafunc.fixturenames:
        directory = metafunc.config.getoption('--images-dir')
        names = set(EXPECTED_IMAGES)
        names.update(os.path.basename(image.directory)
                     for image in lab.find_images(directory))
        metafunc.parametrize('image_name', sorted(names))


def pytest_collection_modifyitems(config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    # The minimum-RAM search boots each image several times: only asked
    # for. Deselected, not skipped, so that CI's report holds no skip.
    if config.getoption('--min-ram'):
        return
    kept, dropped = [], []
    for item in items:
        (dropped if item.get_closest_marker('min_ram') else kept).append(
            item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        'markers', 'min_ram: the minimum-RAM search (--min-ram)')


@pytest.fixture(scope='session')
def machine() -> None:
    """Root and the programs the lab runs, or skip (fail under CI)."""
    parts.require_root()
    absent = ['%s (Debian package %s)' % (program, package)
              for program, package in PROGRAMS.items()
              if shutil.which(program) is None]
    if not shutil.which('rabbitmqctl',
                        path=os.pathsep.join(lab.RABBITMQCTL_DIRS)):
        absent.append('rabbitmqctl (Debian package rabbitmq-server)')
    if not shutil.which('pifpaf', path=os.path.dirname(sys.executable) +
                        os.pathsep + os.environ.get('PATH', '')):
        absent.append('pifpaf (test-requirements.txt)')
    if not os.path.exists('/dev/net/tun'):
        absent.append('/dev/net/tun (tap devices)')
    if absent:
        parts.missing(', '.join(absent))


@pytest.fixture
def image(request: pytest.FixtureRequest, image_name: str,
          machine: None) -> lab.Image:
    directory = os.path.join(request.config.getoption('--images-dir'),
                             image_name)
    if not os.path.isdir(directory):
        parts.missing('the %s image in %s: run "tox -e image"' % (
            image_name, directory))
    found = lab.Image.load(directory)
    gaps = found.missing()
    if gaps:
        parts.missing('a complete %s image (missing: %s): run "tox -e '
                      'image"' % (image_name, ', '.join(gaps)))
    return found


@pytest.fixture(scope='session')
def broker(machine: None, tmp_path_factory: pytest.TempPathFactory
           ) -> lab.Broker:
    broker = lab.Broker(str(tmp_path_factory.mktemp('broker')))
    try:
        broker.start()
        yield broker
    finally:
        broker.close()


@pytest.fixture(scope='session')
def conductor(broker: lab.Broker) -> lab.Conductor:
    conductor = lab.Conductor(broker.host_url)
    try:
        yield conductor
    finally:
        conductor.close()


class Results:
    """The measured numbers, by image, for the JSON file and the
    terminal."""

    def __init__(self) -> None:
        self.images: dict[str, dict] = {}
        self.started = time.monotonic()

    def record(self, image: lab.Image, **values: object) -> dict:
        entry = self.images.setdefault(image.name, {
            'init': image.manifest.get('init'),
            'backend': image.manifest.get('backend'),
            'build_seconds': image.manifest.get('build_seconds'),
            'initramfs_bytes': image.manifest.get('initramfs_bytes'),
            'kernel_bytes': image.manifest.get('kernel_bytes'),
            'target_ram_mib': image.manifest.get('target_ram_mib'),
        })
        entry.update(values)
        return entry

    def rescued(self, image: lab.Image, ram_mib: int, ok: bool) -> None:
        """Whether a boot with ``ram_mib`` rescued and let the tenant in."""
        entry = self.record(image)
        entry.setdefault('rescued_at_mib', {})[str(ram_mib)] = ok

    def write(self, path: str) -> None:
        merged: dict = {}
        try:
            with open(path) as f:
                merged = json.load(f).get('images', {})
        except (OSError, ValueError):
            pass
        for name, values in self.images.items():
            entry = merged.setdefault(name, {})
            # What each RAM came to adds up over runs (--min-ram's too).
            tried = {**entry.get('rescued_at_mib', {}),
                     **values.get('rescued_at_mib', {})}
            entry.update(values)
            if tried:
                entry['rescued_at_mib'] = tried
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, 'w') as f:
            json.dump({'images': merged}, f, indent=2, sort_keys=True)
            f.write('\n')

    def lines(self) -> list[str]:
        out = []
        for name, v in sorted(self.images.items()):
            def num(key: str, fmt: str = '%.1f s', v: dict = v) -> str:
                value = v.get(key)
                return fmt % value if isinstance(value, int | float) \
                    else '-'
            out.append(
                '%-8s build %s, initramfs %s, kernel %s, boot to ready %s, '
                'rescue round trip %s, SSH login %s (end to login %s), '
                'tenant handover %s (renew interval %s), RAM: target %s, '
                'rescued at %s, minimum %s' % (
                    name, num('build_seconds'),
                    num('initramfs_bytes', '%d B'),
                    num('kernel_bytes', '%d B'), num('boot_to_ready_s'),
                    num('rescue_round_trip_s'), num('ssh_login_s'),
                    num('end_to_login_s'), num('tenant_handover_s'),
                    num('tenant_renew_interval', '%d s'),
                    num('target_ram_mib', '%d MiB'),
                    ', '.join('%s MiB: %s' % (ram, 'yes' if ok else 'no')
                              for ram, ok in sorted(
                                  v.get('rescued_at_mib', {}).items(),
                                  key=lambda kv: int(kv[0]))) or '-',
                    num('min_ram_mib', '%d MiB')))
        return out


_RESULTS = Results()


@pytest.fixture(scope='session')
def results() -> Results:
    return _RESULTS


def pytest_terminal_summary(terminalreporter, exitstatus: int,
                            config: pytest.Config) -> None:
    if not _RESULTS.images:
        return
    _RESULTS.write(RESULTS_FILE)
    terminalreporter.section('rescue ramdisks in QEMU (TCG)')
    for line in _RESULTS.lines():
        terminalreporter.write_line(line)
    terminalreporter.write_line('written to %s; the VM tests took %.0f s' % (
        RESULTS_FILE, time.monotonic() - _RESULTS.started))
