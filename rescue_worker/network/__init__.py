"""Network configuration for the rescue: interfaces and DHCP backends.

- ``interfaces``: list the node's interfaces (netifaces and sysfs), the skip
  rules, bringing a link up, waiting for carrier, reading addresses back;
- ``base``: the ``DhcpBackend`` interface and ``load_backend`` (the entry
  point of the ``rescue_worker.dhcp_backends`` namespace that
  ``[rescue_worker] dhcp_backend`` names); the per-interface statuses a
  backend returns are the wire's, ``rescue_worker.payloads.DHCP_*``;
- ``dhclient``, ``udhcpc``, ``networkd``, ``noop``: the built-in backends
  (``udhcpc-script.sh``: the lease script of the ``udhcpc`` one), and
  ``dhcp_client``: what the two that run a client per interface share;
- ``ipv6``: router advertisements (SLAAC) and DHCPv6 beside the IPv4 lease,
  for the backends that run a client per interface;
- ``leases``: reading ISC dhclient lease files (IPv4 and IPv6);
- ``processes``: whether a program it started (a DHCP client's daemon)
  still runs.

The network step (``rescue_worker.steps.network``) uses all of it once; the
tenant network keeper that runs after lockdown uses a backend's ``renew``
and ``lease_server``.
"""
