#!/usr/bin/env bash
# Remakes the seed corpora in Fuzz/corpus/ from real tools (qemu-img, sgdisk, sfdisk, Python's zlib) and the
# oslo.messaging captures, plus the crafted images issue 15 reported. Not run by CI: the seeds are committed;
# run this by hand after changing it, then commit what changed. GUIDs are random, so every run differs a little.
# The crafted inputs that crash today's parsers go to Fuzz/crashes/<target>/issue15-*: fuzz.sh runs them as
# seeds too, so once fixed they stay as regression inputs.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
CAPTURES=${BERTH_WIRE_CAPTURES:-Tests/BerthWireTests/Fixtures}
CORPUS=Fuzz/corpus
CRASHES=Fuzz/crashes
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
rm -rf "$CORPUS"
mkdir -p "$CORPUS"/{qcow2,inflate,gpt,mbr,partition-table,config-partition,json,oslo-envelope} \
    "$CRASHES"/{qcow2,gpt,mbr,config-partition}

# patch FILE OFFSET FORMAT VALUE: overwrites bytes with a packed value (Python struct format, e.g. '>Q').
patch() {
    python3 - "$@" <<'EOF'
import struct, sys
path, offset, fmt, value = sys.argv[1], int(sys.argv[2], 0), sys.argv[3], int(sys.argv[4], 0)
with open(path, "r+b") as f:
    f.seek(offset)
    f.write(struct.pack(fmt, value))
EOF
}

# --- qcow2: small real images (512-byte clusters keep them a few KiB), then the crafted ones.
python3 -c "import sys; sys.stdout.buffer.write(bytes(range(256)) * 16 + b'berth' * 500 + bytes(4096) + b'U' * 3000)" \
    >"$WORK/data.raw"
truncate -s 64K "$WORK/data.raw"
q=$CORPUS/qcow2
qemu-img create -q -f qcow2 -o cluster_size=512 "$q/empty-v3.qcow2" 64K
qemu-img create -q -f qcow2 -o cluster_size=512,compat=0.10 "$q/empty-v2.qcow2" 64K
qemu-img convert -q -f raw -O qcow2 -o cluster_size=512 "$WORK/data.raw" "$q/data.qcow2"
qemu-img convert -q -c -f raw -O qcow2 -o cluster_size=4096 "$WORK/data.raw" "$q/compressed.qcow2"
qemu-img convert -q -c -f raw -O qcow2 -o cluster_size=512,compat=0.10 "$WORK/data.raw" "$q/compressed-v2.qcow2"
qemu-img create -q -f qcow2 -o cluster_size=512 -b /etc/hostname -F raw "$q/backing-host-file.qcow2" 64K
cp "$q/data.qcow2" "$CRASHES/qcow2/issue15-l1-offset-near-2e64.qcow2"
patch "$CRASHES/qcow2/issue15-l1-offset-near-2e64.qcow2" 40 '>Q' 0xFFFFFFFFFFFFFE00
patch "$CRASHES/qcow2/issue15-l1-offset-near-2e64.qcow2" 36 '>I' 64
cp "$q/empty-v3.qcow2" "$q/huge-virtual-size.qcow2"
patch "$q/huge-virtual-size.qcow2" 24 '>Q' 0x0000010000000000
head -c 4096 "$WORK/data.raw" >"$q/raw.img"

# --- inflate: one byte picking the cluster size (512 << n), then a raw deflate stream.
python3 - "$CORPUS/inflate" <<'EOF'
import os, sys, zlib
out = sys.argv[1]
def raw(data, level=9, strategy=zlib.Z_DEFAULT_STRATEGY):
    c = zlib.compressobj(level, zlib.DEFLATED, -15, 9, strategy)
    return c.compress(data) + c.flush()
text = b"the quick brown fox jumps over the lazy dog " * 40
samples = {
    "stored": (0, raw(bytes(range(256)) * 2, level=0)),
    "fixed": (0, raw(b"abcabcabc" * 50, strategy=zlib.Z_FIXED)),
    "dynamic": (3, raw(text)),
    "zeros-4k": (3, raw(bytes(4096))),
    "huffman-only": (1, raw(text[:1024], strategy=zlib.Z_HUFFMAN_ONLY)),
    "rle": (2, raw(b"a" * 900 + b"b" * 1100, strategy=zlib.Z_RLE)),
    "longer-than-cluster": (0, raw(text * 3)),
    "empty": (0, raw(b"")),
}
for name, (shift, stream) in samples.items():
    with open(os.path.join(out, name), "wb") as f:
        f.write(bytes([shift]) + stream)
EOF

# --- GPT disks made by sgdisk (4 or 128 entries), then the crafted headers of issue 15.
gptdisk() {  # gptdisk NAME SIZE SGDISK-ARGS...: a disk file in $WORK
    local name=$1 size=$2
    shift 2
    truncate -s "$size" "$WORK/$name"
    sgdisk "$@" "$WORK/$name" >/dev/null
}
gptdisk gpt-two 48K -o --resize-table=4 -n 1:0:+8K -t 1:8300 -n 2:0:+4K -c 2:root
gptdisk gpt-config 48K -o --resize-table=4 -n 1:0:+8K -n 2:0:+4K -c 2:config-2 -t 2:0700
gptdisk gpt-128 64K -o -n 1:0:+4K
gptdisk gpt-empty 40K -o --resize-table=4
# An image smaller than the disk: the backup header sits at the image's end, not the disk's.
gptdisk gpt-small-image 40K -o --resize-table=4 -n 1:0:+4K
truncate -s 48K "$WORK/gpt-small-image"
for name in gpt-two gpt-config gpt-128 gpt-empty gpt-small-image; do
    tail -c +513 "$WORK/$name" >"$CORPUS/gpt/$name"  # the gpt target supplies sector 0
    cp "$WORK/$name" "$CORPUS/partition-table/$name.img"
    cp "$WORK/$name" "$CORPUS/config-partition/$name.img"
done
# The header fields issue 15 crashed on (offsets within the header at LBA 1; the targets reseal the CRCs).
# first_usable_lba = 0 matters on a table with no partitions, where the creator starts from it; last_usable_lba
# = 1 puts the entry array (LBA 2) past the usable area, so the reader lets it through.
for field in gpt-two:last-usable-lba:48:0xFFFFFFFFFFFFFFFF gpt-two:entries-lba:72:0xFFFFFFFFFFFFFFFF \
    gpt-empty:first-usable-lba:40:0; do
    IFS=: read -r base label offset value <<<"$field"
    cp "$WORK/$base" "$WORK/crafted"
    patch "$WORK/crafted" $((512 + offset)) '<Q' "$value"
    [[ $label == first-usable-lba ]] && patch "$WORK/crafted" $((512 + 48)) '<Q' 1
    tail -c +513 "$WORK/crafted" >"$CRASHES/gpt/issue15-$label"
    cp "$WORK/crafted" "$CRASHES/config-partition/issue15-$label.img"
done

# --- MBR disks made by sfdisk (primaries, an extended partition with a chain of logicals).
mbrdisk() {  # mbrdisk NAME SIZE < sfdisk script
    truncate -s "$2" "$WORK/$1"
    sfdisk -q --no-reread --no-tell-kernel "$WORK/$1" >/dev/null
}
mbrdisk mbr-primaries 16K <<'EOF'
label: dos
start=1, size=8, type=83, bootable
start=9, size=8, type=c
EOF
mbrdisk mbr-logicals 16K <<'EOF'
label: dos
start=1, size=4, type=83
start=5, size=26, type=5
start=6, size=4, type=83
start=11, size=4, type=82
start=16, size=4, type=c
EOF
mbrdisk mbr-config 16K <<'EOF'
label: dos
start=1, size=8, type=83
start=9, size=8, type=99
EOF
mbrdisk mbr-empty 8K <<'EOF'
label: dos
EOF
for name in mbr-primaries mbr-logicals mbr-config mbr-empty; do
    cp "$WORK/$name" "$CORPUS/mbr/$name"
    cp "$WORK/$name" "$CORPUS/partition-table/$name.img"
    cp "$WORK/$name" "$CORPUS/config-partition/$name.img"
done
# Issue 15: a logical partition far past the disk's end, and a 0x99 partition overlapping partition 1.
cp "$WORK/mbr-logicals" "$CRASHES/mbr/issue15-logical-past-end"
patch "$CRASHES/mbr/issue15-logical-past-end" $((5 * 512 + 446 + 12)) '<I' 0xF0000000
cp "$WORK/mbr-primaries" "$CRASHES/mbr/issue15-config-overlaps-1"
patch "$CRASHES/mbr/issue15-config-overlaps-1" $((446 + 16 + 4)) '<B' 0x99
patch "$CRASHES/mbr/issue15-config-overlaps-1" $((446 + 16 + 8)) '<I' 4
cp "$CRASHES/mbr/issue15-logical-past-end" "$CRASHES/mbr/issue15-config-overlaps-1" "$CRASHES/config-partition/"
# A raw image with no partition table at all (the deploy must refuse it before writing).
head -c 8192 /dev/zero >"$CORPUS/config-partition/no-table.img"

# --- JSON and oslo envelopes: the bodies of the oslo.messaging captures, and their inner messages.
python3 - "$CAPTURES" "$CORPUS" <<'EOF'
import glob, json, os, sys
captures, corpus = sys.argv[1], sys.argv[2]
for path in sorted(glob.glob(os.path.join(captures, "*.json"))):
    name = os.path.basename(path)[:-5]
    capture = json.load(open(path))
    if "body" not in capture:
        continue
    body = capture["body"]
    with open(os.path.join(corpus, "oslo-envelope", name), "w") as f:
        json.dump(body, f)
    inner = body.get("oslo.message") if isinstance(body, dict) else None
    if isinstance(inner, str):
        with open(os.path.join(corpus, "json", name), "w") as f:
            f.write(inner)
        message = json.loads(inner)
        instance = message.get("args", {}).get("instance")
        if instance is not None:
            with open(os.path.join(corpus, "json", name + "-instance"), "w") as f:
                json.dump(instance, f)
EOF
printf '%s' '[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]' >"$CORPUS/json/deep"
printf '%s' '{"a\u0000b": "x\u0000y", "n": 1e308, "i": 92233720368547758070, "u": "\ud83d\ude00", "f": -0.0}' \
    >"$CORPUS/json/edges"
echo "seeds: $(find "$CORPUS" -type f | wc -l) files, $(du -sh "$CORPUS" | cut -f1)"
