#!/bin/sh
# The root diskimage-builder made (debian-minimal + elements/rescue-worker,
# as a tarball, unpacked) made fit to be a whole-root initramfs, as
# ironic-python-agent-builder's ramdisk element does: its own kernel out
# to $RW_OUT, only the NIC modules kept, no fstab, /init, stripped.
# shellcheck source=tools/image/common.sh
. "$RW_TOOLS/common.sh"
root=$1

version=$(ls "$root/lib/modules" | head -n 1)
[ -e "$root/boot/vmlinuz-$version" ] || { say "no kernel in $root/boot"; exit 1; }
install -m 0644 "$root/boot/vmlinuz-$version" "$RW_OUT/vmlinuz"
printf '%s\n' "$version" >"$RW_OUT/kernel-version"
# The kernel is outside, and the initramfs-tools initrd is not booted.
rm -rf "${root:?}"/boot/*
prune_modules "$root" "$version"
# The root is the initramfs: nothing to mount (systemd would wait for the
# disk DIB's fstab names).
echo '# none: the root is the initramfs' >"$root/etc/fstab"
# The same first program as the systemd image: drops rescue_worker_token
# from the environment before systemd starts.
install -m 0755 "$RW_TOOLS/systemd/rootfs/init" "$root/init"
[ -e "$root/dev/console" ] || mknod -m 600 "$root/dev/console" c 5 1
[ -e "$root/dev/null" ] || mknod -m 666 "$root/dev/null" c 1 3
# locale-gen's sources (the generated locale stays).
rm -rf "$root/usr/share/i18n"
no_node_values "$root"
strip_root "$root"
