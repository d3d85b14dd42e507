"""The DHCP backend interface, and backend lookup.

A backend configures addresses on interfaces that are up with a carrier.
The network step calls ``configure`` once per group of interfaces whose
carrier came up together (groups may run concurrently, never with the same
interface twice); the tenant network keeper that runs after lockdown calls
``lease_server`` and ``renew`` per interface.

Backends are plug-ins, as steps are: ``[rescue_worker] dhcp_backend``
names an entry point in the ``rescue_worker.dhcp_backends`` namespace
(rescue-worker's own setup.cfg registers ``dhclient``, ``networkd``,
``udhcpc`` and ``none``), and ``load_backend`` builds it when the worker
starts, so that a name that is not installed stops the worker at once
rather than fail the first rescue. To add a backend: subclass
``DhcpBackend`` (``configure`` at least; ``from_conf`` when it needs
settings), and register the class under that namespace in the package
that ships it, for instance in its setup.cfg::

    [options.entry_points]
    rescue_worker.dhcp_backends =
        mine = my_package.dhcp:MyBackend

then set ``dhcp_backend = mine``; nothing in rescue-worker changes. A
backend that runs a DHCP client program per interface gets the parallel
leases, IPv6 (router advertisements, DHCPv6) and the operator's hints
from ``rescue_worker.network.dhcp_client.DhcpClientBackend``. Whatever
program a backend runs gets ``rescue_worker.network.processes.
child_environment()`` (``start_logged`` gives it), never the worker's own
environment, which may hold the broker credentials.
"""

from __future__ import annotations

import abc
import importlib.metadata
from collections.abc import Sequence

from oslo_config import cfg
from stevedore import driver as stevedore_driver
from stevedore import exception as stevedore_exception

from rescue_worker import errors
from rescue_worker import payloads

BACKEND_NAMESPACE = 'rescue_worker.dhcp_backends'

#: seconds a renewal waits for the server of the current lease before it
#: looks for a DHCP server anew (DISCOVER): on the same network the answer
#: takes milliseconds; after the tenant network flip nobody answers, and a
#: tenant server must be found within ``tenant_renew_interval`` + 2 s
RENEW_ANSWER_WAIT = 1.0


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
        down; return the status as ``configure`` does.

        The server of the current lease gets ``RENEW_ANSWER_WAIT``
        seconds; when it answers, the address stays as it is (a tenant
        may be logged in over it). When it does not (the port moved to
        another network), the backend looks for a server anew (DISCOVER)
        at once, so that the new network's server answers within about
        ``RENEW_ANSWER_WAIT`` + 1 s; ``timeout`` bounds the whole."""
        return payloads.DHCP_SKIPPED

    def lease_server(self, interface: str) -> str | None:
        """The address of the DHCP server whose lease ``interface`` holds,
        or None when it holds none (or the backend cannot tell)."""
        return None

    def stop(self, interface: str) -> None:  # noqa: B027
        """Stop maintaining ``interface`` (its address stays as it is)."""

    def release(self, interface: str, timeout: float) -> None:  # noqa: B027
        """Give the lease of ``interface`` back and remove its address."""


def load_backend(conf: cfg.ConfigOpts) -> DhcpBackend:
    """The backend named by ``[rescue_worker] dhcp_backend``, built from
    the configuration.

    :raises errors.ConfigurationError: no backend of that name is
        installed, it does not load, or it refuses the configuration; the
        message says what to fix.
    """
    name = conf.rescue_worker.dhcp_backend
    backend_class = _backend_class(name)
    try:
        return backend_class.from_conf(conf)
    except BackendError as exc:
        raise errors.ConfigurationError(
            '[rescue_worker] dhcp_backend = %s cannot be used as configured: '
            '%s' % (name, exc)) from exc
    except Exception as exc:
        raise errors.ConfigurationError(
            'DHCP backend %r of [rescue_worker] dhcp_backend failed to start '
            '(%s: %s); check the installation of the package that provides '
            'it.' % (name, type(exc).__name__, exc)) from exc


#: the name it had before backends were plug-ins (rescue_worker.cmd.keeper
#: and tests/e2e still call it)
get_backend = load_backend


def installed_backends() -> list[str]:
    """The names ``dhcp_backend`` may take here, sorted."""
    return sorted({entry_point.name for entry_point in
                   importlib.metadata.entry_points(group=BACKEND_NAMESPACE)})


def _backend_class(name: str) -> type[DhcpBackend]:
    try:
        manager = stevedore_driver.DriverManager(BACKEND_NAMESPACE, name)
    except stevedore_exception.NoMatches:
        raise errors.ConfigurationError(
            'Unknown DHCP backend %r in [rescue_worker] dhcp_backend: no '
            'entry point of that name in namespace %s. Use one of the '
            'installed backends (%s), or install the package that provides '
            'it.' % (name, BACKEND_NAMESPACE,
                     ', '.join(installed_backends()) or 'none installed')
        ) from None
    except Exception as exc:
        raise errors.ConfigurationError(
            'DHCP backend %r of [rescue_worker] dhcp_backend failed to load '
            '(%s: %s); check the installation of the package that provides '
            'it.' % (name, type(exc).__name__, exc)) from exc
    backend_class = manager.driver
    if not (isinstance(backend_class, type) and
            issubclass(backend_class, DhcpBackend)):
        raise errors.ConfigurationError(
            'DHCP backend %r of [rescue_worker] dhcp_backend is %r, not a '
            'subclass of rescue_worker.network.base.DhcpBackend; check the '
            'entry point in namespace %s of the package that provides it.'
            % (name, backend_class, BACKEND_NAMESPACE))
    return backend_class


def format_seconds(value: float) -> str:
    """'30' for 30.0, '2.5' for 2.5: seconds as an operator reads them."""
    return ('%d' % value) if float(value).is_integer() else ('%.1f' % value)
