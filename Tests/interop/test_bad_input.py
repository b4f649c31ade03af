"""Hand-made bad messages published straight to the worker's queue with py-amqp
(DESIGN.md §2: a message that cannot be decoded or fails validation gets a
failure reply if it is a call, is dead-lettered with the reason, is never
requeued forever and never crashes the worker).

Dead letters: the worker republishes such a message to exchange `berth.dlx`
(topic, durable), bound to queue `berth.dead-letter` with `#`, with the reason
in header `x-berth-reason`, then acks the original (BerthRPC's
`DeadLetterRoute`). Override with BERTH_TEST_DLX /
BERTH_TEST_DLQ if that changes.

Each case carries a random marker in its body, so the test finds its own dead
letter among others (the dead-letter queue is shared by every worker on the
broker) and removes only that one.
"""

import json
import time
import uuid
from dataclasses import dataclass, field

import amqp
import oslo_messaging
import pytest

from conftest import DEAD_LETTER_EXCHANGE, DEAD_LETTER_QUEUE, amqp_connect, request_context, rpc_client

ENVELOPE_LIMIT_DEPTH = 50
BIG_BODY_BYTES = 8 * 1024 * 1024
MESSAGE_LIMIT = 1024 * 1024  # the worker's default --max-message-bytes


def envelope(inner: dict) -> bytes:
    return json.dumps({"oslo.version": "2.0", "oslo.message": json.dumps(inner)}).encode()


def call_message(method: str, msg_id: str, reply_q: str, args=None, version="1.0", **extra) -> dict:
    msg = {"method": method, "args": args or {}, "version": version,
           "_msg_id": msg_id, "_reply_q": reply_q, "_timeout": None, "_unique_id": uuid.uuid4().hex}
    msg.update({f"_context_{k}": v for k, v in request_context().items()})
    msg.update(extra)
    return msg


@dataclass
class Case:
    name: str
    content_type: str | None
    build: object  # (marker, msg_id, reply_q) -> bytes
    reply: str  # "failure": a failure reply must come; "none": no success reply may come
    dead_letter: bool
    failure_class: str | None = None
    reason_words: tuple = field(default_factory=tuple)


def _wrong_content_type(marker, msg_id, reply_q):
    return envelope(call_message("ping", msg_id, reply_q, _context_marker=marker))


def _non_json(marker, msg_id, reply_q):
    return f"this is not JSON {{ marker={marker}".encode()


def _no_oslo_message(marker, msg_id, reply_q):
    # Looks like a call envelope (version key, reply address) but has neither `oslo.message` nor
    # `method`: broken whether it is read as an envelope or as a legacy message.
    return json.dumps({"oslo.version": "2.0", "_msg_id": msg_id, "_reply_q": reply_q, "_timeout": None,
                       "_unique_id": uuid.uuid4().hex, "_context_marker": marker}).encode()


def _invalid_utf8(marker, msg_id, reply_q):
    body = json.dumps(call_message("ping", msg_id, reply_q, args={"name": "PLACEHOLDER"},
                                   _context_marker=marker)).encode()
    return body.replace(b"PLACEHOLDER", b"\xff\xfe\xc3\x28")


def _deep_json(marker, msg_id, reply_q):
    deep = {"marker": marker}
    for _ in range(ENVELOPE_LIMIT_DEPTH):
        deep = [deep]
    return envelope(call_message("ping", msg_id, reply_q, args={"deep": deep}))


def _huge(marker, msg_id, reply_q):
    # The marker leads, so it is in the excerpt the dead letter keeps; the address trails the padding, where
    # a stock oslo RPCClient puts it.
    return envelope(call_message("ping", msg_id, reply_q, args={"marker": marker, "padding": "x" * BIG_BODY_BYTES}))


def _envelope_3(marker, msg_id, reply_q):
    inner = call_message("ping", msg_id, reply_q, _context_marker=marker)
    return json.dumps({"oslo.version": "3.0", "oslo.message": json.dumps(inner)}).encode()


def _unknown_method(marker, msg_id, reply_q):
    return envelope(call_message("no_such_method", msg_id, reply_q, _context_marker=marker))


def _wrong_version(marker, msg_id, reply_q):
    return envelope(call_message("ping", msg_id, reply_q, version="2.0", _context_marker=marker))


CASES = [
    Case("wrong-content-type", "text/plain", _wrong_content_type, "failure", True, "InvalidRequest", ("content",)),
    Case("non-json", "application/json", _non_json, "none", True, reason_words=("json",)),
    Case("no-oslo-message", "application/json", _no_oslo_message, "failure", True, "InvalidRequest"),
    Case("invalid-utf8", "application/json", _invalid_utf8, "none", True, reason_words=("utf",)),
    Case("deep-json", "application/json", _deep_json, "none", True, reason_words=("deep", "depth", "nest")),
    Case("8MiB-body", "application/json", _huge, "failure", True, "InvalidRequest", ("bytes", "limit")),
    Case("envelope-3.0", "application/json", _envelope_3, "none", True, reason_words=("version",)),
    Case("unknown-method", "application/json", _unknown_method, "failure", False, "NoSuchMethod"),
    Case("wrong-version", "application/json", _wrong_version, "failure", False, "UnsupportedVersion"),
]


class RawPeer:
    """One py-amqp connection: publishes to the worker's queue, reads its own reply queue and
    the dead-letter queue."""

    def __init__(self, url, exchange, routing_key):
        self.conn = amqp_connect(url)
        self.ch = self.conn.channel()
        self.exchange, self.routing_key = exchange, routing_key
        self.reply_q = f"reply_{uuid.uuid4().hex}"
        # As an oslo client declares its reply queue (OSLO-WIRE.md §2).
        self.ch.queue_declare(self.reply_q, durable=False, auto_delete=False, exclusive=False,
                              arguments={"x-expires": 1800000})
        self.replies: dict[str, dict] = {}

    def close(self):
        try:
            self.ch.queue_delete(self.reply_q)
        finally:
            self.conn.close()

    def publish(self, body: bytes, content_type: str | None):
        props = {"delivery_mode": 2, "priority": 0, "headers": {}}
        if content_type:
            props["content_type"] = content_type
            props["content_encoding"] = "utf-8"
        self.ch.basic_publish(amqp.Message(body, **props), exchange=self.exchange, routing_key=self.routing_key)

    def drain_replies(self):
        while True:
            msg = self.ch.basic_get(self.reply_q, no_ack=True)
            if msg is None:
                return
            outer = json.loads(msg.body)
            inner = json.loads(outer["oslo.message"]) if "oslo.message" in outer else outer
            self.replies.setdefault(inner.get("_msg_id"), []).append(inner)

    def final_reply(self, msg_id):
        self.drain_replies()
        for r in self.replies.get(msg_id, []):
            if r.get("ending"):
                return r
        return None

    def take_dead_letter(self, marker: str):
        """Find and remove our dead letter; leave the others where they are."""
        ch = self.conn.channel()
        found = None
        try:
            while True:
                msg = ch.basic_get(DEAD_LETTER_QUEUE, no_ack=False)
                if msg is None:
                    break
                body = msg.body if isinstance(msg.body, bytes) else msg.body.encode()
                if marker.encode() in body:
                    ch.basic_ack(msg.delivery_tag)
                    found = msg
                    break
        finally:
            ch.close()  # un-acked others go back to the queue
        return found


@pytest.fixture(scope="module")
def peer(worker, broker_url, names):
    # The dead-letter queue must exist once a worker is up.
    conn = amqp_connect(broker_url)
    try:
        ch = conn.channel()
        try:
            ch.queue_declare(DEAD_LETTER_QUEUE, passive=True)
        except amqp.exceptions.NotFound:
            pytest.fail(f"the worker did not declare dead-letter queue {DEAD_LETTER_QUEUE!r} "
                        f"(bound to {DEAD_LETTER_EXCHANGE!r}).\n{worker.describe()}", pytrace=False)
    finally:
        conn.close()
    p = RawPeer(broker_url, names.exchange, f"{names.topic}.{worker.host}")
    yield p
    p.close()


def failure_of(reply):
    assert reply["failure"] is not None, f"expected a failure reply, got result {reply.get('result')!r}"
    assert isinstance(reply["failure"], str), f"failure must be a JSON string (oslo decodes it): {reply!r}"
    return json.loads(reply["failure"])


def test_legacy_unenveloped_call_is_served(worker, peer):
    """Positive control for the raw harness: oslo accepts a bare message dict (legacy 1.0), and
    so must the worker; the reply proves the reply queue and routing here are right."""
    msg_id = uuid.uuid4().hex
    peer.publish(json.dumps(call_message("ping", msg_id, peer.reply_q)).encode(), "application/json")
    deadline = time.monotonic() + 15
    while (reply := peer.final_reply(msg_id)) is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert reply is not None, f"no reply to a legacy ping within 15s.\n{worker.describe()}"
    assert reply["failure"] is None and reply["result"]["host"] == worker.host, reply


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_message(worker, peer, case):
    marker, msg_id = uuid.uuid4().hex, uuid.uuid4().hex
    peer.publish(case.build(marker, msg_id, peer.reply_q), case.content_type)

    deadline = time.monotonic() + 20
    reply = dead = None
    while time.monotonic() < deadline:
        reply = reply or peer.final_reply(msg_id)
        if case.dead_letter and dead is None:
            dead = peer.take_dead_letter(marker)
        done = (reply is not None or case.reply == "none") and (dead is not None or not case.dead_letter)
        if done:
            break
        time.sleep(0.2)
    time.sleep(0.5)  # a stray success reply would show up now
    reply = reply or peer.final_reply(msg_id)

    assert worker.proc.poll() is None, f"worker died on {case.name}.\n{worker.describe()}"
    if case.reply == "failure":
        assert reply is not None, f"{case.name}: no failure reply within 20s.\n{worker.describe()}"
        failure = failure_of(reply)
        assert {"class", "module", "message"} <= set(failure), failure
        if case.failure_class:
            assert failure["class"] == case.failure_class, failure
        assert failure["message"], failure
    else:
        assert reply is None or reply["failure"] is not None, (
            f"{case.name}: the worker answered a bad message with success: {reply!r}")
    if case.dead_letter:
        assert dead is not None, (
            f"{case.name}: not found in dead-letter queue {DEAD_LETTER_QUEUE!r} within 20s.\n{worker.describe()}")
        headers = dead.headers or {}
        reason = headers.get("x-berth-reason")
        assert reason, f"{case.name}: dead letter without x-berth-reason; headers {headers!r}"
        reason = reason.decode() if isinstance(reason, bytes) else str(reason)
        if case.reason_words:
            assert any(w in reason.lower() for w in case.reason_words), (
                f"{case.name}: reason {reason!r} names none of {case.reason_words}")


def test_worker_still_answers_after_bad_input(worker, rpc_transport, names):
    client = rpc_client(rpc_transport, names.topic)
    result = client.prepare(server=worker.host, timeout=10).call(request_context(), "ping")
    assert result["host"] == worker.host
    assert worker.proc.poll() is None


def test_bad_messages_are_not_redelivered_forever(worker, broker_url, names):
    """After all the above the worker's queues hold nothing: every bad message was acked
    (dead-lettered or answered), none is bouncing between requeues."""
    conn = amqp_connect(broker_url)
    try:
        ch = conn.channel()
        for q in (names.topic, f"{names.topic}.{worker.host}"):
            _, count, consumers = ch.queue_declare(q, passive=True)
            assert count == 0, f"{count} message(s) still in {q}"
            assert consumers >= 1, f"nobody consumes {q} any more"
    finally:
        conn.close()


def reason_of(dead) -> str:
    reason = (dead.headers or {}).get("x-berth-reason", b"")
    return reason.decode() if isinstance(reason, bytes) else str(reason)


def test_stock_oslo_call_over_the_limit_is_answered_at_once(worker, peer, rpc_transport, names):
    """DESIGN §2: a call that cannot be served gets a failure reply. A body over --max-message-bytes is
    refused from its content header, without being read into memory, yet the caller is answered at once:
    the worker finds `_msg_id` and `_reply_q` in the bytes as they pass (oslo writes them after the args)."""
    marker = uuid.uuid4().hex
    client = rpc_client(rpc_transport, names.topic).prepare(server=worker.host, timeout=60)
    started = time.monotonic()
    with pytest.raises(oslo_messaging.RemoteError) as caught:
        client.call(request_context(), "ping", marker=marker, padding="x" * (2 * MESSAGE_LIMIT))
    elapsed = time.monotonic() - started
    assert caught.value.exc_type == "InvalidRequest", caught.value
    assert f"the limit is {MESSAGE_LIMIT} bytes" in caught.value.value, caught.value.value
    assert "--max-message-bytes" in caught.value.value, caught.value.value
    assert elapsed < 10, f"the failure reply took {elapsed:.1f}s (the call's timeout is 60s)"
    deadline = time.monotonic() + 10
    while (dead := peer.take_dead_letter(marker)) is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert dead is not None, f"the refused call is not in {DEAD_LETTER_QUEUE!r}.\n{worker.describe()}"
    assert len(dead.body) <= 64 * 1024 < dead.headers["x-berth-original-bytes"], dead.headers


def peak_rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM in /proc/{pid}/status")


def test_huge_bodies_are_refused_without_holding_them(worker_factory, broker_url, names, rpc_transport):
    """Eight 60 MB calls published raw (py-amqp) to a worker of its own: each is refused from its content
    header and read a frame at a time, so the worker's peak RSS stays at 128 MiB or less (it was 1.1 GB when
    bodies were read whole); each caller gets its InvalidRequest; the dead letters keep only an excerpt;
    the worker still answers ping."""
    w = worker_factory().start()
    raw = RawPeer(broker_url, names.exchange, f"{names.topic}.{w.host}")
    try:
        padding = "x" * (60 * 1000 * 1000)
        sent = {}
        for _ in range(8):
            marker, msg_id = uuid.uuid4().hex, uuid.uuid4().hex
            raw.publish(envelope(call_message("ping", msg_id, raw.reply_q, args={"marker": marker, "padding": padding})),
                        "application/json")
            sent[marker] = msg_id
        del padding

        deadline = time.monotonic() + 120
        dead = {}
        while time.monotonic() < deadline and (len(dead) < len(sent) or
                                               any(raw.final_reply(m) is None for m in sent.values())):
            for marker in sent.keys() - dead.keys():
                if (found := raw.take_dead_letter(marker)) is not None:
                    dead[marker] = found
            time.sleep(0.5)

        assert w.proc.poll() is None, f"worker died.\n{w.describe()}"
        peak = peak_rss_bytes(w.proc.pid)
        print(f"worker peak RSS after eight 60 MB calls: {peak / 2**20:.1f} MiB")
        assert peak <= 128 * 1024 * 1024, f"peak RSS {peak / 2**20:.0f} MiB.\n{w.describe()}"
        for marker, msg_id in sent.items():
            reply = raw.final_reply(msg_id)
            assert reply is not None, f"no failure reply to {msg_id} within 120s.\n{w.describe()}"
            failure = failure_of(reply)
            assert failure["class"] == "InvalidRequest" and "--max-message-bytes" in failure["message"], failure
        assert dead.keys() == sent.keys(), f"{len(dead)} of {len(sent)} dead letters.\n{w.describe()}"
        for letter in dead.values():
            assert len(letter.body) < MESSAGE_LIMIT // 16, len(letter.body)
            assert letter.headers["x-berth-original-bytes"] > 60 * 1000 * 1000, letter.headers
            assert "limit is 1048576 bytes" in reason_of(letter), reason_of(letter)

        client = rpc_client(rpc_transport, names.topic).prepare(server=w.host, timeout=10)
        assert client.call(request_context(), "ping")["host"] == w.host
    finally:
        raw.close()
        w.stop()

