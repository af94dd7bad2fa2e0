#!/usr/bin/env bash
# Namespace rigs for trying ethflow by hand (and for demo.sh). Run as root.
#
#   rig.sh up PREFIX [--mtu N] [--hosts N]   create hosts PREFIXa, PREFIXb, ...
#   rig.sh down PREFIX...                    remove what `up` created
#
# Two hosts are joined by one veth pair; more hosts by a bridge (br0) in a
# switch namespace PREFIXs. Each host namespace holds one interface named like
# itself (PREFIXa in PREFIXa, ...), up, with 10.77.0.N/24 for plain ping.
# Links are created inside the namespaces: nothing appears on the machine's own.
set -euo pipefail

usage() {
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

check_prefix() {
    local p=$1
    [[ "$p" =~ ^[A-Za-z0-9_-]+$ ]] || { echo "rig.sh: bad prefix '$p'" >&2; exit 2; }
    # Longest interface name is PREFIX + host letter + 'p' (bridge port): 15 max.
    [ "${#p}" -le 13 ] || { echo "rig.sh: prefix '$p' longer than 13 characters" >&2; exit 2; }
}

letters=(a b c d e f g h)

ns_exists() {
    ip netns list | awk '{print $1}' | grep -qxF "$1"
}

up() {
    local prefix=$1 mtu="" hosts=2
    shift
    while [ $# -gt 0 ]; do
        case $1 in
            --mtu) mtu=$2; shift 2 ;;
            --hosts) hosts=$2; shift 2 ;;
            *) usage ;;
        esac
    done
    check_prefix "$prefix"
    [ "$hosts" -ge 2 ] && [ "$hosts" -le ${#letters[@]} ] || { echo "rig.sh: 2..${#letters[@]} hosts" >&2; exit 2; }
    for ((i = 0; i < hosts; i++)); do
        local ns="$prefix${letters[$i]}"
        if ns_exists "$ns"; then
            echo "rig.sh: namespace $ns exists already (rig.sh down $prefix)" >&2
            exit 1
        fi
    done
    # A half-built rig is removed again.
    trap 'echo "rig.sh: setup failed, removing $prefix" >&2; down "$prefix"' ERR
    for ((i = 0; i < hosts; i++)); do
        local ns="$prefix${letters[$i]}"
        ip netns add "$ns"
        ip -n "$ns" link set lo up
    done
    if [ "$hosts" -eq 2 ]; then
        ip link add "${prefix}a" netns "${prefix}a" type veth peer name "${prefix}b" netns "${prefix}b"
    else
        local sw="${prefix}s"
        ip netns add "$sw"
        ip -n "$sw" link add br0 type bridge
        ip -n "$sw" link set br0 up
        for ((i = 0; i < hosts; i++)); do
            local h="$prefix${letters[$i]}"
            ip link add "$h" netns "$h" type veth peer name "${h}p" netns "$sw"
            ip -n "$sw" link set "${h}p" master br0
            if [ -n "$mtu" ]; then ip -n "$sw" link set "${h}p" mtu "$mtu"; fi
            ip -n "$sw" link set "${h}p" up
        done
    fi
    for ((i = 0; i < hosts; i++)); do
        local h="$prefix${letters[$i]}"
        if [ -n "$mtu" ]; then ip -n "$h" link set "$h" mtu "$mtu"; fi
        ip -n "$h" link set "$h" up
        ip -n "$h" addr add "10.77.0.$((i + 1))/24" dev "$h"
    done
    trap - ERR
    for ((i = 0; i < hosts; i++)); do
        local h="$prefix${letters[$i]}"
        echo "host $h: namespace $h, interface $h, 10.77.0.$((i + 1))"
    done
}

down() {
    local prefix
    for prefix in "$@"; do
        check_prefix "$prefix"
        local ns
        for ns in "${letters[@]/#/$prefix}" "${prefix}s"; do
            if ns_exists "$ns"; then
                ip netns del "$ns" && echo "removed namespace $ns"
            fi
        done
    done
}

[ $# -ge 2 ] || usage
[ "$(id -u)" -eq 0 ] || { echo "rig.sh: run as root" >&2; exit 1; }
cmd=$1
shift
case $cmd in
    up) up "$@" ;;
    down) down "$@" ;;
    *) usage ;;
esac
