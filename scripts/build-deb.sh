#!/usr/bin/env bash
# Builds the Debian package of Berth: dist/berth_<version>_<arch>.deb.
#
# Contents: /usr/bin/berth (release build) with the Swift runtime it needs in /usr/lib/berth, the systemd unit
# (ExecStart pointing at /usr/bin/berth), the bare-metal drop-in as an example to install on hosts that deploy
# to nodes, /etc/berth/worker.env (a conffile, 0640 root:berth), the sample config when the tree has one, man pages generated from the argument parser (swift-argument-parser's generate-manual), bash,
# zsh and fish completions, and the docs. postinst creates the `berth` system user; purge removes it and
# /etc/berth and leaves the data directory /var/lib/berth.
#
# Environment: BERTH_DEB_CONFIGURATION (release, or debug for a quicker test build), BERTH_DEB_SCRATCH_PATH
# (.build-deb), BERTH_DEB_OUT (dist).
# Checked by scripts/test-deb.sh (dpkg -i, systemd-analyze verify, berth --version, man, dpkg --purge).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
CONFIGURATION=${BERTH_DEB_CONFIGURATION:-release}
OUT=${BERTH_DEB_OUT:-$ROOT/dist}
SCRATCH=(--scratch-path "${BERTH_DEB_SCRATCH_PATH:-$ROOT/.build-deb}")

# The Swift runtime's shared libraries go in /usr/lib/berth, found through the binary's rpath. (Linking them
# statically, --static-swift-stdlib, fails on FoundationXML's C half, which LibvirtStorage's XMLParser needs.)
swift build "${SCRATCH[@]}" -c "$CONFIGURATION" -Xlinker -rpath -Xlinker /usr/lib/berth --product berth
BERTH="$(swift build "${SCRATCH[@]}" -c "$CONFIGURATION" --show-bin-path)/berth"

VERSION=$("$BERTH" --version)
ARCH=$(dpkg --print-architecture)
STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
PKG="$STAGE/berth"

install -D -m 0755 "$BERTH" "$PKG/usr/bin/berth"
strip --strip-unneeded "$PKG/usr/bin/berth"
SWIFT_LIBS=$(dirname "$(readlink -f "$(command -v swift)")")/../lib/swift/linux
install -d "$PKG/usr/lib/berth"
ldd "$BERTH" | awk '/=> \// { print $3 }' | while read -r library; do
    if [ "$(readlink -f "$(dirname "$library")")" = "$(readlink -f "$SWIFT_LIBS")" ]; then
        install -m 0644 "$library" "$PKG/usr/lib/berth/"
        strip --strip-unneeded "$PKG/usr/lib/berth/$(basename "$library")"
    fi
done

# systemd: the unit as shipped in deploy/, run from /usr/bin.
install -d "$PKG/lib/systemd/system"
sed 's#/usr/local/bin/berth#/usr/bin/berth#g' deploy/berth-worker@.service >"$PKG/lib/systemd/system/berth-worker@.service"
chmod 0644 "$PKG/lib/systemd/system/berth-worker@.service"
# The bare-metal drop-in raises a capability: installed on the hosts that need it only (docs/baremetal.md).
for dropin in deploy/berth-worker@.service.d/*.conf; do
    install -D -m 0644 "$dropin" "$PKG/usr/share/berth/berth-worker@.service.d/$(basename "$dropin")"
done
install -D -m 0600 deploy/worker.env "$PKG/etc/berth/worker.env"
install -D -m 0644 deploy/rabbitmq-definitions.json "$PKG/usr/share/berth/rabbitmq-definitions.json"
if [ -f deploy/berth.conf.sample ]; then
    install -D -m 0644 deploy/berth.conf.sample "$PKG/usr/share/doc/berth/examples/berth.conf.sample"
fi

# Man pages: one per command and subcommand, from the parser's own description of itself (the plugin builds
# its tool and a debug berth in .build, which the help text does not depend on). berth.worker.1 is installed
# as berth-worker.1, so `man berth-worker` finds it, as `man git-commit` does.
swift package plugin generate-manual --configuration debug --multi-page --date "$(date -u +%Y-%m-%d)" >/dev/null
MAN="$ROOT/.build/plugins/GenerateManual/outputs/berth"
install -d "$PKG/usr/share/man/man1"
for page in "$MAN"/*.1; do
    name=$(basename "$page" .1)
    gzip -9n <"$page" >"$PKG/usr/share/man/man1/${name//./-}.1.gz"
done

install -d "$PKG/usr/share/bash-completion/completions" "$PKG/usr/share/zsh/vendor-completions" \
    "$PKG/usr/share/fish/vendor_completions.d"
"$BERTH" --generate-completion-script bash >"$PKG/usr/share/bash-completion/completions/berth"
"$BERTH" --generate-completion-script zsh >"$PKG/usr/share/zsh/vendor-completions/_berth"
"$BERTH" --generate-completion-script fish >"$PKG/usr/share/fish/vendor_completions.d/berth.fish"

install -d "$PKG/usr/share/doc/berth/diagrams"
install -m 0644 README.md docs/*.md "$PKG/usr/share/doc/berth/"
# The images the docs show, beside them as the docs link them (diagrams/<name>.svg).
install -m 0644 docs/diagrams/*.svg "$PKG/usr/share/doc/berth/diagrams/"
cat >"$PKG/usr/share/doc/berth/copyright" <<'EOF'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: berth
Files: *
Copyright: the Berth authors
License: see the source repository
EOF

# Depends: the distribution packages that hold the shared libraries the binary and the Swift runtime load
# directly (their own dependencies come with those packages).
OBJECTS=("$BERTH" "$PKG"/usr/lib/berth/*.so*)
DEPENDS=$(objdump -p "${OBJECTS[@]}" | awk '/NEEDED/ { print $2 }' | sort -u | while read -r name; do
    library=$(ldd "${OBJECTS[@]}" | awk -v name="$name" '$1 == name && $3 ~ /^\// { print $3; exit }')
    if [ -z "$library" ] || [ "$(readlink -f "$(dirname "$library")")" = "$(readlink -f "$SWIFT_LIBS")" ]; then
        continue
    fi
    dpkg -S "$(readlink -f "$library")" 2>/dev/null || dpkg -S "$library" 2>/dev/null || true
done | cut -d: -f1 | sort -u | grep -v '^libc6$' | paste -sd, - | sed 's/,/, /g')
SIZE=$(du -sk "$PKG" | cut -f1)

install -d "$PKG/DEBIAN"
cat >"$PKG/DEBIAN/control" <<EOF
Package: berth
Version: $VERSION
Architecture: $ARCH
Maintainer: Berth maintainers <berth@localhost>
Installed-Size: $SIZE
Depends: libc6, adduser, ${DEPENDS}
Recommends: libvirt-daemon-system
Section: admin
Priority: optional
Homepage: https://berth.example/
Description: message-queue driven compute worker (oslo.messaging over RabbitMQ)
 Berth consumes compute RPCs the way an oslo.messaging server does and runs
 them with libvirt: boots, snapshots, bare-metal deploys. Run one worker per
 host name with the systemd template unit berth-worker@.service.
EOF
echo /etc/berth/worker.env >"$PKG/DEBIAN/conffiles"

cat >"$PKG/DEBIAN/postinst" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
    if ! getent passwd berth >/dev/null; then
        adduser --system --group --home /var/lib/berth --no-create-home --shell /usr/sbin/nologin \
            --gecos "Berth compute worker" berth >/dev/null
    fi
    # qemu:///system: libvirtd's socket belongs to group libvirt.
    if getent group libvirt >/dev/null; then adduser berth libvirt >/dev/null; fi
    chown root:berth /etc/berth/worker.env
    chmod 0640 /etc/berth/worker.env
    if [ -d /run/systemd/system ]; then systemctl daemon-reload >/dev/null || true; fi
fi
exit 0
EOF
cat >"$PKG/DEBIAN/prerm" <<'EOF'
#!/bin/sh
set -e
# Workers drain on SIGTERM (up to their grace period) before the binary goes.
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
    systemctl stop 'berth-worker@*.service' >/dev/null 2>&1 || true
fi
exit 0
EOF
cat >"$PKG/DEBIAN/postrm" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = purge ]; then
    # dpkg has removed the conffile; the directory and the user go too. The data directory stays: it holds
    # the instances' disks and the catalog.
    rmdir /etc/berth 2>/dev/null || true
    if getent passwd berth >/dev/null; then deluser --system --quiet berth >/dev/null 2>&1 || true; fi
    if getent group berth >/dev/null; then delgroup --system --quiet berth >/dev/null 2>&1 || true; fi
fi
if [ -d /run/systemd/system ]; then systemctl daemon-reload >/dev/null 2>&1 || true; fi
exit 0
EOF
chmod 0755 "$PKG/DEBIAN/postinst" "$PKG/DEBIAN/prerm" "$PKG/DEBIAN/postrm"

mkdir -p "$OUT"
DEB="$OUT/berth_${VERSION}_${ARCH}.deb"
dpkg-deb --root-owner-group --build "$PKG" "$DEB" >/dev/null
echo "$DEB"
