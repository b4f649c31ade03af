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
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import oslo_messaging
import pytest

from conftest import DEBUG_NAMESPACE, request_context, rpc_client, unavailable, unique

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def workers(worker_factory, catalog, metering_topic, recorder, tmp_path_factory):
    root = catalog.root
    made = []
    for index in range(2):
        state = tmp_path_factory.mktemp(f"metrics-state-{index}")
        address = f"127.0.0.1:{free_port()}"
        w = worker_factory(extra_args=[
            "--catalog", f"local:{root}", "--state-dir", str(state), "--concurrency", "8",
            "--metrics-interval", "1", "--metering-topic", metering_topic, "--metrics-listen", address,
        ])
        w.metrics_address = address
        made.append(w)
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
            [berth_cli.binary, "monitor", "--by", by, "--format", "json", "--message-ids", "--duration",
             str(MONITOR_SECONDS),
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
                # Cumulative counters also get a rate (per second over the window); gauges do not.
                assert ("rate" in have) == (want["type"] == "cumulative"), (by, name, metric)
                if want["type"] == "cumulative":
                    assert have["rate"] is not None and have["rate"] >= 0, (by, name, metric, have)

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
            # Booted with conftest's request_context(): its project_id and user ride on every sample.
            assert s == {**s, "project_id": "p-interop", "user_id": "u-interop"}, s
            assert set(s) == {"name", "unit", "type", "value", "image_id", "instance_uuid", "host", "flavor",
                              "timestamp", "project_id", "user_id"}, s
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


# --- Prometheus ------------------------------------------------------------------------------------
#
# A real Prometheus (Debian's `prometheus`) scrapes both workers' /metrics every second; what its HTTP API
# answers is compared with what the stock oslo listener received on the metering topic.

SCRAPE_INTERVAL = 1


class Prometheus:
    def __init__(self, url: str, proc: subprocess.Popen, log: pathlib.Path):
        self.url, self.proc, self.log = url, proc, log

    def query(self, promql: str) -> list[dict]:
        """An instant query; the result vector ([{"metric": {...}, "value": [t, "v"]}])."""
        with urllib.request.urlopen(f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql}),
                                    timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        assert body["data"]["resultType"] == "vector", body
        return body["data"]["result"]

    def by(self, promql: str, label: str) -> dict[str, float]:
        return {r["metric"][label]: float(r["value"][1]) for r in self.query(promql)}


@pytest.fixture(scope="module")
def prometheus(workers, tmp_path_factory):
    binary = shutil.which("prometheus") or "/usr/bin/prometheus"
    if not os.access(binary, os.X_OK):
        unavailable("Debian's prometheus is not installed (scripts/install-deps.sh installs it)")
    root = tmp_path_factory.mktemp("prometheus")
    targets = ", ".join(f'"{w.metrics_address}"' for w in workers)
    (root / "prometheus.yml").write_text(
        f"global:\n  scrape_interval: {SCRAPE_INTERVAL}s\n  evaluation_interval: {SCRAPE_INTERVAL}s\n"
        f"scrape_configs:\n  - job_name: berth\n    static_configs:\n      - targets: [{targets}]\n")
    address = f"127.0.0.1:{free_port()}"
    log = root / "prometheus.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [binary, f"--config.file={root / 'prometheus.yml'}", f"--storage.tsdb.path={root / 'data'}",
             f"--web.listen-address={address}"], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    server = Prometheus(f"http://{address}", proc, log)

    def both_up() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"prometheus exited {proc.returncode}: {log.read_text()[-2000:]}", pytrace=False)
        try:
            return server.by("up", "instance") == {w.metrics_address: 1.0 for w in workers}
        except (urllib.error.URLError, ConnectionError):
            return False

    wait_for(both_up, 30, "Prometheus to scrape both workers")
    yield server
    proc.terminate()
    proc.wait(timeout=30)


def latest_samples(recorder: SampleRecorder, name: str) -> dict[str, list[float]]:
    """instance uuid -> every value of `name` the listener received for it, in arrival order."""
    values = collections.defaultdict(list)
    for batch in sorted(recorder.snapshot().values(), key=lambda b: b["timestamp"]):
        for s in batch["payload"]["samples"]:
            if s["name"] == name:
                values[s["instance_uuid"]].append(s["value"])
    return values


def test_prometheus_sums_by_image_equal_the_listeners(prometheus, recorder, workers, booted, images):
    """`sum by (image_id)` in a real Prometheus, after two scrapes of every instance, equals what the stock
    listener received: each instance's series holds one of the readings the listener got (the same poll
    sets both), so per image the sums agree within one sample."""
    _, image_ids = images
    wait_for(lambda: sampled(recorder, booted), 60, "samples of every booted instance at the oslo listener")
    wait_for(lambda: prometheus.by("count by (image_id) (count_over_time(berth_instance_cpu_seconds_total[1m]) >= 2)",
                                   "image_id").keys() >= set(image_ids), 30, "two scrapes of every instance")

    per_instance = {r["metric"]["instance_uuid"]: (r["metric"], float(r["value"][1]))
                    for r in prometheus.query("berth_instance_cpu_seconds_total")}
    memory = prometheus.by("sum by (image_id) (berth_instance_memory_bytes)", "image_id")
    cpu = prometheus.by("sum by (image_id) (berth_instance_cpu_seconds_total)", "image_id")
    # The series are set just before the batch is published: give the listener the poll Prometheus saw.
    time.sleep(2)
    heard = latest_samples(recorder, "cpu.time")

    # Every instance series carries its instance's image, flavor and host, and nothing else is there; its
    # value is one of the last readings the listener received (a poll or two later by now).
    assert set(per_instance) == set(booted)
    matched = {}
    for instance_uuid, (labels, value) in per_instance.items():
        host, image_id, flavor = booted[instance_uuid]
        assert {k: labels[k] for k in ("image_id", "flavor", "host")} == {
            "image_id": image_id, "flavor": flavor, "host": host}, labels
        recent = heard[instance_uuid][-5:]
        found = [v for v in recent if math.isclose(value, v / 1e9, rel_tol=1e-12)]
        assert found, (instance_uuid, value, recent)
        matched[instance_uuid] = found[0]

    assert set(cpu) == set(memory) == set(image_ids)
    for image_id in image_ids:
        mine = [u for u, (_, image, _) in booted.items() if image == image_id]
        assert math.isclose(cpu[image_id], sum(per_instance[u][1] for u in mine), rel_tol=1e-9)
        # The same sum from the listener's samples (integers in ns, added exactly by Python).
        assert math.isclose(cpu[image_id], sum(matched[u] for u in mine) / 1e9, rel_tol=1e-12), image_id
        # The test driver's memory is the flavor's, constant: exact.
        assert memory[image_id] == len(mine) * 128 * 1024 * 1024

    # The worker series are there too: each boot a request, each boot a duration.
    boots = prometheus.by('sum by (outcome) (berth_requests_total{method="boot_instance"})', "outcome")
    assert boots == {"success": float(len(booted))}, boots
    [durations] = prometheus.query("sum(berth_boot_duration_seconds_count)")
    assert float(durations["value"][1]) == len(booted)


def test_the_grafana_dashboards_queries_run(prometheus, booted, images):
    """Every query of deploy/grafana/berth.json runs against the real Prometheus without error; the
    per-image panels show every image, with all its instances."""
    _, image_ids = images
    dashboard = json.loads((pathlib.Path(__file__).resolve().parents[2] / "deploy/grafana/berth.json").read_text())
    exprs = [t["expr"].replace("$job", "berth") for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 10
    wait_for(lambda: prometheus.by("count by (image_id) (count_over_time(berth_instance_cpu_seconds_total[1m]) >= 2)",
                                   "image_id").keys() >= set(image_ids), 30, "two scrapes of every instance")
    results = {expr: prometheus.query(expr) for expr in exprs}
    instances = {r["metric"]["image_id"]: float(r["value"][1])
                 for r in results["count by (image_id) (berth_instance_memory_bytes)"]}
    assert instances == {i: float(sum(1 for _, image, _ in booted.values() if image == i)) for i in image_ids}
    assert results["sum by (image_id) (rate(berth_instance_cpu_seconds_total[5m]))"], "CPU panel is empty"
    assert results['up{job=~"berth"}'], "health panel is empty"


def test_deleted_instance_series_are_gone_after_the_next_scrape(prometheus, rpc_transport, workers, images):
    _, image_ids = images
    w = workers[0]
    instance_uuid = str(uuid.uuid4())
    client = rpc_client(rpc_transport, w.topic).prepare(server=w.host, timeout=120)
    result = client.call(request_context(), "boot_instance", instance={
        "uuid": instance_uuid, "name": "metrics-gone", "image_id": image_ids[1],
        "flavor": {"name": "small", "vcpus": 1, "memory_mb": 128, "root_gb": 1}, "metadata": {}})
    assert result["status"] == "ACTIVE", result
    selector = f'{{instance_uuid="{instance_uuid}"}}'
    wait_for(lambda: prometheus.query(f"berth_instance_memory_bytes{selector}"), 30, "the new instance's series")
    [series] = prometheus.query(f"berth_instance_memory_bytes{selector}")
    assert series["metric"]["image_id"] == image_ids[1] and series["metric"]["host"] == w.host, series

    client.call(request_context(), "delete_instance", instance_uuid=instance_uuid)
    # The next poll (1 s) drops the series and the next scrape (1 s) sees it gone; Prometheus marks it stale.
    wait_for(lambda: not prometheus.query(f"{{__name__=~\"berth_instance_.*\", instance_uuid=\"{instance_uuid}\"}}"),
             3 * SCRAPE_INTERVAL + 5, "the deleted instance's series to disappear")


def test_healthz_answers_503_while_the_worker_drains(worker_factory, metering_topic):
    address = f"127.0.0.1:{free_port()}"
    w = worker_factory(extra_args=["--metrics-listen", address, "--grace-period", "10", "--metrics-interval", "0"])
    w.start()

    def get(path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://{address}{path}", timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    assert get("/healthz") == (200, "consuming\n")
    result = subprocess.run(
        [w.binary, "call", "sleep", "--args", '{"seconds": 3}', "--cast", "--namespace", DEBUG_NAMESPACE,
         "--server", w.host, "--transport-url", w.url, "--control-exchange", w.exchange, "--topic", w.topic],
        capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    wait_for(lambda: "\nberth_requests_in_flight 1.0\n" in get("/metrics")[1], 10, "the sleep to be in hand")
    w.proc.send_signal(signal.SIGTERM)
    assert w.wait_for_log("draining", timeout=10), w.describe()
    # Still draining (the sleep has seconds to go): the endpoint answers, with 503.
    assert get("/healthz") == (503, "draining\n")
    assert w.proc.wait(timeout=30) == 0, w.describe()


def test_monitor_duration_bounds_the_wait_for_a_missing_broker(berth_bin):
    """`monitor --duration 2` against no broker exits 3 after about 2 s, not after 30 s of retrying."""
    started = time.monotonic()
    proc = subprocess.run(
        [berth_bin, "monitor", "--duration", "2", "--format", "json",
         "--transport-url", f"amqp://guest:guest@127.0.0.1:{free_port()}/"],
        capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - started
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.startswith("berth: error: BrokerUnreachable: ") and "within 2 s" in proc.stderr, proc.stderr
    assert elapsed < 6, elapsed


@pytest.mark.parametrize("command", ["monitor", "notify"])
def test_commands_without_rpc_show_no_rpc_topic(berth_bin, command):
    shown = subprocess.run([berth_bin, command, "--help"], capture_output=True, text=True, timeout=30).stdout
    assert "--topic <topic>" not in shown and "--control-exchange" in shown, shown
