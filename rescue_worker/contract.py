"""The names both ends of the wire share: the RPC API version, the default
topic and control exchange, and the worker states of ``get_status``.

The conductor side (``client``, ``cmd.ctl``) and the worker side import
them from here, so neither has to import the other to agree on a name.
Payload fields and statuses live in ``payloads``, error codes in ``errors``.
"""

from __future__ import annotations

#: the version the endpoint serves and the client caps its casts at;
#: a new method or argument bumps the minor version
RPC_API_VERSION = '1.0'

#: ``[rescue_worker] topic`` unless configured otherwise
DEFAULT_TOPIC = 'rescue_worker'

#: the oslo.messaging control exchange (``set_transport_defaults``)
CONTROL_EXCHANGE = 'rescue_worker'

# Worker states, as ``get_status`` reports them.
WAITING = 'waiting'
RESCUING = 'rescuing'
RESCUED = 'rescued'
FAILED = 'failed'

STATES = (WAITING, RESCUING, RESCUED, FAILED)
