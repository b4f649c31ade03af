#!/usr/bin/env bash
# Installs the package built by scripts/build-deb.sh on this machine and checks it, then purges it:
# dpkg -i; the berth user; systemd-analyze verify on the installed unit; berth --version; man berth-worker;
# the completions; dpkg --purge leaves nothing of the package but the data directory /var/lib/berth.
# Needs root and a machine where installing the package is acceptable (CI). Usage: scripts/test-deb.sh DEB
set -euo pipefail

DEB=${1:?usage: scripts/test-deb.sh dist/berth_VERSION_ARCH.deb}
fail() { echo "test-deb: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || fail "needs root (dpkg -i)"
if dpkg -s berth >/dev/null 2>&1; then fail "berth is installed already; not touching it"; fi
# Purge removes the berth user: one that was there before the package is not this test's to remove.
if getent passwd berth >/dev/null; then fail "a berth user exists already; not touching it"; fi
VERSION=$(dpkg-deb --field "$DEB" Version)

# What was on the machine before, to tell apart after the purge.
DATA_EXISTED=no
[ -e /var/lib/berth ] && DATA_EXISTED=yes

dpkg -i "$DEB" || { apt-get install -y -f >/dev/null; dpkg -s berth >/dev/null || fail "dpkg -i failed"; }
trap 'dpkg --purge berth >/dev/null 2>&1 || true; rm -rf /var/lib/berth/ci-instance' EXIT

getent passwd berth >/dev/null || fail "postinst did not create the berth user"
[ "$(stat -c '%U:%G %a' /etc/berth/worker.env)" = "root:berth 640" ] || fail "/etc/berth/worker.env: $(stat -c '%U:%G %a' /etc/berth/worker.env)"
[ "$(berth --version)" = "$VERSION" ] || fail "berth --version says $(berth --version), the package $VERSION"
systemd-analyze verify --man=no berth-worker@ci.service || fail "systemd-analyze verify berth-worker@ci.service"
man -w berth-worker >/dev/null || fail "no man page berth-worker"
MANWIDTH=100 man berth-worker 2>/dev/null | grep -q -- "--report-interval" || fail "man berth-worker lacks the worker's options"
man -w berth-hosts berth-dead-letters-replay >/dev/null || fail "no man page for berth hosts / dead-letters replay"
grep -q "hosts" /usr/share/bash-completion/completions/berth || fail "bash completion lacks subcommands"
[ -f /usr/share/berth/berth-worker@.service.d/baremetal.conf ] || fail "the bare-metal drop-in is missing"
[ -f /usr/share/doc/berth/operations.md ] || fail "the docs are missing"
[ -f /usr/share/doc/berth/diagrams/deployment.svg ] || fail "the docs' diagrams are missing"

# Data the workers made stays through a purge.
mkdir -p /var/lib/berth/ci-instance
echo kept >/var/lib/berth/ci-instance/marker
FILES=$(dpkg -L berth)

dpkg --purge berth
trap 'rm -rf /var/lib/berth/ci-instance' EXIT
dpkg -s berth >/dev/null 2>&1 && fail "still installed after dpkg --purge"
while read -r path; do
    # Directories are shared with other packages (and /lib is a symbolic link to usr/lib): files only.
    [ -d "$path" ] && continue
    if [ -e "$path" ] || [ -L "$path" ]; then fail "$path is left after dpkg --purge"; fi
done <<<"$FILES"
for path in /usr/bin/berth /lib/systemd/system/berth-worker@.service /etc/berth /usr/share/doc/berth; do
    [ -e "$path" ] && fail "$path is left after dpkg --purge"
done
getent passwd berth >/dev/null && fail "the berth user is left after dpkg --purge"
[ "$(cat /var/lib/berth/ci-instance/marker)" = kept ] || fail "the data directory did not survive the purge"
if [ "$DATA_EXISTED" = no ]; then rm -rf /var/lib/berth; fi
echo "test-deb: $DEB installs, verifies, documents and purges cleanly"
