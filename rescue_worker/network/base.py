"""The DHCP backend interface, and backend lookup.

A backend configures addresses on interfaces that are up with a carrier.
The network step calls ``configure`` once per group of interfaces whose
carrier came up together (groups may run concurrently, never with the same
interface twice); the tenant network keeper that runs after lockdown calls
``lease_server`` and ``renew`` per interface.

To add a backend: subclass ``DhcpBackend``, add its name to
``rescue_worker.conf.DHCP_BACKENDS`` (the option's choices) and to
``BACKENDS`` here. A backend that runs a DHCP client per interface gets
IPv6 (router advertisements, DHCPv6) from ``rescue_worker.network.ipv6``.
"""

from __future__ import annotations

import abc
import importlib
from collections.abc import Sequence

from oslo_config import cfg

from rescue_worker import payloads

# The wire's statuses live in rescue_worker.payloads; the tenant network
# keeper (rescue_worker.service) still reads this name.
LEASED = payloads.DHCP_LEASED

#: name (``[rescue_worker] dhcp_backend``) -> "module:class"
BACKENDS = {
    'dhclient': 'rescue_worker.network.dhclient:DhclientBackend',
    'networkd': 'rescue_worker.network.networkd:NetworkdBackend',
    'none': 'rescue_worker.network.noop:NoopBackend',
    'udhcpc': 'rescue_worker.network.udhcpc:UdhcpcBackend',
}


class BackendError(Exception):
    """The backend cannot work at all here (say, its program is missing);
    the message says what to install or fix."""


class DhcpBackend(abc.ABC):
    """How addresses get onto interfaces."""

    #: the ``dhcp_backend`` value that selects it
    name: str = ''

    #: a passive backend only reports: the step neither brings links up nor
    #: waits for carrier, and never fails
    passive: bool = False

    @classmethod
    def from_conf(cls, conf: cfg.ConfigOpts) -> DhcpBackend:
        """The backend as configured in ``[rescue_worker]``."""
        return cls()

    @abc.abstractmethod
    def configure(self, interfaces: Sequence[str],
                  timeout: float) -> dict[str, str]:
        """Configure ``interfaces`` (up, with carrier), in parallel, within
        about ``timeout`` seconds; return each one's status (a
        ``payloads.DHCP_*``: leased, configured, failed, or skipped for a
        passive backend).

        :raises BackendError: nothing can be configured with this backend.
        """

    def failure_hint(self, interfaces: Sequence[str], timeout: float) -> str:
        """Operator-facing text for ``interfaces`` that ended ``FAILED``:
        what happened and what to check."""
        return 'could not configure %s within %s s' % (
            ', '.join(interfaces), format_seconds(timeout))

    def renew(self, interface: str, timeout: float) -> str:
        """Ask again for an address on ``interface`` now, from whichever
        server answers on its network today, without taking the link
        down; return the status as ``configure`` does."""
        return payloads.DHCP_SKIPPED

    def lease_server(self, interface: str) -> str | None:
        """The address of the DHCP server whose lease ``interface`` holds,
        or None when it holds none (or the backend cannot tell)."""
        return None

    def stop(self, interface: str) -> None:  # noqa: B027
        """Stop maintaining ``interface`` (its address stays as it is)."""

    def release(self, interface: str, timeout: float) -> None:  # noqa: B027
        """Give the lease of ``interface`` back and remove its address."""


def get_backend(conf: cfg.ConfigOpts) -> DhcpBackend:
    """The backend named by ``[rescue_worker] dhcp_backend``."""
    return backend_class(conf.rescue_worker.dhcp_backend).from_conf(conf)


def backend_class(name: str) -> type[DhcpBackend]:
    try:
        target = BACKENDS[name]
    except KeyError:
        raise ValueError('unknown DHCP backend %r; use one of %s' % (
            name, ', '.join(BACKENDS))) from None
    module_name, _, class_name = target.partition(':')
    return getattr(importlib.import_module(module_name), class_name)


def format_seconds(value: float) -> str:
    """'30' for 30.0, '2.5' for 2.5: seconds as an operator reads them."""
    return ('%d' % value) if float(value).is_integer() else ('%.1f' % value)
