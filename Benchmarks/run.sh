#!/usr/bin/env bash
# Berth's benchmarks beside its peers, in one run, printed as one table (method and results:
# docs/performance.md). Needs scripts/install-deps.sh and scripts/start-services.sh (RabbitMQ on
# 127.0.0.1:5672); uses libvirt's in-process test driver, so libvirtd itself is not involved.
#
#   Benchmarks/run.sh                 # everything, about 10 minutes on 2 cores
#   Benchmarks/run.sh --skip deploy   # bench.py's options pass through (see bench.py --help)
#
# Builds berth in release into .build-bench (its own scratch path), compiles the C load generator and
# responder with gcc, then runs Benchmarks/bench.py with the project venv. Figures: stdout (the table)
# and .build-bench/bench-results/<time>.json; progress on stderr.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
SCRATCH=${BERTH_BENCH_SCRATCH:-$ROOT/.build-bench}
TOOLS=$SCRATCH/bench-tools
RESULTS=$SCRATCH/bench-results
PYTHON=${BERTH_BENCH_PYTHON:-$ROOT/.venv/bin/python}

[[ -x $PYTHON ]] || { echo "bench: $PYTHON missing; run scripts/install-deps.sh" >&2; exit 1; }
"$PYTHON" -c 'import oslo_messaging, amqp' 2>/dev/null \
    || { echo "bench: the venv lacks oslo.messaging; run scripts/install-deps.sh" >&2; exit 1; }
/usr/bin/python3 -c 'import libvirt' 2>/dev/null \
    || { echo "bench: python3-libvirt missing (the oslo peer needs it); run scripts/install-deps.sh" >&2; exit 1; }
for tool in gcc qemu-img sgdisk /usr/bin/time; do
    command -v "$tool" >/dev/null || { echo "bench: $tool missing; run scripts/install-deps.sh" >&2; exit 1; }
done

echo "bench: building berth (release, $SCRATCH)" >&2
swift build -c release --scratch-path "$SCRATCH" --product berth >&2
BERTH=$(swift build -c release --scratch-path "$SCRATCH" --show-bin-path)/berth

mkdir -p "$TOOLS" "$RESULTS"
read -ra C_FLAGS <<<"$(pkg-config --cflags --libs librabbitmq json-c)"
for tool in loadgen responder; do
    gcc -O2 -Wall -Wextra -Werror -o "$TOOLS/$tool" "Benchmarks/c/$tool.c" "${C_FLAGS[@]}"
done

uptime >&2
load=$(cut -d' ' -f1 /proc/loadavg)
if awk -v l="$load" 'BEGIN { exit !(l > 1.5) }'; then
    echo "bench: note: load average $load; other work on this machine makes every figure noisier (the ratios less so)" >&2
fi

exec "$PYTHON" Benchmarks/bench.py --berth "$BERTH" --tools "$TOOLS" \
    --json "$RESULTS/$(date +%Y%m%d-%H%M%S).json" "$@"
