#!/bin/sh
# mmdebstrap customize hook of the busybox image: $1 is its root.
# shellcheck source=tools/image/common.sh
. "$RW_TOOLS/common.sh"
root=$1
here=$RW_TOOLS/busybox

install_overlay "$root" "$here/rootfs"
install_worker "$root" "$here/rescue-worker.conf"
install -m 0755 "$RW_SRC/etc/init.d/rescue-worker" \
    "$root/etc/init.d/rescue-worker"
# The worker's lease script serves the boot-time DHCP of rcS as well.
install -D -m 0755 "$RW_SRC/rescue_worker/network/udhcpc-script.sh" \
    "$root/usr/local/share/rescue-image/udhcpc-script"
# busybox is PID 1; the essential set has no init, reboot or poweroff.
for applet in init reboot poweroff halt; do
    ln -sf /bin/busybox "$root/sbin/$applet"
done
install_kernel "$root"
purge_build_tools "$root"
no_node_values "$root"
strip_root "$root"
# Nothing of systemd may run here; libsystemd0 stays, a library that
# openssh-server and others link.
if [ -e "$root/lib/systemd/systemd" ]; then
    say "systemd is installed in the busybox image"
    exit 1
fi
