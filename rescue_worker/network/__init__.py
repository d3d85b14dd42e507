"""Network configuration for the rescue: interfaces and DHCP backends.

- ``interfaces``: list the node's interfaces (netifaces and sysfs), the skip
  rules, bringing a link up, waiting for carrier, reading addresses back;
- ``base``: the ``DhcpBackend`` interface, the per-interface statuses of the
  wire contract, and ``get_backend`` (chosen by ``[rescue_worker]
  dhcp_backend``);
- ``dhclient``, ``udhcpc``, ``networkd``, ``noop``: the backends
  (``udhcpc-script.sh``: the lease script of the ``udhcpc`` one);
- ``ipv6``: router advertisements (SLAAC) and DHCPv6 beside the IPv4 lease,
  for the backends that run a client per interface;
- ``leases``: reading ISC dhclient lease files (IPv4 and IPv6).

The network step (``rescue_worker.steps.network``) uses all of it once; the
tenant network keeper that runs after lockdown uses a backend's ``renew``
and ``lease_server``.
"""
