"""Horizontal pools and what they promise when workers misbehave (DESIGN.md §2, §9).

Several `berth worker` processes with different host names share one topic, each on its own in-process
libvirt test driver (`test:///default`), and stock oslo.messaging clients load them:

- a pool of three takes 1,000 boots: every boot is answered ACTIVE once, each instance exists on exactly
  one worker, and every worker took a share;
- while a pool works through boots, a random worker is SIGKILLed every few seconds and restarted, with
  durable classic queues and with quorum queues: no request is lost, and requests worked on twice (a kill
  between the reply and the ack) are counted and reported;
- SIGTERM under load: in-flight work finishes, the rest goes back to the queue, exit status 0, nothing lost;
- a request that crashes its worker (or outlives --handler-timeout) is retried a bounded number of times,
  then dead-lettered with the reason, and its caller gets RetryLimitExceeded.

The figures each test measures are printed (pytest -s shows them) and appended as JSON lines to
$BERTH_POOL_REPORT when that is set; docs/operations.md quotes them.
"""

from __future__ import annotations

import collections
import concurrent.futures
import json
import os
import random
import re
import signal
import subprocess
import threading
import time
import uuid

import oslo_messaging
import pytest

from conftest import (DEAD_LETTER_QUEUE, DEBUG_NAMESPACE, QUORUM_DEAD_LETTER_QUEUE, amqp_connect, request_context,
                      rpc_client, unique)
from test_topology_options import fresh_names, oslo_transport

POOL_BOOTS = int(os.environ.get("BERTH_POOL_BOOTS", "1000"))
CRASH_BOOTS = int(os.environ.get("BERTH_CRASH_BOOTS", "2000"))
DRAIN_BOOTS = 1000
CALLERS = 32
KILL_EVERY = 3.0  # seconds between SIGKILLs in the crash test

DONE_LINE = re.compile(r"method=boot_instance msg_id=(\w+).*request done")


def report(name: str, **figures):
    line = json.dumps({"test": name, **figures}, sort_keys=True)
    print(f"\n[pool figures] {line}")
    path = os.environ.get("BERTH_POOL_REPORT")
    if path:
        with open(path, "a") as out:
            out.write(line + "\n")


@pytest.fixture(scope="module")
def catalog(berth_bin, tmp_path_factory) -> tuple[str, str]:
    root = tmp_path_factory.mktemp("pool-catalog")
    disk = root.parent / "pool-root.raw"
    disk.write_bytes(b"\0" * (1 << 20))
    proc = subprocess.run(
        [berth_bin, "images", "create", "--name", "pool", "--disk-format", "raw", "--file", str(disk),
         "--catalog", f"local:{root}"],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return str(root), json.loads(proc.stdout)["id"]


def pool_args(catalog, tmp_path_factory, label: str, *extra: str) -> list[str]:
    root, _ = catalog
    state = tmp_path_factory.mktemp(f"pool-state-{label}")
    return ["--catalog", f"local:{root}", "--state-dir", str(state), "--concurrency", "8", "--metrics-interval", "0",
            *extra]


def instance(image_id: str) -> dict:
    return {
        "uuid": str(uuid.uuid4()), "name": "pool", "image_id": image_id,
        "flavor": {"name": "tiny", "vcpus": 1, "memory_mb": 128, "root_gb": 0}, "metadata": {},
    }


def run_boots(transport, topic: str, image_id: str, count: int, *, timeout: float = 240, during=None):
    """`count` boot_instance calls by topic from CALLERS threads. Returns ({uuid: result}, {uuid: error},
    seconds). `during`, if given, runs in its own thread until the boots are done (it gets a stop Event)."""
    client = rpc_client(transport, topic).prepare(timeout=timeout)
    requests = [instance(image_id) for _ in range(count)]
    results, errors = {}, {}

    def boot(inst):
        try:
            return inst["uuid"], client.call(request_context(), "boot_instance", instance=inst), None
        except Exception as exc:  # noqa: BLE001
            return inst["uuid"], None, exc

    stop = threading.Event()
    side = threading.Thread(target=during, args=(stop,), daemon=True) if during else None
    started = time.monotonic()
    if side:
        side.start()
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=CALLERS) as pool:
            for key, result, error in pool.map(boot, requests):
                assert key not in results and key not in errors, f"two answers for {key}"
                if error is None:
                    results[key] = result
                else:
                    errors[key] = error
    finally:
        stop.set()
        if side:
            side.join(timeout=120)
    return results, errors, time.monotonic() - started


def done_counts(workers) -> collections.Counter:
    """How many times each boot request (msg_id) was worked on to the end, over every log of every
    incarnation of the workers."""
    counts = collections.Counter()
    for w in workers:
        for path in w.log_dir.glob(f"worker-{w.host}-*.log"):
            for line in path.read_text(errors="replace").splitlines():
                match = DONE_LINE.search(line)
                if match:
                    counts[match.group(1)] += 1
    return counts


def start_all(workers):
    for w in workers:
        w.start(wait=False)
    for w in workers:
        w.wait_ready()


def test_pool_of_three_shares_1000_boots(worker_factory, rpc_transport, names, catalog, tmp_path_factory):
    _, image_id = catalog
    workers = [worker_factory(unique("pool"), pool_args(catalog, tmp_path_factory, str(i))) for i in range(3)]
    start_all(workers)

    results, errors, seconds = run_boots(rpc_transport, names.topic, image_id, POOL_BOOTS)
    assert not errors, f"{len(errors)} of {POOL_BOOTS} boots failed, e.g. {next(iter(errors.values()))!r}"
    assert all(r["status"] == "ACTIVE" for r in results.values())
    shares = collections.Counter(r["host"] for r in results.values())
    assert set(shares) == {w.host for w in workers}, f"not every worker took a share: {dict(shares)}"

    # Each instance exists on exactly one worker: ask every worker about every instance.
    def where(key):
        found = []
        for w in workers:
            try:
                rpc_client(rpc_transport, names.topic).prepare(server=w.host, timeout=60).call(
                    request_context(), "get_instance", instance_uuid=key)
                found.append(w.host)
            except oslo_messaging.RemoteError as exc:
                assert exc.exc_type == "InstanceNotFound", exc
        return key, found

    with concurrent.futures.ThreadPoolExecutor(max_workers=CALLERS) as pool:
        placement = dict(pool.map(where, results))
    misplaced = {k: v for k, v in placement.items() if v != [results[k]["host"]]}
    assert not misplaced, f"instances not on exactly their one worker: {list(misplaced.items())[:5]}"
    duplicates = sum(1 for n in done_counts(workers).values() if n > 1)
    assert duplicates == 0, f"{duplicates} boots were worked on twice without any crash"
    report("pool", workers=3, boots=POOL_BOOTS, answered_active=len(results), shares=dict(sorted(shares.items())),
           duplicates=duplicates, seconds=round(seconds, 1), boots_per_second=round(POOL_BOOTS / seconds, 1))
    for w in workers:
        assert w.stop() == 0, w.describe()


@pytest.mark.parametrize("variant", ["defaults", "amqp_durable_queues", "rabbit_quorum_queue"])
def test_sigkill_loop_loses_no_boot(variant, worker_factory, broker_url, names, catalog, tmp_path_factory):
    """Every few seconds a random worker of three is SIGKILLed and restarted while boots run. With oslo's
    transient defaults too: the queue outlives the worker, only a broker restart empties it."""
    _, image_id = catalog
    flags = [] if variant == "defaults" else ["--" + variant.replace("_", "-")]
    overrides = {} if variant == "defaults" else {variant: True}
    exchange, topic, _ = fresh_names(names, f"kill-{variant}")
    with oslo_transport(broker_url, exchange, overrides) as transport:
        workers = []
        for index in range(3):
            host = unique("kill")
            names.extra_queues.append(f"{topic}.{host}")
            workers.append(worker_factory(
                host, pool_args(catalog, tmp_path_factory, f"kill{index}", *flags),
                exchange=exchange, topic=topic, transport=transport))
        start_all(workers)
        kills = []

        def killer(stop: threading.Event):
            rng = random.Random(7)
            while not stop.wait(KILL_EVERY):
                victim = rng.choice(workers)
                victim.kill(signal.SIGKILL)
                kills.append(victim.host)
                victim.start(wait=False)

        results, errors, seconds = run_boots(transport, topic, image_id, CRASH_BOOTS, during=killer)
        for w in workers:
            if w.proc.poll() is not None:
                w.start(wait=False)
        lost = len(errors)
        counts = done_counts(workers)
        answered = {r.get("uuid") for r in results.values()}
        duplicated = sum(1 for n in counts.values() if n > 1)
        report(f"sigkill-{variant}", workers=3, boots=CRASH_BOOTS, kills=len(kills), answered_active=len(results),
               lost=lost, worked_on_twice=duplicated, seconds=round(seconds, 1))
        assert kills, "the load ended before the first kill; raise BERTH_CRASH_BOOTS"
        assert not errors, (f"{lost} of {CRASH_BOOTS} boots were lost or failed with {len(kills)} kills, e.g. "
                            f"{next(iter(errors.values()))!r}")
        assert len(answered) == CRASH_BOOTS and all(r["status"] == "ACTIVE" for r in results.values())
        # A request is worked on twice only when its worker died after the reply and before the ack: at
        # most one batch of in-flight requests (--concurrency 8) per kill.
        assert duplicated <= 8 * len(kills), f"{duplicated} requests worked on twice with {len(kills)} kills"
        for w in workers:
            w.wait_ready()
            assert w.stop() == 0, w.describe()


def test_sigterm_under_load_hands_back_and_loses_nothing(worker_factory, rpc_transport, names, catalog,
                                                        tmp_path_factory):
    _, image_id = catalog
    workers = [worker_factory(unique("drain"), pool_args(catalog, tmp_path_factory, f"drain{i}")) for i in range(2)]
    start_all(workers)
    codes = []

    def terminate(stop: threading.Event):
        # Early in the load, while both workers have a full hand of requests.
        if not stop.wait(0.5):
            codes.append(workers[0].stop())

    results, errors, seconds = run_boots(rpc_transport, names.topic, image_id, DRAIN_BOOTS, during=terminate)
    report("sigterm-drain", workers=2, boots=DRAIN_BOOTS, answered_active=len(results), lost=len(errors),
           exit_codes=codes, seconds=round(seconds, 1))
    assert codes == [0], f"the drained worker exited {codes}.\n{workers[0].describe()}"
    assert not errors, f"{len(errors)} boots lost, e.g. {next(iter(errors.values()))!r}"
    assert "RPC server stopped" in workers[0].log_text()
    shares = collections.Counter(r["host"] for r in results.values())
    assert shares[workers[0].host] > 0, "the drained worker took no request before SIGTERM"
    assert shares[workers[1].host] > shares[workers[0].host], f"the rest did not go to the other worker: {shares}"
    assert workers[1].stop() == 0, workers[1].describe()


# --- poison requests ---------------------------------------------------------------------------------


class Supervisor:
    """Restarts any of its workers that died, as systemd's Restart=always would."""

    def __init__(self, workers):
        self.workers, self.restarts = workers, 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop.wait(0.2):
            for w in self.workers:
                if w.proc.poll() is not None:
                    self.restarts += 1
                    w.start(wait=False)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=5)


def crash_count(workers) -> int:
    return sum(path.read_text(errors="replace").count("debug crash requested")
               for w in workers for path in w.log_dir.glob(f"worker-{w.host}-*.log"))


@pytest.mark.parametrize("variant", ["amqp_durable_queues", "rabbit_quorum_queue"])
def test_request_that_crashes_workers_is_dead_lettered(variant, worker_factory, broker_url, names,
                                                       tmp_path_factory, catalog):
    max_attempts = 2
    flag = "--" + variant.replace("_", "-")
    exchange, topic, _ = fresh_names(names, f"poison-{variant}")
    with oslo_transport(broker_url, exchange, {variant: True}) as transport:
        workers = []
        for index in range(2):
            host = unique("poison")
            names.extra_queues.append(f"{topic}.{host}")
            workers.append(worker_factory(
                host, pool_args(catalog, tmp_path_factory, f"poison{index}", flag, "--max-attempts", str(max_attempts)),
                exchange=exchange, topic=topic, transport=transport))
        start_all(workers)
        context = request_context()
        client = rpc_client(transport, topic, namespace=DEBUG_NAMESPACE).prepare(timeout=120)
        with Supervisor(workers):
            with pytest.raises(oslo_messaging.RemoteError) as caught:
                client.call(context, "crash")
        crashes = crash_count(workers)
        assert caught.value.exc_type == "RetryLimitExceeded", caught.value
        assert "--max-attempts" in str(caught.value.value), caught.value
        # Quorum queues count deliveries for the whole pool; classic queues only per host.
        limit = max_attempts if variant == "rabbit_quorum_queue" else max_attempts * len(workers)
        assert 1 <= crashes <= limit, f"{crashes} crashes for one request (limit {limit})"
        queue = QUORUM_DEAD_LETTER_QUEUE if variant == "rabbit_quorum_queue" else DEAD_LETTER_QUEUE
        letters = dead_letters_for_request(context["request_id"], queue)
        assert letters, f"the poison request is not in {queue}"
        assert "without finishing" in str(letters[0]["headers"].get("x-berth-reason")), letters[0]["headers"]
        report(f"poison-{variant}", max_attempts=max_attempts, workers=len(workers), crashes=crashes,
               caller_got="RetryLimitExceeded", dead_lettered=len(letters))
        for w in workers:
            w.wait_ready()
            assert w.stop() == 0, w.describe()


def test_handler_timeout_is_retried_then_dead_lettered(worker_factory, rpc_transport, names, catalog,
                                                       tmp_path_factory):
    w = worker_factory(unique("slow"), pool_args(catalog, tmp_path_factory, "slow", "--handler-timeout", "1",
                                                 "--max-attempts", "2"))
    w.start()
    context = request_context()
    client = rpc_client(rpc_transport, names.topic, namespace=DEBUG_NAMESPACE).prepare(server=w.host, timeout=60)
    started = time.monotonic()
    with pytest.raises(oslo_messaging.RemoteError) as caught:
        client.call(context, "sleep", seconds=30)
    elapsed = time.monotonic() - started
    assert caught.value.exc_type == "RetryLimitExceeded", caught.value
    assert "timed out 2 times" in str(caught.value.value), caught.value
    assert elapsed < 25, f"the caller waited {elapsed:.1f}s; the handler timeout is 1 s and 2 attempts"
    assert w.log_text().count("handler timed out") == 2, w.describe()
    letters = dead_letters_for_request(context["request_id"])
    assert letters and "timed out" in str(letters[0]["headers"].get("x-berth-reason"))
    assert w.stop() == 0, w.describe()


def dead_letters_for_request(request_id: str, queue: str = DEAD_LETTER_QUEUE, timeout: float = 10) -> list[dict]:
    """Dead letters in `queue` whose oslo context carries `request_id` (the test's own tag on the call)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        conn = amqp_connect()
        try:
            channel = conn.channel()
            found, others = [], []
            while True:
                message = channel.basic_get(queue)
                if message is None:
                    break
                try:
                    body = json.loads(message.body)
                    inner = json.loads(body["oslo.message"]) if "oslo.message" in body else body
                except (ValueError, KeyError, TypeError):
                    inner = {}
                if inner.get("_context_request_id") == request_id:
                    found.append({"headers": dict(message.headers or {}), "message": inner})
                    channel.basic_ack(message.delivery_tag)
                else:
                    others.append(message.delivery_tag)
            for tag in others:
                channel.basic_reject(tag, requeue=True)
        finally:
            conn.close()
        if found:
            return found
        time.sleep(0.5)
    return []


# --- host mismatch in a pool ---------------------------------------------------------------------------

SMALL_NODE = """<node>
  <cpu><mhz>2000</mhz><model>i686</model><active>2</active><total>2</total>
       <nodes>1</nodes><sockets>1</sockets><cores>2</cores><threads>1</threads></cpu>
  <memory>4194304</memory>
</node>
"""


def test_a_boot_this_host_cannot_run_goes_to_one_that_can(worker_factory, rpc_transport, names, catalog,
                                                           tmp_path_factory):
    """Two small workers (a 2-CPU libvirt test host) and one big one (test:///default, 16 CPUs) share the
    topic. 8-vCPU boots sent to the pool all end on the big one; a 64-vCPU boot, which no worker can run,
    gets HostIncompatible naming every host, after a bounded number of hand-offs."""
    _, image_id = catalog
    node_file = tmp_path_factory.mktemp("small-node") / "node.xml"
    node_file.write_text(SMALL_NODE)
    handoffs = ["--max-handoffs", "10"]
    small = [worker_factory(unique("small"), pool_args(catalog, tmp_path_factory, f"small{i}", "--libvirt-uri",
                                                      f"test://{node_file}", *handoffs)) for i in range(2)]
    big = worker_factory(unique("big"), pool_args(catalog, tmp_path_factory, "big", *handoffs))
    start_all(small + [big])
    client = rpc_client(rpc_transport, names.topic).prepare(timeout=60)

    def boot(vcpus):
        inst = instance(image_id)
        inst["flavor"] = {"name": f"v{vcpus}", "vcpus": vcpus, "memory_mb": 128, "root_gb": 0}
        return client.call(request_context(), "boot_instance", instance=inst)

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(boot, [8] * 20))
    hosts = collections.Counter(r["host"] for r in results)
    assert hosts == {big.host: 20}, f"8-vCPU boots ended on {dict(hosts)}; only {big.host} has 16 CPUs"
    handed = sum(w.log_text().count("handing it to the pool") for w in small)
    assert handed >= 1, "no small worker handed a boot on (the test proves nothing)"

    started = time.monotonic()
    with pytest.raises(oslo_messaging.RemoteError) as caught:
        boot(64)
    elapsed = time.monotonic() - started
    assert caught.value.exc_type == "HostIncompatible", caught.value
    text = str(caught.value.value)
    for w in small + [big]:
        assert w.host in text, f"{w.host} not named in: {text}"
    report("host-mismatch", small_workers=2, big_workers=1, boots=20, all_on_big=True, handed_on=handed,
           impossible_boot_answered_in_s=round(elapsed, 1))
    for w in small + [big]:
        assert w.stop() == 0, w.describe()
