"""Crafted images against a bare-metal deploy through the bus (issue 15): images an attacker could put in a
catalog, each refused by the worker before the first byte reaches the node's disk.

Each case is deployed with a stock oslo.messaging RPCClient to a worker with one node (a disk file holding
content of its own). Every refusal must be a clean InvalidImage reply within 10 s that names what is wrong on
one line; the worker must still answer `ping` afterwards (an arithmetic trap would have killed it); and the
node's disk must keep its sha256 and size (nothing written, nothing grown).

Cases: qcow2 l1_table_offset near 2^64; GPT last_usable_lba, partition_entry_lba = 2^64-1 and
first_usable_lba = 0; a raw image with no partition table (once written over the disk and only then refused);
a corrupt compressed qcow2 cluster (once found only while writing); an MBR logical partition past the disk's
end (once grew the node file to 2 TB); an MBR 0x99 partition overlapping partition 1 (once written over it); a
qcow2 whose backing-file name holds a newline (once copied raw into the reply and the log).

The images are planted in the local catalog's store, as a catalog that keeps whatever it is given would hold
them, so what refuses them is the worker's own inspection.
"""

from __future__ import annotations

import pathlib
import shutil
import struct
import subprocess
import time
import zlib

import oslo_messaging
import pytest

from conftest import request_context, rpc_client, unavailable
from test_baremetal import Catalog, fill, run, sha256

MiB = 1 << 20
NODE_BYTES = 256 * MiB
REFUSAL_SECONDS = 10


def gpt_image(path: pathlib.Path, script: str, **fields: int) -> pathlib.Path:
    """An 8 MiB sfdisk GPT image with header fields (offset: value) replaced and the header CRC fixed."""
    run("truncate", "-s", 8 * MiB, path)
    run("sfdisk", "-q", "--wipe", "always", path, input=script)
    with open(path, "r+b") as f:
        f.seek(512)
        header = bytearray(f.read(92))
        for offset, value in fields.values():
            struct.pack_into("<Q", header, offset, value)
        struct.pack_into("<I", header, 16, 0)
        struct.pack_into("<I", header, 16, zlib.crc32(header))
        f.seek(512)
        f.write(header)
    return path


def mbr_sector(slots) -> bytes:
    sector = bytearray(512)
    for index, (kind, first, count) in enumerate(slots):
        struct.pack_into("<B3xII", sector, 446 + 16 * index + 4, kind, first, count)
    sector[510:512] = b"\x55\xaa"
    return bytes(sector)


def raw_image(path: pathlib.Path, sectors: dict[int, bytes]) -> pathlib.Path:
    run("truncate", "-s", 8 * MiB, path)
    with open(path, "r+b") as f:
        for lba, data in sectors.items():
            f.seek(lba * 512)
            f.write(data)
    return path


def first_compressed_cluster(path: pathlib.Path, at_least: int) -> int:
    """File offset of the first compressed cluster at or past virtual offset `at_least` (one L2 table's worth)."""
    data = path.read_bytes()
    cluster_bits = struct.unpack_from(">I", data, 20)[0]
    l1_offset = struct.unpack_from(">Q", data, 40)[0]
    l2_offset = struct.unpack_from(">Q", data, l1_offset)[0] & 0x00FF_FFFF_FFFF_FE00
    shift = 62 - (cluster_bits - 8)
    for index in range(at_least >> cluster_bits, 1 << (cluster_bits - 3)):
        entry = struct.unpack_from(">Q", data, l2_offset + 8 * index)[0]
        if entry & (1 << 62):
            return entry & ((1 << shift) - 1)
    raise AssertionError("qemu-img wrote no compressed cluster")


def build_cases(work: pathlib.Path) -> dict[str, tuple[pathlib.Path, str]]:
    """{case: (image file, a phrase the refusal must hold)}."""
    cases = {}
    l1 = work / "l1.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", l1, 8 * MiB)
    with open(l1, "r+b") as f:
        f.seek(36)
        f.write(struct.pack(">IQ", 65536, (1 << 64) - 65536))
    cases["qcow2-l1-offset"] = (l1, "l1_table_offset 18446744073709486080")

    one_partition = "label: gpt\nstart=2048, size=8192, type=L\n"
    top = (1 << 64) - 1
    cases["gpt-last-usable"] = (gpt_image(work / "last.raw", one_partition, last=(48, top)),
                                f"last_usable_lba {top}")
    cases["gpt-entry-lba"] = (gpt_image(work / "entries.raw", one_partition, entries=(72, top)),
                              f"partition_entry_lba {top}")
    cases["gpt-first-usable"] = (gpt_image(work / "first.raw", "label: gpt\n", first=(40, 0), last=(48, 1)),
                                 "first_usable_lba 0")

    bare = work / "bare.raw"
    run("truncate", "-s", 8 * MiB, bare)
    fill(bare, 0, 4 * MiB, seed=150)
    cases["no-partition-table"] = (bare, "no partition table")

    source = gpt_image(work / "compressed-source.raw", one_partition)
    fill(source, 1 * MiB, 2 * MiB, seed=151, compressible=True)
    compressed = work / "compressed.qcow2"
    run("qemu-img", "convert", "-c", "-O", "qcow2", source, compressed)
    with open(compressed, "r+b") as f:
        f.seek(first_compressed_cluster(compressed, 1 * MiB))
        f.write(b"\xff" * 16)
    cases["corrupt-compressed-cluster"] = (compressed, "compressed cluster")

    # Extended partition at 8192; its EBR's logical partition starts 0xF0000000 sectors (about 2 TB) further.
    cases["mbr-logical-past-end"] = (raw_image(work / "logical.raw", {
        0: mbr_sector([(0x83, 2048, 4096), (0x05, 8192, 8192)]),
        8192: mbr_sector([(0x99, 0xF000_0000, 131072)]),
    }), "logical partition 5")
    cases["mbr-0x99-overlap"] = (raw_image(work / "overlap.raw", {
        0: mbr_sector([(0x83, 2048, 8192), (0x99, 4096, 4096)]),
    }), "partitions 1 and 2")

    backing = work / "backing.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", "/etc/" + "a" * 200, "-F", "raw", backing, MiB)
    name_offset = struct.unpack_from(">Q", backing.read_bytes(), 8)[0]
    with open(backing, "r+b") as f:
        f.seek(name_offset + 5)
        f.write(b"\nERROR forged log line")
    cases["backing-file-newline"] = (backing, "backing file")
    return cases


@pytest.fixture(scope="module")
def hostile(berth_bin, worker_factory, rpc_transport, tmp_path_factory):
    missing = [tool for tool in ("qemu-img", "sfdisk", "truncate") if shutil.which(tool) is None]
    if missing:
        unavailable(f"hostile-image checks need {', '.join(missing)} (scripts/install-deps.sh installs them)")
    work = tmp_path_factory.mktemp("hostile")
    catalog = Catalog(berth_bin, work / "catalog")
    seed = work / "seed.raw"
    run("truncate", "-s", MiB, seed)
    # A record declares what its data is (the catalog refuses a qcow2 stored as raw before any deploy): qcow2
    # cases are planted into qcow2 records.
    seed_qcow2 = work / "seed.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", seed_qcow2, MiB)
    images = {}
    for case, (path, expect) in build_cases(work).items():
        is_qcow2 = path.read_bytes()[:4] == b"QFI\xfb"
        image_id = catalog.create(f"{case}-seed", "qcow2" if is_qcow2 else "raw", seed_qcow2 if is_qcow2 else seed)
        catalog.plant(image_id, path, 8 * MiB)
        images[case] = (image_id, expect)
    node = work / "node.img"
    run("truncate", "-s", NODE_BYTES, node)
    for index, offset in enumerate((0, 10 * MiB, 200 * MiB)):
        fill(node, offset, 256 * 1024, seed=160 + index)
    worker = worker_factory(extra_args=[
        "--catalog", f"local:{catalog.root}", "--state-dir", str(work / "state"), "--node", f"victim={node}",
    ]).start()
    yield {"images": images, "node": node, "worker": worker, "transport": rpc_transport}
    assert worker.stop() == 0, worker.describe()


def call(hostile, method, timeout=60, **kwargs):
    worker = hostile["worker"]
    client = rpc_client(hostile["transport"], worker.topic)
    return client.prepare(server=worker.host, timeout=timeout).call(request_context(), method, **kwargs)


CASES = ["qcow2-l1-offset", "gpt-last-usable", "gpt-entry-lba", "gpt-first-usable", "no-partition-table",
         "corrupt-compressed-cluster", "mbr-logical-past-end", "mbr-0x99-overlap", "backing-file-newline"]


@pytest.mark.parametrize("case", CASES)
def test_crafted_image_is_refused_before_writing(hostile, case):
    image_id, expect = hostile["images"][case]
    node = hostile["node"]
    before = sha256(node)
    instance = {
        "uuid": "00000000-0000-4000-8000-%012d" % CASES.index(case), "name": f"hostile {case}",
        "image_id": image_id, "flavor": {"name": "baremetal", "vcpus": 1, "memory_mb": 64, "root_gb": 1},
        "target": "baremetal", "node": "victim",
    }
    started = time.monotonic()
    with pytest.raises(oslo_messaging.RemoteError) as caught:
        call(hostile, "boot_instance", instance=instance)
    seconds = time.monotonic() - started
    print(f"\n{case}: refused in {seconds:.3f} s")
    error = caught.value
    assert error.exc_type == "InvalidImage", (case, error.exc_type, error.value)
    assert expect in error.value, (case, error.value)
    assert "\n" not in error.value, (case, error.value)
    assert seconds < REFUSAL_SECONDS, (case, seconds)
    assert call(hostile, "ping", timeout=10) is not None, "the worker no longer answers ping"
    assert sha256(node) == before, f"{case}: the refused deploy changed the node's disk"
    assert node.stat().st_size == NODE_BYTES, f"{case}: the node's disk file changed size"


def test_backing_file_name_cannot_forge_a_log_line(hostile):
    """The name from the image reaches the log only escaped: no line of the worker's log starts with the text
    that followed the newline."""
    worker = hostile["worker"]
    image_id, _ = hostile["images"]["backing-file-newline"]
    with pytest.raises(oslo_messaging.RemoteError) as caught:
        call(hostile, "boot_instance", instance={
            "uuid": "00000000-0000-4000-8000-100000000000", "name": "forge", "image_id": image_id,
            "flavor": {"name": "baremetal", "vcpus": 1, "memory_mb": 64, "root_gb": 1},
            "target": "baremetal", "node": "victim"})
    assert "/etc/\\n" in caught.value.value, caught.value.value
    assert "a" * 100 not in caught.value.value, "the name is not truncated"
    assert not any(line.startswith("ERROR forged") for line in worker.log_text().splitlines())
