#!/usr/bin/env bash
# Builds Berth's libFuzzer targets (Fuzz/Targets, one per parser of hostile input) and runs each for a bounded
# time; exits non-zero when a target crashes (a trap, an AddressSanitizer report, a timeout or a broken
# property). docs/security.md ("Fuzzing") says what each target feeds and how CI runs them.
#
#   scripts/fuzz.sh [--seconds N] [--jobs N] [--build-only] [target...]
#
#   --seconds N   run each target N seconds (default 60)
#   --jobs N      run N targets at a time (default 1; each target is one process on one core)
#   --build-only  build the targets, run nothing
#   target...     default: every target in Fuzz/Targets
#
# Each target starts from its seeds (Fuzz/corpus/<target>) and its known crashes (Fuzz/crashes/<target>, which
# stay there as regression seeds once fixed); what it learns goes to .build-fuzz/corpus/<target> and is kept
# across runs, crash inputs to .build-fuzz/artifacts/<target>/. Reproduce one with
# `.build-fuzz/bin/fuzz-<target> <file>`; minimise with `-minimize_crash=1 -runs=10000 <file>`.
#
# The modules a target needs are compiled straight from Sources/ with swiftc (coverage and AddressSanitizer
# instrumentation, -O as the package builds its byte loops), once for all targets; the libFuzzer and ASan
# runtimes are the Swift toolchain's own. Extra libFuzzer flags: BERTH_FUZZ_FLAGS="-dict=... -seed=1".
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT=.build-fuzz

# The package's modules the targets link, in dependency order (Package.swift).
MODULES=(BerthJSONValue BerthJSON BerthAMQPModel BerthDigest BerthCore BerthWire BerthDiskImage)

SECONDS_PER_TARGET=60
JOBS=1
BUILD_ONLY=0
TARGETS=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --seconds) SECONDS_PER_TARGET=$2; shift 2 ;;
        --jobs) JOBS=$2; shift 2 ;;
        --build-only) BUILD_ONLY=1; shift ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        -*) echo "fuzz.sh: unknown option $1 (see --help)" >&2; exit 64 ;;
        *) TARGETS+=("$1"); shift ;;
    esac
done
if [[ ${#TARGETS[@]} -eq 0 ]]; then
    for file in Fuzz/Targets/*.swift; do TARGETS+=("$(basename "$file" .swift)"); done
fi
for target in "${TARGETS[@]}"; do
    [[ -f Fuzz/Targets/$target.swift ]] || { echo "fuzz.sh: no target '$target' in Fuzz/Targets" >&2; exit 64; }
done

# Largest input libFuzzer makes per target: room for the seeds' structures, small enough to mutate quickly.
max_len() {
    case $1 in
        qcow2 | gpt | partition-table | config-partition) echo 65536 ;;
        mbr | inflate | oslo-envelope) echo 16384 ;;
        *) echo 8192 ;;
    esac
}

# One package name for every module, as SwiftPM gives them, so `package` declarations are seen across modules.
SWIFT_FLAGS=(-O -g -swift-version 6 -parse-as-library -package-name Berth "-sanitize=fuzzer,address" -I "$OUT/modules" -I Sources/CJSONC -I Sources/CZlib -I Sources/CCrypto)

# newer OUTPUT INPUT...: true when OUTPUT is missing or older than any input.
newer() {
    local output=$1 input
    shift
    [[ -e $output ]] || return 0
    for input in "$@"; do [[ $input -nt $output ]] && return 0; done
    return 1
}

build() {
    mkdir -p "$OUT/modules" "$OUT/obj" "$OUT/bin"
    # Different flags (or a different compiler) make every object stale.
    local stamp
    stamp="$(swiftc --version 2>&1) ${SWIFT_FLAGS[*]}"
    if [[ ! -f $OUT/flags || $(<"$OUT/flags") != "$stamp" ]]; then
        rm -f "$OUT"/obj/*.o "$OUT"/bin/fuzz-*
        printf '%s' "$stamp" >"$OUT/flags"
    fi
    local module objects=() rebuilt=0
    for module in "${MODULES[@]}"; do
        local object=$OUT/obj/$module.o sources=(Sources/"$module"/*.swift)
        objects+=("$object")
        if [[ $rebuilt == 1 ]] || newer "$object" "${sources[@]}"; then
            echo "fuzz.sh: compiling $module"
            swiftc "${SWIFT_FLAGS[@]}" -c -wmo -module-name "$module" -emit-module \
                -emit-module-path "$OUT/modules/$module.swiftmodule" -o "$object" "${sources[@]}"
            rebuilt=1  # modules after it import it
        fi
    done
    local target support=(Fuzz/Support/*.swift)
    for target in "${TARGETS[@]}"; do
        local binary=$OUT/bin/fuzz-$target
        if newer "$binary" "Fuzz/Targets/$target.swift" "${support[@]}" "${objects[@]}"; then
            echo "fuzz.sh: linking fuzz-$target"
            swiftc "${SWIFT_FLAGS[@]}" -module-name "FuzzTarget" -use-ld=lld -o "$binary" \
                "Fuzz/Targets/$target.swift" "${support[@]}" "${objects[@]}" -ljson-c -lz -lcrypto
        fi
    done
}

# run TARGET: one bounded libFuzzer run; the log goes to .build-fuzz/logs/TARGET.log.
run() {
    local target=$1 seeds=("Fuzz/corpus/$1")
    [[ -d Fuzz/crashes/$target ]] && seeds+=("Fuzz/crashes/$target")
    mkdir -p "$OUT/corpus/$target" "$OUT/artifacts/$target" "$OUT/logs"
    # Swift's own crash reporter would catch the trap first and confuse AddressSanitizer: libFuzzer reports it.
    # shellcheck disable=SC2086 # BERTH_FUZZ_FLAGS is a list of flags
    SWIFT_BACKTRACE=enable=no "$OUT/bin/fuzz-$target" -max_total_time="$SECONDS_PER_TARGET" -timeout=25 \
        -rss_limit_mb=2048 -max_len="$(max_len "$target")" -print_final_stats=1 \
        -artifact_prefix="$OUT/artifacts/$target/" ${BERTH_FUZZ_FLAGS:-} "$OUT/corpus/$target" "${seeds[@]}" \
        >"$OUT/logs/$target.log" 2>&1
}

# report TARGET STATUS ELAPSED: one line of figures from the log, and the crash when there is one.
report() {
    local target=$1 status=$2 elapsed=$3 log=$OUT/logs/$1.log
    local runs speed coverage
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
    coverage=$(grep -o 'cov: [0-9]* ft: [0-9]*' "$log" | tail -n 1 || true)
    if [[ $status == 0 ]]; then
        printf '%-18s ok     %ss  runs %s  exec/s %s  %s\n' "$target" "$elapsed" "${runs:-?}" "${speed:-?}" \
            "${coverage:-cov: ?}"
        return
    fi
    printf '%-18s CRASH  %ss  (exit %s)  %s\n' "$target" "$elapsed" "$status" "${coverage:-cov: ?}"
    # grep's own -m, not `| head`: under pipefail, head leaving early would kill grep and fail the report.
    grep -m 12 -E 'ERROR: (libFuzzer|AddressSanitizer)|Fatal error|fuzz property|SUMMARY|^artifact_prefix|Test unit written' \
        "$log" | sed 's/^/    /'
    echo "    log: $log"
}

build
[[ $BUILD_ONLY == 1 ]] && exit 0

declare -A STARTED=() PIDS=()
FAILED=0
# wait_one: waits for any running target and reports it.
wait_one() {
    local done_pid status=0 target
    wait -n -p done_pid "${PIDS[@]}" || status=$?
    for target in "${!PIDS[@]}"; do
        [[ ${PIDS[$target]} == "$done_pid" ]] || continue
        unset "PIDS[$target]"
        report "$target" "$status" "$((SECONDS - STARTED[$target]))"
        [[ $status == 0 ]] || FAILED=1
    done
}
echo "fuzz.sh: ${#TARGETS[@]} target(s), ${SECONDS_PER_TARGET}s each, $JOBS at a time"
for target in "${TARGETS[@]}"; do
    while [[ ${#PIDS[@]} -ge $JOBS ]]; do wait_one; done
    STARTED[$target]=$SECONDS
    run "$target" &
    PIDS[$target]=$!
done
while [[ ${#PIDS[@]} -gt 0 ]]; do wait_one; done
exit "$FAILED"
