"""Berth with Glance as its image catalog (`--catalog glance:URL`), against a real Glance from PyPI
(scripts/start-glance.sh: glance-manage db_sync on sqlite, the file store, gunicorn on loopback, a static
token checked in front of Glance's no-Keystone pipeline).

Proves, through the bus and real QEMU (the guest of test_boot_e2e.py prints BERTH-CMDLINE):
- a kernel + initramfs image uploaded with Berth's CLI, with kernel_args/kernel_extra_args, boots;
- its data is downloaded once per host (one GET .../file in Glance's access log) and reused;
- a snapshot is uploaded to Glance (verified by Glance's own os_hash_value) and boots;
- a placeholder minted from a local volume is a data-less `queued` image in Glance and boots;
- corrupt data in Glance's store, Glance down and a missing image each fail clearly and leave no cache file;
- the CLI's auth, size-cap and update paths map Glance's 401/413/404 to Berth's errors.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import signal
import sqlite3
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid

import oslo_messaging
import pytest

from conftest import REPO_ROOT, unavailable
from test_boot_e2e import (  # the guest, console and RPC helpers of the real-QEMU boot tests
    IMAGE_ARGS, IMAGE_EXTRA, LIBVIRT_URI, assert_gone, boot, call, console_cmdline, delete, guest, instance,
    libvirtd, virsh,
)

GLANCE_PORT = int(os.environ.get("BERTH_GLANCE_PORT", "9292"))
GLANCE_DIR = pathlib.Path(os.environ.get("BERTH_GLANCE_DIR", "/var/tmp/berth-glance"))
GLANCE_URL = f"http://127.0.0.1:{GLANCE_PORT}"
START = REPO_ROOT / "scripts" / "start-glance.sh"

__all__ = ["guest", "libvirtd"]  # fixtures imported from test_boot_e2e


def start_glance() -> float:
    began = time.monotonic()
    proc = subprocess.run([str(START)], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        unavailable(f"scripts/start-glance.sh could not start Glance:\n{proc.stdout}\n{proc.stderr}")
    return time.monotonic() - began


@pytest.fixture(scope="module")
def glance():
    seconds = start_glance()
    print(f"Glance ready in {seconds:.1f}s")
    return GlanceAPI(GLANCE_URL, (GLANCE_DIR / "token").read_text().strip())


class GlanceAPI:
    """Direct REST calls, to look at what Berth stored with Glance's own eyes."""

    def __init__(self, url: str, token: str):
        self.url, self.token = url, token

    def request(self, method: str, path: str, body: bytes | None = None, content_type: str | None = None):
        req = urllib.request.Request(self.url + path, data=body, method=method)
        req.add_header("X-Auth-Token", self.token)
        if content_type:
            req.add_header("Content-Type", content_type)
        with urllib.request.urlopen(req, timeout=30) as resp:
            data = resp.read()
            return json.loads(data) if data else None

    def image(self, image_id: str) -> dict:
        return self.request("GET", f"/v2/images/{image_id}")

    def file_path(self, image_id: str) -> pathlib.Path:
        return GLANCE_DIR / "images" / image_id

    def downloads(self, image_id: str) -> int:
        log = GLANCE_DIR / "access.log"
        needle = f'"GET /v2/images/{image_id}/file '
        return sum(1 for line in log.read_text(errors="replace").splitlines() if needle in line)


class GlanceCLI:
    """`berth images|volumes ...` with --catalog glance:URL; volumes in a local catalog directory."""

    def __init__(self, berth_bin: str, token_file: pathlib.Path, volumes: pathlib.Path, cache: pathlib.Path):
        self.berth_bin, self.token_file, self.volumes, self.cache = berth_bin, token_file, volumes, cache

    def catalog_args(self) -> list[str]:
        return ["--catalog", f"glance:{GLANCE_URL}", "--glance-token-file", str(self.token_file),
                "--volume-catalog", str(self.volumes), "--glance-cache-dir", str(self.cache)]

    def raw(self, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([self.berth_bin, *args, *self.catalog_args()], capture_output=True, text=True,
                              timeout=300, env=env)

    def run(self, *args: str) -> dict:
        proc = self.raw(*args)
        assert proc.returncode == 0, f"berth {' '.join(args)} failed: {proc.stderr}"
        return json.loads(proc.stdout)

    def image(self, name: str, disk_format: str, file: pathlib.Path, **properties: str) -> str:
        args = ["images", "create", "--name", name, "--disk-format", disk_format, "--file", str(file)]
        for key, value in properties.items():
            args += ["--property", f"{key}={value}"]
        return self.run(*args)["id"]


@pytest.fixture(scope="module")
def token_file(glance, tmp_path_factory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("glance-token") / "token"
    path.write_text(glance.token + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def cli(berth_bin, glance, token_file, guest, tmp_path_factory) -> GlanceCLI:
    kernel, initrd = guest
    root = tmp_path_factory.mktemp("glance-cli")
    cli = GlanceCLI(berth_bin, token_file, root / "volumes", root / "cli-cache")
    cli.kernel_id = cli.image("vmlinuz", "aki", kernel)
    cli.ramdisk_id = cli.image("initramfs", "ari", initrd)
    disk = root / "root.raw"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(disk), "16M"], check=True)
    cli.disk = disk
    cli.image_id = cli.image("busybox", "raw", disk, kernel_id=cli.kernel_id, ramdisk_id=cli.ramdisk_id,
                             kernel_args=IMAGE_ARGS, kernel_extra_args=IMAGE_EXTRA)
    return cli


@pytest.fixture(scope="module")
def glance_worker(worker_factory, cli, tmp_path_factory):
    state = tmp_path_factory.mktemp("glance-state")
    pool = f"berth-test-{uuid.uuid4().hex[:8]}"
    w = worker_factory(extra_args=[
        "--libvirt-uri", LIBVIRT_URI, "--state-dir", str(state), "--storage-pool", pool,
        "--catalog", f"glance:{GLANCE_URL}", "--glance-token-file", str(cli.token_file),
        "--volume-catalog", str(cli.volumes),
    ])
    # No --glance-cache-dir: the cache follows --state-dir.
    w.state, w.pool = state, pool
    w.glance_cache = state / "cache" / "glance"
    w.start()
    yield w
    assert w.stop() == 0, w.describe()
    virsh("pool-destroy", pool, check=False)
    virsh("pool-undefine", pool, check=False)


def cache_names(directory: pathlib.Path) -> list[str]:
    """Files in a cache directory other than the per-image lock files and verification stamps."""
    if not directory.exists():
        return []
    return sorted(p.name for p in directory.iterdir() if not p.name.endswith((".lock", ".verified")))


def stamp_names(directory: pathlib.Path) -> list[str]:
    """Image ids with a verification stamp (`.<id>.verified`) in a cache directory."""
    if not directory.exists():
        return []
    return sorted(p.name[1:-len(".verified")] for p in directory.iterdir() if p.name.endswith(".verified"))


# --- CLI -----------------------------------------------------------------------------------------------


def test_cli_images_are_glance_images_with_verified_hashes(cli, glance, guest):
    kernel, _ = guest
    record = glance.image(cli.kernel_id)
    assert record["status"] == "active" and record["disk_format"] == "aki" and record["container_format"] == "aki"
    assert record["os_hash_algo"] == "sha512"
    assert record["os_hash_value"] == hashlib.sha512(kernel.read_bytes()).hexdigest()

    shown = cli.run("images", "show", cli.image_id)
    assert shown["properties"]["kernel_args"] == IMAGE_ARGS
    assert shown["properties"]["kernel_extra_args"] == IMAGE_EXTRA
    assert shown["properties"]["kernel_id"] == cli.kernel_id
    listed = [json.loads(line) for line in cli.raw("images", "list").stdout.splitlines()]
    assert {cli.kernel_id, cli.ramdisk_id, cli.image_id} <= {image["id"] for image in listed}

    updated = cli.run("images", "update", cli.image_id, "--property", "os_distro=busybox",
                      "--remove-property", "not_there")
    assert updated["properties"]["os_distro"] == "busybox"
    assert glance.image(cli.image_id)["os_distro"] == "busybox"
    again = cli.run("images", "update", cli.image_id, "--remove-property", "os_distro")
    assert "os_distro" not in again["properties"]

    # A kernel_id must name an aki image in Glance, checked before anything is created.
    proc = cli.raw("images", "create", "--name", "bad", "--disk-format", "raw", "--file", str(cli.disk),
                   "--property", f"kernel_id={cli.ramdisk_id}")
    assert proc.returncode == 1 and "disk_format aki" in proc.stderr, proc.stderr


def test_cli_errors_are_glances_in_berths_words(cli, glance, berth_bin, tmp_path):
    # 401: a wrong token is refused, and never echoed.
    env = {k: v for k, v in os.environ.items() if k not in ("OS_AUTH_TOKEN", "BERTH_GLANCE_TOKEN")}
    env["BERTH_GLANCE_TOKEN"] = "not-the-token-1234"
    proc = subprocess.run([berth_bin, "images", "list", "--catalog", f"glance:{GLANCE_URL}"],
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 1
    assert "HTTP 401" in proc.stderr and "token" in proc.stderr, proc.stderr
    assert "not-the-token-1234" not in proc.stderr + proc.stdout
    # OS_AUTH_TOKEN works too.
    env.pop("BERTH_GLANCE_TOKEN")
    env["OS_AUTH_TOKEN"] = glance.token
    proc = subprocess.run([berth_bin, "images", "show", cli.kernel_id, "--catalog", f"glance:{GLANCE_URL}"],
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr

    # 404.
    missing = str(uuid.uuid4())
    proc = cli.raw("images", "show", missing)
    assert proc.returncode == 1 and "ImageNotFound" in proc.stderr and missing in proc.stderr, proc.stderr

    # 413: over Glance's image_size_cap (64 MiB in the test deployment); the half-made image is removed.
    big = tmp_path / "big.raw"
    subprocess.run(["truncate", "-s", "65M", str(big)], check=True)
    before = {i["id"] for i in glance.request("GET", "/v2/images?limit=1000")["images"]}
    proc = cli.raw("images", "create", "--name", "too-big", "--disk-format", "raw", "--file", str(big))
    assert proc.returncode == 1 and "HTTP 413" in proc.stderr and "image_size_cap" in proc.stderr, proc.stderr
    after = {i["id"] for i in glance.request("GET", "/v2/images?limit=1000")["images"]}
    assert after == before

    # A token file others can read is refused before any request.
    loose = tmp_path / "token"
    loose.write_text(glance.token)
    loose.chmod(0o644)
    proc = subprocess.run([berth_bin, "images", "list", "--catalog", f"glance:{GLANCE_URL}",
                           "--glance-token-file", str(loose)], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "chmod 600" in proc.stderr, proc.stderr


# --- Boots through the bus ---------------------------------------------------------------------------


def test_glance_image_boots_and_its_data_is_downloaded_once(rpc_transport, glance_worker, cli, glance):
    first, second = instance(cli.image_id, kernel_extra_args="berth.vm_extra=2"), instance(cli.image_id)
    result = boot(rpc_transport, glance_worker, first)
    expected = f"{IMAGE_ARGS} {IMAGE_EXTRA} berth.vm_extra=2"
    assert result["status"] == "ACTIVE" and result["image_id"] == cli.image_id
    assert result["kernel_cmdline"] == expected
    assert console_cmdline(glance_worker, first["uuid"]) == expected

    # The host cache holds each image once, fully verified, with no temporary file left.
    cache = glance_worker.glance_cache
    assert cache_names(cache) == sorted([cli.kernel_id, cli.ramdisk_id, cli.image_id])
    # Each verified as it arrived, and stamped so a restarted worker does not hash it again.
    assert stamp_names(cache) == cache_names(cache)
    inodes = {name: (cache / name).stat().st_ino for name in cache_names(cache)}
    downloads = {i: glance.downloads(i) for i in (cli.kernel_id, cli.ramdisk_id, cli.image_id)}
    assert downloads == {cli.kernel_id: 1, cli.ramdisk_id: 1, cli.image_id: 1}, downloads

    # A second boot of the same image reuses it: no new download, same files.
    assert boot(rpc_transport, glance_worker, second)["status"] == "ACTIVE"
    assert console_cmdline(glance_worker, second["uuid"]) == f"{IMAGE_ARGS} {IMAGE_EXTRA}"
    assert {i: glance.downloads(i) for i in downloads} == downloads
    assert {name: (cache / name).stat().st_ino for name in cache_names(cache)} == inodes

    for inst in (first, second):
        delete(rpc_transport, glance_worker, inst["uuid"])
        assert_gone(glance_worker, inst["uuid"])


def test_snapshot_is_uploaded_to_glance_and_boots(rpc_transport, glance_worker, cli, glance):
    first = instance(cli.image_id)
    boot(rpc_transport, glance_worker, first)
    first_line = console_cmdline(glance_worker, first["uuid"])

    snap = call(rpc_transport, glance_worker, "snapshot_instance", instance_uuid=first["uuid"], image_name="snap-1",
                properties={"purpose": "glance-e2e"})
    assert snap["kind"] == "image"
    record = glance.image(snap["image_id"])
    assert record["status"] == "active" and record["disk_format"] == "qcow2" and record["size"] > 0
    assert record["os_hash_algo"] == "sha512"
    assert record["os_hash_value"] == hashlib.sha512(glance.file_path(snap["image_id"]).read_bytes()).hexdigest()
    assert record["base_image_ref"] == cli.image_id and record["image_type"] == "snapshot"
    assert record["instance_uuid"] == first["uuid"] and record["purpose"] == "glance-e2e"
    assert record["kernel_id"] == cli.kernel_id and record["kernel_args"] == IMAGE_ARGS

    second = instance(snap["image_id"])
    result = boot(rpc_transport, glance_worker, second)
    assert result["image_id"] == snap["image_id"]
    assert console_cmdline(glance_worker, second["uuid"]) == first_line
    assert glance.downloads(snap["image_id"]) == 1
    for inst in (first, second):
        delete(rpc_transport, glance_worker, inst["uuid"])
        assert_gone(glance_worker, inst["uuid"])


def test_placeholder_from_a_volume_is_a_queued_glance_image_and_boots(rpc_transport, glance_worker, cli, glance):
    # The volume is made from the Glance image (data through the CLI's host cache) in the local volume catalog.
    volume = cli.run("volumes", "create", "--name", "root-vol", "--size", "1", "--image", cli.image_id, "--bootable")
    assert volume["volume_image_metadata"]["image_id"] == cli.image_id

    minted = call(rpc_transport, glance_worker, "create_placeholder_image", volume_id=volume["id"],
                  name="vol-placeholder")
    record = glance.image(minted["image_id"])
    # Glance keeps an image without data queued; Berth treats it as a bootable placeholder.
    assert record["status"] == "queued" and record["size"] is None
    bdm = json.loads(record["block_device_mapping"])
    assert bdm[0]["source_type"] == "volume" and bdm[0]["volume_id"] == volume["id"]
    assert record["kernel_id"] == cli.kernel_id

    inst = instance(minted["image_id"])
    result = boot(rpc_transport, glance_worker, inst)
    assert result["image_id"] == minted["image_id"] and result["volume_id"] == volume["id"]
    assert console_cmdline(glance_worker, inst["uuid"]) == f"{IMAGE_ARGS} {IMAGE_EXTRA}"
    delete(rpc_transport, glance_worker, inst["uuid"])
    assert_gone(glance_worker, inst["uuid"])


# --- Failures ------------------------------------------------------------------------------------------


def assert_no_cache_file(worker, image_id: str):
    names = cache_names(worker.glance_cache)
    assert image_id not in names, names
    assert image_id not in stamp_names(worker.glance_cache), "a refused image must not be stamped verified"
    assert not [n for n in names if n.startswith(".")], f"temporary files left in the cache: {names}"


def test_corrupt_data_in_glance_is_refused_and_not_cached(rpc_transport, glance_worker, cli, glance, tmp_path):
    disk = tmp_path / "corrupt.raw"
    disk.write_bytes(os.urandom(1 << 20))
    image_id = cli.image("corrupt", "raw", disk, kernel_id=cli.kernel_id, ramdisk_id=cli.ramdisk_id,
                         kernel_args=IMAGE_ARGS)
    # Same size, other bytes, behind Glance's back: what a bad disk or a tampered store serves.
    stored = glance.file_path(image_id)
    stored.write_bytes(os.urandom(1 << 20))

    inst = instance(image_id)
    with pytest.raises(oslo_messaging.RemoteError) as caught:
        boot(rpc_transport, glance_worker, inst)
    assert caught.value.exc_type == "InvalidImage", caught.value
    text = str(caught.value.value)
    assert "does not match" in text and "sha512" in text and image_id in text, text
    assert_no_cache_file(glance_worker, image_id)
    assert_gone(glance_worker, inst["uuid"])

    # Data lost from Glance's store: Glance answers the download with 204 and no body.
    lost = cli.image("lost", "raw", disk, kernel_id=cli.kernel_id, ramdisk_id=cli.ramdisk_id, kernel_args=IMAGE_ARGS)
    glance.file_path(lost).unlink()
    inst = instance(lost)
    with pytest.raises(oslo_messaging.RemoteError) as caught:
        boot(rpc_transport, glance_worker, inst)
    assert caught.value.exc_type == "InvalidImage", caught.value
    assert "lost the data" in str(caught.value.value) and "Nothing was cached" in str(caught.value.value)
    assert_no_cache_file(glance_worker, lost)
    assert_gone(glance_worker, inst["uuid"])


def test_missing_image_is_image_not_found_and_not_cached(rpc_transport, glance_worker, cli):
    missing = str(uuid.uuid4())
    inst = instance(missing)
    with pytest.raises(oslo_messaging.RemoteError) as caught:
        boot(rpc_transport, glance_worker, inst)
    assert caught.value.exc_type == "ImageNotFound", caught.value
    assert missing in str(caught.value.value)
    assert_no_cache_file(glance_worker, missing)

    # An image whose kernel was deleted from Glance after it was registered.
    kernel = cli.image("short-lived-kernel", "aki", cli.disk)
    image_id = cli.image("orphan", "raw", cli.disk, kernel_id=kernel, kernel_args=IMAGE_ARGS)
    subprocess.run([cli.berth_bin, "images", "delete", kernel, *cli.catalog_args()], check=True)
    with pytest.raises(oslo_messaging.RemoteError) as caught:
        boot(rpc_transport, glance_worker, instance(image_id))
    assert caught.value.exc_type == "InvalidImage" and kernel in str(caught.value.value), caught.value
    assert_no_cache_file(glance_worker, kernel)


def test_glance_down_is_a_clear_error_and_leaves_no_cache_file(rpc_transport, glance_worker, cli, tmp_path):
    disk = tmp_path / "later.raw"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(disk), "8M"], check=True)
    image_id = cli.image("later", "raw", disk, kernel_id=cli.kernel_id, ramdisk_id=cli.ramdisk_id,
                         kernel_args=IMAGE_ARGS)
    subprocess.run([str(START), "stop"], check=True, capture_output=True, timeout=60)
    try:
        inst = instance(image_id)
        with pytest.raises(oslo_messaging.RemoteError) as caught:
            boot(rpc_transport, glance_worker, inst)
        assert caught.value.exc_type == "BuildFailed", caught.value
        text = str(caught.value.value)
        assert f"cannot reach Glance at {GLANCE_URL}" in text and "connection refused" in text, text
        assert_no_cache_file(glance_worker, image_id)
        assert_gone(glance_worker, inst["uuid"])
    finally:
        start_glance()
    # Back up: the same boot now works.
    inst = instance(image_id)
    assert boot(rpc_transport, glance_worker, inst)["status"] == "ACTIVE"
    assert console_cmdline(glance_worker, inst["uuid"]) == IMAGE_ARGS
    delete(rpc_transport, glance_worker, inst["uuid"])


def test_a_qcow2_backed_by_a_host_file_is_refused_before_any_overlay(rpc_transport, glance_worker, cli, glance,
                                                                     tmp_path):
    # What an attacker uploads: a qcow2 whose backing file is a file on the worker host. Booted, QEMU would
    # follow it, and a snapshot would carry the host file's content into the catalog.
    disk = tmp_path / "backed.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", "/etc/hostname", "-F", "raw", str(disk), "16M"],
                   check=True)

    # Berth's own upload refuses it before anything is created in Glance.
    before = {i["id"] for i in glance.request("GET", "/v2/images?limit=1000")["images"]}
    proc = cli.raw("images", "create", "--name", "backed", "--disk-format", "qcow2", "--file", str(disk))
    assert proc.returncode == 1 and "InvalidImage" in proc.stderr and "backing file" in proc.stderr, proc.stderr
    assert {i["id"] for i in glance.request("GET", "/v2/images?limit=1000")["images"]} == before

    # Glance 33 refuses the upload itself ("Image failed safety checks"); one before 2024.2, or a compromised
    # store, serves it. That is made here behind Glance's back: a flat qcow2 is uploaded, then its stored file
    # and recorded hashes are replaced with the backed one's, so the data Berth downloads verifies.
    flat = tmp_path / "flat.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(flat), "16M"], check=True)
    image_id = cli.image("backed", "qcow2", flat, kernel_id=cli.kernel_id, ramdisk_id=cli.ramdisk_id,
                         kernel_args=IMAGE_ARGS)
    data = disk.read_bytes()
    glance.file_path(image_id).write_bytes(data)
    with sqlite3.connect(GLANCE_DIR / "glance.sqlite", timeout=30) as db:
        db.execute("UPDATE images SET size = ?, checksum = ?, os_hash_value = ? WHERE id = ?",
                   (len(data), hashlib.md5(data).hexdigest(), hashlib.sha512(data).hexdigest(), image_id))
    assert glance.image(image_id)["os_hash_value"] == hashlib.sha512(data).hexdigest()

    # Booted, it is refused with the inspector's words, before the cache keeps it, before any overlay volume
    # exists, and no domain is defined.

    inst = instance(image_id)
    with pytest.raises(oslo_messaging.RemoteError) as caught:
        boot(rpc_transport, glance_worker, inst)
    assert caught.value.exc_type == "InvalidImage", caught.value
    text = str(caught.value.value)
    assert "qcow2 overlay with a backing file" in text and image_id in text, text
    assert_no_cache_file(glance_worker, image_id)
    assert_gone(glance_worker, inst["uuid"])
    assert f"{inst['uuid']}-root.qcow2" not in virsh("vol-list", glance_worker.pool, check=False)
    # The worker is still serving: the next boot of a good image works.
    good = instance(cli.image_id)
    assert boot(rpc_transport, glance_worker, good)["status"] == "ACTIVE"
    delete(rpc_transport, glance_worker, good["uuid"])
    assert_gone(glance_worker, good["uuid"])


def test_a_worker_cache_copy_from_before_the_inspector_is_inspected_at_boot(rpc_transport, glance_worker, cli,
                                                                            tmp_path):
    # The worker's image cache (state/cache/<id>) hard-links what the catalog handed out and is used without
    # asking the catalog again; a copy left there by a version without the inspector is judged at boot anyway.
    flat = tmp_path / "flat.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(flat), "16M"], check=True)
    image_id = cli.image("cached-before", "qcow2", flat, kernel_id=cli.kernel_id, ramdisk_id=cli.ramdisk_id,
                         kernel_args=IMAGE_ARGS)
    backed = tmp_path / "backed.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", "/etc/hostname", "-F", "raw", str(backed),
                    "16M"], check=True)
    cached = glance_worker.state / "cache" / image_id
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(backed.read_bytes())

    inst = instance(image_id)
    with pytest.raises(oslo_messaging.RemoteError) as caught:
        boot(rpc_transport, glance_worker, inst)
    assert caught.value.exc_type == "InvalidImage", caught.value
    assert "qcow2 overlay with a backing file" in str(caught.value.value), caught.value
    assert_gone(glance_worker, inst["uuid"])
    cached.unlink()


# --- SIGHUP: the token file and the configuration read again --------------------------------------------


def test_sighup_rereads_the_token_file_and_config_while_a_boot_is_in_flight(rpc_transport, worker_factory, cli,
                                                                            glance, tmp_path):
    """The token file and the log level come from a configuration file; SIGHUP while a boot is in flight
    changes both without touching the boot, and later boots use whatever token the file then holds."""
    token = tmp_path / "token"

    def write_token(text: str):
        # Replaced, not rewritten in place, as a token refresher (or a Kubernetes secret) does.
        fresh = tmp_path / "token.new"
        fresh.write_text(text + "\n")
        fresh.chmod(0o600)
        fresh.replace(token)

    config = tmp_path / "berth.conf"

    def write_config(level: str, concurrency: int = 8):
        config.write_text(f"[berth]\nlog_level = {level}\nconcurrency = {concurrency}\n"
                          f"[glance]\ntoken_file = {token}\n")

    write_token(glance.token)
    write_config("info")
    state, pool = tmp_path / "state", f"berth-test-{uuid.uuid4().hex[:8]}"
    w = worker_factory(extra_args=[
        "--config-file", str(config), "--libvirt-uri", LIBVIRT_URI, "--state-dir", str(state),
        "--storage-pool", pool, "--catalog", f"glance:{GLANCE_URL}", "--volume-catalog", str(cli.volumes),
    ])
    w.state, w.pool = state, pool
    w.glance_cache = state / "cache" / "glance"
    w.start()

    def reloads() -> int:
        return w.log_text().count("SIGHUP: configuration reloaded")

    def sighup(expected: int):
        w.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 15
        while reloads() < expected and time.monotonic() < deadline:
            time.sleep(0.1)
        assert reloads() == expected, w.describe()

    booted = []
    try:
        # A boot in flight (this worker's cache is empty: it downloads three images, then starts QEMU) while the
        # token file is replaced and the configuration changed.
        first = instance(cli.image_id)
        result = {}
        thread = threading.Thread(target=lambda: result.update(boot(rpc_transport, w, first)))
        thread.start()
        time.sleep(0.3)
        write_token(glance.token)
        write_config("debug", concurrency=3)
        assert thread.is_alive(), "the boot ended before the reload: nothing was in flight"
        sighup(1)
        thread.join(timeout=200)
        assert result.get("status") == "ACTIVE", (result, w.describe())
        booted.append(first["uuid"])
        log = w.log_text()
        assert "log_level=debug" in log, w.describe()
        assert "[berth] concurrency" in log and "take effect at the next start" in log, w.describe()

        # A token the file now holds that Glance refuses: the next boot that needs Glance is refused with 401.
        disk = tmp_path / "after.raw"
        subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(disk), "8M"], check=True)
        image_id = cli.image("after-reload", "raw", disk, kernel_id=cli.kernel_id, ramdisk_id=cli.ramdisk_id,
                             kernel_args=IMAGE_ARGS)
        write_token("revoked-" + uuid.uuid4().hex)
        sighup(2)
        refused = instance(image_id)
        with pytest.raises(oslo_messaging.RemoteError) as caught:
            boot(rpc_transport, w, refused)
        assert "token is missing, wrong or expired" in str(caught.value.value), caught.value
        assert_no_cache_file(w, image_id)

        # The valid token back in the file: the same boot works, without a restart.
        write_token(glance.token)
        sighup(3)
        second = instance(image_id)
        assert boot(rpc_transport, w, second)["status"] == "ACTIVE"
        booted.append(second["uuid"])
        assert w.proc.poll() is None, w.describe()
    finally:
        for uuid_ in booted:
            delete(rpc_transport, w, uuid_)
        assert w.stop() == 0, w.describe()
        virsh("pool-destroy", pool, check=False)
        virsh("pool-undefine", pool, check=False)
