# The rescue-worker element's settings (README.rst).

# What pip installs: a path to a checkout or an sdist/wheel of
# rescue-worker on the build host (copied into the image), or a pip
# requirement ("rescue-worker==0.1.0") fetched from the package index.
export DIB_RESCUE_WORKER_SOURCE=${DIB_RESCUE_WORKER_SOURCE:-rescue-worker}
# The project's etc/ directory (systemd/rescue-worker.service,
# init.d/rescue-worker); by default the checkout's, when
# DIB_RESCUE_WORKER_SOURCE is one.
export DIB_RESCUE_WORKER_ETC=${DIB_RESCUE_WORKER_ETC:-}
# A pip constraints file on the build host (optional); a checkout's own
# constraints.txt is used when this is unset.
export DIB_RESCUE_WORKER_CONSTRAINTS=${DIB_RESCUE_WORKER_CONSTRAINTS:-}
# A CA bundle on the build host that pip in the image trusts (a proxy's
# CA); used for the build only, not left in the image.
export DIB_RESCUE_WORKER_PIP_CERT=${DIB_RESCUE_WORKER_PIP_CERT:-}
export DIB_RESCUE_WORKER_VENV=${DIB_RESCUE_WORKER_VENV:-/opt/rescue-worker}
# [rescue_worker] dhcp_backend: networkd, dhclient or udhcpc.
export DIB_RESCUE_WORKER_DHCP_BACKEND=${DIB_RESCUE_WORKER_DHCP_BACKEND:-networkd}
# 1: systemd-networkd does DHCP on every Ethernet interface at boot (so
# that the worker reaches the broker) and network-online.target waits for
# one interface only. 0: the image brings its own boot-time network.
export DIB_RESCUE_WORKER_BOOT_DHCP=${DIB_RESCUE_WORKER_BOOT_DHCP:-1}
# 1: after the build-only packages are removed, apt-get autoremove
# removes what only they needed (the compiler's own packages). 0: keep.
export DIB_RESCUE_WORKER_AUTOREMOVE=${DIB_RESCUE_WORKER_AUTOREMOVE:-1}
