#!/usr/bin/env bash
# README command 1: sets everything up and runs the main job on a Debian 12 machine with Swift:
# installs the Debian packages and the venv, starts RabbitMQ and libvirtd on loopback, builds
# `berth`, starts one worker (host demo-host, libvirt qemu:///system), calls it over RabbitMQ the
# way an oslo.messaging scheduler would, boots a real QEMU (TCG) guest from a catalog kernel and
# initramfs, prints the kernel command line the guest saw, deletes it, then stops the worker.
# Each step says what it does and how long it took; the end lists the timings and what to try next.
#
# Debug build on purpose (BERTH_DEMO_CONFIG=release for a release one): it is the same build
# scripts/test.sh makes in .build, so after either script the other does not compile again, and a
# first debug build is minutes faster than a release one; nothing in the demo is CPU-bound.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
CONFIG=${BERTH_DEMO_CONFIG:-debug}
HOST=demo-host
TRANSPORT_URL=${BERTH_TRANSPORT_URL:-rabbit://guest:guest@127.0.0.1:5672/}
LIBVIRT_URI=qemu:///system
RUN_DIR=run
LOG=$RUN_DIR/worker-demo.log
STATE_DIR=$PWD/$RUN_DIR/state
PIDFILE=$RUN_DIR/worker-demo.pid

DEMO_START=$SECONDS
STEP=""
STEP_START=$SECONDS
TIMINGS=()
WORKER=""

# section TITLE: ends the step before (its time goes into TIMINGS) and announces the next.
section() {
    end_step
    STEP=$*
    STEP_START=$SECONDS
    echo
    echo "===== [$(date +%H:%M:%S)] $* ====="
}
end_step() {
    if [[ -n $STEP ]]; then
        TIMINGS+=("$(printf '%5ds  %s' $((SECONDS - STEP_START)) "$STEP")")
        echo "----- $((SECONDS - STEP_START)) s"
    fi
    STEP=""
}
# On any exit: a worker still running is stopped; a failure names the step it happened in.
finish() {
    local rc=$?
    if [[ -n $WORKER ]] && kill -0 "$WORKER" 2>/dev/null; then
        kill -TERM "$WORKER" 2>/dev/null || true
        wait "$WORKER" || true
        rm -f "$PIDFILE"
    fi
    if ((rc != 0)); then
        echo >&2
        echo "demo FAILED (exit $rc) in step: ${STEP:-?} after $((SECONDS - STEP_START)) s" >&2
    fi
}
trap finish EXIT

section "install dependencies (Debian packages, Python venv .venv; each skipped when already there)"
scripts/install-deps.sh

section "start RabbitMQ and libvirtd on loopback (no systemd needed)"
scripts/start-services.sh

# BERTH_SCRATCH_PATH: build somewhere other than .build (e.g. while another build uses .build).
SWIFT_FLAGS=(-c "$CONFIG")
[[ -n ${BERTH_SCRATCH_PATH:-} ]] && SWIFT_FLAGS+=(--scratch-path "$BERTH_SCRATCH_PATH")
section "swift build ${SWIFT_FLAGS[*]}"
swift build "${SWIFT_FLAGS[@]}"
BERTH=$(swift build "${SWIFT_FLAGS[@]}" --show-bin-path)/berth
echo "berth: $BERTH"

mkdir -p "$RUN_DIR"
# A worker left over from an interrupted demo holds the demo-host queue: stop it (our own pid file).
if [[ -f $PIDFILE ]]; then
    old=$(cat "$PIDFILE")
    if kill -0 "$old" 2>/dev/null && [[ $(tr '\0' ' ' <"/proc/$old/cmdline") == *"berth worker"* ]]; then
        echo "stopping the worker left by an earlier demo (pid $old)"
        kill -TERM "$old"
        for _ in $(seq 1 60); do kill -0 "$old" 2>/dev/null || break; sleep 0.5; done
    fi
    rm -f "$PIDFILE"
fi

# forget_vanished_pool NAME: the worker keeps its disks in libvirt's dir pool berth-demo, which outlives the
# checkout it was made for. Once that directory is gone (run/ deleted, or the checkout removed), the pool
# holds nothing, and the worker would refuse it as a pool over another directory: stop and undefine it, and
# the worker defines it afresh. A pool whose directory still exists (another checkout's demo) is left alone.
forget_vanished_pool() {
    local xml
    xml=$(virsh -c "$LIBVIRT_URI" pool-dumpxml "$1" 2>/dev/null) || return 0
    [[ $xml =~ \<target\>[[:space:]]*\<path\>([^<]*)\</path\> ]] || return 0
    [[ -d ${BASH_REMATCH[1]} ]] && return 0
    echo "libvirt storage pool $1 is over ${BASH_REMATCH[1]}, which no longer exists: removing the pool"
    virsh -c "$LIBVIRT_URI" pool-destroy "$1" >/dev/null 2>&1 || true # fails when inactive; undefine decides
    virsh -c "$LIBVIRT_URI" pool-undefine "$1" >/dev/null
}
forget_vanished_pool berth-demo

section "start a worker: berth worker --host $HOST --libvirt-uri $LIBVIRT_URI (log: $LOG)"
"$BERTH" worker --transport-url "$TRANSPORT_URL" --host "$HOST" --libvirt-uri "$LIBVIRT_URI" \
    --catalog "local:$STATE_DIR/catalog" --state-dir "$STATE_DIR" --storage-pool berth-demo \
    >"$LOG" 2>&1 </dev/null &
WORKER=$!
echo "$WORKER" >"$PIDFILE"
echo "worker pid $WORKER: it consumes compute.$HOST and the compute pool queue on exchange berth"

call() { "$BERTH" call "$@" --server "$HOST" --transport-url "$TRANSPORT_URL"; }

section "wait until the worker answers ping (berth call ping --server $HOST)"
deadline=$((SECONDS + 60))
until out=$(call ping --args '{}' --timeout 3 2>&1); do
    if ! kill -0 "$WORKER" 2>/dev/null; then
        echo "the worker exited; its log:" >&2; tail -n 40 "$LOG" >&2
        exit 1
    fi
    if ((SECONDS >= deadline)); then
        echo "no answer to ping after 60 s (last: $out); worker log:" >&2; tail -n 40 "$LOG" >&2
        exit 1
    fi
    sleep 1
done
echo "ping -> $out"

section "berth call describe_host --server $HOST"
host_json=$(call describe_host --args '{}' --timeout 30)
.venv/bin/python -m json.tool <<<"$host_json" 2>/dev/null || echo "$host_json"

section "a catalog with the Debian kernel and a busybox initramfs (scripts/build-test-guest.sh)"
GUEST_DIR=/var/tmp/berth-test-guest
scripts/build-test-guest.sh "$GUEST_DIR"
CATALOG=local:$STATE_DIR/catalog
image() { "$BERTH" images create --catalog "$CATALOG" "$@" -f value -c id; }
KERNEL_ID=$(image --name demo-vmlinuz --disk-format aki --file "$GUEST_DIR/vmlinuz")
RAMDISK_ID=$(image --name demo-initramfs --disk-format ari --file "$GUEST_DIR/initramfs.cpio.gz")
qemu-img create -q -f raw "$RUN_DIR/demo-root.raw" 16M
IMAGE_ID=$(image --name demo-busybox --disk-format raw --file "$RUN_DIR/demo-root.raw" \
    --property kernel_id="$KERNEL_ID" --property ramdisk_id="$RAMDISK_ID" \
    --property kernel_args="console=ttyS0 root=/dev/vda" --property kernel_extra_args="quiet berth.from=image")
echo "kernel $KERNEL_ID, ramdisk $RAMDISK_ID, image $IMAGE_ID (kernel_args and kernel_extra_args set)"

section "berth boot: boot_instance over RabbitMQ with a per-VM extra argument and timezone"
UUID=$(cat /proc/sys/kernel/random/uuid)
"$BERTH" boot --transport-url "$TRANSPORT_URL" --server "$HOST" --image "$IMAGE_ID" --uuid "$UUID" \
    --name demo-1 --flavor m1.tiny:1:256:1 --meta kernel_extra_args=berth.from=instance \
    --meta timezone=Europe/Paris --timeout 300 -f table
echo "the domain libvirt runs:"
virsh -c "$LIBVIRT_URI" dumpxml "berth-$UUID" | grep -E "<cmdline>|<clock" || true

section "what the guest saw: its serial console ($STATE_DIR/consoles/$UUID.log)"
CONSOLE=$STATE_DIR/consoles/$UUID.log
for _ in $(seq 1 240); do grep -q "BERTH-CMDLINE" "$CONSOLE" 2>/dev/null && break; sleep 0.5; done
grep -a "BERTH-CMDLINE" "$CONSOLE" || { echo "the guest printed nothing in 120 s; console:" >&2; tail -n 20 "$CONSOLE" >&2; exit 1; }

section "delete_instance"
call delete_instance --args "{\"instance_uuid\": \"$UUID\"}" --timeout 120

section "stop the worker with SIGTERM (it finishes what it holds, then exits 0)"
kill -TERM "$WORKER"
rc=0
wait "$WORKER" || rc=$?
WORKER=""
rm -f "$PIDFILE"
echo "worker exited with status $rc; last lines of $LOG:"
tail -n 5 "$LOG"
if [[ $rc -ne 0 ]]; then
    echo "the worker should exit 0 after SIGTERM" >&2
    exit 1
fi
end_step

echo
echo "===== timings ====="
for line in "${TIMINGS[@]}"; do echo "$line"; done
printf '%5ds  total\n' $((SECONDS - DEMO_START))
echo
echo "demo done: worker $HOST booted a guest over RabbitMQ and shut down cleanly (exit 0)"
cat <<NEXT

What to try next:
  $BERTH --help                 # every command; docs/cli.md for formats, errors, exit statuses
  $BERTH images list --catalog $CATALOG
  # a worker again, then a boot that waits and shows the instance as a table:
  $BERTH worker --host $HOST --libvirt-uri $LIBVIRT_URI --catalog $CATALOG --state-dir $STATE_DIR --storage-pool berth-demo &
  $BERTH boot --image $IMAGE_ID --server $HOST
  # a scheduler and an event listener in Python, on stock oslo.messaging (examples/python/README.md):
  .venv/bin/python examples/python/listener.py &
  .venv/bin/python examples/python/scheduler.py --image $IMAGE_ID
  scripts/test.sh               # the whole test suite
NEXT
