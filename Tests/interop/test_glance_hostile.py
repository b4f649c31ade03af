"""Berth's Glance client against a Glance that answers as an attacker would (hostile_glance.py, on 127.0.0.1):
answers too large to hold, image data larger than its record, a redirect to another origin. Each case runs the
real `berth` CLI and measures its peak RSS (VmHWM) and how long the refusal took.

Needs BERTH_BIN; the worker case also the broker (a worker on libvirt's test driver). No Glance.
"""

from __future__ import annotations

import json
import os
import pathlib
import stat
import subprocess
import threading
import time

import pytest

import oslo_messaging

from hostile_glance import GIB, IMAGE_ID, MIB, Answer, HostileGlance, image_record
from test_boot_e2e import boot, call, instance

TOKEN = "hostile-test-token-5f1c"
# The bound of issue 15: a refused answer may not cost more than this, nor take longer than REFUSAL_SECONDS.
PEAK_RSS_LIMIT = 128 * MIB
REFUSAL_SECONDS = 10


@pytest.fixture
def glance():
    server = HostileGlance()
    yield server
    server.close()


def run_cli(berth_bin: str, url: str, cache: pathlib.Path, *args: str) -> tuple[subprocess.CompletedProcess, int, float]:
    """`berth <args> --catalog glance:url`, with its exit, peak RSS in bytes and seconds.

    The peak is VmHWM of the process's own address space, sampled until it exits (ru_maxrss would not do: Linux
    carries the parent's high-water mark across fork and exec, so it reports pytest's size)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OS_AUTH_TOKEN", "BERTH_GLANCE_TOKEN")}
    env["BERTH_GLANCE_TOKEN"] = TOKEN
    argv = [berth_bin, *args, "--catalog", f"glance:{url}", "--glance-cache-dir", str(cache),
            "--volume-catalog", str(cache.parent / "volumes")]
    began = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    peak = 0

    def sample():
        nonlocal peak
        status = pathlib.Path(f"/proc/{proc.pid}/status")
        while proc.poll() is None:
            try:
                for line in status.read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]) * 1024)
            except (OSError, ValueError):
                pass
            time.sleep(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
        sampler.join()
    seconds = time.monotonic() - began
    return subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr), peak, seconds


def assert_bounded(proc, peak: int, seconds: float, *fragments: str):
    assert proc.returncode == 1, f"expected a refusal, got {proc.returncode}: {proc.stdout[:500]} {proc.stderr[:500]}"
    for fragment in fragments:
        assert fragment in proc.stderr, proc.stderr[:2000]
    assert seconds <= REFUSAL_SECONDS, f"refusal took {seconds:.1f}s"
    assert TOKEN not in proc.stderr + proc.stdout
    print(f"peak RSS {peak / MIB:.1f} MiB, {seconds:.2f}s")
    assert peak <= PEAK_RSS_LIMIT, f"peak RSS {peak / MIB:.0f} MiB > {PEAK_RSS_LIMIT / MIB:.0f} MiB"


def cache_files(cache: pathlib.Path) -> list[str]:
    if not cache.exists():
        return []
    return sorted(p.name for p in cache.iterdir() if not p.name.endswith(".lock"))


@pytest.mark.parametrize("declare_length", [True, False], ids=["content-length", "chunked"])
def test_a_gib_json_answer_is_refused_while_reading(berth_bin, glance, tmp_path, declare_length):
    # A record whose name never ends: 1 GiB of JSON.
    glance.answers[f"/v2/images/{IMAGE_ID}"] = Answer(
        stream=(b'{"id": "%s", "name": "' % IMAGE_ID.encode(), GIB, b'"}'), declare_length=declare_length,
        headers={"Content-Type": "application/json"})
    proc, peak, seconds = run_cli(berth_bin, glance.url, tmp_path / "cache", "images", "show", IMAGE_ID)
    assert_bounded(proc, peak, seconds, "larger than 33554432 bytes",
                   "Content-Length" if declare_length else "already")


@pytest.mark.parametrize("declare_length", [True, False], ids=["content-length", "chunked"])
def test_image_data_beyond_the_records_size_is_refused_while_streaming(berth_bin, glance, tmp_path, declare_length):
    data = bytes(8 * MIB)
    glance.answers[f"/v2/images/{IMAGE_ID}"] = Answer(
        body=json.dumps(image_record(data)).encode(), headers={"Content-Type": "application/json"})
    # The record says 8 MiB; the store sends 1 GiB.
    glance.answers[f"/v2/images/{IMAGE_ID}/file"] = Answer(stream=(b"", GIB, b""), declare_length=declare_length)
    cache = tmp_path / "cache"
    proc, peak, seconds = run_cli(berth_bin, glance.url, cache, "images", "verify", IMAGE_ID)
    assert cache_files(cache) == [], cache_files(cache)
    assert_bounded(proc, peak, seconds, "more data for image", "size of 8388608 bytes", "nothing was cached")


def test_a_redirect_to_another_origin_is_refused_and_gets_no_token(berth_bin, glance, tmp_path):
    elsewhere = HostileGlance()
    try:
        record = json.dumps(image_record(b"x")).encode()
        elsewhere.answers[f"/v2/images/{IMAGE_ID}"] = Answer(body=record, headers={"Content-Type": "application/json"})
        glance.answers[f"/v2/images/{IMAGE_ID}"] = Answer(
            302, headers={"Location": f"{elsewhere.url}/v2/images/{IMAGE_ID}"})
        proc, peak, seconds = run_cli(berth_bin, glance.url, tmp_path / "cache", "images", "show", IMAGE_ID)
        assert_bounded(proc, peak, seconds, "redirected to another origin", elsewhere.url.split("//")[1])
        # Not followed at all, so the other host saw neither the request nor the token.
        assert elsewhere.requests == [], elsewhere.requests
        assert all(headers.get("x-auth-token") == TOKEN for _, headers in glance.requests)
    finally:
        elsewhere.close()


def test_a_redirect_on_the_same_origin_is_followed(berth_bin, glance, tmp_path):
    record = json.dumps(image_record(b"x")).encode()
    glance.answers["/moved"] = Answer(body=record, headers={"Content-Type": "application/json"})
    glance.answers[f"/v2/images/{IMAGE_ID}"] = Answer(302, headers={"Location": f"{glance.url}/moved"})
    proc, _, _ = run_cli(berth_bin, glance.url, tmp_path / "cache", "images", "show", IMAGE_ID)
    assert proc.returncode == 0, proc.stderr
    assert [path for path, _ in glance.requests] == [f"/v2/images/{IMAGE_ID}", "/moved"]


def test_cached_image_data_is_private_to_berths_user(berth_bin, glance, tmp_path):
    data = os.urandom(1 * MIB)
    glance.answers[f"/v2/images/{IMAGE_ID}"] = Answer(
        body=json.dumps(image_record(data)).encode(), headers={"Content-Type": "application/json"})
    glance.answers[f"/v2/images/{IMAGE_ID}/file"] = Answer(body=data)
    cache = tmp_path / "cache"
    proc, _, _ = run_cli(berth_bin, glance.url, cache, "images", "verify", IMAGE_ID)
    assert proc.returncode == 0, proc.stderr
    assert (cache / IMAGE_ID).read_bytes() == data
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    modes = {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in cache.iterdir() if not p.name.endswith(".verified")}
    assert modes == {IMAGE_ID: "0o600", f".{IMAGE_ID}.lock": "0o600"}, modes


def peak_rss(pid: int) -> int:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for {pid}")


def test_a_worker_refuses_a_flooding_download_and_keeps_serving(glance, worker_factory, rpc_transport, tmp_path):
    data = bytes(8 * MIB)
    glance.answers[f"/v2/images/{IMAGE_ID}"] = Answer(
        body=json.dumps(image_record(data)).encode(), headers={"Content-Type": "application/json"})
    glance.answers[f"/v2/images/{IMAGE_ID}/file"] = Answer(stream=(b"", GIB, b""), declare_length=False)
    token = tmp_path / "token"
    token.write_text(TOKEN)
    token.chmod(0o600)
    state = tmp_path / "state"
    worker = worker_factory(extra_args=[
        "--state-dir", str(state), "--catalog", f"glance:{glance.url}", "--glance-token-file", str(token),
        "--volume-catalog", str(tmp_path / "volumes")]).start()
    try:
        began = time.monotonic()
        with pytest.raises(oslo_messaging.RemoteError) as caught:
            boot(rpc_transport, worker, instance(IMAGE_ID))
        seconds = time.monotonic() - began
        assert caught.value.exc_type == "InvalidImage", caught.value
        assert "more data for image" in str(caught.value.value), caught.value
        peak = peak_rss(worker.proc.pid)
        print(f"worker peak RSS {peak / MIB:.1f} MiB, refusal {seconds:.2f}s")
        assert peak <= PEAK_RSS_LIMIT, f"worker peak RSS {peak / MIB:.0f} MiB"
        assert seconds <= REFUSAL_SECONDS
        assert cache_files(state / "cache" / "glance") == []
        assert call(rpc_transport, worker, "ping", timeout=10) is not None
    finally:
        assert worker.stop() == 0, worker.describe()


def test_control_characters_in_a_name_do_not_reach_the_terminal(berth_bin, glance, tmp_path):
    """A name is anyone's with a Glance account: a table or value line shows its escapes, never sends them."""
    record = image_record(b"x")
    record["name"] = "evil\x1b[2J\x1b[31mred\nsecond line"
    glance.answers[f"/v2/images/{IMAGE_ID}"] = Answer(body=json.dumps(record).encode(),
                                                      headers={"Content-Type": "application/json"})
    for fmt in ("table", "value"):
        proc, _, _ = run_cli(berth_bin, glance.url, tmp_path / "cache", "images", "show", IMAGE_ID, "-f", fmt)
        assert proc.returncode == 0, proc.stderr
        assert "\x1b" not in proc.stdout, proc.stdout
        assert "evil\\u{1b}[2J\\u{1b}[31mred\\nsecond line" in proc.stdout, proc.stdout
