"""boot_instance end to end: a stock oslo.messaging client asks a Berth worker on real libvirtd/QEMU
(TCG) to boot a catalog kernel + busybox initramfs; the guest prints /proc/cmdline on its serial
console, which proves the kernel command line Berth resolved is the one the guest got.

Also on the in-process test driver: 50 parallel boots through the bus, all ACTIVE, and repeating
all 50 creates nothing new.
"""

from __future__ import annotations

import base64
import concurrent.futures
import json
import os
import pathlib
import re
import subprocess
import time
import uuid

import oslo_messaging
import pytest

from conftest import REPO_ROOT, request_context, rpc_client, unavailable

LIBVIRT_URI = os.environ.get("BERTH_LIBVIRT_URI", "qemu:///system")
GUEST_DIR = pathlib.Path(os.environ.get("BERTH_TEST_GUEST_DIR", "/var/tmp/berth-test-guest"))
CONSOLE_TIMEOUT = float(os.environ.get("BERTH_TEST_CONSOLE_TIMEOUT", "120"))

IMAGE_ARGS = "console=ttyS0 root=/dev/vda berth.image=base"
IMAGE_EXTRA = "berth.image_extra=1"


def virsh(*args: str, check: bool = True) -> str:
    proc = subprocess.run(["virsh", "-c", LIBVIRT_URI, *args], capture_output=True, text=True, timeout=60)
    if check and proc.returncode != 0:
        raise AssertionError(f"virsh {' '.join(args)} failed: {proc.stderr}")
    return proc.stdout


@pytest.fixture(scope="module")
def libvirtd():
    proc = subprocess.run(["virsh", "-c", LIBVIRT_URI, "version"], capture_output=True, text=True)
    if proc.returncode != 0:
        unavailable(f"libvirtd not reachable at {LIBVIRT_URI}: {proc.stderr.strip()} (run scripts/start-services.sh)")
    return LIBVIRT_URI


@pytest.fixture(scope="module")
def guest(libvirtd):
    """The Debian kernel and a busybox initramfs whose init prints BERTH-CMDLINE: <cmdline> and powers off."""
    script = REPO_ROOT / "scripts" / "build-test-guest.sh"
    proc = subprocess.run([str(script), str(GUEST_DIR)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"build-test-guest.sh failed:\n{proc.stdout}\n{proc.stderr}"
    return GUEST_DIR / "vmlinuz", GUEST_DIR / "initramfs.cpio.gz"


class Catalog:
    def __init__(self, berth_bin: str, root: pathlib.Path):
        self.berth_bin, self.root = berth_bin, root

    def run(self, *args: str) -> dict:
        proc = subprocess.run(
            [self.berth_bin, *args, "--catalog", f"local:{self.root}"], capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, f"berth {' '.join(args)} failed: {proc.stderr}"
        return json.loads(proc.stdout)

    def image(self, name: str, disk_format: str, file: pathlib.Path, **properties: str) -> str:
        args = ["images", "create", "--name", name, "--disk-format", disk_format, "--file", str(file)]
        for key, value in properties.items():
            args += ["--property", f"{key}={value}"]
        return self.run(*args)["id"]


@pytest.fixture(scope="module")
def catalog(berth_bin, guest, tmp_path_factory):
    kernel, initrd = guest
    root = tmp_path_factory.mktemp("catalog")
    cat = Catalog(berth_bin, root)
    cat.kernel_id = cat.image("vmlinuz", "aki", kernel)
    cat.ramdisk_id = cat.image("initramfs", "ari", initrd)
    disk = root.parent / "root.raw"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(disk), "16M"], check=True)
    cat.disk = disk
    cat.image_id = cat.image(
        "busybox", "raw", disk, kernel_id=cat.kernel_id, ramdisk_id=cat.ramdisk_id,
        kernel_args=IMAGE_ARGS, kernel_extra_args=IMAGE_EXTRA,
    )
    return cat


@pytest.fixture(scope="module")
def qemu_worker(worker_factory, catalog, tmp_path_factory):
    state = tmp_path_factory.mktemp("state")
    # Pool names are global in libvirtd: one per test run, removed at the end.
    pool = f"berth-test-{uuid.uuid4().hex[:8]}"
    w = worker_factory(extra_args=[
        "--libvirt-uri", LIBVIRT_URI, "--catalog", f"local:{catalog.root}", "--state-dir", str(state),
        "--storage-pool", pool,
    ])
    w.state, w.pool = state, pool
    w.start()
    yield w
    assert w.stop() == 0, w.describe()
    virsh("pool-destroy", pool, check=False)
    virsh("pool-undefine", pool, check=False)


def instance(image_id: str, **metadata: str) -> dict:
    return {
        "uuid": str(uuid.uuid4()),
        "name": "e2e <guest> & 'friends'",
        "image_id": image_id,
        "flavor": {"name": "tiny", "vcpus": 1, "memory_mb": 256, "root_gb": 1},
        "metadata": metadata,
    }


def console_cmdline(worker, uuid_: str) -> str:
    log = pathlib.Path(worker.state) / "consoles" / f"{uuid_}.log"
    deadline = time.monotonic() + CONSOLE_TIMEOUT
    while time.monotonic() < deadline:
        if log.exists():
            match = re.search(r"BERTH-CMDLINE: (.*)", log.read_text(errors="replace"))
            if match:
                return match.group(1).strip()
        time.sleep(0.5)
    text = log.read_text(errors="replace") if log.exists() else "<no console log>"
    raise AssertionError(f"the guest printed no BERTH-CMDLINE line in {CONSOLE_TIMEOUT}s; console:\n{text[-3000:]}")


def boot(rpc_transport, worker, inst: dict, timeout: int = 180) -> dict:
    client = rpc_client(rpc_transport, worker.topic)
    return client.prepare(server=worker.host, timeout=timeout).call(request_context(), "boot_instance", instance=inst)


def delete(rpc_transport, worker, uuid_: str) -> dict:
    client = rpc_client(rpc_transport, worker.topic)
    return client.prepare(server=worker.host, timeout=120).call(request_context(), "delete_instance", instance_uuid=uuid_)


def assert_gone(worker, uuid_: str):
    assert f"berth-{uuid_}" not in virsh("list", "--all", "--name")
    assert uuid_ not in virsh("vol-list", worker.pool, check=False)
    assert not (pathlib.Path(worker.state) / "consoles" / f"{uuid_}.log").exists()


def test_kernel_line_from_image_and_instance_reaches_the_guest(rpc_transport, qemu_worker, catalog):
    inst = instance(catalog.image_id, kernel_extra_args="berth.vm_extra=2", timezone="Europe/Paris")
    result = boot(rpc_transport, qemu_worker, inst)
    expected = f"{IMAGE_ARGS} {IMAGE_EXTRA} berth.vm_extra=2"
    assert result["status"] == "ACTIVE"
    assert result["uuid"] == inst["uuid"]
    assert result["image_id"] == catalog.image_id
    assert result["host"] == qemu_worker.host
    assert result["kernel_cmdline"] == expected
    assert result["domain"] == f"berth-{inst['uuid']}"
    assert console_cmdline(qemu_worker, inst["uuid"]) == expected

    xml = virsh("dumpxml", f"berth-{inst['uuid']}")
    assert "<clock offset='timezone' timezone='Europe/Paris'" in xml or 'timezone="Europe/Paris"' in xml, xml
    assert catalog.image_id in xml  # Berth's metadata element

    # Repeating the same request is answered from the existing domain.
    # (The guest has powered off by now; the repeat's answer is still the boot's: ACTIVE.)
    again = boot(rpc_transport, qemu_worker, inst)
    assert again == result

    gone = delete(rpc_transport, qemu_worker, inst["uuid"])
    assert gone == {"uuid": inst["uuid"], "status": "DELETED", "host": qemu_worker.host}
    assert_gone(qemu_worker, inst["uuid"])
    # Idempotent: deleting again is still DELETED.
    assert delete(rpc_transport, qemu_worker, inst["uuid"])["status"] == "DELETED"


def test_instance_kernel_args_replace_the_images(rpc_transport, qemu_worker, catalog):
    inst = instance(catalog.image_id, kernel_args="console=ttyS0 root=/dev/vda berth.vm=override")
    result = boot(rpc_transport, qemu_worker, inst)
    expected = f"console=ttyS0 root=/dev/vda berth.vm=override {IMAGE_EXTRA}"
    assert result["kernel_cmdline"] == expected
    assert console_cmdline(qemu_worker, inst["uuid"]) == expected
    delete(rpc_transport, qemu_worker, inst["uuid"])
    assert_gone(qemu_worker, inst["uuid"])


def test_two_variant_image_boots_the_variant_this_host_can_run(rpc_transport, qemu_worker, catalog):
    variants = [
        {"hypervisor_type": "xen", "vm_mode": "xen", "architecture": "x86_64",
         "kernel_id": catalog.kernel_id, "kernel_args": "console=hvc0 berth.variant=xen"},
        {"hypervisor_type": "qemu", "vm_mode": "hvm", "architecture": "x86_64",
         "kernel_id": catalog.kernel_id, "ramdisk_id": catalog.ramdisk_id,
         "kernel_args": "console=ttyS0 berth.variant=hvm"},
    ]
    image_id = catalog.image("two-variants", "raw", catalog.disk, boot_options=json.dumps(variants))
    inst = instance(image_id)
    result = boot(rpc_transport, qemu_worker, inst)
    assert result["boot_variant"].startswith("variant 2"), result
    assert result["kernel_cmdline"] == "console=ttyS0 berth.variant=hvm"
    assert console_cmdline(qemu_worker, inst["uuid"]) == "console=ttyS0 berth.variant=hvm"
    delete(rpc_transport, qemu_worker, inst["uuid"])
    assert_gone(qemu_worker, inst["uuid"])


def test_image_with_no_runnable_variant_lists_every_reason(rpc_transport, qemu_worker, catalog):
    variants = [
        {"hypervisor_type": "xen", "vm_mode": "xen", "architecture": "x86_64", "kernel_id": catalog.kernel_id},
        {"hypervisor_type": "qemu", "vm_mode": "hvm", "architecture": "aarch64", "kernel_id": catalog.kernel_id},
    ]
    image_id = catalog.image("no-variant", "raw", catalog.disk, boot_options=json.dumps(variants))
    inst = instance(image_id)
    with pytest.raises(oslo_messaging.RemoteError) as caught:
        boot(rpc_transport, qemu_worker, inst)
    assert caught.value.exc_type == "HostIncompatible"
    text = str(caught.value.value)
    assert "variant 1" in text and "variant 2" in text, text
    assert "xen" in text and "aarch64" in text, text
    assert f"berth-{inst['uuid']}" not in virsh("list", "--all", "--name")


@pytest.mark.parametrize(
    "metadata, exc_type, fragment",
    [
        ({"hw_disk_bus": "floppy"}, "InvalidMetadata", "virtio"),
        ({"kernel_extra_args": "a\nb"}, "InvalidMetadata", "line feed"),
        ({"kernel_extra_args": "x" * 2100}, "InvalidMetadata", "2048"),
        ({"timezone": "Mars/Olympus"}, "InvalidMetadata", "timezone"),
    ],
)
def test_bad_metadata_is_refused_before_anything_is_made(rpc_transport, qemu_worker, catalog, metadata, exc_type, fragment):
    inst = instance(catalog.image_id, **metadata)
    with pytest.raises(oslo_messaging.RemoteError) as caught:
        boot(rpc_transport, qemu_worker, inst)
    assert caught.value.exc_type == exc_type, caught.value
    assert fragment in str(caught.value.value)
    assert_gone(qemu_worker, inst["uuid"])


def test_unknown_image_and_wrong_kernel_kind(rpc_transport, qemu_worker, catalog):
    with pytest.raises(oslo_messaging.RemoteError) as caught:
        boot(rpc_transport, qemu_worker, instance(str(uuid.uuid4())))
    assert caught.value.exc_type == "ImageNotFound"
    # A kernel image booted as a disk.
    with pytest.raises(oslo_messaging.RemoteError) as caught:
        boot(rpc_transport, qemu_worker, instance(catalog.kernel_id))
    assert caught.value.exc_type == "InvalidImage"


def test_flavor_the_host_cannot_hold(rpc_transport, qemu_worker, catalog):
    inst = instance(catalog.image_id)
    inst["flavor"] = {"name": "huge", "vcpus": 256, "memory_mb": 1024 * 1024, "root_gb": 1}
    with pytest.raises(oslo_messaging.RemoteError) as caught:
        boot(rpc_transport, qemu_worker, inst)
    assert caught.value.exc_type == "HostIncompatible"
    assert "smaller flavor" in str(caught.value.value)
    assert_gone(qemu_worker, inst["uuid"])


# --- config drive ----------------------------------------------------------------------------------------

CONFIG_USER_DATA = b"#cloud-config\nhostname: from-user-data\n"
CONFIG_KEYS = {"e2e-key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBerthConfigDriveTestKeyOnly e2e@berth"}


def read_config_drive_volume(path: pathlib.Path, work: pathlib.Path) -> dict:
    """blkid sees vfat labelled config-2 on the whole volume; mcopy extracts it; cloud-init's reader reads it."""
    probe = subprocess.run(["blkid", "-p", str(path)], capture_output=True, text=True).stdout
    assert 'TYPE="vfat"' in probe and 'LABEL="config-2"' in probe, probe
    out = work / "config-drive"
    out.mkdir()
    subprocess.run(["mcopy", "-s", "-i", str(path), "::/", str(out)], check=True, capture_output=True)
    script = (
        "import base64, json, sys\n"
        "from cloudinit.sources.DataSourceConfigDrive import read_config_drive\n"
        "r = read_config_drive(sys.argv[1])\n"
        "m = r['metadata']\n"
        "print(json.dumps({'version': r['version'], 'uuid': m.get('uuid'), 'hostname': m.get('hostname'),\n"
        "    'public_keys': m.get('public_keys'), 'user_data': base64.b64encode(r['userdata']).decode()}))\n"
    )
    # Debian's cloud-init, under the system Python it is installed for.
    proc = subprocess.run(["/usr/bin/python3", "-c", script, str(out)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_config_drive_carries_user_data_and_keys_to_the_vm(rpc_transport, qemu_worker, catalog, tmp_path):
    inst = instance(catalog.image_id)
    inst["name"] = "Config Drive VM"
    inst.update(config_drive=True, user_data=base64.b64encode(CONFIG_USER_DATA).decode(), public_keys=CONFIG_KEYS)
    result = boot(rpc_transport, qemu_worker, inst)
    assert result["status"] == "ACTIVE" and result["config_drive"] is True, result
    volume = f"{inst['uuid']}-config.vfat"

    xml = virsh("dumpxml", f"berth-{inst['uuid']}")
    disks = re.findall(r"<disk .*?</disk>", xml, re.S)
    drive = [d for d in disks if volume in d]
    assert len(drive) == 1 and "<readonly/>" in drive[0], xml

    path = pathlib.Path(virsh("vol-path", "--pool", qemu_worker.pool, volume).strip())
    got = read_config_drive_volume(path, tmp_path)
    assert got["version"] == 2, got
    assert got["uuid"] == inst["uuid"] and got["hostname"] == "config-drive-vm", got
    assert got["public_keys"] == CONFIG_KEYS, got
    assert base64.b64decode(got["user_data"]) == CONFIG_USER_DATA, got

    # The guest itself sees a second disk of 64 MiB labelled config-2 (its initramfs prints what findfs says).
    console_cmdline(qemu_worker, inst["uuid"])
    console = (pathlib.Path(qemu_worker.state) / "consoles" / f"{inst['uuid']}.log").read_text(errors="replace")
    seen = re.search(r"BERTH-DISK: vdb (\d+)", console)
    assert seen and int(seen.group(1)) == 64 << 20, console[-3000:]
    assert "BERTH-LABEL: config-2 /dev/vdb" in console, console[-3000:]

    described = rpc_client(rpc_transport, qemu_worker.topic).prepare(server=qemu_worker.host, timeout=60).call(
        request_context(), "get_instance", instance_uuid=inst["uuid"])
    assert described["config_drive"] is True, described
    # Every line of a request that names an instance carries its uuid (boot: instance.uuid; others: instance_uuid).
    done = [line for line in qemu_worker.log_text().splitlines() if f"instance_uuid={inst['uuid']}" in line]
    assert any("method=boot_instance" in line for line in done) and any("method=get_instance" in line for line in done)
    # A repeat is the same boot.
    assert boot(rpc_transport, qemu_worker, inst) == result

    delete(rpc_transport, qemu_worker, inst["uuid"])
    assert_gone(qemu_worker, inst["uuid"])
    assert not path.exists(), "the config drive outlived its instance"


def test_vm_without_config_drive_reports_none(rpc_transport, qemu_worker, catalog):
    inst = instance(catalog.image_id)
    result = boot(rpc_transport, qemu_worker, inst)
    assert result["config_drive"] is False, result
    assert "-config.vfat" not in virsh("dumpxml", f"berth-{inst['uuid']}")
    delete(rpc_transport, qemu_worker, inst["uuid"])
    assert_gone(qemu_worker, inst["uuid"])


@pytest.mark.parametrize(
    "extra, named",
    [
        ({"user_data": base64.b64encode(b"#!/bin/sh\necho hi\n").decode()}, "instance.user_data"),
        ({"public_keys": CONFIG_KEYS}, "instance.public_keys"),
        ({"user_data": base64.b64encode(b"x").decode(), "public_keys": CONFIG_KEYS, "config_drive": False},
         "instance.user_data and instance.public_keys"),
    ],
)
def test_guest_data_without_a_config_drive_is_refused(rpc_transport, qemu_worker, catalog, extra, named):
    inst = instance(catalog.image_id)
    inst.update(extra)
    with pytest.raises(oslo_messaging.RemoteError) as caught:
        boot(rpc_transport, qemu_worker, inst)
    assert caught.value.exc_type == "InvalidRequest", caught.value
    text = str(caught.value.value)
    assert named in text and "config_drive" in text, text
    assert_gone(qemu_worker, inst["uuid"])
    assert f"{inst['uuid']}-config.vfat" not in virsh("vol-list", qemu_worker.pool, check=False)


# --- many boots on the test driver --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def test_driver_worker(worker_factory, catalog, tmp_path_factory):
    state = tmp_path_factory.mktemp("state-test")
    # The test driver's pools live in the worker process; the name cannot collide with anything.
    w = worker_factory(extra_args=[
        "--libvirt-uri", "test:///default", "--catalog", f"local:{catalog.root}", "--state-dir", str(state),
        "--concurrency", "16",
    ])
    w.start()
    yield w
    assert w.stop() == 0, w.describe()


def test_fifty_parallel_boots_and_their_repeats(rpc_transport, test_driver_worker, catalog):
    instances = [instance(catalog.image_id, kernel_extra_args=f"n={i}") for i in range(50)]
    client = rpc_client(rpc_transport, test_driver_worker.topic)

    def boot_one(inst):
        return client.prepare(server=test_driver_worker.host, timeout=120).call(
            request_context(), "boot_instance", instance=inst)

    with concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool:
        first = list(pool.map(boot_one, instances))
    assert [r["status"] for r in first] == ["ACTIVE"] * 50
    assert sorted(r["uuid"] for r in first) == sorted(i["uuid"] for i in instances)
    started = test_driver_worker.log_text().count("instance started")
    assert started == 50, test_driver_worker.describe()

    with concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool:
        second = list(pool.map(boot_one, instances))
    assert second == first
    assert test_driver_worker.log_text().count("instance started") == 50, "a repeat created a new domain"

    info = client.prepare(server=test_driver_worker.host, timeout=30).call(request_context(), "get_instance", instance_uuid=instances[0]["uuid"])
    assert info["status"] == "ACTIVE" and info["image_id"] == catalog.image_id


# --- snapshots and placeholder images (DESIGN §5) -------------------------------------------------------------


def call(rpc_transport, worker, method: str, timeout: int = 300, **kwargs):
    client = rpc_client(rpc_transport, worker.topic)
    return client.prepare(server=worker.host, timeout=timeout).call(request_context(), method, **kwargs)


def image_ids(catalog) -> set[str]:
    proc = subprocess.run(
        [catalog.berth_bin, "images", "list", "--catalog", f"local:{catalog.root}"], capture_output=True, text=True,
        check=True)
    return {json.loads(line)["id"] for line in proc.stdout.splitlines() if line.strip()}


def leftovers(catalog, worker) -> list[str]:
    """Temporary files a failed snapshot must not leave behind."""
    found = [p.name for p in (catalog.root / "images").iterdir() if p.name.startswith(".")]
    snapshots = pathlib.Path(worker.state) / "snapshots"
    if snapshots.exists():
        found += [p.name for p in snapshots.iterdir()]
    return found


class EventRecorder:
    """A stock oslo NotificationListener endpoint recording Berth's events."""

    def __init__(self):
        self.events = []

    def info(self, ctxt, publisher_id, event_type, payload, metadata):
        self.events.append((event_type, payload))

    def error(self, ctxt, publisher_id, event_type, payload, metadata):
        self.events.append((event_type, payload))

    def of(self, event_type: str, uuid_: str | None = None):
        return [p for t, p in self.events if t == event_type and (uuid_ is None or p.get("instance_uuid") == uuid_)]


@pytest.fixture(scope="module")
def events(notification_transport, names, qemu_worker):
    recorder = EventRecorder()
    target = oslo_messaging.Target(topic=f"{names.topic}-notifications")
    listener = oslo_messaging.get_notification_listener(
        notification_transport, [target], [recorder], executor="threading")
    listener.start()
    yield recorder
    listener.stop()
    listener.wait()


def wait_for(predicate, timeout: float = 20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_snapshot_of_an_image_backed_instance_boots_with_the_same_kernel_line(rpc_transport, qemu_worker, catalog, events):
    first = instance(catalog.image_id)
    boot(rpc_transport, qemu_worker, first)
    first_line = console_cmdline(qemu_worker, first["uuid"])

    snap = call(rpc_transport, qemu_worker, "snapshot_instance", instance_uuid=first["uuid"], image_name="snap-1",
                properties={"purpose": "e2e"})
    assert snap["kind"] == "image"
    image = catalog.run("images", "show", snap["image_id"])
    props = image["properties"]
    assert props["base_image_ref"] == catalog.image_id
    assert props["instance_uuid"] == first["uuid"]
    assert props["image_type"] == "snapshot"
    assert props["kernel_id"] == catalog.kernel_id and props["kernel_args"] == IMAGE_ARGS
    assert props["purpose"] == "e2e"
    assert image["disk_format"] == "qcow2" and image["size"] > 0

    second = instance(snap["image_id"])
    result = boot(rpc_transport, qemu_worker, second)
    assert result["image_id"] == snap["image_id"]
    assert console_cmdline(qemu_worker, second["uuid"]) == first_line

    assert wait_for(lambda: events.of("instance.snapshot.end", first["uuid"]))
    assert events.of("instance.create.end", first["uuid"])
    end = events.of("instance.snapshot.end", first["uuid"])[0]
    assert end["image_id"] == catalog.image_id and end["snapshot_image_id"] == snap["image_id"]
    for uuid_ in (first["uuid"], second["uuid"]):
        delete(rpc_transport, qemu_worker, uuid_)
        assert_gone(qemu_worker, uuid_)


def test_volume_backed_instances_keep_an_image_id_through_placeholders(rpc_transport, qemu_worker, catalog, events):
    # A bootable volume made from the image (its properties become volume_image_metadata), then a placeholder
    # minted from the plain volume id.
    volume = catalog.run("volumes", "create", "--name", "root-vol", "--size", "1", "--image", catalog.image_id,
                         "--bootable")
    minted = catalog.run("volumes", "image", volume["id"], "--name", "vol-placeholder")
    assert minted["size"] == 0
    first = instance(minted["id"])
    result = boot(rpc_transport, qemu_worker, first)
    assert result["image_id"] == minted["id"] and result["volume_id"] == volume["id"]
    assert console_cmdline(qemu_worker, first["uuid"]) == f"{IMAGE_ARGS} {IMAGE_EXTRA}"

    # Snapshot of the volume-backed instance: a volume snapshot and a content-free placeholder.
    snap = call(rpc_transport, qemu_worker, "snapshot_instance", instance_uuid=first["uuid"], image_name="vol-snap")
    assert snap["kind"] == "placeholder"
    placeholder = catalog.run("images", "show", snap["image_id"])
    assert placeholder["size"] == 0 and placeholder["status"] == "active"
    props = placeholder["properties"]
    bdm = json.loads(props["block_device_mapping"])
    assert bdm == [{
        "source_type": "snapshot", "snapshot_id": snap["snapshot_id"], "destination_type": "volume",
        "boot_index": 0, "device_name": "/dev/vda", "volume_size": 1, "delete_on_termination": True,
    }]
    assert props["bdm_v2"] == "True" and props["root_device_name"] == "/dev/vda"
    assert props["kernel_id"] == catalog.kernel_id and props["ramdisk_id"] == catalog.ramdisk_id
    assert props["instance_uuid"] == first["uuid"]

    # Booting the placeholder twice gives two instances, each on its own new volume, both with its image_id.
    copies = [instance(snap["image_id"]), instance(snap["image_id"])]
    for inst in copies:
        booted = boot(rpc_transport, qemu_worker, inst)
        assert booted["image_id"] == snap["image_id"]
        assert booted["volume_id"] == inst["uuid"]
        assert console_cmdline(qemu_worker, inst["uuid"]) == f"{IMAGE_ARGS} {IMAGE_EXTRA}"

    assert wait_for(lambda: all(events.of("instance.create.end", i["uuid"]) for i in copies))
    for inst in copies:
        for event in events.of("instance.create.start", inst["uuid"]) + events.of("instance.create.end", inst["uuid"]):
            assert event["image_id"] == snap["image_id"]
    snapshot_events = events.of("instance.snapshot.start", first["uuid"]) + events.of("instance.snapshot.end", first["uuid"])
    assert snapshot_events and all(e["image_id"] == minted["id"] for e in snapshot_events)
    assert wait_for(lambda: [e for e in events.of("image.placeholder.create") if e["image_id"] == snap["image_id"]])

    # Deleting an instance removes the volume made for it, never the user's own volume.
    for inst in copies + [first]:
        delete(rpc_transport, qemu_worker, inst["uuid"])
        assert_gone(qemu_worker, inst["uuid"])
    for inst in copies + [first]:
        assert wait_for(lambda: events.of("instance.delete.end", inst["uuid"]))
        starts = events.of("instance.delete.start", inst["uuid"])
        assert [e["image_id"] for e in starts] == [events.of("instance.delete.end", inst["uuid"])[0]["image_id"]]
    remaining = subprocess.run([catalog.berth_bin, "volumes", "list", "--catalog", f"local:{catalog.root}"],
                               capture_output=True, text=True, check=True).stdout
    assert volume["id"] in remaining
    assert all(inst["uuid"] not in remaining for inst in copies)


def test_snapshot_of_a_missing_instance_makes_nothing(rpc_transport, qemu_worker, catalog):
    before = image_ids(catalog)
    with pytest.raises(oslo_messaging.RemoteError) as caught:
        call(rpc_transport, qemu_worker, "snapshot_instance", instance_uuid=str(uuid.uuid4()), image_name="nothing")
    assert caught.value.exc_type == "InstanceNotFound"
    assert image_ids(catalog) == before


def test_snapshot_with_an_unreadable_disk_makes_nothing(rpc_transport, test_driver_worker, catalog):
    # The test driver's volumes have no file behind them: qemu-img cannot read the root disk.
    inst = instance(catalog.image_id)
    client = rpc_client(rpc_transport, test_driver_worker.topic)
    client.prepare(server=test_driver_worker.host, timeout=60).call(request_context(), "boot_instance", instance=inst)
    before = image_ids(catalog)
    with pytest.raises(oslo_messaging.RemoteError) as caught:
        client.prepare(server=test_driver_worker.host, timeout=60).call(
            request_context(), "snapshot_instance", instance_uuid=inst["uuid"], image_name="unreadable")
    assert caught.value.exc_type == "SnapshotFailed"
    assert "cannot read the instance's disk" in str(caught.value.value)
    assert image_ids(catalog) == before


def test_snapshot_into_a_read_only_catalog_makes_nothing(rpc_transport, qemu_worker, catalog):
    inst = instance(catalog.image_id)
    boot(rpc_transport, qemu_worker, inst)
    before = image_ids(catalog)
    images_dir = catalog.root / "images"
    # Root ignores permission bits; the immutable attribute stops even root from adding files.
    subprocess.run(["chattr", "+i", str(images_dir)], check=True)
    try:
        with pytest.raises(oslo_messaging.RemoteError) as caught:
            call(rpc_transport, qemu_worker, "snapshot_instance", instance_uuid=inst["uuid"], image_name="read-only")
    finally:
        subprocess.run(["chattr", "-i", str(images_dir)], check=True)
    assert caught.value.exc_type == "SnapshotFailed", caught.value
    assert image_ids(catalog) == before
    assert leftovers(catalog, qemu_worker) == []
    delete(rpc_transport, qemu_worker, inst["uuid"])


def test_placeholder_whose_snapshot_is_gone_fails_clearly(rpc_transport, qemu_worker, catalog):
    volume = catalog.run("volumes", "create", "--name", "short-lived", "--size", "1")
    snapshot = catalog.run("volumes", "snapshot", volume["id"], "--name", "short-lived-snap")
    placeholder = catalog.run("volumes", "image", snapshot["id"], "--snapshot", "--name", "orphan")
    # The snapshot disappears behind the catalog's back (a lost file system, a manual cleanup).
    for suffix in (".json", ".img"):
        (catalog.root / "snapshots" / f"{snapshot['id']}{suffix}").unlink(missing_ok=True)
    inst = instance(placeholder["id"])
    with pytest.raises(oslo_messaging.RemoteError) as caught:
        boot(rpc_transport, qemu_worker, inst)
    assert caught.value.exc_type == "VolumeNotFound"
    assert "is gone" in str(caught.value.value)
    assert_gone(qemu_worker, inst["uuid"])
