"""Bare-metal deploys through the bus (DESIGN §6, issue 6): a stock oslo.messaging RPCClient asks a Berth
worker to deploy catalog images to its nodes (sparse disk files), and tools no one here wrote check the disks.

- Deploys: a raw GPT image with its own `config-2` partition, a qcow2 (plain and compressed) MBR image with a
  0x99 partition, and GPT images without a config partition on a 512-byte and a 4096-byte-sector node. After
  each, the disk equals `qemu-img convert -O raw` of the image byte for byte outside the partition-table sectors
  and the config partition, is zero past the image except the moved backup GPT and the created partition,
  `sgdisk -v` finds no problem, `sfdisk --json` shows the image's partitions unchanged (plus the created 64 MiB
  `config-2` at the end), `blkid -p` sees a vfat labelled config-2, and cloud-init's own reader
  (`read_config_drive`, Debian's cloud-init under /usr/bin/python3) reads back the uuid, keys, metadata and the
  exact user data from the files `mcopy` extracts.
- Refusals: every image the worker must not write fails with InvalidImage and a message of its own, and the
  disk's sha256 is unchanged. The local catalog already refuses qcow2 with a backing file, an external data
  file or encryption at import (checked below), so those are planted in its store to stand in for a catalog
  that keeps whatever it is given (Glance). An unknown node is NodeNotFound.
- A 4 GiB-virtual qcow2 with 96 MiB of data deploys with the worker's peak RSS growing by at most 64 MiB, into
  a disk file whose allocation is within 5 % of the image's data (`qemu-img map`, `qemu-img convert -S 4k`).
- Events: baremetal.deploy.start, .progress (increasing, all before .end), .end and .error reach a stock
  NotificationListener; each deploy adds a deploy.throughput sample to the worker's berth.metrics batches.
- A repeat answers the same without writing; get_instance and delete_instance work; a node holding an
  instance refuses another until that one is deleted, and two deploys sent to one node at once write it once.
  One uuid is one instance: a VM and a deploy cannot share it.

Loop devices (`losetup --sector-size 4096`, read-only) let sgdisk and sfdisk read the 4Kn disk.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import errno
import hashlib
import json
import os
import pathlib
import random
import re
import shutil
import subprocess
import threading
import time
import uuid

import oslo_messaging
import pytest

from conftest import request_context, rpc_client, unavailable

MiB = 1 << 20
GiB = 1 << 30
CLOUD_INIT_PYTHON = "/usr/bin/python3"
CONFIG_PARTITION_BYTES = 64 * MiB  # what Berth creates when the image has no config partition
GPT_ENTRY_ARRAY_BYTES = 128 * 128  # 128 entries of 128 bytes, as sgdisk, sfdisk and fdisk write them
RSS_GROWTH_LIMIT = 64 * MiB
ALLOCATION_TOLERANCE = 0.05

# Bytes that are not text and not valid UTF-8, so "exactly" means exactly.
USER_DATA = b"#cloud-config\nruncmd:\n  - echo 'h\xc3\xa9llo from berth'\n# raw: " + bytes(range(256)) + b"\n"
PUBLIC_KEYS = {"ops": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBerthInteropTestKeyOnlyForTestsXXXXXXXXXXXX ops@berth"}
METADATA = {"role": "interop", "rack": "r1"}

REQUIRED_TOOLS = ["qemu-img", "sgdisk", "sfdisk", "fdisk", "mkfs.vfat", "mcopy", "blkid", "losetup", "truncate"]


# --- small helpers ------------------------------------------------------------------------------------------------


def run(*argv, check=True, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=120, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, argv))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def fill(path: pathlib.Path, offset: int, length: int, seed: int, compressible: bool = False):
    """Writes `length` bytes of test data at `offset`: random, or a 4 KiB random block repeated with a counter,
    which deflate shrinks (so `qemu-img convert -c` really stores compressed clusters)."""
    rng = random.Random(seed)
    if compressible:
        block = rng.randbytes(4096)
        data = b"".join(i.to_bytes(8, "little") + block[8:] for i in range(length // 4096))
    else:
        data = rng.randbytes(length)
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(4 * MiB), b""):
            digest.update(chunk)
    return digest.hexdigest()


def data_ranges(path: pathlib.Path, start: int, end: int) -> list[tuple[int, int]]:
    """The allocated ranges of a file within [start, end) (SEEK_DATA/SEEK_HOLE); holes read as zeros."""
    ranges = []
    fd = os.open(path, os.O_RDONLY)
    try:
        position = start
        while position < end:
            try:
                data = os.lseek(fd, position, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:
                    break
                raise
            if data >= end:
                break
            hole = os.lseek(fd, data, os.SEEK_HOLE)
            ranges.append((data, min(hole, end)))
            position = hole
    finally:
        os.close(fd)
    return ranges


def merge(ranges):
    merged = []
    for a, b in sorted(ranges):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def subtract(ranges, holes):
    out = []
    for a, b in ranges:
        pieces = [(a, b)]
        for ha, hb in holes:
            pieces = [p for x, y in pieces for p in ((x, min(y, ha)), (max(x, hb), y)) if p[0] < p[1]]
        out += pieces
    return out


def compare_ranges(disk: pathlib.Path, ref: pathlib.Path, end: int, skip) -> int:
    """Compares disk and reference over [0, end) except `skip`; ranges that are holes in both are zero in both.
    Returns the bytes compared."""
    ranges = subtract(merge(data_ranges(disk, 0, end) + data_ranges(ref, 0, end)), skip)
    compared = 0
    with open(disk, "rb") as d, open(ref, "rb") as r:
        for a, b in ranges:
            position = a
            while position < b:
                n = min(4 * MiB, b - position)
                d.seek(position)
                r.seek(position)
                x, y = d.read(n), r.read(n)
                if x != y:
                    first = next(i for i in range(min(len(x), len(y))) if x[i] != y[i]) if len(x) == len(y) else 0
                    raise AssertionError(
                        f"{disk} differs from the image ({ref}) at byte {position + first} "
                        f"(sector {(position + first) // 512} in 512s)")
                compared += n
                position += n
    return compared


def assert_zero_outside(disk: pathlib.Path, start: int, end: int, allowed):
    """Every byte of [start, end) outside `allowed` ranges is zero."""
    with open(disk, "rb") as d:
        for a, b in subtract(data_ranges(disk, start, end), allowed):
            position = a
            while position < b:
                n = min(4 * MiB, b - position)
                d.seek(position)
                chunk = d.read(n)
                if chunk.count(0) != len(chunk):
                    first = next(i for i, v in enumerate(chunk) if v)
                    raise AssertionError(
                        f"{disk}: byte {position + first} past the image is not zero and is neither the backup "
                        f"GPT nor the created config partition (allowed: {allowed})")
                position += n


@contextlib.contextmanager
def sector_view(path: pathlib.Path, sector_size: int):
    """A path the partition tools read with the right sector size: the file itself for 512-byte sectors, a
    read-only loop device with 4096-byte sectors otherwise (sgdisk and sfdisk assume 512 on plain files)."""
    if sector_size == 512:
        yield str(path)
        return
    proc = run("losetup", "--read-only", "--sector-size", sector_size, "--find", "--show", path, check=False)
    if proc.returncode != 0:
        unavailable(f"checking a {sector_size}-byte-sector disk needs a loop device: losetup said "
                    f"{proc.stderr.strip()}")
    device = proc.stdout.strip()
    try:
        yield device
    finally:
        run("losetup", "--detach", device, check=False)


def sfdisk_json(path: str) -> dict:
    return json.loads(run("sfdisk", "--json", path).stdout)["partitiontable"]


def qemu_info(path: pathlib.Path) -> dict:
    return json.loads(run("qemu-img", "info", "--output=json", path).stdout)


# --- images --------------------------------------------------------------------------------------------------------


class Image:
    def __init__(self, name, path, disk_format, sector_size=512, table="gpt"):
        self.name, self.path, self.disk_format = name, pathlib.Path(path), disk_format
        self.sector_size, self.table = sector_size, table
        self.id = None
        self.ref: pathlib.Path | None = None  # `qemu-img convert -O raw` of the image
        self.virtual_size = 0


class Node:
    def __init__(self, name, path, size, sector_size=512):
        self.name, self.path, self.size, self.sector_size = name, pathlib.Path(path), size, sector_size

    @property
    def arg(self):
        return f"{self.name}={self.path}" + (f":{self.sector_size}" if self.sector_size != 512 else "")


class Catalog:
    def __init__(self, berth_bin, root: pathlib.Path):
        self.berth_bin, self.root = berth_bin, root

    def create(self, name, disk_format, file, check=True) -> subprocess.CompletedProcess | str:
        proc = run(self.berth_bin, "images", "create", "--catalog", f"local:{self.root}", "--name", name,
                   "--disk-format", disk_format, "--file", file, check=False)
        if not check:
            return proc
        assert proc.returncode == 0, f"berth images create {name} failed: {proc.stderr}"
        return json.loads(proc.stdout)["id"]

    def record_path(self, image_id) -> pathlib.Path:
        return self.root / "images" / f"{image_id}.json"

    def data_path(self, image_id) -> pathlib.Path:
        return self.root / "images" / f"{image_id}.data"

    def plant(self, image_id, data: pathlib.Path, virtual_size: int):
        """Replaces an image's stored data and record digests, as a catalog that does not inspect uploads would
        hold them, so the worker's own checks are what refuses it."""
        blob = data.read_bytes()
        shutil.copyfile(data, self.data_path(image_id))
        record = json.loads(self.record_path(image_id).read_text())
        record.update(size=len(blob), virtual_size=virtual_size, checksum=hashlib.md5(blob).hexdigest(),
                      os_hash_algo="sha512", os_hash_value=hashlib.sha512(blob).hexdigest())
        temporary = self.record_path(image_id).with_suffix(".tmp")
        temporary.write_text(json.dumps(record))
        os.replace(temporary, self.record_path(image_id))


def build_images(work: pathlib.Path, catalog: Catalog) -> dict[str, Image]:
    images = {}

    # 1. Raw GPT with its own config-2 partition, which holds an old vfat (mkfs.vfat --offset).
    raw = work / "gpt-cfg.raw"
    run("truncate", "-s", 48 * MiB, raw)
    run("sgdisk", "-n", "1:2048:+24M", "-c", "1:root", "-t", "1:8300",
        "-n", "2:0:+8M", "-c", "2:config-2", "-t", "2:0700", raw)
    for index, offset in enumerate((1 * MiB, 9 * MiB, 20 * MiB)):
        fill(raw, offset, 2 * MiB, seed=10 + index, compressible=index == 1)
    config_start = int(re.search(r"^\s+2\s+(\d+)", run("sgdisk", "-p", raw).stdout, re.M).group(1))
    run("mkfs.vfat", f"--offset={config_start}", "-n", "OLDCFG", raw, 8192)
    images["gpt-cfg"] = Image("gpt-cfg", raw, "raw")

    # 2. MBR with a 0x99 partition (sfdisk), as qcow2 and as compressed qcow2.
    raw = work / "mbr99.raw"
    run("truncate", "-s", 40 * MiB, raw)
    run("sfdisk", "-q", raw, input="label: dos\n2048,24M,83\n,8M,99\n")
    fill(raw, 2 * MiB, 3 * MiB, seed=20, compressible=True)
    fill(raw, 12 * MiB, 2 * MiB, seed=21)
    fill(raw, 22 * MiB, 1 * MiB, seed=22, compressible=True)
    for name, extra in (("mbr99", []), ("mbr99-c", ["-c"])):
        out = work / f"{name}.qcow2"
        run("qemu-img", "convert", *extra, "-O", "qcow2", raw, out)
        images[name] = Image(name, out, "qcow2", table="dos")
    packed = json.loads(run("qemu-img", "check", "--output=json", work / "mbr99-c.qcow2").stdout)
    assert packed["compressed-clusters"] >= 64, f"the compressed qcow2 should hold compressed clusters: {packed}"

    # 3. GPT without a config partition: 64 MiB raw for a 512-byte node (the case once reported as "60 s and no
    #    partition table"), and a 4096-byte-sector GPT (fdisk -b 4096) as qcow2 for a 4Kn node.
    raw = work / "gpt-new.raw"
    run("truncate", "-s", 64 * MiB, raw)
    run("sfdisk", "-q", raw, input="label: gpt\nstart=2048, size=40M, type=L, name=root\nsize=8M, type=L, name=data\n")
    fill(raw, 1 * MiB, 4 * MiB, seed=30)
    fill(raw, 30 * MiB, 2 * MiB, seed=31, compressible=True)
    fill(raw, 45 * MiB, 1 * MiB, seed=32)
    images["gpt-new"] = Image("gpt-new", raw, "raw")

    raw = work / "gpt-4k.raw"
    run("truncate", "-s", 32 * MiB, raw)
    run("fdisk", "-b", "4096", raw, input="g\nn\n1\n\n+16M\nn\n2\n\n+4M\nx\nn\n1\nroot\nn\n2\ndata\nr\nw\n")
    fill(raw, 1 * MiB, 3 * MiB, seed=40)
    fill(raw, 18 * MiB, 1 * MiB, seed=41, compressible=True)
    out = work / "gpt-4k.qcow2"
    run("qemu-img", "convert", "-O", "qcow2", raw, out)
    images["gpt-4k"] = Image("gpt-4k", out, "qcow2", sector_size=4096)

    # 4. 4 GiB virtual, 96 MiB of data at twelve offsets, GPT without a config partition.
    raw = work / "big.raw"
    run("truncate", "-s", 4 * GiB, raw)
    run("sfdisk", "-q", raw, input="label: gpt\nstart=2048, type=L, name=root\n")
    for index in range(12):
        offset = (index * 4 * GiB // 12 + 16 * MiB) // MiB * MiB
        fill(raw, offset, 8 * MiB, seed=50 + index, compressible=index % 3 == 0)
    out = work / "big.qcow2"
    run("qemu-img", "convert", "-O", "qcow2", raw, out)
    raw.unlink()
    images["big"] = Image("big", out, "qcow2")

    def register(image):
        image.id = catalog.create(image.name, image.disk_format, image.path)
        image.virtual_size = qemu_info(image.path)["virtual-size"]
        image.ref = work / f"{image.name}.ref.raw"
        run("qemu-img", "convert", "-O", "raw", image.path, image.ref)

    with concurrent.futures.ThreadPoolExecutor(max_workers=len(images)) as pool:
        list(pool.map(register, images.values()))
    return images


def build_refused(work: pathlib.Path, catalog: Catalog) -> dict[str, dict]:
    """Images the worker must refuse: {case: {id, expect (a phrase of the message)}}."""
    refused = {}
    seed = work / "seed.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", seed, 16 * MiB)

    planted = {
        "backing-file": (["-b", work / "base.qcow2", "-F", "qcow2"], "backing file"),
        "external-data-file": (["-o", f"data_file={work / 'external.raw'}"], "external data file"),
        # A short LUKS iteration time (100 ms): the default spends 2 s deriving a key no one will use.
        "encrypted": (["--object", "secret,id=s,data=x",
                       "-o", "encrypt.format=luks,encrypt.key-secret=s,encrypt.iter-time=100"],
                      "encryption method LUKS"),
        "encrypted-aes": (["--object", "secret,id=s,data=x", "-o", "encrypt.format=aes,encrypt.key-secret=s"],
                          "encryption method AES"),
    }
    run("qemu-img", "create", "-q", "-f", "qcow2", work / "base.qcow2", 16 * MiB)
    for case, (options, expect) in planted.items():
        path = work / f"{case}.qcow2"
        for attempt in range(5):
            # QEMU times its PBKDF benchmark with the thread's CPU clock and gives up ("Unable to get accurate
            # CPU usage") when a busy host makes a round read as 0 ms: try again.
            made = run("qemu-img", "create", "-q", "-f", "qcow2", *options, path, 16 * MiB, check=False)
            if made.returncode == 0 or "accurate CPU usage" not in made.stderr:
                break
        assert made.returncode == 0, f"qemu-img create {case} failed: {made.stderr}"
        # The local catalog refuses these at import already ...
        proc = catalog.create(case, "qcow2", path, check=False)
        assert proc.returncode != 0 and "InvalidImage" in proc.stderr, (case, proc.stdout, proc.stderr)
        # ... so plant them, as a catalog that stores anything would hold them.
        image_id = catalog.create(f"{case}-seed", "qcow2", seed)
        catalog.plant(image_id, path, 16 * MiB)
        refused[case] = {"id": image_id, "expect": expect}

    def plant(case: str, disk_format: str, path: pathlib.Path, virtual_size: int) -> str:
        """The catalog's own inspector refuses `path` at import; plant it under an accepted seed instead."""
        proc = catalog.create(case, disk_format, path, check=False)
        assert proc.returncode != 0 and "InvalidImage" in proc.stderr, (case, proc.stdout, proc.stderr)
        image_id = catalog.create(f"{case}-seed", disk_format, seed if disk_format == "qcow2" else flat)
        catalog.plant(image_id, path, virtual_size)
        return image_id

    flat = work / "seed.raw"
    run("truncate", "-s", 1 * MiB, flat)
    vmdk = work / "unknown.vmdk"
    run("qemu-img", "create", "-q", "-f", "vmdk", vmdk, 16 * MiB)
    refused["vmdk"] = {"id": plant("vmdk", "vmdk", vmdk, 16 * MiB), "expect": "VMDK"}

    too_big = work / "too-big.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", too_big, 256 * MiB)
    refused["larger-than-disk"] = {"id": catalog.create("too-big", "qcow2", too_big),
                                   "expect": "pick a node with a bigger disk"}

    # A qcow2 cut short: its header is intact, its L2 tables and data clusters lie past the new end.
    raw = work / "truncated-source.raw"
    run("truncate", "-s", 32 * MiB, raw)
    for index in range(4):
        fill(raw, index * 8 * MiB, 2 * MiB, seed=60 + index)
    truncated = work / "truncated.qcow2"
    run("qemu-img", "convert", "-O", "qcow2", raw, truncated)
    os.truncate(truncated, truncated.stat().st_size // 3)
    refused["truncated"] = {"id": plant("truncated", "qcow2", truncated, 32 * MiB),
                            "expect": "truncated or inconsistent"}

    # Data that no longer matches the catalog's checksum: one byte of the stored data flipped after the import.
    good = work / "checksum.raw"
    run("truncate", "-s", 8 * MiB, good)
    fill(good, 0, 1 * MiB, seed=70)
    image_id = catalog.create("checksum", "raw", good)
    with open(catalog.data_path(image_id), "r+b") as f:
        f.seek(512 * 1024)
        byte = f.read(1)
        f.seek(512 * 1024)
        f.write(bytes([byte[0] ^ 0xFF]))
    refused["checksum-mismatch"] = {"id": image_id, "expect": "does not match its record"}
    return refused


# --- the worker and its events ------------------------------------------------------------------------------------


class EventRecorder:
    """A stock NotificationListener endpoint keeping everything it is given."""

    def __init__(self):
        self.lock = threading.Lock()
        self.events = []

    def _keep(self, priority, publisher_id, event_type, payload, metadata):
        with self.lock:
            self.events.append({"priority": priority, "publisher_id": publisher_id, "event_type": event_type,
                                "payload": payload, "metadata": metadata})

    def info(self, ctxt, publisher_id, event_type, payload, metadata):
        self._keep("info", publisher_id, event_type, payload, metadata)

    def error(self, ctxt, publisher_id, event_type, payload, metadata):
        self._keep("error", publisher_id, event_type, payload, metadata)

    def of(self, uuid_, event_type=None):
        with self.lock:
            found = [e for e in self.events if e["payload"].get("instance_uuid") == uuid_
                     and (event_type is None or e["event_type"] == event_type)]
        # Oslo's threading executor may hand messages to the endpoint out of order; the worker's timestamp
        # is when it emitted each event.
        return sorted(found, key=lambda e: e["metadata"]["timestamp"])

    def wait(self, uuid_, event_type, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.of(uuid_, event_type):
                return True
            time.sleep(0.1)
        return False


class SampleRecorder:
    """A stock listener endpoint for the worker's berth.metrics batches (priority SAMPLE)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.samples = []

    def sample(self, ctxt, publisher_id, event_type, payload, metadata):
        with self.lock:
            self.samples += payload.get("samples", [])

    def of(self, name, uuid_):
        with self.lock:
            return [s for s in self.samples if s["name"] == name and s["instance_uuid"] == uuid_]


class Bench:
    """Everything this module shares: catalog, images, nodes, the worker and its event listener."""

    def __init__(self):
        self.deploys = {}  # node name -> {"instance", "result", "ctxt", "seconds"}
        self.refusals = {}  # case -> message
        self.figures = {}

    def call(self, method, *, ctxt=None, timeout=120, **kwargs):
        client = rpc_client(self.transport, self.worker.topic)
        return client.prepare(server=self.worker.host, timeout=timeout).call(
            ctxt or request_context(), method, **kwargs)

    def instance(self, image_id, node, name=None):
        return {
            "uuid": str(uuid.uuid4()), "name": name or f"bm {node}", "image_id": image_id,
            "flavor": {"name": "baremetal", "vcpus": 1, "memory_mb": 64, "root_gb": 1},
            "target": "baremetal", "node": node, "user_data": base64.b64encode(USER_DATA).decode(),
            "public_keys": PUBLIC_KEYS, "metadata": METADATA,
        }

    def deploy(self, image: Image, node: Node):
        inst = self.instance(image.id, node.name)
        ctxt = request_context()
        started = time.monotonic()
        result = self.call("boot_instance", ctxt=ctxt, instance=inst)
        seconds = time.monotonic() - started
        self.deploys[node.name] = {"instance": inst, "result": result, "ctxt": ctxt, "seconds": seconds}
        self.figures[f"deploy {image.name} -> {node.name} (s, through the bus)"] = round(seconds, 3)
        assert result["status"] == "ACTIVE" and result["node"] == node.name, result
        assert result["uuid"] == inst["uuid"] and result["image_id"] == image.id, result
        assert result["host"] == self.worker.host, result
        return inst, result


@pytest.fixture(scope="module")
def bench(berth_bin, worker_factory, rpc_transport, notification_transport, names, tmp_path_factory):
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        unavailable(f"bare-metal checks need {', '.join(missing)} (scripts/install-deps.sh installs them)")
    probe = run(CLOUD_INIT_PYTHON, "-c", "import cloudinit.sources.DataSourceConfigDrive", check=False)
    if probe.returncode != 0:
        unavailable(f"cloud-init is not importable by {CLOUD_INIT_PYTHON}: {probe.stderr.strip()[-300:]}")

    b = Bench()
    b.transport = rpc_transport
    work = tmp_path_factory.mktemp("baremetal")
    b.work = work
    b.catalog = Catalog(berth_bin, work / "catalog")
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        refused = pool.submit(build_refused, work, b.catalog)
        b.images = build_images(work, b.catalog)
        b.refused = refused.result()
    b.figures["building images (s)"] = round(time.monotonic() - started, 1)

    disks = work / "disks"
    disks.mkdir()
    specs = [("gpt-cfg", 96 * MiB, 512), ("mbr99", 96 * MiB, 512), ("mbr99-c", 96 * MiB, 512),
             ("gpt-new", 256 * MiB, 512), ("gpt-4k", 128 * MiB, 4096), ("big", 4 * GiB + 80 * MiB, 512),
             ("victim", 64 * MiB, 512), ("spare", 128 * MiB, 512)]
    b.nodes = {}
    for name, size, sector_size in specs:
        node = Node(name, disks / f"{name}.img", size, sector_size)
        run("truncate", "-s", size, node.path)
        b.nodes[name] = node
    # The refusals' disk holds something of its own, so an untouched disk is a claim with content.
    for index, offset in enumerate((0, 10 * MiB, 63 * MiB)):
        fill(b.nodes["victim"].path, offset, 256 * 1024, seed=80 + index)

    args = ["--catalog", f"local:{b.catalog.root}", "--state-dir", str(work / "state"), "--concurrency", "4",
            "--metrics-interval", "1"]
    for node in b.nodes.values():
        args += ["--node", node.arg]
    b.recorder = EventRecorder()
    listener = oslo_messaging.get_notification_listener(
        notification_transport, [oslo_messaging.Target(topic=f"{names.topic}-notifications")], [b.recorder],
        executor="threading")
    listener.start()
    # The worker's samples go to `<topic>-metering.sample` (conftest's worker arguments).
    b.meter = SampleRecorder()
    metering = oslo_messaging.get_notification_listener(
        notification_transport, [oslo_messaging.Target(topic=f"{names.topic}-metering")], [b.meter],
        executor="threading")
    metering.start()
    b.worker = worker_factory(extra_args=args).start()
    yield b
    assert b.worker.stop() == 0, b.worker.describe()
    for each in (listener, metering):
        each.stop()
        each.wait()
    print("\nbare-metal figures:\n" + "\n".join(f"  {k}: {v}" for k, v in b.figures.items()))


# --- checking a deployed disk --------------------------------------------------------------------------------------


def read_config_drive(bench: Bench, node: Node, offset: int, inst: dict):
    """blkid sees the label; mcopy extracts the files; cloud-init's own reader reads them."""
    probe = run("blkid", "-p", "-O", offset, node.path).stdout
    assert 'TYPE="vfat"' in probe and 'LABEL="config-2"' in probe, probe
    out = bench.work / f"config-drive-{node.name}-{inst['uuid'][:8]}"
    out.mkdir()
    run("mcopy", "-s", "-i", f"{node.path}@@{offset}", "::/", out)
    script = (
        "import base64, json, sys\n"
        "from cloudinit.sources.DataSourceConfigDrive import read_config_drive\n"
        "r = read_config_drive(sys.argv[1])\n"
        "m = r['metadata']\n"
        "print(json.dumps({'version': r['version'], 'uuid': m.get('uuid'), 'name': m.get('name'),\n"
        "    'hostname': m.get('hostname'), 'public_keys': m.get('public_keys'), 'meta': m.get('meta'),\n"
        "    'user_data': base64.b64encode(r['userdata']).decode() if r['userdata'] is not None else None,\n"
        "    'network_data': r.get('networkdata')}))\n"
    )
    got = json.loads(run(CLOUD_INIT_PYTHON, "-c", script, out).stdout)
    assert got["version"] == 2, got
    assert got["uuid"] == inst["uuid"], got
    assert got["name"] == inst["name"], got
    assert re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", got["hostname"]), got  # an RFC 1123 label
    assert got["public_keys"] == PUBLIC_KEYS and got["meta"] == METADATA, got
    assert base64.b64decode(got["user_data"]) == USER_DATA, "cloud-init read back different user data"
    assert got["network_data"] is not None, got


def check_deployed(bench: Bench, image: Image, node: Node, inst: dict, config: str):
    """config: "gpt-name" (the image's config-2), "mbr-type" (the image's 0x99) or "created"."""
    ss = node.sector_size
    disk_size = node.path.stat().st_size
    assert disk_size == node.size, "the deploy changed the disk file's size"
    image_end = image.virtual_size
    with sector_view(image.ref, ss) as ref_view, sector_view(node.path, ss) as disk_view:
        before = sfdisk_json(ref_view)
        after = sfdisk_json(disk_view)
        if image.table == "gpt":
            verify = run("sgdisk", "-v", disk_view, check=False)
            assert verify.returncode == 0 and "No problems found" in verify.stdout, verify.stdout + verify.stderr
    assert after["label"] == image.table and after.get("sectorsize", 512) == ss, after
    keys = ("start", "size", "type", "uuid", "name")
    old = [{k: p.get(k) for k in keys} for p in before["partitions"]]
    new = [{k: p.get(k) for k in keys} for p in after["partitions"]]

    skip = []
    allowed_past_image = []
    if image.table == "gpt":
        # The partition-table sectors are Berth's to rewrite (sgdisk -v checked them): the protective MBR, the
        # primary header and entries, and the image's old backup header, which must be gone.
        skip += [(0, before["firstlba"] * ss), (image_end - ss, image_end)]
        backup_bytes = ss + GPT_ENTRY_ARRAY_BYTES
        allowed_past_image.append((disk_size - backup_bytes, disk_size))
        assert after["lastlba"] == (disk_size - backup_bytes) // ss - 1, (after, "the backup GPT is not at the end")
        with open(node.path, "rb") as d:
            d.seek(image_end - ss)
            assert d.read(8) != b"EFI PART", "the image's old backup GPT header is still mid-disk"

    if config == "created":
        assert new[:-1] == old, (old, new)
        part = after["partitions"][-1]
        assert part["size"] * ss == CONFIG_PARTITION_BYTES, part
        assert part["start"] * ss % MiB == 0, part
        if image.table == "gpt":
            assert part["name"] == "config-2", part
            assert part["start"] + part["size"] - 1 <= after["lastlba"], part
            assert (after["lastlba"] - (part["start"] + part["size"] - 1)) * ss < MiB, "not at the end of the disk"
        offset = part["start"] * ss
        # On a disk less than 64 MiB bigger than the image, the partition also takes free space inside it.
        allowed_past_image.append((offset, offset + part["size"] * ss))
        skip.append((offset, offset + part["size"] * ss))
    else:
        assert new == old, (old, new)
        if config == "gpt-name":
            [part] = [p for p in after["partitions"] if p.get("name") == "config-2"]
        else:
            [part] = [p for p in after["partitions"] if p["type"] == "99"]
        offset = part["start"] * ss
        skip.append((offset, offset + part["size"] * ss))

    compared = compare_ranges(node.path, image.ref, image_end, skip)
    assert compared > 0
    assert_zero_outside(node.path, image_end, disk_size, allowed_past_image)
    read_config_drive(bench, node, offset, inst)


# --- deploys -------------------------------------------------------------------------------------------------------


def test_raw_gpt_with_its_own_config_partition(bench):
    image, node = bench.images["gpt-cfg"], bench.nodes["gpt-cfg"]
    inst, _ = bench.deploy(image, node)
    check_deployed(bench, image, node, inst, config="gpt-name")


@pytest.mark.parametrize("name", ["mbr99", "mbr99-c"])
def test_qcow2_mbr_with_a_0x99_partition(bench, name):
    image, node = bench.images[name], bench.nodes[name]
    inst, _ = bench.deploy(image, node)
    check_deployed(bench, image, node, inst, config="mbr-type")


@pytest.mark.parametrize("name", ["gpt-new", "gpt-4k"])
def test_gpt_without_config_partition_gets_one_at_the_end(bench, name):
    image, node = bench.images[name], bench.nodes[name]
    inst, _ = bench.deploy(image, node)
    check_deployed(bench, image, node, inst, config="created")


def test_concurrent_deploys_to_one_node_write_it_once(bench):
    """Two instances sent to one free node at the same time: one is deployed, the other refused, and the disk
    holds the winner's deploy intact."""
    image, node = bench.images["gpt-new"], bench.nodes["spare"]
    instances = [bench.instance(image.id, node.name) for _ in range(2)]
    outcomes = [None, None]
    gate = threading.Barrier(2)

    def deploy(index):
        gate.wait()
        try:
            outcomes[index] = bench.call("boot_instance", instance=instances[index])
        except oslo_messaging.RemoteError as exc:
            outcomes[index] = exc

    threads = [threading.Thread(target=deploy, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=150)
    won = [index for index, outcome in enumerate(outcomes) if isinstance(outcome, dict)]
    assert len(won) == 1, outcomes
    winner, loser = instances[won[0]], outcomes[1 - won[0]]
    assert isinstance(loser, oslo_messaging.RemoteError) and loser.exc_type == "DeployFailed", loser
    # Refused while the winner writes (naming it), or, if the winner was already done, because the node holds it.
    assert winner["uuid"] in loser.value, loser.value
    assert "being deployed right now" in loser.value or "holds instance" in loser.value, loser.value
    bench.figures["concurrent deploys: the second was told"] = loser.value[:90]
    check_deployed(bench, image, node, winner, config="created")


def test_plain_and_compressed_qcow2_write_the_same_disk(bench):
    plain, packed = bench.nodes["mbr99"], bench.nodes["mbr99-c"]
    [cfg] = [p for p in sfdisk_json(str(plain.path))["partitions"] if p["type"] == "99"]
    end = cfg["start"] * 512
    assert compare_ranges(plain.path, packed.path, end, []) > 0


# --- refusals ------------------------------------------------------------------------------------------------------

REFUSED_CASES = ["backing-file", "external-data-file", "encrypted", "encrypted-aes", "vmdk", "larger-than-disk",
                 "truncated", "checksum-mismatch"]


@pytest.mark.parametrize("case", REFUSED_CASES)
def test_refused_image_leaves_the_disk_untouched(bench, case):
    node = bench.nodes["victim"]
    spec = bench.refused[case]
    before = sha256(node.path)
    inst = bench.instance(spec["id"], node.name)
    with pytest.raises(oslo_messaging.RemoteError) as caught:
        bench.call("boot_instance", instance=inst)
    error = caught.value
    assert error.exc_type == "InvalidImage", (case, error.exc_type, error.value)
    assert spec["expect"] in error.value, (case, error.value)
    assert sha256(node.path) == before, f"{case}: the refused deploy changed the disk"
    assert node.path.stat().st_size == node.size
    bench.refusals[case] = {"message": error.value, "uuid": inst["uuid"], "image_id": spec["id"]}
    with pytest.raises(oslo_messaging.RemoteError) as gone:
        bench.call("get_instance", instance_uuid=inst["uuid"])
    assert gone.value.exc_type == "InstanceNotFound"


def test_each_refusal_says_something_different(bench):
    messages = {case: r["message"] for case, r in bench.refusals.items()}
    assert sorted(messages) == sorted(REFUSED_CASES), "run with the refusal cases"
    assert len(set(messages.values())) == len(messages), messages
    # Each names what is wrong in its own words, not only the image: no two share their reason phrase.
    for case, spec in bench.refused.items():
        others = [m for c, m in messages.items() if c != case]
        assert not any(spec["expect"] in m for m in others), (case, spec["expect"])


def test_verification_stamp_is_kept_and_withdrawn(bench, berth_bin):
    """Data is hashed when imported and stamped; a changed file loses the trust, and `berth images verify`
    always hashes."""
    catalog = bench.catalog
    good = bench.work / "stamp.raw"
    run("truncate", "-s", 4 * MiB, good)
    fill(good, 0, 1 * MiB, seed=90)
    image_id = catalog.create("stamp", "raw", good)
    stamp = catalog.root / "images" / f"{image_id}.verified"
    data = os.stat(catalog.data_path(image_id))
    fields = stamp.read_text().split()
    assert fields[0] == "berth-verified-2" and fields[1:4] == [str(data.st_dev), str(data.st_ino), str(data.st_size)]
    assert fields[6] == json.loads(catalog.record_path(image_id).read_text())["os_hash_value"]

    def verify():
        return run(berth_bin, "images", "verify", "--catalog", f"local:{catalog.root}", image_id, check=False)

    ok = verify()
    assert ok.returncode == 0 and json.loads(ok.stdout) == {"image_id": image_id, "verified": True}, ok.stderr
    with open(catalog.data_path(image_id), "r+b") as f:
        f.seek(4096)
        byte = f.read(1)
        f.seek(4096)
        f.write(bytes([byte[0] ^ 0xFF]))
    refused = verify()
    assert refused.returncode != 0 and "does not match its record" in refused.stderr, refused.stderr
    assert not stamp.exists(), "a failed verification must withdraw the stamp"


def test_unknown_node_is_node_not_found(bench):
    inst = bench.instance(bench.images["gpt-new"].id, "no-such-node")
    with pytest.raises(oslo_messaging.RemoteError) as caught:
        bench.call("boot_instance", instance=inst)
    assert caught.value.exc_type == "NodeNotFound", caught.value
    assert "no-such-node" in caught.value.value and "victim" in caught.value.value, caught.value.value


# --- a large sparse image: bounded memory, sparse output ------------------------------------------------------------


def proc_status(pid: int) -> dict[str, int]:
    fields = {}
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if value.strip().endswith("kB"):
            fields[key] = int(value.split()[0]) * 1024
    return fields


def test_sparse_4gib_qcow2_deploys_in_bounded_memory_and_stays_sparse(bench):
    image, node = bench.images["big"], bench.nodes["big"]
    pid = bench.worker.proc.pid
    # Writing 5 to clear_refs resets VmHWM to the current RSS, so the peak below is this deploy's.
    pathlib.Path(f"/proc/{pid}/clear_refs").write_text("5")
    before = proc_status(pid)["VmRSS"]
    inst, result = bench.deploy(image, node)
    peak = proc_status(pid)["VmHWM"]
    growth = peak - before
    bench.figures["4 GiB qcow2: worker VmRSS before (MiB)"] = round(before / MiB, 1)
    bench.figures["4 GiB qcow2: worker VmHWM after (MiB)"] = round(peak / MiB, 1)
    bench.figures["4 GiB qcow2: peak RSS growth (MiB)"] = round(growth / MiB, 1)
    assert growth <= RSS_GROWTH_LIMIT, f"peak RSS grew by {growth / MiB:.1f} MiB deploying a 4 GiB image"

    mapped = json.loads(run("qemu-img", "map", "--output=json", image.path).stdout)
    data_bytes = sum(extent["length"] for extent in mapped if extent["data"])
    sparse_ref = bench.work / "big.sparse.raw"
    run("qemu-img", "convert", "-O", "raw", "-S", "4k", image.path, sparse_ref)
    ref_allocated = sparse_ref.stat().st_blocks * 512
    disk_allocated = node.path.stat().st_blocks * 512
    bench.figures["4 GiB qcow2: image data (qemu-img map, bytes)"] = data_bytes
    bench.figures["4 GiB qcow2: qemu-img convert -S 4k allocated (bytes)"] = ref_allocated
    bench.figures["4 GiB qcow2: disk file allocated (bytes)"] = disk_allocated
    bench.figures["4 GiB qcow2: bytes_written (result)"] = result["bytes_written"]
    for reference in (data_bytes, ref_allocated):
        assert abs(disk_allocated - reference) <= ALLOCATION_TOLERANCE * reference, (
            f"disk allocation {disk_allocated} is not within 5 % of the image's data {reference}")
    check_deployed(bench, image, node, inst, config="created")


# --- events --------------------------------------------------------------------------------------------------------


def check_payload(bench, event, inst, ctxt, state):
    payload = event["payload"]
    assert payload["instance_uuid"] == inst["uuid"], payload
    assert payload["image_id"] == inst["image_id"] and payload["image_id"], payload
    assert payload["host"] == bench.worker.host, payload
    assert payload["request_id"] == ctxt["request_id"], payload
    assert payload["state"] == state, payload
    assert event["publisher_id"] == f"compute.{bench.worker.host}", event


def test_deploy_events_reach_a_stock_listener(bench):
    for name in ("gpt-new", "big", "gpt-4k"):
        deploy = bench.deploys.get(name)
        assert deploy, f"the {name} deploy ran earlier in this module"
        inst, ctxt = deploy["instance"], deploy["ctxt"]
        assert bench.recorder.wait(inst["uuid"], "baremetal.deploy.end"), bench.recorder.of(inst["uuid"])
        time.sleep(0.3)  # anything emitted after .end would show up now
        events = bench.recorder.of(inst["uuid"])
        types = [e["event_type"] for e in events]
        assert types[0] == "baremetal.deploy.start" and types[-1] == "baremetal.deploy.end", types
        progress = [e for e in events if e["event_type"] == "baremetal.deploy.progress"]
        assert set(types) == {"baremetal.deploy.start", "baremetal.deploy.progress", "baremetal.deploy.end"}, types
        assert len(progress) >= 3, f"{name}: only {len(progress)} progress events"
        for event, state in [(events[0], "building"), (events[-1], "active")] + [(e, "deploying") for e in progress]:
            assert event["priority"] == "info", event
            check_payload(bench, event, inst, ctxt, state)
        percents = [e["payload"]["progress"] for e in progress]
        done = [e["payload"]["bytes_done"] for e in progress]
        assert percents == sorted(set(percents)) and done == sorted(set(done)), (name, percents, done)
        assert percents[-1] == 100 and done[-1] == progress[-1]["payload"]["bytes_total"], progress[-1]
        assert all(e["payload"]["bytes_total"] == bench.images[name].virtual_size for e in progress)
        bench.figures[f"{name}: progress events"] = len(progress)

    case = "encrypted"
    refusal = bench.refusals.get(case)
    assert refusal, "the refusal tests ran earlier in this module"
    assert bench.recorder.wait(refusal["uuid"], "baremetal.deploy.error")
    events = bench.recorder.of(refusal["uuid"])
    assert [e["event_type"] for e in events] == ["baremetal.deploy.start", "baremetal.deploy.error"], events
    error = events[-1]
    assert error["priority"] == "error"
    payload = error["payload"]
    assert payload["state"] == "error" and payload["image_id"] == refusal["image_id"], payload
    assert payload["error"] == {"class": "InvalidImage", "message": refusal["message"]}, payload
    assert payload["host"] == bench.worker.host and payload["request_id"], payload


def test_deploys_report_their_throughput(bench):
    """DESIGN §7: a deploy.throughput sample (bytes written / seconds) per deploy, tagged with its image."""
    for name in ("gpt-new", "big"):
        deploy = bench.deploys[name]
        inst, result = deploy["instance"], deploy["result"]
        deadline = time.monotonic() + 15
        while not bench.meter.of("deploy.throughput", inst["uuid"]) and time.monotonic() < deadline:
            time.sleep(0.2)
        samples = bench.meter.of("deploy.throughput", inst["uuid"])
        assert len(samples) == 1, samples
        sample = samples[0]
        assert sample["image_id"] == inst["image_id"] and sample["host"] == bench.worker.host, sample
        assert sample["unit"] == "B/s" and sample["type"] == "gauge" and sample["flavor"] == "baremetal", sample
        assert sample["value"] == pytest.approx(result["bytes_written"] / result["seconds"], rel=1e-6), sample
        bench.figures[f"{name}: deploy.throughput (MiB/s)"] = round(sample["value"] / MiB, 1)


# --- idempotency, get, delete, node ownership ------------------------------------------------------------------------


def test_repeat_get_delete_and_node_ownership(bench):
    node = bench.nodes["gpt-new"]
    first = bench.deploys["gpt-new"]
    inst = first["instance"]
    stat_before, digest_before = node.path.stat(), sha256(node.path)

    # The same boot again: the same answer, and nothing written.
    ctxt = request_context()
    again = bench.call("boot_instance", ctxt=ctxt, instance=inst)
    assert again == first["result"], (again, first["result"])
    assert bench.recorder.wait(inst["uuid"], "baremetal.deploy.end")
    time.sleep(0.3)
    repeat_events = [e for e in bench.recorder.of(inst["uuid"]) if e["payload"]["request_id"] == ctxt["request_id"]]
    assert [e["event_type"] for e in repeat_events] == ["baremetal.deploy.start", "baremetal.deploy.end"], \
        repeat_events
    stat_after = node.path.stat()
    assert (stat_after.st_mtime_ns, stat_after.st_size) == (stat_before.st_mtime_ns, stat_before.st_size)
    assert sha256(node.path) == digest_before

    # The same uuid with a different request is not the same instance.
    changed = dict(inst, name="another name")
    with pytest.raises(oslo_messaging.RemoteError) as caught:
        bench.call("boot_instance", instance=changed)
    assert caught.value.exc_type == "InstanceExists", caught.value

    described = bench.call("get_instance", instance_uuid=inst["uuid"])
    assert described["uuid"] == inst["uuid"] and described["status"] == "ACTIVE", described
    assert described["node"] == node.name and described["image_id"] == inst["image_id"], described
    assert described["host"] == bench.worker.host, described

    # Another instance on the occupied node is refused, and the disk keeps what it holds.
    other = bench.instance(bench.images["gpt-cfg"].id, node.name)
    with pytest.raises(oslo_messaging.RemoteError) as caught:
        bench.call("boot_instance", instance=other)
    assert caught.value.exc_type == "DeployFailed", caught.value
    assert inst["uuid"] in caught.value.value and "delete" in caught.value.value, caught.value.value
    assert sha256(node.path) == digest_before

    ctxt = request_context()
    deleted = bench.call("delete_instance", ctxt=ctxt, instance_uuid=inst["uuid"])
    assert deleted == {"uuid": inst["uuid"], "status": "DELETED", "host": bench.worker.host}, deleted
    assert bench.recorder.wait(inst["uuid"], "instance.delete.end")
    delete_events = [e for e in bench.recorder.of(inst["uuid"]) if e["payload"]["request_id"] == ctxt["request_id"]]
    assert [e["event_type"] for e in delete_events] == ["instance.delete.start", "instance.delete.end"], delete_events
    for event, state in zip(delete_events, ("deleting", "deleted")):
        check_payload(bench, event, inst, ctxt, state)
    with pytest.raises(oslo_messaging.RemoteError) as caught:
        bench.call("get_instance", instance_uuid=inst["uuid"])
    assert caught.value.exc_type == "InstanceNotFound", caught.value
    assert bench.call("delete_instance", instance_uuid=inst["uuid"])["status"] == "DELETED"

    # Now the node takes the other instance (a raw GPT with its own config partition).
    result = bench.call("boot_instance", instance=other)
    assert result["status"] == "ACTIVE" and result["node"] == node.name, result
    with sector_view(node.path, 512) as view:
        verify = run("sgdisk", "-v", view, check=False)
        assert "No problems found" in verify.stdout, verify.stdout
        names = [p.get("name") for p in sfdisk_json(view)["partitions"]]
    assert names == ["root", "config-2"], names
    [cfg] = [p for p in sfdisk_json(str(node.path))["partitions"] if p.get("name") == "config-2"]
    read_config_drive(bench, node, cfg["start"] * 512, other)


def test_the_same_worker_still_boots_vms(bench):
    """A worker with a node inventory serves VM boots as before (on the libvirt test driver); a VM request
    cannot name a node, and one uuid is one instance, VM or bare metal."""
    inst = {"uuid": str(uuid.uuid4()), "name": "vm beside nodes", "image_id": bench.images["gpt-cfg"].id,
            "flavor": {"name": "tiny", "vcpus": 1, "memory_mb": 128, "root_gb": 1}, "metadata": {}}
    result = bench.call("boot_instance", instance=inst)
    assert result["status"] == "ACTIVE" and result["domain"] == f"berth-{inst['uuid']}", result
    with pytest.raises(oslo_messaging.RemoteError) as caught:
        bench.call("boot_instance", instance=dict(inst, uuid=str(uuid.uuid4()), node="gpt-cfg"))
    assert caught.value.exc_type == "InvalidRequest", caught.value

    # The VM's uuid for a deploy, and a deployed instance's uuid for a VM: both refused, nothing written.
    node = bench.nodes["victim"]
    before = sha256(node.path)
    clash = dict(bench.instance(bench.images["gpt-new"].id, node.name), uuid=inst["uuid"])
    with pytest.raises(oslo_messaging.RemoteError) as caught:
        bench.call("boot_instance", instance=clash)
    assert caught.value.exc_type == "InstanceExists" and "VM" in caught.value.value, caught.value
    assert sha256(node.path) == before
    deployed = bench.deploys["gpt-cfg"]["instance"]
    with pytest.raises(oslo_messaging.RemoteError) as caught:
        bench.call("boot_instance", instance=dict(inst, uuid=deployed["uuid"]))
    assert caught.value.exc_type == "InstanceExists" and "bare-metal" in caught.value.value, caught.value
    assert bench.call("get_instance", instance_uuid=deployed["uuid"])["node"] == "gpt-cfg"

    assert bench.call("delete_instance", instance_uuid=inst["uuid"])["status"] == "DELETED"
