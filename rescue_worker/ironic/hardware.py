"""Hardware types that accept the ``rescue-worker`` rescue interface.

Ironic lets a node use only the rescue interfaces its hardware type lists,
so an out-of-tree interface needs these subclasses of the real types:
everything else about them is unchanged.
"""

from __future__ import annotations

from ironic.drivers import generic
from ironic.drivers import ipmi
from ironic.drivers import redfish

from rescue_worker.ironic import rescue


class _RescueWorkerMixin:

    @property
    def supported_rescue_interfaces(self) -> list:
        return [rescue.RescueWorkerRescue] + list(
            super().supported_rescue_interfaces)


class IPMIRescueWorkerHardware(_RescueWorkerMixin, ipmi.IPMIHardware):
    """``ipmi`` with the ``rescue-worker`` rescue interface."""


class RedfishRescueWorkerHardware(_RescueWorkerMixin,
                                  redfish.RedfishHardware):
    """``redfish`` with the ``rescue-worker`` rescue interface."""


class ManualManagementRescueWorkerHardware(
        _RescueWorkerMixin, generic.ManualManagementHardware):
    """``manual-management`` with the ``rescue-worker`` rescue interface."""
