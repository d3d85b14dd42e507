#!/bin/sh
# rescue-worker's lease script for busybox udhcpc (and udhcpc6).
#
# udhcpc runs it as "<script> <event>" with the lease in the environment
# ($interface, $ip, $mask, $subnet, $broadcast, $router, $staticroutes,
# $mtu, $dns, $domain, $search, $serverid, $lease; udhcpc6: $ipv6). Its
# parent ($PPID) is the udhcpc process, started in the foreground (-f) by
# rescue-worker's udhcpc backend, which sets:
#
#   RESCUE_WORKER_DHCP_DIR   where the state files live (<state_dir>/dhcp)
#   RESCUE_WORKER_ROOT_DIR   the resolver goes to <root>/etc/resolv.conf
#   RESCUE_WORKER_FAMILY     4 (udhcpc) or 6 (udhcpc6)
#
# State files, per interface (<name> is udhcpc or udhcpc6):
#
#   <name>-<if>.lease    what the backend reads: the last event, the pid of
#                        the udhcpc that ran it, a sequence number, and for
#                        bound/renew the lease (ip, serverid, lease, ...)
#   <name>-<if>.applied  what this script put on the interface (address,
#                        routes), so that it removes only its own
#   <name>-<if>.applying the pid of the udhcpc whose lease is being
#                        applied, while it is (the backend then waits for
#                        the script rather than give up on a lease)
#
# Events: "deconfig" comes first from every udhcpc that starts, and again
# when a lease is lost. Only a loss removes the address: a udhcpc started
# anew (a renewal looking for another server) leaves the address of the
# one before in place until its own lease replaces it, so the interface is
# never left without an address while a server may still answer. "bound"
# and "renew" apply the lease: address (the old one removed when it
# changed), MTU (option 26), routes (classless static routes, option 121,
# else the routers), resolver (the search domains that are host names
# only). "leasefail" and "nak" are only recorded.
#
# POSIX sh: it runs under busybox ash as well as dash.

set -f
umask 022

event=$1
dir=${RESCUE_WORKER_DHCP_DIR:?RESCUE_WORKER_DHCP_DIR is not set}
root=${RESCUE_WORKER_ROOT_DIR:-/}
root=${root%/}
family=${RESCUE_WORKER_FAMILY:-4}
if [ "$family" = 6 ]; then
    name=udhcpc6
else
    name=udhcpc
fi
interface=${interface:?udhcpc did not say which interface}
state=$dir/$name-$interface.lease
applied=$dir/$name-$interface.applied
applying=$dir/$name-$interface.applying

say() {
    printf '%s\n' "$name-script: $interface: $*" >&2
}

# get FILE KEY: the value of KEY= in FILE, empty when none.
get() {
    [ -f "$1" ] || return 0
    sed -n "s/^$2=//p" "$1" | head -n 1
}

# put FILE: write standard input to FILE atomically.
put() {
    cat >"$1.tmp.$$" && mv -f "$1.tmp.$$" "$1"
}

record() {
    seq=$(get "$state" seq)
    seq=$(( ${seq:-0} + 1 ))
    # printf, not echo: dash's echo turns a backslash sequence the server
    # sent ("\n") into a line of its own.
    {
        printf '%s\n' "event=$event" "pid=$PPID" "seq=$seq" \
            "time=$(date +%s)"
        if [ "$1" = lease ]; then
            printf '%s\n' "ip=$ip" "ipv6=$ipv6" "mask=$mask" \
                "router=$router" "staticroutes=$staticroutes" \
                "serverid=$serverid" "lease=$lease" "mtu=$mtu" "dns=$dns" \
                "domain=$domain" "search=$search"
        fi
    } | put "$state"
}

# prefix_of NETMASK: 255.255.255.0 -> 24
prefix_of() {
    bits=0
    old_ifs=$IFS
    IFS=.
    # shellcheck disable=SC2086
    set -- $1
    IFS=$old_ifs
    for octet in "$@"; do
        while [ "$octet" -gt 0 ]; do
            bits=$(( bits + (octet & 1) ))
            octet=$(( octet >> 1 ))
        done
    done
    echo "$bits"
}

has_address() {
    ip "-$family" addr show dev "$interface" | grep -q "inet6* $1 "
}

add_default() {
    # The first interface to lease keeps the default route, as with
    # dhclient: another's is never replaced.
    if ip route show | grep -q -e "^default via $1 dev $interface\$" \
        -e "^default via $1 dev $interface "; then
        return 0
    fi
    ip route add default via "$1" dev "$interface" 2>/dev/null ||
        say "default route via $1 not added (another interface has one)"
}

remove_routes() {
    old_router=$(get "$applied" router)
    old_static=$(get "$applied" staticroutes)
    for gw in $old_router; do
        case " $router " in
            *" $gw "*) ;;
            *) ip route del default via "$gw" dev "$interface" 2>/dev/null ;;
        esac
    done
    # shellcheck disable=SC2086
    set -- $old_static
    while [ $# -ge 2 ]; do
        case " $staticroutes " in
            *" $1 $2 "*) ;;
            *) ip route del "$1" dev "$interface" 2>/dev/null ;;
        esac
        shift 2
    done
}

add_routes() {
    if [ -n "$staticroutes" ]; then
        # RFC 3442: with classless static routes the routers are ignored.
        # shellcheck disable=SC2086
        set -- $staticroutes
        while [ $# -ge 2 ]; do
            if [ "$1" = 0.0.0.0/0 ]; then
                add_default "$2"
            elif [ "$2" = 0.0.0.0 ]; then
                ip route replace "$1" dev "$interface" ||
                    say "could not add the route to $1"
            else
                ip route replace "$1" via "$2" dev "$interface" ||
                    say "could not add the route to $1 via $2"
            fi
            shift 2
        done
    elif [ -n "$router" ]; then
        # shellcheck disable=SC2086
        set -- $router
        add_default "$1"
    fi
}

# The characters of a host name, spelled out: a range (a-z) may take in
# more in some locales.
host_name_chars=abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-

# search_domains: the words of $domain (option 15) and $search (option
# 119) that are host names; anything else a server sends there is left
# out of resolv.conf.
search_domains() {
    for word in $domain $search; do
        case $word in
            *[!$host_name_chars]*)
                say "a search domain that is no host name left out" ;;
            *)
                printf ' %s' "$word" ;;
        esac
    done
}

write_resolver() {
    [ -n "$dns" ] || return 0
    mkdir -p "$root/etc" || return 0
    target=$root/etc/resolv.conf
    domains=$(search_domains)
    # printf, not echo: see record.
    {
        printf '%s\n' "# Written by rescue-worker's $name script for $interface"
        if [ -n "$domains" ]; then
            printf 'search%s\n' "$domains"
        fi
        for server in $dns; do
            printf 'nameserver %s\n' "$server"
        done
    } >"$target.$name.$$" || return 0
    # A bind mount (a network namespace's) cannot be replaced: then the
    # file is rewritten in place.
    if ! mv -f "$target.$name.$$" "$target" 2>/dev/null; then
        cat "$target.$name.$$" >"$target"
        rm -f "$target.$name.$$"
    fi
}

bound4() {
    [ -n "$ip" ] || { say "$event without an address"; return 1; }
    [ -n "$mask" ] || mask=$(prefix_of "${subnet:-255.255.255.255}")
    ip link set dev "$interface" up
    if [ -n "$mtu" ] && [ "$mtu" -ge 68 ] 2>/dev/null; then
        ip link set dev "$interface" mtu "$mtu" ||
            say "could not set the MTU to $mtu"
    fi
    remove_routes
    old_ip=$(get "$applied" ip)
    old_mask=$(get "$applied" mask)
    if [ -n "$old_ip" ] && [ "$old_ip/$old_mask" != "$ip/$mask" ]; then
        say "address $old_ip/$old_mask replaced by $ip/$mask"
        ip -4 addr del "$old_ip/$old_mask" dev "$interface" 2>/dev/null
    fi
    if ! has_address "$ip/$mask"; then
        if [ -n "$broadcast" ]; then
            ip -4 addr add "$ip/$mask" broadcast "$broadcast" \
                dev "$interface"
        else
            ip -4 addr add "$ip/$mask" dev "$interface"
        fi || { say "could not add $ip/$mask"; return 1; }
    fi
    add_routes
    printf '%s\n' "ip=$ip" "mask=$mask" "router=$router" \
        "staticroutes=$staticroutes" | put "$applied"
    write_resolver
}

bound6() {
    [ -n "$ipv6" ] || { say "$event without an address"; return 1; }
    ip link set dev "$interface" up
    old_ip=$(get "$applied" ip)
    if [ -n "$old_ip" ] && [ "$old_ip" != "$ipv6/128" ]; then
        say "address $old_ip replaced by $ipv6/128"
        ip -6 addr del "$old_ip" dev "$interface" 2>/dev/null
    fi
    if ! has_address "$ipv6/128"; then
        ip -6 addr add "$ipv6/128" dev "$interface" ||
            { say "could not add $ipv6/128"; return 1; }
    fi
    printf '%s\n' "ip=$ipv6/128" | put "$applied"
    write_resolver
}

deconfig() {
    ip link set dev "$interface" up
    if [ "$(get "$state" pid)" != "$PPID" ]; then
        # A udhcpc starting: the address of the one before stays until a
        # lease replaces it.
        return 0
    fi
    old_ip=$(get "$applied" ip)
    if [ -n "$old_ip" ]; then
        say "lease lost: removing $old_ip"
        router= staticroutes=
        [ "$family" = 6 ] || remove_routes
        if [ "$family" = 6 ]; then
            ip -6 addr del "$old_ip" dev "$interface" 2>/dev/null
        else
            ip -4 addr del "$old_ip/$(get "$applied" mask)" \
                dev "$interface" 2>/dev/null
        fi
    fi
    : | put "$applied"
}

mkdir -p "$dir"
case $event in
    deconfig)
        deconfig
        record
        ;;
    bound|renew)
        echo "$PPID" | put "$applying"
        if [ "$family" = 6 ]; then
            bound6
        else
            bound4
        fi
        record lease
        rm -f "$applying"
        ;;
    leasefail|nak)
        record
        ;;
    *)
        say "ignoring event $event"
        ;;
esac
exit 0
