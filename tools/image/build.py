#!/usr/bin/env python3
"""Build the reference rescue ramdisks: a kernel and an initramfs each.

``tox -e image`` runs this as root. For every image (``--only`` to pick) it
writes ``<output-dir>/<name>/vmlinuz``, ``initrd.img`` and
``manifest.json`` (see README.rst next to this file for the keys), and
prints the build time and the sizes.

``systemd`` and ``busybox`` are Debian bookworm roots made by mmdebstrap
from deb.debian.org, finished by ``<name>/customize.sh`` (the worker from
this checkout in a venv, the kernel's modules, the image's own files) and
packed into a zstd cpio. ``dib`` is a root that diskimage-builder makes
(``debian-minimal`` and this project's ``elements/rescue-worker``, as a
tarball), made a whole-root initramfs by ``dib/pack.sh``.

Everything the build keeps lies under the output directory: the images,
and ``.work/<name>`` while an image is being built (removed after, unless
``--keep-work``).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time

TOOLS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(TOOLS))

SUITE = 'bookworm'
MIRROR = 'http://deb.debian.org/debian'
SECURITY = 'http://deb.debian.org/debian-security'

#: the modules the images load at boot (virtio: the VM test's NICs); the
#: cloud kernel builds no drivers for physical NICs (e1000, igb, ...): an
#: image for bare metal needs linux-image-amd64 and their modules here.
#: install_kernel (common.sh) adds what they depend on.
MODULES = 'virtio_pci virtio_net virtio_blk virtio_scsi virtio_rng'

#: what every image needs at run time, then what only builds the venv
#: (purged by the hook): netifaces compiles from source
#: (libstdc++6: greenlet, under eventlet, is C++)
RUNTIME = ['python3', 'openssh-server', 'sudo', 'iproute2', 'kmod',
           'libstdc++6']
BUILD = ['python3-venv', 'gcc', 'libc6-dev', 'python3-dev']

#: the host's CA bundle (Debian's ca-certificates), which pip in the image
#: trusts during the build unless PIP_CERT or SSL_CERT_FILE name another
HOST_CA_BUNDLE = '/etc/ssl/certs/ca-certificates.crt'

#: the kernel arguments every image needs: the serial console, and an
#: initramfs root on ramfs, not tmpfs (capped at half the RAM)
BASE_CMDLINE = 'console=ttyS0 rootfstype=ramfs'

IMAGES = {
    'systemd': {
        'init': 'systemd',
        'backend': 'networkd',
        'packages': ['systemd', 'systemd-sysv', 'udev', 'dbus'],
        'cmdline': BASE_CMDLINE,
        'target_ram_mib': 384,
    },
    'busybox': {
        'init': 'busybox',
        'backend': 'udhcpc',
        # libsystemd0 comes along as a library (openssh-server, sudo's
        # libraries link it); systemd itself is not installed.
        'packages': ['busybox', 'udhcpc'],
        'cmdline': BASE_CMDLINE + ' quiet',
        'target_ram_mib': 256,
    },
    # debian-minimal brings more than the two images above (apt, gnupg,
    # the generic kernel, open-iscsi, software-properties-common with
    # GLib and ICU): an operator's image is not stripped like them.
    'dib': {
        'init': 'systemd',
        'backend': 'networkd',
        'cmdline': BASE_CMDLINE,
        'target_ram_mib': 512,
    },
}


def log(message: str) -> None:
    print('image: %s' % message, flush=True)


def run(argv: list[str], log_file: str | None = None, **kwargs) -> None:
    """Run ``argv``; with ``log_file``, its output goes there (shown, its
    end, only when it fails): diskimage-builder's thousands of lines would
    bury every other result of a CI run."""
    log('$ %s' % ' '.join(shlex.quote(a) for a in argv))
    if log_file is None:
        subprocess.run(argv, check=True, **kwargs)
        return
    log('its output: %s' % log_file)
    with open(log_file, 'ab') as f:
        try:
            subprocess.run(argv, check=True, stdout=f,
                           stderr=subprocess.STDOUT, **kwargs)
        except subprocess.CalledProcessError:
            with open(log_file, errors='replace') as written:
                print(''.join(written.readlines()[-80:]), flush=True)
            raise


def copy_checkout(destination: str) -> None:
    """The files git knows of (tracked and untracked, not ignored), as
    they are in the working tree: what pip would build."""
    listing = subprocess.run(
        ['git', '-C', REPO, 'ls-files', '-z', '--cached', '--others',
         '--exclude-standard'], check=True, capture_output=True).stdout
    for name in sorted(set(listing.decode().split('\0'))):
        source = os.path.join(REPO, name)
        if not name or not os.path.lexists(source):
            continue  # deleted in the working tree
        target = os.path.join(destination, name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)


def pack(root: str, target: str) -> None:
    """The root as a zstd-compressed newc cpio (what the kernel unpacks)."""
    with open(target, 'wb') as out:
        find = subprocess.Popen(
            ['find', '.', '-mindepth', '1', '-print0'], cwd=root,
            stdout=subprocess.PIPE)
        cpio = subprocess.Popen(
            ['cpio', '--null', '--create', '--format=newc', '--quiet'],
            cwd=root, stdin=find.stdout, stdout=subprocess.PIPE)
        find.stdout.close()
        # -T0: both cores; level 12 is a third smaller than the default
        # for a few seconds more, the kernel unpacks either as fast.
        zstd = subprocess.Popen(['zstd', '-q', '-T0', '-12', '-c'],
                                stdin=cpio.stdout, stdout=out)
        cpio.stdout.close()
        codes = [zstd.wait(), cpio.wait(), find.wait()]
    if any(codes):
        raise RuntimeError('packing %s failed (find, cpio, zstd: %s)'
                           % (root, codes))


def build_debian(name: str, spec: dict, work: str, out: str,
                 args: argparse.Namespace) -> None:
    root = os.path.join(work, 'root')
    src = os.path.join(work, 'src')
    copy_checkout(src)
    env = dict(os.environ, RW_TOOLS=TOOLS, RW_SRC=src, RW_OUT=out,
               RW_MODULES=MODULES, TMPDIR=work)
    hook = '%s "$1"' % shlex.quote(os.path.join(TOOLS, name, 'customize.sh'))
    run(['mmdebstrap', '--mode=root', '--variant=essential',
         '--format=directory', '--quiet',
         '--aptopt=APT::Install-Recommends "false"',
         '--include=' + ','.join(RUNTIME + BUILD + spec['packages']),
         '--customize-hook=' + hook,
         SUITE, root,
         'deb %s %s main' % (args.mirror, SUITE),
         'deb %s %s-updates main' % (args.mirror, SUITE),
         'deb %s %s-security main' % (args.security_mirror, SUITE)],
        env=env)
    shutil.rmtree(src)
    pack(root, os.path.join(out, 'initrd.img'))


def build_dib(work: str, out: str, args: argparse.Namespace) -> None:
    """debian-minimal + rescue-worker by diskimage-builder, as a tarball;
    then the same packing as the other images."""
    program = shutil.which('disk-image-create') or os.path.join(
        os.path.dirname(sys.executable), 'disk-image-create')
    if not os.path.exists(program):
        raise RuntimeError('disk-image-create is not installed (tox -e '
                           'image installs diskimage-builder)')
    src = os.path.join(work, 'src')
    copy_checkout(src)
    tmp = os.path.join(work, 'tmp')
    os.makedirs(tmp)
    # The host's pip settings name host paths; its CA bundle (a proxy's CA
    # among it) is handed to the element instead.
    env = {key: value for key, value in os.environ.items()
           if not key.startswith('PIP_')}
    ca = (os.environ.get('PIP_CERT') or os.environ.get('SSL_CERT_FILE')
          or HOST_CA_BUNDLE)
    if os.path.exists(ca):
        env['DIB_RESCUE_WORKER_PIP_CERT'] = ca
    env.update(
        ELEMENTS_PATH=os.path.join(REPO, 'elements'),
        DIB_RELEASE=SUITE,
        DIB_DISTRIBUTION_MIRROR=args.mirror,
        DIB_APT_SOURCES_CONF='\n'.join([
            'default:deb %s %s main' % (args.mirror, SUITE),
            'updates:deb %s %s-updates main' % (args.mirror, SUITE),
            'security:deb %s %s-security main' % (args.security_mirror,
                                                   SUITE)]),
        DIB_RESCUE_WORKER_SOURCE=src,
        DIB_RESCUE_WORKER_DHCP_BACKEND='networkd',
        # Everything under the work directory: no cache in ~/.cache, no
        # tmpfs mounted for the build.
        DIB_IMAGE_CACHE=os.path.join(work, 'cache'),
        TMP_DIR=tmp, TMPDIR=tmp, DIB_NO_TMPFS='1',
        DIB_SHOW_IMAGE_USAGE='0')
    run([program, '-a', 'amd64', '-t', 'tar', '--no-tmpfs',
         '-o', os.path.join(work, 'rescue'), 'debian-minimal',
         'rescue-worker'], log_file=os.path.join(out, 'build.log'),
        env=env)
    root = os.path.join(work, 'root')
    os.makedirs(root)
    run(['tar', '-C', root, '--numeric-owner', '-xpf',
         os.path.join(work, 'rescue.tar')])
    os.unlink(os.path.join(work, 'rescue.tar'))
    shutil.rmtree(src)
    run([os.path.join(TOOLS, 'dib', 'pack.sh'), root],
        env=dict(os.environ, RW_TOOLS=TOOLS, RW_OUT=out, RW_MODULES=MODULES))
    pack(root, os.path.join(out, 'initrd.img'))


def build(name: str, args: argparse.Namespace) -> dict:
    spec = IMAGES[name]
    start = time.monotonic()
    final = os.path.join(args.output_dir, name)
    work = os.path.join(args.output_dir, '.work', name)
    # The image appears under its name only once complete: a VM test never
    # boots half of one.
    out = os.path.join(work, 'out')
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(out)
    if name == 'dib':
        build_dib(work, out, args)
    else:
        build_debian(name, spec, work, out, args)
    kernel = os.path.join(out, 'vmlinuz')
    initramfs = os.path.join(out, 'initrd.img')
    manifest = {
        'name': name,
        'init': spec['init'],
        'backend': spec['backend'],
        'kernel': 'vmlinuz',
        'initramfs': 'initrd.img',
        'kernel_bytes': os.path.getsize(kernel),
        'initramfs_bytes': os.path.getsize(initramfs),
        'build_seconds': round(time.monotonic() - start, 1),
        'cmdline': spec['cmdline'],
        'target_ram_mib': spec['target_ram_mib'],
        'ssh_user': 'rescue',
    }
    version_file = os.path.join(out, 'kernel-version')
    if os.path.exists(version_file):
        with open(version_file) as f:
            manifest['kernel_version'] = f.read().strip()
        os.unlink(version_file)
    with open(os.path.join(out, 'manifest.json'), 'w') as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
        f.write('\n')
    shutil.rmtree(final, ignore_errors=True)
    os.rename(out, final)
    if not args.keep_work:
        shutil.rmtree(work)
    return manifest


def mib(size: int) -> str:
    return '%.1f MiB' % (size / 1048576)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog='build.py',
        description='Build the rescue ramdisks (a kernel and an initramfs '
                    'each) into OUTPUT_DIR/<name>/. Needs root.')
    parser.add_argument('--only', action='append', choices=sorted(IMAGES),
                        metavar='NAME',
                        help='build this image only (again for more); '
                             'one of %s' % ', '.join(IMAGES))
    parser.add_argument('--output-dir',
                        default=os.path.join(REPO, 'build', 'images'))
    parser.add_argument('--mirror', default=MIRROR,
                        help='Debian mirror (default %(default)s)')
    parser.add_argument('--security-mirror', default=SECURITY,
                        help='Debian security mirror (default %(default)s)')
    parser.add_argument('--keep-work', action='store_true',
                        help='keep OUTPUT_DIR/.work/<name> (the unpacked '
                             'root) for inspection')
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error('needs root (mmdebstrap and chroot): run it as root')
    args.output_dir = os.path.abspath(args.output_dir)
    names = args.only or list(IMAGES)
    results = []
    failed = []
    for name in names:
        log('building %s' % name)
        try:
            results.append(build(name, args))
        except (subprocess.CalledProcessError, RuntimeError, OSError) as exc:
            log('%s failed: %s' % (name, exc))
            failed.append(name)
            continue
        m = results[-1]
        log('%s: built in %.0f s, initramfs %s, kernel %s' % (
            name, m['build_seconds'], mib(m['initramfs_bytes']),
            mib(m['kernel_bytes'])))
    # The work directory goes once nothing is kept in it.
    try:
        os.rmdir(os.path.join(args.output_dir, '.work'))
    except OSError:
        pass
    print()
    print('%-8s %9s %14s %12s' % ('image', 'seconds', 'initramfs', 'kernel'))
    for m in results:
        print('%-8s %9.0f %14s %12s' % (
            m['name'], m['build_seconds'], mib(m['initramfs_bytes']),
            mib(m['kernel_bytes'])))
    for name in failed:
        print('%-8s %9s' % (name, 'FAILED'))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
