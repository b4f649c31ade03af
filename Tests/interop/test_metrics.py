"""berth.metrics samples (DESIGN §7) reach a stock oslo.messaging NotificationListener, and
`berth monitor` adds up exactly what that listener recorded.

Two workers on the in-process test driver (each process has its own test:///default host), three
images in one shared catalog: two plain raw images and a **placeholder image** (DESIGN §5): a bootable
volume made from a raw image with `berth volumes create`, a snapshot of it with `berth volumes
snapshot`, and a content-free placeholder minted from that snapshot by a worker through the RPC
`create_placeholder_image`, called by a stock oslo client. Several instances of each image are booted
through the bus on both workers; each placeholder boot gets a volume of its own made from the
snapshot (a placeholder minted from a plain volume boots one instance at a time, so it could not
give several instances). Both workers poll every second and publish on a metering topic of this
module's own. A stock listener records every batch by its message_id from before the monitors start
until after they stop; each `berth monitor ... --json --message-ids` lists the notifications it
aggregated, so the listener's figures over exactly those notifications must equal the monitor's:
counts and max exactly, sums and means to floating-point rounding (the monitor adds doubles, Python
adds the integers the worker sent). The per-image figures therefore cover a placeholder image_id.

create_placeholder_image is also called for the plain volume, and refused for a volume that does not
exist and for a request naming both a volume and a snapshot, so its requests, results, failures and
`image.placeholder.create` events are in the session's capture that test_contracts.py validates.
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
PLACEHOLDER = 2  # index of the placeholder image in `images`
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


class EventRecorder:
    """A stock listener endpoint for the workers' status events (`<topic>-notifications`, see conftest)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.events: list[tuple[str, str, dict]] = []

    def _record(self, publisher_id, event_type, payload):
        with self.lock:
            self.events.append((publisher_id, event_type, payload))

    def info(self, ctxt, publisher_id, event_type, payload, metadata):
        self._record(publisher_id, event_type, payload)

    def error(self, ctxt, publisher_id, event_type, payload, metadata):
        self._record(publisher_id, event_type, payload)

    def of(self, event_type: str) -> list[tuple[str, dict]]:
        with self.lock:
            return [(p, e) for p, t, e in self.events if t == event_type]


@pytest.fixture(scope="module")
def events(notification_transport, names):
    rec = EventRecorder()
    listener = oslo_messaging.get_notification_listener(
        notification_transport, [oslo_messaging.Target(topic=f"{names.topic}-notifications")], [rec],
        executor="threading")
    listener.start()
    yield rec
    listener.stop()
    listener.wait()


class Catalog:
    """The workers' shared local catalog, managed with the `berth images` / `berth volumes` commands."""

    def __init__(self, berth_bin: str, root):
        self.berth_bin, self.root = berth_bin, root

    def run(self, *args: str) -> dict:
        proc = subprocess.run([self.berth_bin, *args, "--catalog", f"local:{self.root}"],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"berth {' '.join(args)}: {proc.stderr}"
        return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def catalog(berth_bin, tmp_path_factory):
    """Two raw images; a bootable volume made from the first and a snapshot of it (placeholder sources)."""
    root = tmp_path_factory.mktemp("metrics-catalog")
    disk = root.parent / "metrics-root.raw"
    disk.write_bytes(b"\0" * (1 << 20))
    cat = Catalog(berth_bin, root)
    cat.raw = [
        cat.run("images", "create", "--name", f"metrics-{index}", "--disk-format", "raw", "--file", str(disk))["id"]
        for index in range(2)
    ]
    cat.volume = cat.run("volumes", "create", "--name", "metrics-root", "--size", "1", "--image", cat.raw[0],
                         "--bootable")
    cat.snapshot = cat.run("volumes", "snapshot", cat.volume["id"], "--name", "metrics-root-snap")
    return cat


@pytest.fixture(scope="module")
def minted(rpc_transport, workers, catalog, events) -> dict:
    """Placeholder images minted over the bus by whichever worker of the pool takes the call (topic
    `compute`, no server): {"snapshot": (image_id, request_id), "volume": (image_id, request_id)}."""
    client = rpc_client(rpc_transport, workers[0].topic).prepare(timeout=60)
    made = {}
    for source, args in (("snapshot", {"snapshot_id": catalog.snapshot["id"]}),
                         ("volume", {"volume_id": catalog.volume["id"]})):
        context = request_context()
        result = client.call(context, "create_placeholder_image", name=f"metrics-{source}-placeholder",
                             properties={"os_distro": "debian"}, **args)
        assert set(result) == {"image_id"}, result
        made[source] = (result["image_id"], context["request_id"])
    return made


@pytest.fixture(scope="module")
def images(catalog, minted) -> tuple[str, list[str]]:
    """(catalog root, [raw image, raw image, placeholder image]): the three images instances boot from."""
    return str(catalog.root), [*catalog.raw, minted["snapshot"][0]]


@pytest.fixture(scope="module")
def workers(worker_factory, catalog, metering_topic, recorder, tmp_path_factory):
    root = catalog.root
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
    """{instance uuid: (worker host, image id, flavor)} for every instance booted through the bus. A
    placeholder boot runs on a volume made from the placeholder's snapshot, whose id is the instance's."""
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
        assert (result["host"], result["image_id"]) == (w.host, image_id), result
        is_placeholder = image_id == image_ids[PLACEHOLDER]
        assert result["volume_id"] == (inst["uuid"] if is_placeholder else None), result
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

    # Every image, with all its instances on both workers, is in the per-image figures: the placeholder too.
    per_image = results["image_id"]["groups"]
    assert set(per_image) == set(image_ids)
    for image_id in image_ids:
        assert per_image[image_id]["instances"] == 2 * INSTANCES_PER_IMAGE_PER_WORKER
    placeholder = per_image[image_ids[PLACEHOLDER]]["metrics"]
    assert {"cpu.time", "memory.used"} <= set(placeholder), placeholder
    assert placeholder["memory.used"]["max"] == 128 * 1024 * 1024
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


def wait_for_events(events: EventRecorder, predicate, timeout: float, what: str):
    wait_for(lambda: predicate(events), timeout, what)


def test_placeholders_minted_over_the_bus(catalog, minted, events, workers):
    """create_placeholder_image through a stock client: content-free images naming the snapshot or the volume,
    inheriting the volume's image metadata, each announced by image.placeholder.create with its image_id."""
    hosts = {w.host for w in workers}
    expected_bdm = {
        "snapshot": {"source_type": "snapshot", "snapshot_id": catalog.snapshot["id"], "destination_type": "volume",
                     "boot_index": 0, "device_name": "/dev/vda", "volume_size": 1, "delete_on_termination": True},
        "volume": {"source_type": "volume", "volume_id": catalog.volume["id"], "destination_type": "volume",
                   "boot_index": 0, "device_name": "/dev/vda", "volume_size": 1, "delete_on_termination": False},
    }
    for source, (image_id, request_id) in minted.items():
        image = catalog.run("images", "show", image_id)
        assert image["size"] == 0 and image["status"] == "active", image
        props = image["properties"]
        assert json.loads(props["block_device_mapping"]) == [expected_bdm[source]], props
        assert props["bdm_v2"] == "True" and props["root_device_name"] == "/dev/vda", props
        # The caller's properties, and the base image recorded from the volume's image metadata.
        assert props["os_distro"] == "debian" and props["base_image_ref"] == catalog.raw[0], props
        # Minted straight from a volume or snapshot: no instance, so instance_uuid is null (contracts/README.md).
        wait_for_events(events, lambda ev: any(e["image_id"] == image_id for _, e in ev.of("image.placeholder.create")),
                        20, f"image.placeholder.create for the {source} placeholder")
        [(publisher, event)] = [(p, e) for p, e in events.of("image.placeholder.create") if e["image_id"] == image_id]
        want = {"instance_uuid": None, "image_id": image_id, "host": publisher.removeprefix("compute."),
                "request_id": request_id, "state": "active"}
        if source == "snapshot":
            want["snapshot_id"] = catalog.snapshot["id"]
        assert event == want, event
        assert publisher.removeprefix("compute.") in hosts


def test_create_placeholder_image_refuses_what_it_cannot_mint(rpc_transport, workers, catalog, minted, events):
    client = rpc_client(rpc_transport, workers[0].topic).prepare(server=workers[0].host, timeout=30)
    missing = str(uuid.uuid4())
    with pytest.raises(oslo_messaging.RemoteError) as caught:
        client.call(request_context(), "create_placeholder_image", volume_id=missing, name="no-such-volume")
    assert caught.value.exc_type == "VolumeNotFound" and missing in caught.value.value, caught.value
    with pytest.raises(oslo_messaging.RemoteError) as caught:
        client.call(request_context(), "create_placeholder_image", volume_id=catalog.volume["id"],
                    snapshot_id=catalog.snapshot["id"], name="both-sources")
    assert caught.value.exc_type == "InvalidRequest" and "exactly one" in caught.value.value, caught.value
    # Nothing was minted, and nothing announced (beyond the two placeholders minted above).
    wait_for_events(events, lambda ev: len(ev.of("image.placeholder.create")) >= len(minted), 20,
                    "image.placeholder.create of the minted placeholders")
    names = {json.loads(line)["name"] for line in subprocess.run(
        [catalog.berth_bin, "images", "list", "--catalog", f"local:{catalog.root}"],
        capture_output=True, text=True, check=True).stdout.splitlines() if line.strip()}
    assert not {"no-such-volume", "both-sources"} & names
    assert len(events.of("image.placeholder.create")) == len(minted)


def test_every_boot_event_names_its_image(events, booted, images):
    """instance.create.start and .end of every instance carry the image it booted from, the placeholder's
    id for a volume-backed one: never null, never the volume's or the snapshot's."""
    wait_for_events(events, lambda ev: {e["instance_uuid"] for _, e in ev.of("instance.create.end")} >= set(booted),
                    30, "instance.create.end of every booted instance")
    for event_type in ("instance.create.start", "instance.create.end"):
        seen = {}
        for publisher, event in events.of(event_type):
            if event["instance_uuid"] not in booted:
                continue
            host, image_id, _ = booted[event["instance_uuid"]]
            assert event["image_id"] == image_id and publisher == f"compute.{host}", (event_type, event)
            seen[event["instance_uuid"]] = event
        assert set(seen) == set(booted), event_type
    assert not events.of("instance.create.error")
