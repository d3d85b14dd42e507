"""The ``none`` backend: configure nothing, only report the interfaces.

That is how the demo, the benchmark and sandboxed tests run: the network
step lists the interfaces (``skipped``) with the addresses they already
have, touches no link and never fails.
"""

from __future__ import annotations

from collections.abc import Sequence

from rescue_worker import payloads
from rescue_worker.network import base


class NoopBackend(base.DhcpBackend):
    name = 'none'
    passive = True

    def configure(self, interfaces: Sequence[str],
                  timeout: float) -> dict[str, str]:
        return dict.fromkeys(interfaces, payloads.DHCP_SKIPPED)
