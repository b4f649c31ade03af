"""The pool as operators see it (issue 20): service reports, `berth hosts`, `berth dead-letters`.

- Three workers report every 0.5 s: `berth hosts --wait 3` sees them up with their capacity; a SIGKILLed one
  shows down within --service-down-time; a SIGTERMed one with a request in hand shows draining, then is gone.
- Dead letters: a poison request (it crashes its worker; --max-attempts 1) and one over --max-message-bytes
  are listed with their reasons; the oversized one cannot be replayed (only an excerpt was kept); the poison
  one, replayed once the worker is "fixed" (--debug-crash-fixed), is answered; purge empties the queue.

Workers use test:///default libvirt and small intervals, so the module runs in well under a minute.
"""

from __future__ import annotations

import json
import signal
import time
import uuid

import amqp
import pytest

from conftest import AMQP_URL, DEBUG_NAMESPACE, amqp_connect, request_context, unique

REPORT_INTERVAL = 0.5
SERVICE_DOWN_TIME = 3.0


def bus_args(names) -> list[str]:
    return ["--transport-url", AMQP_URL, "--control-exchange", names.exchange, "--topic", names.topic]


def hosts(berth_cli, names, *extra: str, timeout: float = 60):
    result = berth_cli.run("hosts", *bus_args(names), "--service-down-time", str(SERVICE_DOWN_TIME),
                           "--format", "json", *extra, timeout=timeout)
    assert result.returncode == 0, f"berth hosts exited {result.returncode}: {result.stderr}"
    return {entry["host"]: entry for entry in json.loads(result.stdout)["hosts"]}


def wait_for(predicate, what: str, timeout: float):
    """Polls until predicate() returns something truthy; returns it and the seconds it took."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        value = predicate()
        if value:
            return value, time.monotonic() - start
        time.sleep(0.2)
    pytest.fail(f"{what} not seen within {timeout}s")


@pytest.fixture(scope="module")
def state_dirs(tmp_path_factory):
    return lambda: str(tmp_path_factory.mktemp("fleet-state"))


def test_hosts_shows_up_down_draining_and_gone(worker_factory, berth_cli, names, rpc_transport, state_dirs):
    workers = [
        worker_factory(unique("fleet"), ["--report-interval", str(REPORT_INTERVAL), "--state-dir", state_dirs(),
                                         "--metrics-interval", "0"]).start(wait=False)
        for _ in range(3)
    ]
    for w in workers:
        w.wait_ready()
    result = berth_cli.run("hosts", *bus_args(names), "--wait", "3", "--timeout", "30", "--format", "json")
    assert result.returncode == 0, f"berth hosts --wait 3: {result.returncode} {result.stderr}"
    listed = {entry["host"]: entry for entry in json.loads(result.stdout)["hosts"]}
    assert set(listed) == {w.host for w in workers}
    for entry in listed.values():
        assert entry["status"] == "up"
        assert entry["capacity"]["vcpus"] > 0 and entry["capacity"]["memory_mb"] > 0, entry
        assert entry["free"] is not None and entry["instances"] == 0 and entry["concurrency"] == 8
        assert entry["broker"] and entry["pid"] > 0

    # A table for people, with the same hosts.
    table = berth_cli.run("hosts", *bus_args(names))
    assert table.returncode == 0 and all(w.host in table.stdout for w in workers), table.stdout
    # --wait for more workers than there are: exit 2 after the timeout.
    short = berth_cli.run("hosts", *bus_args(names), "--wait", "4", "--timeout", "1")
    assert short.returncode == 2 and "only 3 of 4" in short.stderr, (short.returncode, short.stderr)

    killed, drained, kept = workers
    killed.kill(signal.SIGKILL)
    _, took = wait_for(lambda: hosts(berth_cli, names).get(killed.host, {}).get("status") == "down",
                       "the SIGKILLed worker down", timeout=SERVICE_DOWN_TIME + 10)
    print(f"\n[fleet figures] SIGKILLed worker shown down after {took:.1f}s (service_down_time {SERVICE_DOWN_TIME}s)")
    assert took <= SERVICE_DOWN_TIME + 2 * REPORT_INTERVAL + 1.5

    # A request in hand keeps the SIGTERMed worker draining for a few seconds.
    berth_cli.run("call", "sleep", "--args", json.dumps({"seconds": 4}), "--server", drained.host, "--cast",
                  "--namespace", DEBUG_NAMESPACE, *bus_args(names))
    wait_for(lambda: hosts(berth_cli, names).get(drained.host, {}).get("in_flight") == 1, "the sleep in hand", 10)
    drained.proc.send_signal(signal.SIGTERM)
    seen, _ = wait_for(lambda: hosts(berth_cli, names).get(drained.host, {}).get("status") == "draining",
                       "the SIGTERMed worker draining", timeout=5)
    _, gone_after = wait_for(lambda: drained.host not in hosts(berth_cli, names), "the drained worker gone", 15)
    assert drained.proc.wait(timeout=10) == 0
    print(f"[fleet figures] drained worker gone from berth hosts {gone_after:.1f}s after it showed draining")

    final = hosts(berth_cli, names)
    assert final[kept.host]["status"] == "up" and final[killed.host]["status"] == "down"
    assert drained.host not in final
    kept.stop()


def publish(channel, names, routing_key: str, body: bytes):
    """As oslo publishes a request (the worker takes the reply address from the body)."""
    channel.basic_publish(
        amqp.Message(body, content_type="application/json", content_encoding="utf-8", delivery_mode=2,
                     priority=0), exchange=names.exchange, routing_key=routing_key)


def crash_request(reply_queue: str, msg_id: str, context: dict) -> bytes:
    message = {"method": "crash", "args": {}, "namespace": DEBUG_NAMESPACE, "version": "1.0",
               "_msg_id": msg_id, "_reply_q": reply_queue, "_timeout": None, "_unique_id": uuid.uuid4().hex}
    message.update({f"_context_{k}": v for k, v in context.items()})
    return json.dumps({"oslo.version": "2.0", "oslo.message": json.dumps(message)}).encode()


def next_reply(channel, queue: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = channel.basic_get(queue, no_ack=True)
        if message is not None:
            return json.loads(json.loads(message.body)["oslo.message"])
        time.sleep(0.1)
    pytest.fail(f"no reply on {queue} within {timeout}s")


def test_dead_letters_list_replay_purge(worker_factory, berth_cli, names, state_dirs):
    queue = unique("berth.dead-letter.fleet")
    names.extra_queues.append(queue)
    state = state_dirs()
    args = ["--max-attempts", "1", "--max-message-bytes", "4096", "--dead-letter-queue", queue, "--state-dir", state,
            "--metrics-interval", "0"]
    host = unique("fleet-dl")
    poisoned = worker_factory(host, args).start()
    dl = ["--dead-letter-queue", queue, "--transport-url", AMQP_URL]  # the dead-letter queue is per vhost, not per topic

    conn = amqp_connect()
    channel = conn.channel()
    reply_queue = f"reply_{uuid.uuid4().hex}"
    channel.queue_declare(reply_queue, exclusive=True, auto_delete=True)
    try:
        msg_id = uuid.uuid4().hex
        publish(channel, names, f"{names.topic}.{host}", crash_request(reply_queue, msg_id, request_context()))
        poisoned.proc.wait(timeout=30)  # the crash killed it
        # Over --max-message-bytes (4096): the worker keeps only an excerpt, so nothing can be replayed from it.
        oversized = {"oslo.version": "2.0", "oslo.message": "x" * 8192}
        publish(channel, names, f"{names.topic}.{host}", json.dumps(oversized).encode())

        # The "fixed" worker: the redelivered crash is over --max-attempts and is dead-lettered (its caller told).
        fixed = worker_factory(host, args + ["--debug-crash-fixed"]).start()
        refusal = next_reply(channel, reply_queue)
        assert json.loads(refusal["failure"])["class"] == "RetryLimitExceeded", refusal

        def listed():
            result = berth_cli.run("dead-letters", "list", "--format", "json", *dl)
            assert result.returncode == 0, result.stderr
            letters = json.loads(result.stdout)
            return letters if len(letters) == 2 else None

        letters, _ = wait_for(listed, "two dead letters", timeout=15)
        by_method = {letter["method"]: letter for letter in letters}
        poison, big = by_method["crash"], by_method[None]
        assert "crash was started 1 times" in poison["reason"] and poison["replayable"], poison
        assert "message body is" in big["reason"] and big["original_bytes"] > 8192 and not big["replayable"], big
        assert poison["age_s"] is not None and poison["age_s"] < 60

        shown = berth_cli.run("dead-letters", "show", poison["id"], *dl)
        assert shown.returncode == 0 and json.loads(shown.stdout)["message"]["_msg_id"] == msg_id, shown.stdout

        dry = berth_cli.run("dead-letters", "replay", "--all", "--dry-run", *dl)
        assert dry.returncode == 1 and f"would replay {poison['id']}" in dry.stdout, (dry.stdout, dry.stderr)
        assert f"refused {big['id']}" in dry.stderr and "must send it again" in dry.stderr, dry.stderr
        refused = berth_cli.run("dead-letters", "replay", big["id"], *dl)
        assert refused.returncode == 1 and "only the first" in refused.stderr, refused.stderr

        filtered = berth_cli.run("dead-letters", "list", "--format", "json", "--method", "crash", "--reason",
                                 "MAX-ATTEMPTS", *dl)
        assert [letter["id"] for letter in json.loads(filtered.stdout)] == [poison["id"]], filtered.stdout
        none_older = berth_cli.run("dead-letters", "list", "--format", "json", "--older-than", "3600", *dl)
        assert json.loads(none_older.stdout) == [], none_older.stdout

        replayed = berth_cli.run("dead-letters", "replay", poison["id"], *dl)
        assert replayed.returncode == 0 and f"replayed {poison['id']}" in replayed.stdout, replayed.stderr
        answer = next_reply(channel, reply_queue)
        assert answer.get("failure") is None and answer["result"] == {"fixed": True}, answer

        left = json.loads(berth_cli.run("dead-letters", "list", "--format", "json", *dl).stdout)
        assert [letter["id"] for letter in left] == [big["id"]]
        purged = berth_cli.run("dead-letters", "purge", "--all", *dl)
        assert purged.returncode == 0 and "deleted 1 dead letters" in purged.stdout, purged.stdout
        assert json.loads(berth_cli.run("dead-letters", "list", "--format", "json", *dl).stdout) == []
        assert fixed.stop() == 0
    finally:
        conn.close()
