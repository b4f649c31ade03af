"""berth.metrics samples (DESIGN §7) reach a stock oslo.messaging NotificationListener, and
`berth monitor` adds up exactly what that listener recorded.

Two workers on the in-process test driver (each process has its own test:///default host), three
catalog images, several instances of each booted through the bus. Both workers poll every second
and publish on a metering topic of this module's own. A stock listener records every batch by its
message_id from before the monitors start until after they stop; each `berth monitor ... --json
--message-ids` lists the notifications it aggregated, so the listener's figures over exactly those
notifications must equal the monitor's: counts and max exactly, sums and means to floating-point
rounding (the monitor adds doubles, Python adds the integers the worker sent).
"""

from __future__ import annotations

import collections
import concurrent.futures
import json
import math
import subprocess
import threading
import time
import uuid

import oslo_messaging
import pytest

from conftest import request_context, rpc_client, unique

INSTANCES_PER_IMAGE_PER_WORKER = 2
FLAVORS = ["tiny", "small", "tiny"]  # per image: two images share a flavor, so --by flavor merges them
MONITOR_SECONDS = 4


class SampleRecorder:
    """A stock listener endpoint: `sample` is what oslo calls for priority SAMPLE."""

    def __init__(self):
        self.lock = threading.Lock()
        self.batches: dict[str, dict] = {}
        self.other_priorities = []

    def sample(self, ctxt, publisher_id, event_type, payload, metadata):
        with self.lock:
            self.batches[metadata["message_id"]] = {
                "publisher_id": publisher_id, "event_type": event_type, "payload": payload,
                "timestamp": metadata["timestamp"],
            }

    def info(self, ctxt, publisher_id, event_type, payload, metadata):
        with self.lock:
            self.other_priorities.append(("info", event_type))

    def snapshot(self) -> dict[str, dict]:
        with self.lock:
            return dict(self.batches)

    def samples(self, ids=None) -> list[dict]:
        batches = self.snapshot()
        chosen = batches.values() if ids is None else (batches[i] for i in ids)
        return [s for b in chosen for s in b["payload"]["samples"]]


@pytest.fixture(scope="module")
def metering_topic(names) -> str:
    topic = unique("metering")
    # The workers (like oslo's notifier) and the listener declare <topic>.sample; removed at the end.
    names.extra_queues.append(f"{topic}.sample")
    return topic


@pytest.fixture(scope="module")
def recorder(notification_transport, metering_topic):
    rec = SampleRecorder()
    listener = oslo_messaging.get_notification_listener(
        notification_transport, [oslo_messaging.Target(topic=metering_topic)], [rec], executor="threading")
    listener.start()
    yield rec
    listener.stop()
    listener.wait()


@pytest.fixture(scope="module")
def images(berth_bin, tmp_path_factory) -> tuple[str, list[str]]:
    root = tmp_path_factory.mktemp("metrics-catalog")
    disk = root.parent / "metrics-root.raw"
    disk.write_bytes(b"\0" * (1 << 20))
    ids = []
    for index in range(3):
        proc = subprocess.run(
            [berth_bin, "images", "create", "--name", f"metrics-{index}", "--disk-format", "raw", "--file", str(disk),
             "--catalog", f"local:{root}"],
            capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        ids.append(json.loads(proc.stdout)["id"])
    return str(root), ids


@pytest.fixture(scope="module")
def workers(worker_factory, images, metering_topic, recorder, tmp_path_factory):
    root, _ = images
    made = []
    for index in range(2):
        state = tmp_path_factory.mktemp(f"metrics-state-{index}")
        made.append(worker_factory(extra_args=[
            "--catalog", f"local:{root}", "--state-dir", str(state), "--concurrency", "8",
            "--metrics-interval", "1", "--metering-topic", metering_topic,
        ]))
    for w in made:
        w.start(wait=False)
    for w in made:
        w.wait_ready()
    yield made
    for w in made:
        assert w.stop() == 0, w.describe()


@pytest.fixture(scope="module")
def booted(rpc_transport, workers, images):
    """{instance uuid: (worker host, image id, flavor)} for every instance booted through the bus."""
    _, image_ids = images
    plan = []
    for w in workers:
        for image_index, image_id in enumerate(image_ids):
            for _ in range(INSTANCES_PER_IMAGE_PER_WORKER):
                plan.append((w, image_id, FLAVORS[image_index]))

    def boot(item):
        w, image_id, flavor = item
        inst = {
            "uuid": str(uuid.uuid4()), "name": "metrics", "image_id": image_id,
            "flavor": {"name": flavor, "vcpus": 1, "memory_mb": 128, "root_gb": 1}, "metadata": {},
        }
        client = rpc_client(rpc_transport, w.topic)
        result = client.prepare(server=w.host, timeout=120).call(request_context(), "boot_instance", instance=inst)
        assert result["status"] == "ACTIVE", result
        return inst["uuid"], (w.host, image_id, flavor)

    with concurrent.futures.ThreadPoolExecutor(max_workers=len(plan)) as pool:
        return dict(pool.map(boot, plan))


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout}s waiting for {what}", pytrace=False)


def sampled(recorder: SampleRecorder, booted: dict) -> bool:
    """Every instance has been polled (cpu.time) and its boot duration published."""
    seen = collections.defaultdict(set)
    for s in recorder.samples():
        seen[s["name"]].add(s["instance_uuid"])
    return all(set(booted) <= seen[name] for name in ("cpu.time", "memory.used", "boot.duration"))


def run_monitors(berth_cli, metering_topic, groupings):
    procs = {
        by: subprocess.Popen(
            [berth_cli.binary, "monitor", "--by", by, "--json", "--message-ids", "--duration", str(MONITOR_SECONDS),
             "--interval", "1", "--metering-topic", metering_topic,
             "--transport-url", berth_cli.url, "--control-exchange", berth_cli.names.exchange],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for by in groupings
    }
    results = {}
    for by, proc in procs.items():
        out, err = proc.communicate(timeout=MONITOR_SECONDS + 60)
        assert proc.returncode == 0, f"berth monitor --by {by} exited {proc.returncode}: {err[-2000:]}"
        lines = [line for line in out.splitlines() if line.strip()]
        # With --duration, --json prints exactly one object, at the end.
        assert len(lines) == 1, out
        results[by] = json.loads(lines[0])
    return results


def expected_groups(samples: list[dict], key: str) -> dict:
    groups: dict = {}
    for s in samples:
        group = groups.setdefault(s[key], {"instances": set(), "metrics": {}})
        group["instances"].add(s["instance_uuid"])
        m = group["metrics"].setdefault(s["name"], {"count": 0, "values": [], "unit": s["unit"], "type": s["type"]})
        m["count"] += 1
        m["values"].append(s["value"])
    return groups


def test_monitor_matches_what_a_stock_listener_recorded(berth_cli, recorder, workers, booted, images, metering_topic):
    _, image_ids = images
    wait_for(lambda: sampled(recorder, booted), 60, "samples of every booted instance at the oslo listener")

    results = run_monitors(berth_cli, metering_topic, ["image_id", "host", "flavor"])

    hosts = {w.host for w in workers}
    for by, result in results.items():
        ids = result["message_ids"]
        assert result["by"] == by and result["final"] is True
        assert result["notifications"] == len(ids) == len(set(ids))
        assert result["rejected"] == 0 and result["duplicates"] == 0, result
        # The listener ran before the monitor started and after it stopped: it has every notification the
        # monitor aggregated (allow it a moment to catch up with the last ones).
        wait_for(lambda: set(ids) <= set(recorder.snapshot()), 20, f"the listener to have monitor --by {by}'s batches")
        batches = recorder.snapshot()
        # Polling every second for MONITOR_SECONDS: both workers' batches are in the window.
        assert {batches[i]["publisher_id"] for i in ids} == {f"compute.{h}" for h in hosts}
        assert len(ids) >= 2 * (MONITOR_SECONDS - 1), ids

        window = recorder.samples(ids)
        assert result["samples"] == len(window)
        expected = expected_groups(window, by)
        assert set(result["groups"]) == set(expected)
        for name, group in expected.items():
            got = result["groups"][name]
            assert got["instances"] == len(group["instances"]), (by, name)
            assert set(got["metrics"]) == set(group["metrics"]), (by, name)
            for metric, want in group["metrics"].items():
                have = got["metrics"][metric]
                total = sum(want["values"])
                assert have["count"] == want["count"], (by, name, metric)
                assert have["max"] == max(want["values"]), (by, name, metric)
                assert math.isclose(have["sum"], total, rel_tol=1e-12), (by, name, metric, have["sum"], total)
                assert math.isclose(have["mean"], total / want["count"], rel_tol=1e-12), (by, name, metric)
                assert (have["unit"], have["type"]) == (want["unit"], want["type"])

    # Every image, with all its instances on both workers, is in the per-image figures.
    per_image = results["image_id"]["groups"]
    assert set(per_image) == set(image_ids)
    for image_id in image_ids:
        assert per_image[image_id]["instances"] == 2 * INSTANCES_PER_IMAGE_PER_WORKER
    assert set(results["host"]["groups"]) == hosts
    assert set(results["flavor"]["groups"]) == set(FLAVORS)


def test_every_sample_is_tagged_and_shaped(recorder, workers, booted, images):
    wait_for(lambda: sampled(recorder, booted), 60, "samples of every booted instance at the oslo listener")
    _, image_ids = images
    batches = recorder.snapshot()
    assert batches and not recorder.other_priorities
    for batch in batches.values():
        assert batch["event_type"] == "berth.metrics"
        host = batch["publisher_id"].removeprefix("compute.")
        for s in batch["payload"]["samples"]:
            assert set(s) == {"name", "unit", "type", "value", "image_id", "instance_uuid", "host", "flavor",
                              "timestamp"}, s
            # DESIGN §7: image_id is never null.
            assert s["image_id"] is not None and s["image_id"] in image_ids, s
            assert s["host"] == host
            worker_host, image_id, flavor = booted[s["instance_uuid"]]
            assert (s["host"], s["image_id"], s["flavor"]) == (worker_host, image_id, flavor), s
            assert isinstance(s["value"], (int, float)) and s["value"] >= 0
            assert s["timestamp"].endswith("Z") and "T" in s["timestamp"]

    by_name = collections.defaultdict(list)
    for s in recorder.samples():
        by_name[s["name"]].append(s)
    # The test driver's bulk stats have no CPU or balloon group; the worker falls back to virDomainGetInfo.
    assert {(s["unit"], s["type"]) for s in by_name["cpu.time"]} == {("ns", "cumulative")}
    assert {(s["unit"], s["type"]) for s in by_name["memory.used"]} == {("B", "gauge")}
    assert {s["value"] for s in by_name["memory.used"]} == {128 * 1024 * 1024}
    # One boot duration per booted instance, measured by the worker that booted it.
    durations = collections.Counter(s["instance_uuid"] for s in by_name["boot.duration"])
    assert durations == collections.Counter(set(booted))
    assert all(0 < s["value"] < 120 and s["unit"] == "s" for s in by_name["boot.duration"])
