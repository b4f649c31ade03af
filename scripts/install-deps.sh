#!/usr/bin/env bash
# Installs what Berth needs to build and test on Debian 12: the Debian packages (C libraries,
# RabbitMQ, libvirt + QEMU, the sanitizer runtime) and a Python venv at .venv with the stock
# oslo.messaging peer used by Tests/interop. Idempotent: apt is skipped when every package is
# already installed, pip when the venv already matches scripts/requirements-test.txt.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export DEBIAN_FRONTEND=noninteractive

APT_PACKAGES=(
    librabbitmq-dev libvirt-dev libjson-c-dev libcurl4-openssl-dev zlib1g-dev libssl-dev
    rabbitmq-server libvirt-daemon-system libvirt-clients
    qemu-system-x86 qemu-utils
    libclang-rt-14-dev
    python3-venv pkg-config
    # The end-to-end boot tests: a Debian kernel and a busybox initramfs under QEMU/TCG, libvirt's schema check.
    linux-image-amd64 busybox-static cpio libxml2-utils
    # Bare-metal deploy tests: partition tools, FAT tools and cloud-init's own config-drive reader.
    gdisk fdisk mtools dosfstools cloud-init
    # Benchmarks/run.sh: the oslo peer's libvirt binding (Debian's, for the system python the venv is made
    # from; the peer adds its path), GNU time for peak RSS, gcc for the C load generator and responder.
    python3-libvirt time gcc
    # scripts/lint-shell.sh: every shell script is checked in CI.
    shellcheck
    # scripts/render-diagrams.sh: the docs' SVG diagrams are rendered from Graphviz sources, checked in CI;
    # the font is named because dot lays text out by its metrics (Helvetica resolves to DejaVu Sans).
    graphviz fonts-dejavu-core
    # Security and deploy tests: a CA and certificates for a TLS broker, `systemd-analyze verify` of the unit.
    openssl systemd
    # Tests/interop/test_metrics.py scrapes the workers' /metrics with a real Prometheus (19 MB, about 20 s).
    prometheus
    # The Debian package test (scripts/test-deb.sh): `man berth-worker`, postinst's adduser.
    man-db adduser
)

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || { echo "install-deps: must run as root (or have sudo)" >&2; exit 1; }
    SUDO=(sudo -E)
fi

# --- Debian packages ---------------------------------------------------------------------------
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    [[ "$status" == "install ok installed" ]] || missing+=("$pkg")
done

if ((${#missing[@]} == 0)); then
    echo "install-deps: all ${#APT_PACKAGES[@]} Debian packages already installed; skipping apt"
else
    echo "install-deps: missing Debian packages: ${missing[*]}"
    # Without systemd, the packages' maintainer scripts would try to start rabbitmq-server and
    # libvirtd themselves (on every interface). scripts/start-services.sh starts them on loopback,
    # so forbid service starts during the install unless the machine already has a policy.
    policy_added=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee /usr/sbin/policy-rc.d >/dev/null
        "${SUDO[@]}" chmod 755 /usr/sbin/policy-rc.d
        policy_added=1
    fi
    remove_policy() { if ((policy_added)); then "${SUDO[@]}" rm -f /usr/sbin/policy-rc.d; fi; }
    trap remove_policy EXIT
    "${SUDO[@]}" apt-get update
    "${SUDO[@]}" apt-get install -y --no-install-recommends "${APT_PACKAGES[@]}"
    remove_policy
    trap - EXIT
fi

# --- Python venv for the interop tests ----------------------------------------------------------
# Debian's own interpreter (the one python3-venv above serves) unless BERTH_PYTHON says otherwise.
PYTHON=${BERTH_PYTHON:-}
if [[ -z "$PYTHON" ]]; then
    if [[ -x /usr/bin/python3 ]]; then PYTHON=/usr/bin/python3; else PYTHON=python3; fi
fi
REQUIREMENTS=scripts/requirements-test.txt
VENV=.venv
STAMP=$VENV/.berth-requirements.stamp
want_stamp="$("$PYTHON" -c 'import sys; print(sys.version)' | head -n1) $(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)"

if [[ -x $VENV/bin/python && -f $STAMP && "$(cat "$STAMP")" == "$want_stamp" ]] \
    && PYTHONWARNINGS=ignore "$VENV/bin/python" -c 'import oslo_messaging, pytest, jsonschema' 2>/dev/null; then
    echo "install-deps: $VENV already matches $REQUIREMENTS; skipping pip"
else
    if [[ ! -x $VENV/bin/python ]] || ! "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
        rm -rf "$VENV"
        echo "install-deps: creating $VENV with $PYTHON ($("$PYTHON" --version 2>&1))"
        "$PYTHON" -m venv "$VENV"
    fi
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -r "$REQUIREMENTS"
    PYTHONWARNINGS=ignore "$VENV/bin/python" -c 'import oslo_messaging, pytest, jsonschema'
    echo "$want_stamp" >"$STAMP"
    echo "install-deps: installed into $VENV:"
    "$VENV/bin/python" -m pip list --format=freeze 2>/dev/null \
        | grep -iE '^(oslo\.messaging|oslo\.config|kombu|amqp|pytest|jsonschema)==' | sed 's/^/    /'
fi
echo "install-deps: done"
