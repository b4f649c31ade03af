#!/usr/bin/env bash
# Builds the tiny guest Berth's end-to-end libvirt tests boot: Debian's kernel plus a busybox initramfs whose
# /init prints marker lines to the serial console and powers off. No disk, no network, no distribution: it
# boots in seconds under QEMU/TCG and proves what the worker gave the guest (its kernel command line, clock).
#
#   scripts/build-test-guest.sh OUTDIR
#
# Writes OUTDIR/vmlinuz, OUTDIR/initramfs.cpio.gz and OUTDIR/kernel-version. Idempotent: outputs newer than
# this script are kept. Installs linux-image-amd64, busybox-static and cpio if they are missing (needs root).
#
# The console shows, after the kernel's boot messages:
#   BERTH-DISK: <name> <bytes>              one line per virtio disk
#   BERTH-LABEL: config-2 <device or empty>  where busybox's findfs finds a filesystem labelled config-2
#   BERTH-CMDLINE: <contents of /proc/cmdline>
#   BERTH-TZ: <guest clock, UTC as the guest believes it, e.g. 2025-01-31T12:00:00>
# With <clock offset='timezone'>, QEMU's RTC holds that zone's wall time and the kernel takes the RTC for UTC,
# so BERTH-TZ shows the zone's local time: how a test sees that the timezone reached the guest.
set -euo pipefail

die() { echo "build-test-guest: ERROR: $*" >&2; exit 1; }
log() { echo "build-test-guest: $*"; }

[[ $# -eq 1 ]] || die "usage: $0 OUTDIR"
out=$1
script=$(readlink -f "${BASH_SOURCE[0]}")
kernel_out=$out/vmlinuz
initrd_out=$out/initramfs.cpio.gz
version_out=$out/kernel-version

if [[ -s $kernel_out && -s $initrd_out && -s $version_out && $kernel_out -nt $script && $initrd_out -nt $script ]]
then
    log "up to date in $out (kernel $(cat "$version_out"))"
    exit 0
fi

# --- packages ------------------------------------------------------------------------------------
installed() { [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]; }
missing=()
for package in linux-image-amd64 busybox-static cpio; do
    installed "$package" || missing+=("$package")
done
if ((${#missing[@]})); then
    [[ $(id -u) -eq 0 ]] || die "missing packages ${missing[*]}; run as root or install them"
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # A stale package index is the usual reason an install fails on a fresh machine; update once and retry.
    apt-get install -y --no-install-recommends "${missing[@]}" \
        || { apt-get update && apt-get install -y --no-install-recommends "${missing[@]}"; }
fi

# --- kernel --------------------------------------------------------------------------------------
# The newest installed kernel: the one linux-image-amd64 points at after an upgrade.
kernel=$(find /boot -maxdepth 1 -name 'vmlinuz-*' | sort -V | tail -n 1)
[[ -n $kernel ]] || die "no /boot/vmlinuz-* after installing linux-image-amd64"
version=${kernel##*/vmlinuz-}
busybox=/bin/busybox
# Capture the list first: `busybox --list | grep -q` under pipefail fails at random, because grep exits at the
# match and busybox, still writing one applet name per write(), dies of SIGPIPE.
applets=$("$busybox" --list 2>/dev/null || true)
if [[ ! -x $busybox ]] || ! grep -qx poweroff <<<"$applets"; then
    die "$busybox (busybox-static) missing or incomplete"
fi
# A dynamically linked busybox would need its libraries in the initramfs too.
if headers=$(LC_ALL=C readelf -l "$busybox" 2>/dev/null) && grep -q INTERP <<<"$headers"; then
    die "$busybox is dynamically linked; install busybox-static"
fi

# --- initramfs -----------------------------------------------------------------------------------
mkdir -p "$out"
work=$(mktemp -d "${TMPDIR:-/tmp}/berth-test-guest.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root"/{bin,dev,proc,sys}
cp "$busybox" "$root/bin/busybox"
for applet in sh mount cat echo date poweroff sleep insmod findfs; do
    ln -s busybox "$root/bin/$applet"
done
# virtio_pci and virtio_blk are modules in Debian's kernel: without them the guest sees no disk. Their
# dependencies in load order, as modprobe would load them; /init insmods the list.
mkdir -p "$root/lib/modules"
: >"$root/lib/modules/load"
deps=$(modprobe -S "$version" --show-depends virtio_pci && modprobe -S "$version" --show-depends virtio_blk) \
    || die "modprobe cannot resolve virtio_pci and virtio_blk for kernel $version"
while read -r verb module _; do
    [[ $verb == insmod ]] || continue
    name=$(basename "$module")
    name=${name%%.ko*}.ko
    [[ -e $root/lib/modules/$name ]] && continue
    case $module in
        *.ko) cp "$module" "$root/lib/modules/$name" ;;
        *.ko.xz) xz -dc "$module" >"$root/lib/modules/$name" ;;
        *.ko.zst) zstd -qdc "$module" >"$root/lib/modules/$name" ;;
        *) die "unknown module file $module" ;;
    esac
    echo "$name" >>"$root/lib/modules/load"
done <<<"$deps"
# The kernel opens /dev/console for init before anything is mounted; without the node init has no output.
# Creating it needs root; /init also mounts devtmpfs, which covers a build without one.
mknod -m 600 "$root/dev/console" c 5 1 2>/dev/null \
    || log "note: cannot create dev/console (not root); /init mounts devtmpfs instead"
cat >"$root/init" <<'INIT'
#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
# Only emergencies from the kernel from here on, so no driver message splits a marker line.
echo 1 >/proc/sys/kernel/printk
while read -r module; do insmod "/lib/modules/$module" 2>/dev/null; done </lib/modules/load
# Disks appear asynchronously after the driver loads; a guest with none waits the whole second.
for _ in 1 2 3 4 5 6 7 8 9 10; do [ -e /sys/block/vda ] && break; sleep 0.1; done
sleep 0.2
for disk in /sys/block/vd*; do
    [ -e "$disk" ] || continue
    name=${disk##*/}
    echo "BERTH-DISK: $name $(($(cat "$disk/size") * 512))"
done
# How cloud-init finds a config drive: by its filesystem label (Debian's busybox has findfs, not blkid).
echo "BERTH-LABEL: config-2 $(findfs LABEL=config-2 2>/dev/null)"
echo "BERTH-CMDLINE: $(cat /proc/cmdline)"
echo "BERTH-TZ: $(date -u +%Y-%m-%dT%H:%M:%S)"
# -f: no init system to ask; the kernel powers off through ACPI and libvirt sees the domain shut off.
poweroff -f
# Without ACPI the power-off returns; init must not exit (that panics), so wait to be destroyed.
while :; do sleep 3600; done
INIT
chmod 755 "$root/init"
# Sorted names and --reproducible: the same inputs give the same archive.
(cd "$root" && find . -print0 | LC_ALL=C sort -z | cpio --null --create --format=newc --reproducible --quiet) \
    | gzip -9n >"$work/initramfs.cpio.gz"

cp "$kernel" "$work/vmlinuz"
echo "$version" >"$work/kernel-version"
# Moved into place last, so an interrupted build never leaves outputs that look complete.
mv -f "$work/kernel-version" "$version_out"
mv -f "$work/vmlinuz" "$kernel_out"
mv -f "$work/initramfs.cpio.gz" "$initrd_out"
log "kernel $version: $kernel_out ($(du -h "$kernel_out" | cut -f1)), $initrd_out ($(du -h "$initrd_out" | cut -f1))"
