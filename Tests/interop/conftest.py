"""Fixtures for Berth's interoperability tests against stock oslo.messaging.

Every test here talks to a real RabbitMQ (BERTH_AMQP_URL, default
amqp://guest:guest@127.0.0.1:5672/) and, where it says so, to a real Berth worker
process started from $BERTH_BIN. When either is missing the tests are skipped
with the reason, unless BERTH_REQUIRE_SERVICES=1 (scripts/test.sh sets it), in
which case they fail.

Isolation: oslo's queue names are global on a broker (`<topic>`,
`<topic>.<server>`, `<topic>_fanout`, `<ntopic>.<priority>`); only the bindings
hang off the control exchange. So each test module gets its own control
exchange *and* its own RPC and notification topics, and deletes what it
declared when it ends. That keeps parallel runs (another developer, the Swift
integration tests) from stealing each other's messages.
"""

from __future__ import annotations

import itertools
import json
import os
import pathlib
import signal
import subprocess
import time
import urllib.parse
import uuid
import warnings

import pytest

warnings.filterwarnings("ignore", message=r"(?s).*Eventlet is deprecated")

import amqp  # noqa: E402  (py-amqp, installed with oslo.messaging)
import oslo_messaging  # noqa: E402
import oslo_messaging.opts  # noqa: E402  (public option list, for make_conf)
from oslo_config import cfg  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
REQUIRE_SERVICES = os.environ.get("BERTH_REQUIRE_SERVICES") == "1"
AMQP_URL = os.environ.get("BERTH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
DEBUG_NAMESPACE = "berth.debug"
DEAD_LETTER_QUEUE = "berth.dead-letter"
QUORUM_DEAD_LETTER_QUEUE = "berth.dead-letter.quorum"
# Where the worker dead-letters what it cannot decode (`berth worker --help`).
DEAD_LETTER_EXCHANGE = os.environ.get("BERTH_TEST_DLX", "berth.dlx")
DEAD_LETTER_QUEUE = os.environ.get("BERTH_TEST_DLQ", "berth.dead-letter")
WORKER_READY_TIMEOUT = float(os.environ.get("BERTH_TEST_WORKER_READY_TIMEOUT", "60"))


def unavailable(reason: str):
    """Skip, or fail when the run promised the services would be there."""
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (BERTH_REQUIRE_SERVICES=1: failing instead of skipping)", pytrace=False)
    pytest.skip(reason)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def request_context() -> dict:
    """A context like oslo.context's RequestContext.to_dict() would give (a subset)."""
    return {
        "request_id": f"req-{uuid.uuid4()}",
        "user": "u-interop",
        "project_id": "p-interop",
        "roles": ["member"],
        "auth_token": None,
    }


# --- broker -------------------------------------------------------------------------------------


def amqp_connect(url: str = AMQP_URL, **kwargs) -> amqp.Connection:
    """A raw py-amqp connection (no oslo, no kombu) for publishing hand-made messages."""
    parts = urllib.parse.urlparse(url)
    vhost = urllib.parse.unquote(parts.path[1:]) if parts.path and parts.path != "/" else "/"
    conn = amqp.Connection(
        host=f"{parts.hostname or '127.0.0.1'}:{parts.port or 5672}",
        userid=urllib.parse.unquote(parts.username or "guest"),
        password=urllib.parse.unquote(parts.password or "guest"),
        virtual_host=vhost,
        connect_timeout=5,
        **kwargs,
    )
    conn.connect()
    return conn


@pytest.fixture(scope="session")
def broker_url() -> str:
    try:
        conn = amqp_connect(AMQP_URL)
    except Exception as exc:  # noqa: BLE001 - any failure means "no broker"
        unavailable(f"RabbitMQ not reachable at {AMQP_URL}: {exc!r} (run scripts/start-services.sh)")
    conn.close()
    return AMQP_URL


def oslo_transport_url(url: str) -> str:
    """oslo.messaging names its RabbitMQ driver `rabbit://`; the worker and py-amqp take `amqp://`."""
    scheme, sep, rest = url.partition("://")
    return f"rabbit://{rest}" if scheme in ("amqp", "rabbit") and sep else url


def delete_broker_objects(url: str, queues=(), exchanges=()):
    """Best-effort cleanup of what a module declared (oslo leaves topic queues behind)."""
    try:
        conn = amqp_connect(url)
    except Exception:  # noqa: BLE001
        return
    try:
        for name in queues:
            ch = conn.channel()
            try:
                ch.queue_delete(name)
                ch.close()
            except Exception:  # noqa: BLE001
                pass
        for name in exchanges:
            ch = conn.channel()
            try:
                ch.exchange_delete(name)
                ch.close()
            except Exception:  # noqa: BLE001
                pass
    finally:
        try:
            conn.close()
        except Exception:  # noqa: BLE001
            pass


class Names:
    """The per-module names: control exchange, RPC topic, notification topic."""

    def __init__(self):
        self.exchange = unique("berth-test")
        self.topic = unique("compute")
        self.notification_topic = unique("notifications")
        self.hosts: list[str] = []
        self.extra_queues: list[str] = []
        self.extra_exchanges: list[str] = []

    def queues(self, hosts=()):
        qs = [self.topic] + [f"{self.topic}.{h}" for h in hosts]
        qs += [f"{self.notification_topic}.{p}" for p in ("info", "warn", "error", "audit", "debug", "critical", "sample")]
        qs += [f"{self.topic}-notifications.{p}" for p in ("info", "error")]  # the workers' event queues
        qs += [f"{self.topic}-metering.sample"]  # the workers' metrics samples
        return qs + self.extra_queues


@pytest.fixture(scope="module")
def names(broker_url):
    n = Names()
    yield n
    delete_broker_objects(
        broker_url,
        queues=n.queues(n.hosts),
        exchanges=[n.exchange, f"{n.topic}_fanout"] + n.extra_exchanges,
    )


@pytest.fixture(scope="module")
def control_exchange(names) -> str:
    return names.exchange


# --- oslo.messaging, stock API only --------------------------------------------------------------


def make_conf(exchange: str) -> cfg.ConfigOpts:
    """The global cfg.CONF, as an OpenStack service has it, with `control_exchange` overridden.

    Why the global one: oslo.messaging 18.3.1's tracing hook reads
    [oslo_messaging_tracing] from the transport's conf but registers that group
    only on cfg.CONF, so a private ConfigOpts breaks every call (NoSuchOptError).
    `control_exchange` is registered when a transport is made and read right
    then, so register oslo.messaging's options first (the public
    oslo_messaging.opts.list_opts(), which the config generator uses) and
    override before making the module's transports.
    """
    conf = cfg.CONF
    if not getattr(make_conf, "_parsed", False):
        conf([], project="berth-interop", default_config_files=[], default_config_dirs=[])
        for group, opts in oslo_messaging.opts.list_opts():
            conf.register_opts(opts, group=group)
        make_conf._parsed = True
    conf.set_override("control_exchange", exchange)
    return conf


@pytest.fixture(scope="module")
def oslo_conf(names) -> cfg.ConfigOpts:
    return make_conf(names.exchange)


@pytest.fixture(scope="module")
def rpc_transport(oslo_conf, broker_url):
    transport = oslo_messaging.get_rpc_transport(oslo_conf, url=oslo_transport_url(broker_url))
    yield transport
    transport.cleanup()


@pytest.fixture(scope="module")
def notification_transport(oslo_conf, broker_url):
    transport = oslo_messaging.get_notification_transport(oslo_conf, url=oslo_transport_url(broker_url))
    yield transport
    transport.cleanup()


def rpc_client(transport, topic: str, namespace: str | None = None, version: str = "1.0"):
    """A stock RPC client. oslo.messaging 18 warns against `RPCClient(...)` directly and its
    `get_rpc_client` factory registers the client options, so use the factory."""
    target = oslo_messaging.Target(topic=topic, namespace=namespace, version=version)
    return oslo_messaging.get_rpc_client(transport, target)


# --- the Berth binary and worker processes --------------------------------------------------------


@pytest.fixture(scope="session")
def berth_bin() -> str:
    path = os.environ.get("BERTH_BIN")
    if not path:
        unavailable("BERTH_BIN is not set (path of the built `berth`, e.g. $(swift build --show-bin-path)/berth)")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        unavailable(f"BERTH_BIN={path} is not an executable file (build it with `swift build`)")
    return path


def tail(path: pathlib.Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


class BerthCLI:
    """Runs `berth call` / `berth notify` against the module's broker names."""

    def __init__(self, binary: str, url: str, names: Names):
        self.binary, self.url, self.names = binary, url, names

    def run(self, *args: str, timeout: float = 60, env: dict | None = None) -> subprocess.CompletedProcess:
        cmd = [self.binary, *args]
        full_env = dict(os.environ)
        full_env.update(env or {})
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env)

    def call(self, method: str, args: dict | None = None, *extra: str, timeout: float = 60):
        return self.run(
            "call", method,
            "--args", json.dumps(args or {}),
            "--transport-url", self.url,
            "--control-exchange", self.names.exchange,
            "--topic", self.names.topic,
            *extra,
            timeout=timeout,
        )

    def notify(self, event_type: str, payload: dict, *extra: str, timeout: float = 60):
        return self.run(
            "notify", event_type,
            "--payload", json.dumps(payload),
            "--transport-url", self.url,
            "--control-exchange", self.names.exchange,
            # The brief's contract said `--topic`; the CLI names it --notification-topic
            # (`--topic` is the RPC topic, shared by every bus command).
            "--notification-topic", self.names.notification_topic,
            *extra,
            timeout=timeout,
        )


@pytest.fixture(scope="module")
def berth_cli(berth_bin, broker_url, names) -> BerthCLI:
    return BerthCLI(berth_bin, broker_url, names)


_LOG_SEQUENCE = itertools.count(1)


class WorkerProcess:
    """One `berth worker` process; its stderr (the log) goes to a file."""

    def __init__(self, binary, url, host, log_dir: pathlib.Path, transport, exchange, topic, extra_args=()):
        self.binary, self.url, self.host = binary, url, host
        self.transport, self.exchange, self.topic = transport, exchange, topic
        self.extra_args = list(extra_args)
        self.log_dir = log_dir
        self.proc: subprocess.Popen | None = None
        self.log_path: pathlib.Path | None = None
        self.starts = 0

    @property
    def argv(self):
        return [
            self.binary, "worker",
            "--transport-url", self.url,
            "--host", self.host,
            "--control-exchange", self.exchange,
            "--topic", self.topic,
            # The worker declares `<topic>.info`/`.error` for its events; names are broker-global, and the
            # option tests declare them durable, so each worker's event topic follows its RPC topic.
            "--notification-topic", f"{self.topic}-notifications",
            # Likewise `<metering topic>.sample`, which the worker declares for its berth.metrics samples.
            "--metering-topic", f"{self.topic}-metering",
            "--libvirt-uri", "test:///default",
            "--debug-rpc",
            *self.extra_args,
        ] + self.dead_letter_args()

    def dead_letter_args(self) -> list[str]:
        """Berth's dead-letter queue is a quorum queue when the worker runs with --rabbit-quorum-queue, and
        one vhost cannot hold it both ways: the tests mix both modes on one broker, so quorum-mode workers
        keep their dead letters in a queue of their own (bound to the same exchange)."""
        if "--rabbit-quorum-queue" in self.extra_args and "--dead-letter-queue" not in self.extra_args:
            return ["--dead-letter-queue", QUORUM_DEAD_LETTER_QUEUE]
        return []

    def start(self, wait: bool = True):
        self.starts += 1
        # Unique per process: a replacement worker reuses the host name of the one it replaces.
        self.log_path = self.log_dir / f"worker-{self.host}-{next(_LOG_SEQUENCE)}.log"
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        if wait:
            self.wait_ready()
        return self

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def describe(self) -> str:
        rc = self.proc.poll() if self.proc else None
        return f"worker {self.host} (pid {self.proc.pid if self.proc else '-'}, exit {rc}); log {self.log_path}:\n{tail(self.log_path)}"

    def wait_ready(self, timeout: float = WORKER_READY_TIMEOUT):
        """Until `ping` to this server answers (a stock oslo client call)."""
        client = rpc_client(self.transport, self.topic)
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"berth worker exited during start-up.\n{self.describe()}", pytrace=False)
            try:
                result = client.prepare(server=self.host, timeout=2).call(request_context(), "ping")
                if isinstance(result, dict) and result.get("host") == self.host:
                    return result
                last = f"unexpected ping result {result!r}"
            except oslo_messaging.MessagingTimeout as exc:
                last = exc
            time.sleep(0.2)
        pytest.fail(f"berth worker did not answer ping within {timeout}s (last: {last!r}).\n{self.describe()}",
                    pytrace=False)

    def wait_for_log(self, needle: str, timeout: float = 15) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.log_text():
                return True
            time.sleep(0.1)
        return False

    def kill(self, sig=signal.SIGKILL):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)

    def stop(self, timeout: float = 45) -> int:
        """SIGTERM and wait; returns the exit code (SIGKILLs and fails if it hangs)."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
                pytest.fail(f"berth worker ignored SIGTERM for {timeout}s; killed.\n{self.describe()}", pytrace=False)
        return self.proc.returncode


@pytest.fixture(scope="module")
def worker_factory(berth_bin, broker_url, names, rpc_transport, tmp_path_factory):
    """Makes worker processes for this module; SIGKILLs any left running at the end."""
    log_dir = tmp_path_factory.mktemp("berth-worker-logs")
    made: list[WorkerProcess] = []

    def make(host: str | None = None, extra_args=(), *, exchange=None, topic=None, transport=None) -> WorkerProcess:
        """A worker on the module's exchange and topic, or on others (then pass the oslo
        transport bound to that exchange, used to wait for its first ping)."""
        host = host or unique("itest")
        if host not in names.hosts:
            names.hosts.append(host)
        w = WorkerProcess(berth_bin, broker_url, host, log_dir, transport or rpc_transport,
                          exchange or names.exchange, topic or names.topic, extra_args)
        made.append(w)
        return w

    yield make
    for w in made:
        w.kill()


@pytest.fixture(scope="module")
def worker(worker_factory):
    """A running Berth worker (test:///default libvirt, debug RPC on), stopped with SIGTERM at the end."""
    w = worker_factory().start()
    yield w
    rc = w.stop()
    assert rc == 0, f"berth worker exited {rc} after SIGTERM (expected 0).\n{w.describe()}"


# ==== contracts: firehose capture (appended; owned by the contracts work, see capture.py) ===========
# Every message published during the session is recorded through RabbitMQ's firehose, and
# test_contracts.py (moved to the end of the run below) validates what the workers and the CLI sent
# against contracts/. The session's names, workers and py-amqp connections are recorded so that
# test can tell Berth's messages from oslo's and from other users of the broker.

import capture as _capture  # noqa: E402

_capture.PYTHON_CONNECTIONS.install()

CONTRACT_SESSION = {"names": [], "workers": []}

_names_init = Names.__init__


def _recording_names_init(self, *args, **kwargs):
    _names_init(self, *args, **kwargs)
    CONTRACT_SESSION["names"].append(self)


Names.__init__ = _recording_names_init

_worker_start = WorkerProcess.start


def _recording_worker_start(self, *args, **kwargs):
    record = {"host": self.host, "exchange": self.exchange, "topic": self.topic, "started": time.time()}
    CONTRACT_SESSION["workers"].append(record)
    return _worker_start(self, *args, **kwargs)


WorkerProcess.start = _recording_worker_start

CONTRACT_TEST_FILE = "test_contracts.py"


@pytest.hookimpl(trylast=True)  # after `-m`/`-k` deselection, so the count below is what runs
def pytest_collection_modifyitems(session, config, items):
    """The contract test validates what the rest of the suite made the workers send: it runs last."""
    last = [item for item in items if item.path.name == CONTRACT_TEST_FILE]
    CONTRACT_SESSION["other_tests"] = len(items) - len(last)
    if last:
        items[:] = [item for item in items if item.path.name != CONTRACT_TEST_FILE] + last


@pytest.fixture(scope="session", autouse=True)
def firehose():
    """The session's firehose capture. Never fails a test itself: when the broker or rabbitmqctl is
    missing, `capture.error` says why and test_contracts.py reports it."""
    parts = urllib.parse.urlparse(AMQP_URL)
    vhost = urllib.parse.unquote(parts.path[1:]) if parts.path and parts.path != "/" else "/"
    cap = _capture.FirehoseCapture(lambda: amqp_connect(AMQP_URL), vhost=vhost)
    try:
        amqp_connect(AMQP_URL).close()
    except Exception as exc:  # noqa: BLE001
        cap.error = f"RabbitMQ not reachable at {AMQP_URL}: {exc!r}"
    else:
        cap.start()
    yield cap
    cap.stop()
# ==== end of contracts section =======================================================================
