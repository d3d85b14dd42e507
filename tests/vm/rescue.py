"""One node's rescue in a virtual machine, step by step, each step timed.

``RescueRun`` is what a conductor and a tenant do, in order: boot the
rescue ramdisk (wait for the authentic ``worker.ready``), rescue it
(``finalize_rescue`` with a fresh random password, wait for the
authentic ``end``), log in over SSH as the tenant and become root, look
for what the lockdown must have left behind, and flip the NICs to the
tenant network. Every wait has a deadline; a failure prints the tail of
the serial console (secrets blanked).
"""

from __future__ import annotations

import os
import secrets
import time
import urllib.parse

from rescue_worker import payloads
from tests.vm import lab

#: QEMU start to ``worker.ready``: TCG took 14 s (busybox) to 39 s
#: (systemd) on a quiet 2-core machine; room for a busy one
BOOT_TIMEOUT = 300.0
#: cast to ``end``: DHCP on both NICs within the worker's dhcp_timeout
OUTCOME_TIMEOUT = 240.0
#: ``end`` to ``worker.stopped`` (the lockdown scrubs, then stops)
STOPPED_TIMEOUT = 120.0
#: ``end`` to a working SSH login
LOGIN_TIMEOUT = 120.0
#: how long the tenant flip is watched before it counts as failed
HANDOVER_WATCH = 90.0
#: the slack the issue allows on top of tenant_renew_interval
HANDOVER_SLACK = 2.0
#: the keeper's interval when the image does not set one (rescue_worker
#: conf.py's default)
DEFAULT_RENEW_INTERVAL = 10
#: programs that may hold a UDP socket open after the lockdown: DHCP
#: clients (comm is cut at 15 characters)
DHCP_CLIENTS = {'udhcpc', 'dhclient', 'systemd-network', 'busybox'}
SSHD = {'sshd', 'dropbear'}


class RescueRun:
    """One node booted from ``image`` with ``ram_mib`` of RAM."""

    def __init__(self, image: lab.Image, ram_mib: int, broker: lab.Broker,
                 conductor: lab.Conductor, workdir: str) -> None:
        self.image = image
        self.ram_mib = ram_mib
        self.broker = broker
        self.conductor = conductor
        self.workdir = workdir
        os.makedirs(workdir, exist_ok=True)
        self.node_id = 'vm-%s-%s' % (image.name, secrets.token_hex(4))
        self.token = secrets.token_urlsafe(32)
        self.password = secrets.token_urlsafe(18)
        self.broker_password = ''
        self.network: lab.VmNetwork | None = None
        self.vm: lab.Vm | None = None
        self.ssh: lab.Ssh | None = None
        self.times: dict[str, float] = {}
        self.end: dict = {}
        #: MAC -> the address the rescue leased to it
        self.rescue_addresses: dict[str, str] = {}
        self.tenant_addresses: dict[str, str] = {}
        #: interfaces whose address the end did not report
        self.unreported: list[str] = []

    # -- set-up and teardown -------------------------------------------------

    def __enter__(self) -> RescueRun:
        try:
            # Kept before it starts: a half-made network is torn down too.
            self.network = lab.VmNetwork(self.workdir, self.broker)
            self.network.start()
            user, self.broker_password = self.broker.add_node_user(
                self.node_id, self.workdir)
            url = 'rabbit://%s:%s@%s:%d//' % (
                urllib.parse.quote(user, safe=''),
                urllib.parse.quote(self.broker_password, safe=''),
                self.network.broker_address, lab.BROKER_PORT)
            # panic=-1: a kernel panic (out of memory while unpacking the
            # initramfs, say) reboots, and -no-reboot ends QEMU, so the
            # wait for worker.ready ends at once instead of at its
            # deadline.
            append = '%s panic=-1 rescue_worker.node_id=%s ' \
                'rescue_worker.transport_url=%s rescue_worker_token=%s' % (
                    self.image.manifest['cmdline'], self.node_id, url,
                    self.token)
            self.vm = lab.Vm(self.network, self.image, self.ram_mib, append,
                             self.workdir, secrets_to_hide=self.secrets)
            self.ssh = lab.Ssh(self.network.namespace, self.workdir,
                               self.image.ssh_user, self.password)
        except BaseException:
            self.close(failed=True)
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(failed=exc_type is not None)

    @property
    def secrets(self) -> list[str]:
        """What must never be left where the tenant can read it."""
        return [self.token, self.broker_password, self.password]

    SECRET_NAMES = ('the node token', "the node's broker password",
                    'the rescue password (plaintext)')

    def close(self, failed: bool = False) -> None:
        if failed and self.vm is not None:
            print('\n%s at %d MiB failed; serial console:\n%s' % (
                self.image.name, self.ram_mib, self.vm.console_tail()))
        if self.vm is not None:
            self.vm.stop()
        if self.network is not None:
            self.network.close()
        if self.node_id in self.broker.users:
            # As Ironic does once the outcome is in: the credentials on
            # the node's kernel command line are worth nothing after.
            self.broker.remove_node_user(self.node_id)
        self.conductor.waiter.node_tokens.pop(self.node_id, None)

    # -- the steps -----------------------------------------------------------

    def _alive(self) -> bool:
        return self.vm is not None and self.vm.running

    def boot(self, timeout: float = BOOT_TIMEOUT) -> float:
        """Start QEMU; wait for the node's authentic ``worker.ready``."""
        self.conductor.expect(self.node_id, self.token)
        self.vm.start()
        at, _ = self.conductor.wait_event(lab.READY, self.node_id,
                                          timeout, self._alive)
        self.times['boot_to_ready_s'] = at - self.vm.started_at
        return self.times['boot_to_ready_s']

    def rescue(self) -> dict:
        """Cast ``finalize_rescue``; wait for the authenticated ``end``."""
        client = self.conductor.client
        started = time.monotonic()
        request_id = client.finalize_rescue({}, self.node_id, self.password,
                                            agent_token=self.token)
        outcome = self.conductor.waiter.wait(
            [request_id], timeout=OUTCOME_TIMEOUT, client=client)[request_id]
        self.times['rescue_round_trip_s'] = time.monotonic() - started
        self.end_at = time.monotonic()
        client.forget(request_id)
        assert outcome.succeeded, 'the rescue did not end: %s (%s)' % (
            outcome.status, outcome.error)
        self.end = outcome.data
        by_mac = {entry['mac'].lower(): entry
                  for entry in self.end['interfaces']}
        for mac in self.vm.macs:
            entry = by_mac.get(mac)
            assert entry is not None, \
                'the end names no interface with MAC %s: %s' % (
                    mac, self.end['interfaces'])
            assert entry['dhcp'] in payloads.DHCP_SUCCESSFUL, entry
            # The address the tenant logs in on: a leased NIC must name it.
            assert entry['ipv4'] or entry['dhcp'] != payloads.DHCP_LEASED, \
                'the end calls %s leased but names no IPv4 address: %s' % (
                    entry['name'], entry)
            if entry['ipv4']:
                [address] = entry['ipv4']
            else:
                # "configured" (networkd): the daemon leases on its own
                # and the end may come before it has; the rescuing
                # network's DHCP server knows what it gave.
                self.unreported.append(entry['name'])
                server = self.network.dhcp[lab.RESCUING_BRIDGE]
                address = server.wait_for_match(
                    server.acked(mac), lab.DHCP_WAIT).group(1)
            assert self.network.in_subnet(lab.RESCUING_BRIDGE, address), \
                '%s leased %s, outside %s' % (entry['name'], address,
                                               lab.RESCUING_SUBNET)
            self.rescue_addresses[mac] = address
        if self.unreported:
            print('%s: the end reports no IPv4 address for %s (%s)' % (
                self.image.name, ', '.join(self.unreported), ', '.join(
                    '%s %s' % (e['name'], e['dhcp'])
                    for e in self.end['interfaces'])))
        return self.end

    def login(self, address: str | None = None) -> float:
        """Log in as the tenant with the rescue password; ``sudo -n id
        -u`` must say 0. Returns how long the login took."""
        address = address or next(iter(self.rescue_addresses.values()))
        result = self.ssh.login(address, ['sudo', '-n', 'id', '-u'],
                                LOGIN_TIMEOUT, self._alive)
        took = self.ssh.last_took
        assert result.returncode == 0 and result.stdout.strip() == '0', \
            'ssh %s@%s "sudo -n id -u" exited %d: %s%s' % (
                self.image.ssh_user, address, result.returncode,
                result.stdout, result.stderr)
        if 'ssh_login_s' not in self.times:
            self.times['ssh_login_s'] = took
            self.times['end_to_login_s'] = time.monotonic() - self.end_at
        return took

    def check_lockdown(self) -> list[str]:
        """What a tenant with sudo finds once the worker locked down:
        every problem found, so that one does not hide the next (the
        test fails on them after the tenant flip is measured)."""
        self.conductor.wait_event(lab.STOPPED, self.node_id, STOPPED_TIMEOUT,
                                  self._alive)
        address = next(iter(self.rescue_addresses.values()))
        found = lab.inspect_guest(self.ssh, address, self.secrets)
        problems = []
        leaks = ['%s in %s' % (self.SECRET_NAMES[i], path)
                 for path, i in found['secret_files']]
        if leaks:
            problems.append('secrets left in files the tenant can read '
                            '(/etc /var /run /tmp /home /root searched): '
                            '%s' % ', '.join(leaks))
        # PID 1 got the token from the kernel as an environment variable
        # (DESIGN section 10); every other process must not hold it.
        holders = ['%s in pid %d (%s)' % (self.SECRET_NAMES[i], p['pid'],
                                          ' '.join(p['argv']))
                   for p in found['processes'] if p['pid'] != 1
                   for i in p['held']]
        if holders:
            problems.append('secrets in process command lines or '
                            'environments: %s' % ', '.join(holders))
        listeners = sorted({(s['port'], tuple(s['owners']))
                            for s in found['listening_tcp']})
        if not listeners or any(port != 22 or not set(owners) <= SSHD
                                for port, owners in listeners):
            problems.append('TCP listeners other than sshd on 22: %s' % (
                listeners,))
        open_udp = sorted({(s['port'], tuple(s['owners']))
                           for s in found['udp'] if s['remote_port'] == 0})
        if any(not set(owners) <= DHCP_CLIENTS for _, owners in open_udp):
            problems.append('UDP sockets other than DHCP clients: %s' % (
                open_udp,))
        to_broker = [s for s in found['established_tcp']
                     if s['remote_port'] == lab.BROKER_PORT]
        if to_broker:
            problems.append('still connected to the broker: %s' % (
                to_broker,))
        workers = [p for p in found['processes'] if is_worker(p['argv'])]
        if workers:
            problems.append('the worker still runs: %s' % workers)
        renewers = lease_holders(found['processes'],
                                 self.image.manifest['backend'])
        if not renewers:
            problems.append('no %s process holds the leases; running: %s'
                            % (self.image.manifest['backend'], sorted(
                                {p['comm'] for p in found['processes']})))
        addresses = lab.guest_ipv4(self.ssh, address)
        for mac, leased in self.rescue_addresses.items():
            if leased not in addresses:
                problems.append('the guest lost %s (%s) after the worker '
                                'exited: it has %s' % (leased, mac,
                                                       addresses))
        print('%s after lockdown: %d problem(s); TCP listening: %s; UDP '
              'bound: %s; lease holders: %s; /proc/cmdline keeps the '
              'token and broker credentials (DESIGN section 10, not '
              'searched)' % (
                  self.image.name, len(problems), listeners, open_udp,
                  [' '.join(p['argv'][:3]) for p in renewers]))
        return problems

    def flip(self, interval: int) -> float:
        """Move both NICs to the tenant network; wait for the tenant
        DHCP server to ack both, then log in on a tenant address.
        Returns the handover time (the flip to the last DHCPACK)."""
        tenant = self.network.dhcp[lab.TENANT_BRIDGE]
        flipped = time.monotonic()
        self.network.flip()
        for mac in self.vm.macs:
            left = flipped + HANDOVER_WATCH - time.monotonic()
            try:
                match = tenant.wait_for_match(tenant.acked(mac), left)
            except TimeoutError:
                raise AssertionError(
                    'no tenant lease for %s within %.0f s of the flip '
                    '(tenant_renew_interval %d s)' % (
                        mac, HANDOVER_WATCH, interval)) from None
            self.tenant_addresses[mac] = match.group(1)
        handover = time.monotonic() - flipped
        self.times['tenant_handover_s'] = handover
        for tap in lab.TAPS:
            assert self.network.tap_state(tap) != 'down', \
                '%s went down: the flip must not flap the link' % tap
        address = self.tenant_addresses[self.vm.macs[0]]
        self.login(address)
        addresses = lab.guest_ipv4(self.ssh, address)
        for mac, leased in self.tenant_addresses.items():
            assert leased in addresses, \
                'the tenant leased %s to %s, the guest has %s' % (
                    leased, mac, addresses)
        stale = [a for a in addresses
                 if self.network.in_subnet(lab.RESCUING_BRIDGE, a)]
        assert not stale, 'the guest still has its rescuing address(es) ' \
            '%s on the tenant network: %s' % (stale, addresses)
        return handover


def is_worker(argv: list[str]) -> bool:
    """Whether a process is the RPC worker (``rescue-worker``, run
    directly or by its venv's Python), not the keeper it execs into nor
    an init script of the same name."""
    names = [os.path.basename(a) for a in argv[:2]]
    if 'rescue_worker.cmd.keeper' in argv:
        return False
    if names[:1] == ['rescue-worker']:
        return True
    return len(names) == 2 and names[0].startswith('python') and \
        names[1] == 'rescue-worker'


def lease_holders(processes: list[dict], backend: str) -> list[dict]:
    """The processes that renew the leases for ``backend``."""
    if backend == 'networkd':
        return [p for p in processes if p['comm'] == 'systemd-network']
    return [p for p in processes
            if any(os.path.basename(a) == backend for a in p['argv'][:2])]
