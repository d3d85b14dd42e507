"""Network configuration for the rescue: interfaces and DHCP backends.

- ``interfaces``: list the node's interfaces (netifaces and sysfs), the skip
  rules, bringing a link up, waiting for carrier, reading addresses back;
- ``base``: the ``DhcpBackend`` interface, the per-interface statuses of the
  wire contract, and ``get_backend`` (chosen by ``[rescue_worker]
  dhcp_backend``);
- ``dhclient``, ``networkd``, ``noop``: the backends;
- ``leases``: reading ISC dhclient lease files.

The network step (``rescue_worker.steps.network``) uses all of it once; the
tenant network keeper that runs after lockdown uses a backend's ``renew``
and ``lease_server``.
"""
