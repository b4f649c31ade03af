#!/usr/bin/env bash
# README command 2: runs Berth's whole test suite on a Debian 12 machine with Swift, from nothing:
#   install the Debian packages and the Python venv, shellcheck every script, check the docs' diagrams are
#   rendered from their sources, start RabbitMQ and libvirtd on loopback, start Glance,
#   swift build, swift test (unit + integration against the real broker and libvirtd),
#   the Python interop suite (stock oslo.messaging against the built `berth`), an
#   AddressSanitizer/LeakSanitizer pass of the Swift tests, and a bounded run of the libFuzzer targets.
# Stops at the first failing step with a non-zero exit. .ci/run calls this and nothing else.
#
# Knobs (all optional): BERTH_SKIP_ASAN=1 skips the sanitizer pass (local iterations only; CI runs it),
# BERTH_PYTEST_ARGS="-k ping" narrows the interop suite, BERTH_STEP_TIMEOUT (s, default 1800) caps a step,
# BERTH_SCRATCH_PATH=.build-x builds somewhere other than .build (the ASan pass always uses .build-asan),
# BERTH_FUZZ_SECONDS (default 60; 0 skips) is each fuzz target's run, BERTH_FUZZ_TARGETS overrides their list.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

# Integration tests fail instead of skipping when a service is missing: this script starts them all.
export BERTH_REQUIRE_SERVICES=1
export BERTH_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/
export BERTH_LIBVIRT_URI=qemu:///system
# The RabbitMQ nodes the suite starts (start-services.sh, test_security's TLS node, test_cluster's three) are
# not this script's service: under a systemd unit or an nspawn container they would report to its
# NOTIFY_SOCKET, fail to, and die at boot (docs/fresh-machine.md).
unset NOTIFY_SOCKET
STEP_TIMEOUT=${BERTH_STEP_TIMEOUT:-1800}
SCRATCH=()
[[ -n ${BERTH_SCRATCH_PATH:-} ]] && SCRATCH=(--scratch-path "$BERTH_SCRATCH_PATH")

SUITE_START=$SECONDS
CURRENT_STEP=""
TIMINGS=()

finish() {
    local rc=$?
    echo
    echo "===== timings ====="
    local line
    for line in "${TIMINGS[@]}"; do echo "  $line"; done
    if [[ $rc -ne 0 && -n $CURRENT_STEP ]]; then
        echo "  $CURRENT_STEP: FAILED (exit $rc) after $((SECONDS - STEP_START))s"
        echo "===== scripts/test.sh FAILED in step: $CURRENT_STEP (total $((SECONDS - SUITE_START))s) ====="
    elif [[ $rc -eq 0 ]]; then
        echo "===== scripts/test.sh: all steps passed (total $((SECONDS - SUITE_START))s) ====="
    fi
    exit "$rc"
}
trap finish EXIT

# step NAME COMMAND...: a header, the command (errexit stops the script when it fails), its time.
step() {
    CURRENT_STEP=$1
    shift
    echo
    echo "===== [$(date +%H:%M:%S)] $CURRENT_STEP ====="
    echo "+ $*"
    STEP_START=$SECONDS
    "$@"
    TIMINGS+=("$CURRENT_STEP: $((SECONDS - STEP_START))s")
    CURRENT_STEP=""
}

# Kill a hung step rather than the whole CI budget.
bounded() { timeout --kill-after=30 "$STEP_TIMEOUT" "$@"; }

interop() {
    local bin_dir
    bin_dir=$(swift build ${SCRATCH[@]+"${SCRATCH[@]}"} --show-bin-path)
    export BERTH_BIN=$bin_dir/berth
    echo "BERTH_BIN=$BERTH_BIN"
    # shellcheck disable=SC2086 # BERTH_PYTEST_ARGS is a list of words
    bounded "$ROOT/.venv/bin/pytest" -q Tests/interop ${BERTH_PYTEST_ARGS:-}
    # Tests that restart the broker run on their own, so they cannot disturb the others.
    bounded "$ROOT/.venv/bin/pytest" -q Tests/interop -m disruptive
}

asan() {
    export ASAN_OPTIONS=detect_leaks=1
    if [[ -f $ROOT/Tests/lsan.supp ]]; then
        export LSAN_OPTIONS=suppressions=$ROOT/Tests/lsan.supp
        echo "LSAN_OPTIONS=$LSAN_OPTIONS"
    fi
    bounded swift test --scratch-path .build-asan --sanitize=address
}

# libFuzzer targets (scripts/fuzz.sh, docs/security.md "Fuzzing"), two at a time: about 2-4 min of build and
# 4 min of fuzzing. Each target first replays its Fuzz/crashes/ (issue 15's crafted images and what fuzzing
# found), so a fixed crash stays fixed.
FUZZ_SECONDS=${BERTH_FUZZ_SECONDS:-60}
read -ra FUZZ_TARGETS <<<"${BERTH_FUZZ_TARGETS:-qcow2 gpt mbr partition-table config-partition inflate json oslo-envelope}"

step "install dependencies (apt, .venv)" scripts/install-deps.sh
step "shellcheck (every shell script)" scripts/lint-shell.sh
step "diagrams (docs/diagrams/*.svg rendered from their .dot)" scripts/render-diagrams.sh --check
step "start services (RabbitMQ, libvirtd)" scripts/start-services.sh
# Glance for Tests/interop/test_glance.py: pip install of the pinned glance into .venv-glance (about 30 s
# with pip's cache, 1-2 min cold; skipped when the venv matches) and gunicorn on 127.0.0.1:9292 (about 5 s).
step "start Glance (for test_glance.py)" bounded scripts/start-glance.sh
step "swift build" bounded swift build ${SCRATCH[@]+"${SCRATCH[@]}"}
step "swift test" bounded swift test ${SCRATCH[@]+"${SCRATCH[@]}"}
step "interop tests (oslo.messaging 18.3.1 vs berth)" interop
# The .deb of scripts/build-deb.sh, installed, checked and purged (scripts/test-deb.sh). A debug build in
# .build, so this costs a relink and the packaging, not a second (release) build of everything.
debian_package() {
    local deb
    deb=$(bounded env BERTH_DEB_CONFIGURATION=debug BERTH_DEB_SCRATCH_PATH="${BERTH_SCRATCH_PATH:-.build}" \
        scripts/build-deb.sh | tail -n 1)
    bounded scripts/test-deb.sh "$deb"
}
step "Debian package (build, dpkg -i, verify, dpkg --purge)" debian_package
if [[ ${BERTH_SKIP_ASAN:-0} == 1 ]]; then
    echo
    echo "===== AddressSanitizer pass SKIPPED (BERTH_SKIP_ASAN=1) ====="
    TIMINGS+=("swift test (AddressSanitizer): skipped")
else
    step "swift test (AddressSanitizer + LeakSanitizer)" asan
fi
if [[ $FUZZ_SECONDS == 0 ]]; then
    echo
    echo "===== fuzz targets SKIPPED (BERTH_FUZZ_SECONDS=0) ====="
    TIMINGS+=("fuzz targets: skipped")
else
    step "fuzz targets (libFuzzer, ${FUZZ_SECONDS}s each)" \
        bounded scripts/fuzz.sh --seconds "$FUZZ_SECONDS" --jobs 2 "${FUZZ_TARGETS[@]}"
fi
