# shellcheck shell=sh
# What the images' customize hooks share (sourced, POSIX sh).
#
# mmdebstrap runs a customize hook on the host, after the packages are
# installed, with the image's root directory as $1; "chroot" runs a command
# inside it (mmdebstrap has /proc, /sys and /dev mounted there until the
# hook returns). There is no apt inside (the "essential" variant):
# APT_CONFIG=$MMDEBSTRAP_APT_CONFIG lets the host's apt read that root's
# package lists and state (apt-cache, apt-get download, apt-get -s), and
# nothing more: an apt-get that installs or removes with it runs the HOST's
# dpkg on a plan made for the root. Packages are removed with dpkg inside
# the root (purge_build_tools). build.py exports:
#
#   RW_TOOLS   tools/image
#   RW_SRC     a copy of the checkout (the files git knows of), in the work
#              directory
#   RW_OUT     the image's output directory (the kernel goes there)
#   RW_MODULES the kernel modules the image loads (their dependencies come
#              along)

set -eu

VENV=/opt/rescue-worker
KERNEL_PACKAGE=linux-image-cloud-amd64

say() {
    printf '%s\n' "image: $*" >&2
}

# install_overlay ROOT DIR: copy the image's own files over the root.
install_overlay() {
    cp -a "$2/." "$1/"
}

# install_worker ROOT CONFIG: the worker from the checkout in a venv of the
# guest's own Python (netifaces builds from source, so the interpreter that
# compiles it must be the one that runs it), its program where the unit and
# the init script look for it, and its configuration.
install_worker() {
    root=$1
    src=/tmp/rescue-worker-src
    rm -rf "${root:?}$src"
    cp -a "$RW_SRC" "$root$src"
    chroot "$root" python3 -m venv "$VENV"
    # pip inside trusts what the host trusts (a proxy's CA among it): the
    # host's bundle, for the build only. The host's other pip settings
    # (find-links, ...) name host paths: a clean environment.
    ca=${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}
    cert=
    if [ -r "$ca" ]; then
        cp "$ca" "$root/tmp/host-ca.crt"
        cert=/tmp/host-ca.crt
    fi
    chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
        LANG=C.UTF-8 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
        PIP_DEFAULT_TIMEOUT=60 ${cert:+PIP_CERT=$cert} \
        ${http_proxy:+http_proxy=$http_proxy} \
        ${https_proxy:+https_proxy=$https_proxy} \
        ${no_proxy:+no_proxy=$no_proxy} \
        "$VENV/bin/pip" install -q -c "$src/constraints.txt" "$src"
    rm -rf "${root:?}$src" "$root/tmp/host-ca.crt"
    ln -sf "$VENV/bin/rescue-worker" "$root/usr/local/bin/rescue-worker"
    install -D -m 0644 "$2" "$root/etc/rescue-worker/rescue-worker.conf"
    # What the worker needs at run time is there: its program imports.
    chroot "$root" /usr/local/bin/rescue-worker --version >/dev/null
}

# install_kernel ROOT: the cloud kernel into $RW_OUT/vmlinuz and only the
# modules of $RW_MODULES (with their dependencies) into the root. The
# package itself is not installed: it would pull initramfs-tools and build
# an initramfs of its own, and bring 100 MB of modules.
install_kernel() {
    root=$1
    package=$(APT_CONFIG=$MMDEBSTRAP_APT_CONFIG apt-cache depends \
        "$KERNEL_PACKAGE" | sed -n 's/^ *Depends: \(linux-image-.*\)$/\1/p' |
        head -n 1)
    [ -n "$package" ] || { say "no kernel behind $KERNEL_PACKAGE"; return 1; }
    dir=$(mktemp -d "$root/tmp/kernel.XXXXXX")
    # apt-get download writes to the current directory; as root it warns
    # that _apt cannot write there, which is harmless.
    (cd "$dir" && APT_CONFIG=$MMDEBSTRAP_APT_CONFIG apt-get download -q \
        "$package" 2>&1 | grep -v -e 'unsandboxed' >&2 || true)
    dpkg-deb -x "$dir"/*.deb "$dir/x"
    version=$(ls "$dir/x/lib/modules")
    install -m 0644 "$dir/x/boot/vmlinuz-$version" "$RW_OUT/vmlinuz"
    mkdir -p "$root/lib/modules"
    rm -rf "${root:?}/lib/modules/$version"
    mv "$dir/x/lib/modules/$version" "$root/lib/modules/$version"
    rm -rf "$dir"
    printf '%s\n' "$version" >"$RW_OUT/kernel-version"
    prune_modules "$root" "$version"
}

# prune_modules ROOT VERSION: only the modules of $RW_MODULES and what they
# depend on, listed in modules-load.d so that they load at boot.
prune_modules() {
    root=$1
    version=$2
    chroot "$root" depmod "$version"
    # shellcheck disable=SC2086
    chroot "$root" modprobe -a -S "$version" --show-depends $RW_MODULES |
        awk '$1 == "insmod" { print $2 }' | sort -u >"$root/tmp/keep"
    [ -s "$root/tmp/keep" ] || { say "none of $RW_MODULES found"; return 1; }
    find "$root/lib/modules/$version/kernel" -type f | sed "s|^$root||" |
        sort | comm -23 - "$root/tmp/keep" | sed "s|^|$root|" |
        xargs rm -f
    find "$root/lib/modules/$version/kernel" -type d -empty -delete
    rm -f "$root/tmp/keep"
    chroot "$root" depmod "$version"
    # Loaded at boot by name (systemd-modules-load, the busybox image's
    # rcS): no dependence on udev's coldplug to find the NICs.
    mkdir -p "$root/etc/modules-load.d"
    {
        echo "# The rescue image's drivers (tools/image/build.py MODULES)."
        # shellcheck disable=SC2086
        printf '%s\n' $RW_MODULES
    } >"$root/etc/modules-load.d/rescue-image.conf"
}

# purge_build_tools ROOT: the compiler and headers only built netifaces.
# apt on the host only works out what goes (-s: it runs nothing); dpkg
# inside the root removes it. Never let the host's apt-get act: with
# mmdebstrap's configuration it reads the root's package state but runs
# the host's dpkg.
purge_build_tools() {
    root=$1
    # What only a Recommends keeps (binutils, the wheels venv copies)
    # goes too.
    packages=$(APT_CONFIG=$MMDEBSTRAP_APT_CONFIG apt-get -s -q \
        -o APT::Install-Recommends=false \
        -o APT::AutoRemove::RecommendsImportant=false \
        -o APT::AutoRemove::SuggestsImportant=false purge --autoremove \
        gcc libc6-dev python3-dev python3-venv python3.11-venv \
        python3-pip-whl python3-setuptools-whl |
        sed -n 's/^Purg \([^ ]*\) .*$/\1/p')
    [ -n "$packages" ] || { say "nothing to purge?"; return 1; }
    # shellcheck disable=SC2086
    chroot "$root" dpkg --purge $packages >/dev/null
}

# no_node_values ROOT: nothing in the image may be one node's or one
# build's: SSH host keys are made at boot, the machine id too.
no_node_values() {
    root=$1
    rm -f "$root"/etc/ssh/ssh_host_*
    : >"$root/etc/machine-id"
    rm -f "$root/var/lib/dbus/machine-id" "$root/var/lib/systemd/random-seed"
    printf 'rescue\n' >"$root/etc/hostname"
    # sudo looks its host name up: without this line each call waits for
    # DNS and says it cannot resolve it.
    printf '127.0.0.1\tlocalhost\n127.0.1.1\trescue\n::1\tlocalhost ip6-localhost ip6-loopback\n' \
        >"$root/etc/hosts"
    : >"$root/etc/resolv.conf"
    # No root password: "*" cannot be matched by any password (root is
    # reached through the rescue account's sudo).
    chroot "$root" usermod -p '*' root
}

# strip_root ROOT: what a ramdisk that runs the worker, sshd and sudo never
# reads; RAM holds all of the image, so every megabyte counts.
strip_root() {
    root=$1
    python=$(basename "$(readlink -f "$root/usr/bin/python3")")
    site=$(echo "$root$VENV"/lib/python3*/site-packages)
    rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man \
        "$root"/usr/share/info "$root"/usr/share/locale/* \
        "$root"/usr/share/lintian "$root"/usr/share/bash-completion \
        "$root"/usr/share/zsh "$root"/usr/share/common-licenses \
        "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* \
        "$root"/var/cache/debconf/*-old "$root"/var/log/*.log \
        "$root"/var/cache/ldconfig/aux-cache
    # Perl only ran the packages' maintainer scripts.
    rm -rf "$root"/usr/bin/perl* "$root"/usr/lib/x86_64-linux-gnu/perl* \
        "$root"/usr/share/perl* "$root"/usr/lib/x86_64-linux-gnu/gconv
    # The standard library's tests, GUI and tools.
    for part in test idlelib tkinter turtledemo ensurepip lib2to3 \
            pydoc_data distutils/tests; do
        rm -rf "${root:?}/usr/lib/$python/$part"
    done
    # pip and setuptools only installed; the packages' own test suites.
    rm -rf "$site"/pip "$site"/pip-* "$site"/setuptools "$site"/setuptools-* \
        "$site"/_distutils_hack "$site"/pkg_resources "$site"/distutils-precedence.pth
    rm -f "$root$VENV"/bin/pip*
    find "$site" -depth -type d -name tests -exec rm -rf {} +
    # The OUI registry of netaddr (9 MB): only an EUI's owner lookup reads
    # it, and nothing here asks.
    rm -f "$site"/netaddr/eui/*.txt "$site"/netaddr/eui/*.idx
    rm -rf "$root/usr/lib/$python/sqlite3" "$root/usr/lib/$python/curses" \
        "$root"/usr/lib/"$python"/config-* \
        "$root"/usr/lib/"$python"/lib-dynload/_sqlite3.* \
        "$root"/usr/lib/"$python"/lib-dynload/_curses*.so
    sourceless_python "$root"
    # Only dpkg reads its file lists and maintainer scripts; the status
    # file stays, to tell what is installed.
    rm -rf "$root"/var/lib/dpkg/info/*
    rm -f "$root"/usr/lib/x86_64-linux-gnu/libperl.so*
    # udev's hardware database names devices for desktops (10 MB).
    rm -rf "$root"/usr/lib/udev/hwdb.bin "$root"/etc/udev/hwdb.bin \
        "$root"/usr/lib/udev/hwdb.d "$root"/usr/lib/systemd/catalog
    chroot "$root" /usr/local/bin/rescue-worker --version >/dev/null
}

# sourceless_python ROOT
sourceless_python() {
    root=$1
    python=$(basename "$(readlink -f "$root/usr/bin/python3")")
    # Sourceless Python: each module once, as bytecode next to where its
    # source was (compileall -b), not as source plus __pycache__. A third
    # of the image; tracebacks then name files and lines without quoting
    # them. A module that does not compile keeps its source.
    # -j 0 (a process per core) needs the /dev/shm that mmdebstrap
    # mounts; without it, one process.
    jobs=1
    if [ -d "$root/dev/shm" ] && [ -e "$root/proc/self" ]; then
        jobs=0
    fi
    chroot "$root" python3 -m compileall -q -b -j "$jobs" "$VENV/lib" \
        "/usr/lib/$python" "/usr/lib/python3" >/dev/null || true
    find "$root$VENV/lib" "$root/usr/lib/$python" "$root/usr/lib/python3" \
        -name '*.py' -type f | while read -r source; do
        if [ -e "${source}c" ]; then
            rm -f "$source"
        fi
    done
    find "$root$VENV/lib" "$root/usr/lib/$python" "$root/usr/lib/python3" \
        -depth -type d -name __pycache__ -exec rm -rf {} +
}
