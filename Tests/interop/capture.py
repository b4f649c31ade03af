"""Records every message published on the broker during the interop suite, through RabbitMQ's firehose.

`rabbitmqctl trace_on` makes the broker copy each publish to the topic exchange `amq.rabbitmq.trace` with
routing key `publish.<exchange>`, the original body, and headers naming the exchange, the routing keys, the
original properties, the routed queues and the publishing connection (`"127.0.0.1:54676 -> 127.0.0.1:5672"`).
`FirehoseCapture` consumes a queue bound with `publish.#` on a thread of its own for the whole session, so
`test_contracts.py` can validate the messages a running worker really sent, not hand-written examples.

Who published a message: the firehose names the connection by its client address. `PythonConnections` records
the local port of every py-amqp connection this test process opens (oslo.messaging's kombu transport, the raw
peers, this capture): a message from any other connection came from another process, i.e. a `berth` worker or
the `berth` CLI the suite started (the suite's own exchange names separate it from other users of the broker).

Nothing here asserts anything; `test_contracts.py` does.
"""

from __future__ import annotations

import dataclasses
import json
import os
import hashlib
import subprocess
import tempfile
import threading
import time
import uuid

import amqp

TRACE_EXCHANGE = "amq.rabbitmq.trace"
RABBITMQ_NODE = os.environ.get("BERTH_RABBITMQ_NODE", "rabbit@localhost")
RABBITMQCTL = os.environ.get("BERTH_RABBITMQCTL", "rabbitmqctl")
MAX_KEPT_BODY = 16 * 1024 * 1024


def _text(value):
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", errors="replace")
    return value


def _plain(value):
    """Firehose header values as plain JSON-able Python (py-amqp may hand out bytes)."""
    if isinstance(value, dict):
        return {_text(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return _text(value)


@dataclasses.dataclass
class Captured:
    """One publish as the firehose saw it."""

    seq: int
    received: float  # time.time() when the capture thread got it (a few ms after the publish)
    exchange: str
    routing_keys: list
    properties: dict  # the original message's basic properties, as the broker recorded them
    connection: str
    routed_queues: list
    body: bytes

    @property
    def routing_key(self) -> str:
        return self.routing_keys[0] if self.routing_keys else ""

    @property
    def client_port(self) -> int | None:
        """The publisher's local TCP port, from `"<client ip>:<port> -> <server ip>:<port>"`."""
        client = self.connection.split(" -> ", 1)[0]
        _, _, port = client.rpartition(":")
        return int(port) if port.isdigit() else None

    def describe(self) -> str:
        return (f"#{self.seq} exchange={self.exchange!r} routing_key={self.routing_key!r} "
                f"connection={self.connection!r}")


class PythonConnections:
    """Local ports of the py-amqp connections of this process, with when each was open.

    Installed by patching `amqp.Connection.connect` and `.collect` (kombu, hence oslo.messaging, opens its
    connections through them). A port counts as this process's from its connect until `slack` seconds after its
    close, so a message still queued in the firehose when its connection closed is not mistaken for Berth's,
    while a port reused much later by another process is not mistaken for ours.
    """

    def __init__(self, slack: float = 30.0):
        self.slack = slack
        self._lock = threading.Lock()
        self._spans: dict[int, list[list[float | None]]] = {}
        self._installed = False

    def install(self):
        if self._installed:
            return
        self._installed = True
        tracker = self
        original_connect = amqp.Connection.connect
        original_collect = amqp.Connection.collect

        def connect(conn, *args, **kwargs):
            result = original_connect(conn, *args, **kwargs)
            try:
                port = conn.sock.getsockname()[1]
            except Exception:  # noqa: BLE001 - a socket we cannot read is not ours to track
                return result
            conn._berth_capture_port = port
            tracker.opened(port)
            return result

        def collect(conn, *args, **kwargs):
            port = getattr(conn, "_berth_capture_port", None)
            try:
                return original_collect(conn, *args, **kwargs)
            finally:
                if port is not None:
                    conn._berth_capture_port = None
                    tracker.closed(port)

        amqp.Connection.connect = connect
        amqp.Connection.collect = collect

    def opened(self, port: int):
        with self._lock:
            # A little before now: the handshake finished before this ran, publishes come after.
            self._spans.setdefault(port, []).append([time.time() - 1.0, None])

    def closed(self, port: int):
        with self._lock:
            for span in reversed(self._spans.get(port, [])):
                if span[1] is None:
                    span[1] = time.time()
                    break

    def owns(self, port: int | None, at: float) -> bool:
        if port is None:
            return False
        with self._lock:
            for start, end in self._spans.get(port, []):
                if start <= at and (end is None or at <= end + self.slack):
                    return True
        return False


PYTHON_CONNECTIONS = PythonConnections()


def rabbitmqctl(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([RABBITMQCTL, "-n", RABBITMQ_NODE, *args], capture_output=True, text=True,
                          timeout=timeout)


class FirehoseCapture:
    """Turns the firehose on, keeps every traced publish in memory, turns it off again at `stop()`."""

    def __init__(self, connect, vhost: str = "/"):
        self._connect = connect  # () -> amqp.Connection
        self.vhost = vhost
        self.queue = f"berth-contracts-firehose-{uuid.uuid4().hex[:12]}"
        self.error: str | None = None  # why nothing is being captured
        self.gaps: list[str] = []  # connection losses (messages published meanwhile are missing)
        self.traced = False
        self._messages: list[Captured] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_arrival = time.monotonic()
        # Liveness probe: an unroutable publish every PROBE_INTERVAL s; the firehose traces it all the same.
        # When probes stop coming back, tracing was turned off (a broker restart, a manual trace_off): the
        # capture turns it on again and records the gap.
        self.probe_key = f"berth-contracts-probe-{uuid.uuid4().hex}"
        self._probe_seen = time.monotonic()
        self._gap_open: str | None = None
        # Sessions sharing this broker (several developers' runs, one work tree): the last one out turns the
        # firehose off, not the first.
        tag = hashlib.sha1(f"{RABBITMQ_NODE} {vhost}".encode()).hexdigest()[:12]
        self._users_dir = os.path.join(tempfile.gettempdir(), f"berth-firehose-users-{tag}")

    PROBE_INTERVAL = 2.0
    PROBE_LOST_AFTER = 8.0

    # --- sessions sharing the firehose -------------------------------------------------------------

    def _register_user(self):
        os.makedirs(self._users_dir, exist_ok=True)
        with open(os.path.join(self._users_dir, str(os.getpid())), "w") as f:
            f.write(self.queue)

    def _last_user_leaves(self) -> bool:
        try:
            os.unlink(os.path.join(self._users_dir, str(os.getpid())))
        except OSError:
            pass
        alive = 0
        for name in os.listdir(self._users_dir) if os.path.isdir(self._users_dir) else []:
            try:
                os.kill(int(name), 0)
                alive += 1
            except (ValueError, ProcessLookupError):
                try:
                    os.unlink(os.path.join(self._users_dir, name))
                except OSError:
                    pass
            except PermissionError:
                alive += 1
        return alive == 0

    # --- lifecycle ---------------------------------------------------------------------------------

    def start(self, ready_timeout: float = 30) -> "FirehoseCapture":
        try:
            proc = rabbitmqctl("trace_on", "-p", self.vhost)
        except (OSError, subprocess.SubprocessError) as exc:
            self.error = f"cannot run {RABBITMQCTL} trace_on: {exc!r}"
            return self
        if proc.returncode != 0:
            self.error = f"{RABBITMQCTL} -n {RABBITMQ_NODE} trace_on failed: {proc.stderr.strip() or proc.stdout}"
            return self
        self.traced = True
        self._register_user()
        self._thread = threading.Thread(target=self._run, name="firehose-capture", daemon=True)
        self._thread.start()
        if not self._ready.wait(ready_timeout):
            self.error = self.error or f"the firehose consumer did not start within {ready_timeout}s"
        return self

    def stop(self):
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=15)
        if self.traced and self._last_user_leaves():
            try:
                rabbitmqctl("trace_off", "-p", self.vhost)
            except (OSError, subprocess.SubprocessError):
                pass
        self.traced = False

    @property
    def running(self) -> bool:
        return self.error is None and self._thread is not None and self._thread.is_alive()

    # --- reading -----------------------------------------------------------------------------------

    def messages(self) -> list[Captured]:
        with self._lock:
            return list(self._messages)

    def settle(self, quiet: float = 1.5, timeout: float = 20):
        """Waits until nothing new has arrived for `quiet` seconds (the firehose has caught up)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                idle = time.monotonic() - self._last_arrival
            if idle >= quiet:
                return
            time.sleep(0.1)

    # --- the consumer thread -----------------------------------------------------------------------

    def _run(self):
        backoff = 0.5
        while not self._stop.is_set():
            conn = None
            try:
                conn = self._connect()
                ch = conn.channel()
                # Exclusive and auto-delete: the queue goes with this connection, nothing is left behind.
                ch.queue_declare(self.queue, durable=False, exclusive=True, auto_delete=True)
                ch.queue_bind(self.queue, TRACE_EXCHANGE, "publish.#")
                ch.basic_consume(self.queue, callback=self._on_message, no_ack=True)
                probe = conn.channel()
                self._ready.set()
                backoff = 0.5
                next_probe = 0.0
                self._probe_seen = time.monotonic()
                while not self._stop.is_set():
                    now = time.monotonic()
                    if now >= next_probe:
                        probe.basic_publish(amqp.Message(b"probe"), exchange="", routing_key=self.probe_key)
                        next_probe = now + self.PROBE_INTERVAL
                    if now - self._probe_seen > self.PROBE_LOST_AFTER and self._gap_open is None:
                        self._gap_open = time.strftime("%H:%M:%S", time.localtime(time.time() - self.PROBE_LOST_AFTER))
                        rabbitmqctl("trace_on", "-p", self.vhost, timeout=30)
                    try:
                        conn.drain_events(timeout=0.5)
                    except TimeoutError:
                        continue
                    except OSError as exc:  # socket.timeout is an OSError on older Pythons
                        if "timed out" in str(exc):
                            continue
                        raise
            except Exception as exc:  # noqa: BLE001 - keep capturing across broker restarts
                if self._stop.is_set():
                    break
                self.gaps.append(f"{time.strftime('%H:%M:%S')}: capture connection lost: {exc!r}")
                time.sleep(backoff)
                backoff = min(backoff * 2, 5)
                # A restarted broker forgets the firehose setting.
                try:
                    rabbitmqctl("trace_on", "-p", self.vhost, timeout=30)
                except (OSError, subprocess.SubprocessError):
                    pass
            finally:
                if conn is not None:
                    try:
                        conn.close()
                    except Exception:  # noqa: BLE001
                        pass
        self._ready.set()

    def _on_message(self, msg):
        headers = _plain(msg.properties.get("application_headers") or {})
        if headers.get("exchange_name") == "" and self.probe_key in (headers.get("routing_keys") or []):
            self._probe_seen = time.monotonic()
            if self._gap_open is not None:
                self.gaps.append(f"firehose tracing was off from about {self._gap_open} to "
                                 f"{time.strftime('%H:%M:%S')} (turned on again)")
                self._gap_open = None
            return
        body = msg.body if isinstance(msg.body, (bytes, bytearray)) else str(msg.body).encode()
        # Only the tests publish bodies this large (test_bad_input.py's 60 MB calls); keeping them whole would
        # hold half a gigabyte here for the session. Cut, they are simply not JSON.
        body = body[:MAX_KEPT_BODY]
        with self._lock:
            self._messages.append(Captured(
                seq=len(self._messages) + 1,
                received=time.time(),
                exchange=headers.get("exchange_name", ""),
                routing_keys=list(headers.get("routing_keys") or []),
                properties=dict(headers.get("properties") or {}),
                connection=headers.get("connection", ""),
                routed_queues=list(headers.get("routed_queues") or []),
                body=bytes(body),
            ))
            self._last_arrival = time.monotonic()


def decode_oslo(body: bytes):
    """(outer, inner): the parsed AMQP body and the message inside `oslo.message` (or the body itself for a
    legacy un-enveloped message). Raises ValueError when either level is not JSON."""
    outer = json.loads(body.decode("utf-8"))
    if isinstance(outer, dict) and "oslo.message" in outer and "oslo.version" in outer:
        inner = json.loads(outer["oslo.message"])
    else:
        inner = outer
    return outer, inner
