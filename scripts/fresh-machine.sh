#!/usr/bin/env bash
# README command 1 on a fresh Debian 12 machine, made on this one: a debootstrap'd bookworm root run with
# systemd-nspawn in its own network namespace, so its RabbitMQ, epmd and libvirtd do not meet the host's on
# 127.0.0.1. A manual check (issue 22's "once on a fresh machine"), not part of CI: it downloads a Debian
# system and every package the demo installs: 17 minutes on two busy cores (docs/fresh-machine.md).
#
#   scripts/fresh-machine.sh create   # debootstrap, network, Swift's own Debian packages, a clone of the repo
#   scripts/fresh-machine.sh demo     # scripts/demo.sh inside it, as root, from the clone's root (log kept)
#   scripts/fresh-machine.sh shell    # a shell inside it (same mounts and network)
#   scripts/fresh-machine.sh destroy  # removes the container root, the veth, the NAT rule and the netns
#   scripts/fresh-machine.sh all      # destroy, create, demo, destroy (the demo's status is the exit status)
#
# The machine has only what Swift's Linux install instructions list for Debian 12; nothing of Berth's. Swift
# itself is this host's /opt/swift, bind-mounted read-only at the same path and put on PATH; Swift packages
# come from /opt/swift-packages through git's insteadOf, as on this host (no GitHub access here). The repo is a
# `git clone` of SOURCE's checked-out branch: exactly what is committed there, no .build, no .venv.
#
# Network: a netns with a veth pair on a private /30 (host .1, container .2), IP forwarding on and one
# MASQUERADE rule for that /30, so apt and pip inside reach Debian's mirror and PyPI. The host's egress CA
# certificates (/usr/local/share/ca-certificates) are copied in: HTTPS from this sandbox goes through a
# TLS-inspecting proxy, which any machine here needs to trust. KVM is not used: the demo runs QEMU/TCG.
#
# Needs root, debootstrap, systemd-nspawn (it runs without systemd as init: --register=no --keep-unit).
# Settings (environment): BERTH_FRESH_DIR (/var/tmp/berth-fresh), BERTH_FRESH_SOURCE (this repository),
# BERTH_FRESH_NET (10.199.22, the /30's first three octets; the last is 0), BERTH_FRESH_MIRROR.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=${BERTH_FRESH_DIR:-/var/tmp/berth-fresh}
ROOT=$DIR/root
SOURCE=${BERTH_FRESH_SOURCE:-$REPO}
MIRROR=${BERTH_FRESH_MIRROR:-http://deb.debian.org/debian}
NET=${BERTH_FRESH_NET:-10.199.22}
NETNS=berth-fresh
MACHINE=berth-fresh
VETH_HOST=bf-host
VETH_GUEST=bf-guest
SUBNET=$NET.0/30
CLONE=/root/berth
SWIFT=/opt/swift
SWIFT_PACKAGES=/opt/swift-packages
# https://www.swift.org/install/linux/debian/12/ (tarball install): the Debian packages Swift needs, no more.
SWIFT_DEBIAN_PACKAGES=(
    binutils git gnupg2 libc6-dev libcurl4-openssl-dev libedit2 libgcc-12-dev libpython3-dev libsqlite3-0
    libstdc++-12-dev libxml2-dev libz3-dev pkg-config python3-lldb-13 tzdata zlib1g-dev unzip curl
    ca-certificates
)
# ip_forward before `create` turned it on, restored by `destroy`.
FORWARD_STATE=$DIR/ip_forward.before

log() { echo "fresh-machine: $*"; }
die() { echo "fresh-machine: ERROR: $*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root (debootstrap, netns, nspawn)"

# Cgroups: the container gets the cgroup v2 (unified) hierarchy, as a booted Debian 12 has. On this host's
# hybrid layout nspawn would otherwise mount the v1 controllers read-only, and libvirtd fails every domain
# start ("Failed to create v1 controller cpuacct for group: Read-only file system"). nspawn runs in a cgroup
# of its own (in the unified hierarchy and in systemd's named one, where nspawn makes its payload/supervisor
# split), so what nspawn and the container's libvirtd create stays under it and goes with `destroy`.
CGROUPS=("$(findmnt -n -t cgroup2 -o TARGET | head -n 1)/$MACHINE")
if findmnt -n -t cgroup -o OPTIONS /sys/fs/cgroup/systemd 2>/dev/null | grep -q 'name=systemd'; then
    CGROUPS+=("/sys/fs/cgroup/systemd/$MACHINE")
fi

cgroup_enter() {
    local cgroup
    for cgroup in "${CGROUPS[@]}"; do
        mkdir -p "$cgroup"
        echo "$BASHPID" >"$cgroup/cgroup.procs"
    done
}

cgroup_remove() {
    local cgroup
    for cgroup in "${CGROUPS[@]}"; do
        [[ -d $cgroup ]] || continue
        # Leaves first; a cgroup with a process left in it stays (and is reported).
        find "$cgroup" -depth -type d -exec rmdir {} + 2>/dev/null || log "note: $cgroup not empty, left in place"
    done
}

# in_container COMMAND...: runs COMMAND as root inside the container, with Swift on PATH. A subshell, so that
# only it (and nspawn under it) moves into the container's cgroup.
in_container() (
    cgroup_enter
    SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 systemd-nspawn --quiet --register=no --keep-unit --as-pid2 \
        --directory="$ROOT" --machine="$MACHINE" \
        --network-namespace-path="/run/netns/$NETNS" \
        --bind-ro="$SWIFT" --bind-ro="$SWIFT_PACKAGES" \
        --setenv=PATH="$SWIFT/usr/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
        --setenv=HOME=/root \
        "$@"
)

network_up() {
    if ip netns list | grep -qw "$NETNS"; then
        log "network namespace $NETNS already there"
        return 0
    fi
    log "network: netns $NETNS, $VETH_HOST $NET.1/30 <-> $VETH_GUEST $NET.2/30, MASQUERADE for $SUBNET"
    ip netns add "$NETNS"
    ip link add "$VETH_HOST" type veth peer name "$VETH_GUEST"
    ip link set "$VETH_GUEST" netns "$NETNS"
    ip addr add "$NET.1/30" dev "$VETH_HOST"
    ip link set "$VETH_HOST" up
    ip -n "$NETNS" link set lo up
    ip -n "$NETNS" addr add "$NET.2/30" dev "$VETH_GUEST"
    ip -n "$NETNS" link set "$VETH_GUEST" up
    ip -n "$NETNS" route add default via "$NET.1"
    [[ -f $FORWARD_STATE ]] || cat /proc/sys/net/ipv4/ip_forward >"$FORWARD_STATE"
    sysctl -q -w net.ipv4.ip_forward=1
    iptables -t nat -C POSTROUTING -s "$SUBNET" ! -o "$VETH_HOST" -j MASQUERADE 2>/dev/null \
        || iptables -t nat -A POSTROUTING -s "$SUBNET" ! -o "$VETH_HOST" -j MASQUERADE
}

network_down() {
    while iptables -t nat -C POSTROUTING -s "$SUBNET" ! -o "$VETH_HOST" -j MASQUERADE 2>/dev/null; do
        iptables -t nat -D POSTROUTING -s "$SUBNET" ! -o "$VETH_HOST" -j MASQUERADE
    done
    if ip link show "$VETH_HOST" >/dev/null 2>&1; then ip link del "$VETH_HOST"; fi
    if ip netns list | grep -qw "$NETNS"; then ip netns del "$NETNS"; fi
    if [[ -f $FORWARD_STATE ]]; then
        sysctl -q -w net.ipv4.ip_forward="$(cat "$FORWARD_STATE")"
        rm -f "$FORWARD_STATE"
    fi
    log "network removed (netns, veth, NAT rule; ip_forward restored)"
}

create() {
    command -v debootstrap >/dev/null || die "debootstrap missing (apt-get install debootstrap)"
    [[ ! -e $ROOT ]] || die "$ROOT exists; run '$0 destroy' first"
    mkdir -p "$DIR"
    local start=$SECONDS
    log "debootstrap bookworm into $ROOT ($MIRROR)"
    debootstrap --arch=amd64 bookworm "$ROOT" "$MIRROR" >"$DIR/debootstrap.log" 2>&1 \
        || { tail -n 20 "$DIR/debootstrap.log" >&2; die "debootstrap failed (log: $DIR/debootstrap.log)"; }
    log "debootstrap: $((SECONDS - start)) s"
    network_up

    # debootstrap writes `bookworm main` only; an installed Debian 12 also has its updates and security suites.
    cat >"$ROOT/etc/apt/sources.list" <<EOF
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb ${MIRROR%/debian}/debian-security bookworm-security main
EOF
    # The sandbox's TLS-inspecting egress proxy: trusted here, so trusted there (copied before the
    # ca-certificates package's postinst builds the bundle).
    if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
        mkdir -p "$ROOT/usr/local/share/ca-certificates"
        cp /usr/local/share/ca-certificates/*.crt "$ROOT/usr/local/share/ca-certificates/"
    fi
    # Git's insteadOf for Swift packages, as on this host: GitHub URLs resolve to the read-only mirror.
    cat >"$ROOT/etc/gitconfig" <<EOF
[url "$SWIFT_PACKAGES/"]
	insteadOf = https://github.com/
	insteadOf = git@github.com:
	insteadOf = ssh://git@github.com/
EOF
    start=$SECONDS
    log "apt-get install Swift's Debian 12 packages: ${SWIFT_DEBIAN_PACKAGES[*]}"
    in_container /bin/sh -c "export DEBIAN_FRONTEND=noninteractive
        apt-get update -q && apt-get install -y -q ${SWIFT_DEBIAN_PACKAGES[*]} >/var/tmp/swift-deps.log 2>&1 \
            || { tail -n 30 /var/tmp/swift-deps.log; exit 1; }
        update-ca-certificates >/dev/null"
    log "Swift's packages: $((SECONDS - start)) s"
    in_container swift --version

    log "git clone $SOURCE ($(git -C "$SOURCE" rev-parse --abbrev-ref HEAD) at $(git -C "$SOURCE" rev-parse --short HEAD)) -> $CLONE"
    git clone --quiet --no-hardlinks "$SOURCE" "$ROOT$CLONE"
    log "created: $ROOT"
}

demo() {
    [[ -d $ROOT$CLONE ]] || die "no container at $ROOT; run '$0 create' first"
    network_up
    local logfile
    logfile=$DIR/demo-$(date -u +%Y%m%dT%H%M%SZ).log
    log "scripts/demo.sh in $CLONE inside the container (log: $logfile)"
    local rc=0
    in_container --chdir="$CLONE" scripts/demo.sh 2>&1 | tee "$logfile" || rc=$?
    log "demo exit status $rc (log: $logfile)"
    return "$rc"
}

destroy() {
    network_down
    cgroup_remove
    if [[ -e $ROOT ]]; then
        # Nothing can be mounted inside: each nspawn run mounts in its own namespace and ends with it.
        rm -rf --one-file-system "$ROOT"
        log "removed $ROOT"
    fi
}

case ${1:-} in
    create) create ;;
    demo) demo ;;
    shell) network_up; in_container --chdir=/root /bin/bash -l ;;
    destroy) destroy ;;
    all)
        destroy
        create
        rc=0
        demo || rc=$?
        destroy
        exit "$rc"
        ;;
    *) die "usage: $0 create|demo|shell|destroy|all" ;;
esac
