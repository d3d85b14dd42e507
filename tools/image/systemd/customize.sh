#!/bin/sh
# mmdebstrap customize hook of the systemd image: $1 is its root.
# shellcheck source=tools/image/common.sh
. "$RW_TOOLS/common.sh"
root=$1
here=$RW_TOOLS/systemd

install_overlay "$root" "$here/rootfs"
install_worker "$root" "$here/rescue-worker.conf"
install -m 0644 "$RW_SRC/etc/systemd/rescue-worker.service" \
    "$root/etc/systemd/system/rescue-worker.service"
chroot "$root" systemctl enable -q rescue-worker.service \
    systemd-networkd.service systemd-networkd-wait-online.service ssh.service
# No session tracking is needed (sshd and sudo work without it), and
# nothing else a server image runs on a timer has a use for a ramdisk.
chroot "$root" systemctl mask -q systemd-logind.service \
    systemd-timesyncd.service e2scrub_all.timer e2scrub_reap.service \
    fstrim.timer 2>/dev/null || true
install_kernel "$root"
purge_build_tools "$root"
no_node_values "$root"
strip_root "$root"
