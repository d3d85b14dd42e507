"""Each rescue ramdisk booted in QEMU, rescued from the host, logged into.

Per image of ``build/images`` (``tox -e image``): QEMU (TCG, never KVM)
with the image's ``target_ram_mib``, two virtio NICs on the rescuing
bridge of a namespace of the test's own, the per-node values on the
kernel command line as Ironic passes them. The conductor on the host
(the project's client and completion waiter, through a private
RabbitMQ) waits for the authentic ``worker.ready``, rescues with a random
password and waits for the authentic ``end``. Then, as the tenant would:
OpenSSH logs in on the address the ``end`` reports (or, for a NIC it
names none for, the one the DHCP server gave) and ``sudo -n id -u`` says
0; no token, broker password or plaintext password is left in a file the
tenant can read; nothing but sshd listens; the DHCP clients
still hold the leases after the worker exited. Last, the NICs move to
the tenant bridge without a link flap, as Ironic's port update does, and
both must lease from the tenant network within the keeper's
``tenant_renew_interval`` plus 2 seconds, keeping no rescuing address.

Then boots below the target, in 32 MiB steps, until one no longer comes
up: the last that rescued is the image's minimum RAM. ``--min-ram``
bisects over the whole range instead, for an image whose minimum lies far
below its target.

Needs root, QEMU, OpenSSH's client, dnsmasq, RabbitMQ and zstd
(bindep.txt) and the images: skipped otherwise, a failure under
``CI=true``. The measured numbers go to ``build/vm-results.json``.
"""

from __future__ import annotations

import pytest

from tests.vm import lab
from tests.vm import rescue
from tests.vm.conftest import Results

RAM_STEP_MIB = 32
#: a boot that needs far longer than at the target is as good as failed
MIN_RAM_BOOT_TIMEOUT = 180.0


def renew_interval(image: lab.Image) -> int:
    """The keeper's interval as the image's configuration sets it."""
    settings = lab.worker_settings(image)
    return int(settings.get('tenant_renew_interval',
                            rescue.DEFAULT_RENEW_INTERVAL))


def test_rescue_login_lockdown_and_tenant_flip(image, broker, conductor,
                                               tmp_path, results: Results):
    interval = renew_interval(image)
    results.record(image, tenant_renew_interval=interval)
    run = rescue.RescueRun(image, image.target_ram_mib, broker, conductor,
                           str(tmp_path / 'node'))
    try:
        with run:
            run.boot()
            run.rescue()
            run.login()
            results.rescued(image, image.target_ram_mib, True)
            # Every problem is collected, so that one does not hide the
            # next: the lockdown's, then the tenant flip's.
            problems = run.check_lockdown()
            try:
                handover = run.flip(interval)
            except AssertionError as exc:
                problems.append(str(exc))
            else:
                limit = interval + rescue.HANDOVER_SLACK
                if handover > limit:
                    problems.append(
                        'the tenant network took %.1f s to lease both NICs '
                        'after the flip; the target is '
                        'tenant_renew_interval (%d s) + %.0f s: the keeper '
                        'must get a new lease (DISCOVER) as soon as a '
                        'renewal fails' % (handover, interval,
                                           rescue.HANDOVER_SLACK))
            if problems:
                print('\n%s: serial console:\n%s' % (
                    image.name, run.vm.console_tail()))
    finally:
        results.record(image, **run.times)
        print('\n%s: %s' % (image.name, ', '.join(
            '%s %.1f' % item for item in sorted(run.times.items()))))

    assert not problems, '%s after the rescue:\n- %s' % (
        image.name, '\n- '.join(problems))


#: what one boot at a given RAM came to
RESCUED = 'rescued'        # rescued, and the tenant logged in
NO_BOOT = 'did not boot'   # the VM ended (or hung) before worker.ready
PARTIAL = 'half-rescued'   # ready came, then the rescue or login failed


def try_ram(image: lab.Image, ram_mib: int, broker, conductor,
            workdir: str, boot_timeout: float) -> str:
    """One boot with ``ram_mib``: RESCUED, NO_BOOT or PARTIAL; a failure
    is printed with the console's tail."""
    run = rescue.RescueRun(image, ram_mib, broker, conductor, workdir)
    try:
        with run:
            run.boot(boot_timeout)
            run.rescue()
            run.login()
    except (AssertionError, TimeoutError) as exc:
        outcome = PARTIAL if 'boot_to_ready_s' in run.times else NO_BOOT
        print('%s at %d MiB: %s (%s)' % (image.name, ram_mib, outcome,
                                         exc))
        return outcome
    print('%s at %d MiB: rescued (boot to ready %.1f s)' % (
        image.name, ram_mib, run.times['boot_to_ready_s']))
    return RESCUED


def test_below_target_ram_each_step_rescues_or_fails_cleanly(
        image, broker, conductor, tmp_path, results: Results):
    """From 32 MiB below the target down, in 32 MiB steps, until a node
    no longer comes up: the last RAM that rescued is the minimum. Each
    step either rescues or never comes up; what it must not do is come up
    and then fail the rescue or the tenant's login, which a conductor
    would see as a broken rescue rather than a node short of memory."""
    minimum = image.target_ram_mib
    for ram in range(image.target_ram_mib - RAM_STEP_MIB, 0, -RAM_STEP_MIB):
        outcome = try_ram(image, ram, broker, conductor,
                          str(tmp_path / str(ram)), MIN_RAM_BOOT_TIMEOUT)
        results.rescued(image, ram, outcome == RESCUED)
        assert outcome != PARTIAL, \
            '%s came up with %d MiB but did not rescue or let the tenant ' \
            'in' % (image.name, ram)
        if outcome == NO_BOOT:
            break
        minimum = ram
    results.record(image, min_ram_mib=minimum)
    print('%s: minimum RAM %d MiB (target %d MiB)' % (
        image.name, minimum, image.target_ram_mib))


@pytest.mark.min_ram
def test_minimum_ram(image, broker, conductor, tmp_path, results: Results):
    """Bisect, in 32 MiB steps, for the least RAM that rescues and lets
    the tenant log in (``--min-ram``)."""
    target = image.target_ram_mib
    # good: rescues (the target must); bad: below anything that could.
    steps = list(range(RAM_STEP_MIB, target + 1, RAM_STEP_MIB))
    if steps[-1] != target:
        steps.append(target)
    low, high = -1, len(steps) - 1
    assert try_ram(image, target, broker, conductor,
                   str(tmp_path / str(target)),
                   rescue.BOOT_TIMEOUT) == RESCUED, \
        '%s does not rescue at its target of %d MiB' % (image.name, target)
    results.rescued(image, target, True)
    while high - low > 1:
        middle = (low + high) // 2
        ram = steps[middle]
        ok = try_ram(image, ram, broker, conductor,
                     str(tmp_path / str(ram)),
                     MIN_RAM_BOOT_TIMEOUT) == RESCUED
        results.rescued(image, ram, ok)
        if ok:
            high = middle
        else:
            low = middle
    results.record(image, min_ram_mib=steps[high])
    print('%s: minimum RAM %d MiB (target %d MiB)' % (
        image.name, steps[high], target))
