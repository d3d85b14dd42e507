"""The network step: DHCP on every interface the tenant may log in through.

1. List the interfaces (netifaces) and leave out those the configuration
   skips: names matching ``skip_interfaces`` (default ``lo``) and, with
   ``skip_generated_mac``, those whose MAC is not permanent (sysfs
   ``addr_assign_type`` != 0, as ironic images do). They are not reported;
   the detail names them.
2. Bring each remaining link up and wait for its carrier. Each interface is
   handed to the backend as soon as its carrier is there, so a cabled NIC
   never waits for an uncabled one. The wait is bounded by
   ``CARRIER_TIMEOUT`` (10 s, what diskimage-builder's dhcp-all-interfaces
   allows a NIC to negotiate its link), and never by more than
   ``dhcp_timeout``. An interface still without carrier is ``no_carrier``:
   a status, not a failure.
3. The backend of ``dhcp_backend`` (an entry point of the
   ``rescue_worker.dhcp_backends`` namespace, built with the step when the
   worker starts) configures them (``dhclient``, ``udhcpc``: a lease now,
   interfaces in parallel, each bounded by ``dhcp_timeout``, and with
   ``ipv6`` router advertisements and DHCPv6 beside it; ``networkd``:
   persistent configuration and a reload).
4. Read the addresses back (IPv4, and global IPv6) and report every
   interface in ``state.interfaces`` as a ``payloads.InterfaceReport``
   (on the wire ``{"name", "mac", "dhcp", "ipv4", "ipv6"}``), ``dhcp``
   being one of ``leased``, ``configured``, ``no_carrier``, ``skipped``,
   ``failed``. An interface with an IPv6 address only (DHCPv6 or SLAAC)
   is ``leased`` too.

The step fails (``network_failed``) only when no interface got a lease or
a configuration; the message lists each interface with what happened and
what to check, and ``state.interfaces`` is filled all the same. With
``dhcp_backend = none`` it touches nothing, reports the interfaces as
``skipped`` and never fails.

Worst case duration: about ``dhcp_timeout`` (plus a few seconds of
dhclient's own), or the carrier bound plus that when a carrier comes late.
IPv6 adds no more than that: on a network without IPv6 router an interface
waits about 3 s for an advertisement beside its IPv4 lease, and on an
IPv6-only network DHCPv4 is given up 5 s after the start.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from collections.abc import Sequence
from concurrent import futures

import netifaces
from oslo_config import cfg

from rescue_worker import errors
from rescue_worker import payloads
from rescue_worker import pipeline
from rescue_worker.network import base
from rescue_worker.network import interfaces as net_interfaces

LOG = logging.getLogger(__name__)

#: longest wait for a carrier, in seconds (capped by ``dhcp_timeout``)
CARRIER_TIMEOUT = 10.0

_OPTION_TEXT = {
    net_interfaces.SKIPPED_BY_PATTERN: 'skip_interfaces',
    net_interfaces.SKIPPED_GENERATED_MAC:
        'skip_generated_mac: MAC not permanent',
}


class NetworkStep(pipeline.Step):
    """Bring up DHCP on every interface and report what each one got."""

    name = 'network'

    def __init__(self, conf: cfg.ConfigOpts,
                 netifaces_module=netifaces,
                 sysfs: str = net_interfaces.SYSFS_NET,
                 backend: base.DhcpBackend | None = None,
                 link_up: Callable[[str], None] = net_interfaces.set_link_up,
                 poll_interval: float =
                 net_interfaces.CARRIER_POLL_INTERVAL) -> None:
        super().__init__(conf)
        self.netifaces = netifaces_module
        self.sysfs = sysfs
        # Built now, when the worker starts: a dhcp_backend that is not
        # installed or refuses its settings stops the worker at once
        # (ConfigurationError) instead of failing the first rescue.
        self.backend = (backend if backend is not None
                        else base.load_backend(conf))
        self.link_up = link_up
        self.poll_interval = poll_interval

    def run(self, request: pipeline.RescueRequest,
            state: pipeline.RescueState) -> str:
        opts = self.conf.rescue_worker
        timeout = float(opts.dhcp_timeout)
        carrier_timeout = min(CARRIER_TIMEOUT, timeout)
        listed = net_interfaces.list_interfaces(self.netifaces, self.sysfs)
        candidates, skipped = _select(listed, opts.skip_interfaces,
                                      opts.skip_generated_mac)
        names = [interface.name for interface in candidates]
        if self.backend.passive:
            result = _ConfigureResult(
                statuses=dict(self.backend.configure(names, timeout)))
        else:
            result = self._configure(names, timeout, carrier_timeout)

        state.interfaces = [self._report(interface,
                                         result.statuses[interface.name])
                            for interface in candidates]
        if not self.backend.passive and not result.succeeded:
            raise errors.RescueError(errors.NETWORK_FAILED, _failure_message(
                self.backend, listed, skipped, result, timeout,
                carrier_timeout))
        return _detail(self.backend, state.interfaces, skipped)

    def _configure(self, names: Sequence[str], timeout: float,
                   carrier_timeout: float) -> _ConfigureResult:
        """Bring the links up and hand each group of interfaces whose
        carrier came to the backend at once, the groups in parallel."""
        result = _ConfigureResult()
        up = self._bring_up(names, result)
        if not up:
            return result
        with futures.ThreadPoolExecutor(
                max_workers=len(up),
                thread_name_prefix='network-step') as pool:
            jobs = [(ready, pool.submit(self.backend.configure, ready,
                                        timeout))
                    for ready in net_interfaces.watch_carrier(
                        up, carrier_timeout, self.sysfs,
                        self.poll_interval)]
            for ready, job in jobs:
                self._collect(ready, job, result)
        for name in up:
            result.statuses.setdefault(name, payloads.DHCP_NO_CARRIER)
        return result

    def _bring_up(self, names: Sequence[str],
                  result: _ConfigureResult) -> list[str]:
        """The interfaces whose link is up now; the others are failed."""
        up = []
        for name in names:
            try:
                self.link_up(name)
            except net_interfaces.LinkError as exc:
                LOG.warning('Could not bring up %s: %s', name, exc)
                result.statuses[name] = payloads.DHCP_FAILED
                result.link_errors[name] = str(exc)
            else:
                up.append(name)
        return up

    def _collect(self, ready: list[str], job: futures.Future,
                 result: _ConfigureResult) -> None:
        """The statuses of one group, or why the backend could not try."""
        try:
            result.statuses.update(job.result())
            return
        except base.BackendError as exc:
            result.backend_error = str(exc)
        except Exception:
            LOG.exception('The %s backend failed unexpectedly on %s',
                          self.backend.name, ', '.join(ready))
            # A BackendError's message says more: it is kept.
            result.backend_error = result.backend_error or (
                'the %s backend failed unexpectedly; the worker log on the '
                'node has the traceback' % self.backend.name)
        result.statuses.update(dict.fromkeys(ready, payloads.DHCP_FAILED))
        result.backend_failed.update(ready)

    def _report(self, interface: net_interfaces.Interface,
                status: str) -> payloads.InterfaceReport:
        ipv4, ipv6 = net_interfaces.addresses(interface.name, self.netifaces)
        LOG.info('Interface %s (%s): %s, IPv4 %s, IPv6 %s', interface.name,
                 interface.mac or 'no MAC', status, ', '.join(ipv4) or 'none',
                 ', '.join(ipv6) or 'none')
        return payloads.InterfaceReport(name=interface.name,
                                        mac=interface.mac, dhcp=status,
                                        ipv4=ipv4, ipv6=ipv6)


@dataclasses.dataclass
class _ConfigureResult:
    """What configuring the interfaces came to, for the report."""

    statuses: dict[str, str] = dataclasses.field(default_factory=dict)
    #: interface -> why its link could not be brought up
    link_errors: dict[str, str] = dataclasses.field(default_factory=dict)
    #: interfaces the backend could not even try (``backend_error``)
    backend_failed: set[str] = dataclasses.field(default_factory=set)
    backend_error: str | None = None

    @property
    def succeeded(self) -> bool:
        """Whether any interface got a lease or a configuration."""
        return any(status in payloads.DHCP_SUCCESSFUL
                   for status in self.statuses.values())

    def got_nothing(self, names: Sequence[str]) -> list[str]:
        """Of ``names``, those the backend tried and got nothing for."""
        return [name for name in names
                if self.statuses.get(name) == payloads.DHCP_FAILED
                and name not in self.link_errors
                and name not in self.backend_failed]

    def without_carrier(self, names: Sequence[str]) -> list[str]:
        return [name for name in names
                if self.statuses.get(name) == payloads.DHCP_NO_CARRIER]


def _select(listed: Sequence[net_interfaces.Interface],
            patterns: Sequence[str], skip_generated_mac: bool
            ) -> tuple[list[net_interfaces.Interface], dict[str, str]]:
    """The interfaces to configure, and the others: name -> why skipped."""
    candidates = []
    skipped: dict[str, str] = {}
    for interface in listed:
        reason = net_interfaces.skip_reason(interface, patterns,
                                            skip_generated_mac)
        if reason is None:
            candidates.append(interface)
        else:
            skipped[interface.name] = reason
    return candidates, skipped


def _skipped_text(skipped: dict[str, str]) -> str:
    groups: dict[str, list[str]] = {}
    for name, reason in skipped.items():
        groups.setdefault(reason, []).append(name)
    return '; '.join('%s (%s)' % (', '.join(names), _OPTION_TEXT[reason])
                     for reason, names in groups.items())


def _detail(backend: base.DhcpBackend,
            entries: Sequence[payloads.InterfaceReport],
            skipped: dict[str, str]) -> str:
    if backend.passive:
        text = 'dhcp_backend = %s: reported %s without configuring' % (
            backend.name,
            ', '.join(entry.name for entry in entries) or
            'no interface')
    else:
        text = ', '.join('%s %s' % (entry.name, entry.dhcp)
                         for entry in entries)
    if skipped:
        text += '; %d skipped by configuration: %s' % (
            len(skipped), _skipped_text(skipped))
    return text


def _failure_message(backend: base.DhcpBackend,
                     listed: Sequence[net_interfaces.Interface],
                     skipped: dict[str, str], result: _ConfigureResult,
                     timeout: float, carrier_timeout: float) -> str:
    if not listed:
        return ('no network interface found on the node; check that the '
                "rescue image has the drivers for the node's NICs")
    if len(skipped) == len(listed):
        return ('no network interface to configure: all were skipped by '
                'configuration: %s; adjust [rescue_worker] skip_interfaces '
                'or skip_generated_mac' % _skipped_text(skipped))
    # In the order the interfaces were listed.
    statuses = {interface.name: result.statuses[interface.name]
                for interface in listed
                if interface.name in result.statuses}
    parts = _what_to_check(backend, list(statuses), result, timeout,
                           carrier_timeout)
    if skipped:
        parts.append('skipped by configuration: %s' % _skipped_text(skipped))
    summary = ', '.join('%s %s' % (name, status)
                        for name, status in statuses.items())
    return 'no interface got a DHCP lease or configuration (%s): %s' % (
        summary, '; '.join(parts))


def _what_to_check(backend: base.DhcpBackend, names: Sequence[str],
                   result: _ConfigureResult, timeout: float,
                   carrier_timeout: float) -> list[str]:
    """What happened to the interfaces ``names`` (in that order), and what
    to check: the backend's error, its hint for those that got nothing,
    the links that did not come up, the carriers that did not."""
    parts = [result.backend_error] if result.backend_error else []
    failed = result.got_nothing(names)
    if failed:
        parts.append(backend.failure_hint(failed, timeout))
    parts.extend('could not bring up %s (%s)' % item
                 for item in result.link_errors.items())
    no_carrier = result.without_carrier(names)
    if no_carrier:
        parts.append('no carrier on %s within %s s; check the cabling and '
                     'that the switch ports are enabled' % (
                         ', '.join(no_carrier),
                         base.format_seconds(carrier_timeout)))
    return parts
