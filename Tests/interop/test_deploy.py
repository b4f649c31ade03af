"""deploy/ as an operator installs it (docs/operations.md "Deploying"):

- `berth-worker@.service` passes `systemd-analyze verify` and has a low `systemd-analyze security` exposure.
  Both run offline, without systemd as PID 1: `--root` points at a directory holding a copy of the system's
  unit files (for the targets the unit names), the unit itself and a stand-in /usr/local/bin/berth.
- `worker.env` defines everything the unit's ExecStart uses, and its grace period fits the unit's stop time.
- `rabbitmq-definitions.json` imports with `rabbitmqctl import_definitions` into a vhost and user of this
  module's own (renamed copies of `berth`, with a real password hash in place of the placeholder), then:
  a worker started exactly as the unit starts it (its ExecStart, the env file's variables, the URL's
  password and hosts replaced) serves a stock oslo.messaging client logged in as that user: ping, a boot
  on libvirt's test driver from a local catalog, get/delete, a fanout cast; its events, metrics samples
  and dead letters reach their queues. The same user can do nothing else: no other vhost, no foreign
  exchanges or queues, no publishing to or binding from exchanges outside Berth's names.
- The quorum policy: a quorum queue the way `--rabbit-quorum-queue` declares it gets a delivery limit
  from the policy, and a message rejected past it is dead-lettered to `berth.dead-letter`.
The vhost and user are deleted at the end.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pathlib
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid

import amqp
import oslo_messaging
import pytest

from conftest import (REPO_ROOT, WorkerProcess, amqp_connect, make_conf, request_context, rpc_client, tail,
                      unavailable, unique)
from test_security import broker_address, process_title, rabbitmqctl

DEPLOY = REPO_ROOT / "deploy"
UNIT = DEPLOY / "berth-worker@.service"
ENV_FILE = DEPLOY / "worker.env"
SAMPLE_CONFIG = DEPLOY / "berth.conf.sample"
CONFIG_PATH = "/etc/berth/berth.conf"  # where the unit reads it; the tests give it the sample
DROP_IN = DEPLOY / "berth-worker@.service.d" / "baremetal.conf"
DEFINITIONS = DEPLOY / "rabbitmq-definitions.json"
INSTANCE = "compute-1"
# The unit's defaults (it passes no --control-exchange/--topic): what the permissions are written for.
CONTROL_EXCHANGE, TOPIC = "berth", "compute"
EXPOSURE_THRESHOLD = 4.0


# --- the systemd unit ----------------------------------------------------------------------------------


def unit_directives(text: str) -> dict[str, list[str]]:
    directives: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;[":
            continue
        key, _, value = line.partition("=")
        directives.setdefault(key.strip(), []).append(value.strip())
    return directives


def env_file(text: str) -> dict[str, str]:
    """KEY=VALUE lines as systemd's EnvironmentFile= reads them (comments with # or ;, optional quotes)."""
    values = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


@pytest.fixture(scope="module")
def systemd_root(tmp_path_factory) -> pathlib.Path:
    if shutil.which("systemd-analyze") is None:
        unavailable("systemd-analyze not found (Debian package systemd; scripts/install-deps.sh installs it)")
    root = tmp_path_factory.mktemp("systemd-root")
    system_units = next((p for p in (pathlib.Path("/usr/lib/systemd/system"), pathlib.Path("/lib/systemd/system"))
                         if (p / "multi-user.target").exists()), None)
    if system_units is None:
        unavailable("no systemd unit files (multi-user.target) under /usr/lib/systemd/system")
    shutil.copytree(system_units, root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    shutil.copy(UNIT, root / "etc/systemd/system" / UNIT.name)
    shutil.copytree(DROP_IN.parent, root / "etc/systemd/system" / DROP_IN.parent.name)
    # Stand-ins for the programs the unit runs (ExecStart=, ExecReload=): verify checks they are executable.
    for program in ("usr/local/bin/berth", "bin/kill"):
        stand_in = root / program
        stand_in.parent.mkdir(parents=True, exist_ok=True)
        stand_in.write_text("#!/bin/sh\n")
        stand_in.chmod(0o755)
    return root


def systemd_analyze(root: pathlib.Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["systemd-analyze", *args, f"--root={root}"], capture_output=True, text=True, timeout=120)


def test_unit_passes_systemd_analyze_verify(systemd_root):
    proc = systemd_analyze(systemd_root, "verify", "--man=no", f"berth-worker@{INSTANCE}.service")
    assert proc.returncode == 0 and not proc.stdout.strip() and not proc.stderr.strip(), proc.stdout + proc.stderr

    # It does check: a copy whose ExecStart is neither a name nor an absolute path is refused.
    broken = systemd_root / "etc/systemd/system/berth-broken@.service"
    broken.write_text(UNIT.read_text().replace("ExecStart=/usr/local/bin/berth", "ExecStart=berth/../berth"))
    try:
        proc = systemd_analyze(systemd_root, "verify", "--man=no", f"berth-broken@{INSTANCE}.service")
    finally:
        broken.unlink()
    assert proc.returncode != 0 and "Neither a valid executable name nor an absolute path" in proc.stderr, proc.stderr


def test_unit_exposure_is_low(systemd_root):
    proc = systemd_analyze(systemd_root, "security", "--offline=true", f"--threshold={int(EXPOSURE_THRESHOLD * 10)}",
                           "--no-pager", f"berth-worker@{INSTANCE}.service")
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+) (\w+)", proc.stdout + proc.stderr)
    assert match, proc.stdout + proc.stderr
    print(f"\n[deploy figures] systemd-analyze security --offline: exposure {match.group(1)} {match.group(2)}")
    assert proc.returncode == 0 and float(match.group(1)) <= EXPOSURE_THRESHOLD, proc.stdout


def test_env_file_defines_what_the_unit_uses(berth_bin):
    unit = unit_directives(UNIT.read_text())
    env = env_file(ENV_FILE.read_text())
    (exec_start,) = unit["ExecStart"]
    used = set(re.findall(r"\$\{(\w+)\}|\$(\w+)", exec_start))
    used = {a or b for a, b in used}
    missing = sorted(name for name in used if not env.get(name))
    assert not missing, f"ExecStart uses {missing}, which {ENV_FILE.name} does not define"
    assert env.get("BERTH_TRANSPORT_URL"), "the env file must carry the transport URL"
    # Credentials never on the command line; the unit reads them from the env file, the rest from berth.conf.
    assert "transport-url" not in exec_start and "BERTH_TRANSPORT_URL" not in exec_start
    assert f"--config-file {CONFIG_PATH}" in exec_start
    assert unit["EnvironmentFile"] == ["/etc/berth/worker.env"]
    # systemd must not SIGKILL a worker that is still within its grace period: the one the worker would use,
    # from the sample configuration and the env file.
    proc = subprocess.run([berth_bin, "worker", "--config-file", str(SAMPLE_CONFIG), "--print-config",
                           "--print-format", "json"], capture_output=True, text=True, timeout=30,
                          env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env})
    assert proc.returncode == 0, proc.stderr
    grace = json.loads(proc.stdout)["berth"]["grace_period"]["value"]
    stop_timeout = float(unit["TimeoutStopSec"][0].rstrip("s"))
    assert stop_timeout > grace, (stop_timeout, grace)
    assert unit["KillSignal"] == ["SIGTERM"] and unit["User"] == ["berth"]


# --- the RabbitMQ definitions ----------------------------------------------------------------------------


def rabbit_password_hash(password: str) -> str:
    """rabbitmqctl hash_password where the CLI has it (3.11+); else RabbitMQ's documented algorithm for
    rabbit_password_hashing_sha256: base64(salt + sha256(salt + password)), a random 4-byte salt."""
    probe = rabbitmqctl("help", "hash_password", check=False)
    if probe.returncode == 0:
        out = rabbitmqctl("hash_password", password, "-q").stdout.strip().splitlines()
        return out[-1].strip()
    salt = os.urandom(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def import_definitions(definitions: dict):
    """`rabbitmqctl import_definitions FILE`. Debian's rabbitmqctl runs as user rabbitmq and reads the file
    itself (3.10 has no stdin form), so the file goes in a directory of that user's, removed afterwards."""
    directory = pathlib.Path(tempfile.mkdtemp(prefix="berth-definitions-"))
    path = directory / "definitions.json"
    try:
        path.write_text(json.dumps(definitions, indent=2))
        path.chmod(0o600)
        if os.geteuid() == 0:
            owner = pwd.getpwnam("rabbitmq")
            for item in (directory, path):
                os.chown(item, owner.pw_uid, owner.pw_gid)
        rabbitmqctl("import_definitions", str(path))
    finally:
        shutil.rmtree(directory, ignore_errors=True)


class Deployment:
    def __init__(self):
        self.vhost = unique("berth-deploy")
        self.user = unique("berth-deploy")
        self.password = "pw-" + uuid.uuid4().hex
        self.definitions = json.loads(DEFINITIONS.read_text())

    @property
    def amqp_url(self) -> str:
        return f"amqp://{self.user}:{self.password}@{broker_address()}/{self.vhost}"

    def connect(self, vhost: str | None = None) -> amqp.Connection:
        conn = amqp.Connection(host=broker_address(), userid=self.user, password=self.password,
                               virtual_host=vhost or self.vhost, connect_timeout=5)
        conn.connect()
        return conn

    def renamed(self, password_hash: str) -> dict:
        """The definitions with vhost and user `berth` renamed to this module's, and a real password hash."""
        d = json.loads(json.dumps(self.definitions))
        for vhost in d["vhosts"]:
            assert vhost["name"] == "berth"
            vhost["name"] = self.vhost
        for user in d["users"]:
            assert user["name"] == "berth" and user["password_hash"].startswith("REPLACE")
            user["name"], user["password_hash"] = self.user, password_hash
        for permission in d["permissions"]:
            permission["user"], permission["vhost"] = self.user, self.vhost
        for policy in d["policies"]:
            policy["vhost"] = self.vhost
        return d


@pytest.fixture(scope="module")
def deployment(broker_url):
    d = Deployment()
    try:
        import_definitions(d.renamed(rabbit_password_hash(d.password)))
        # The suite's admin (guest) may work in the vhost too, to make a foreign queue and to clean up.
        rabbitmqctl("set_permissions", "-p", d.vhost, "guest", ".*", ".*", ".*")
        yield d
    finally:
        rabbitmqctl("delete_vhost", d.vhost, check=False)
        rabbitmqctl("delete_user", d.user, check=False)


def test_definitions_import_vhost_user_permissions_policies(deployment):
    d = deployment
    assert d.vhost in rabbitmqctl("list_vhosts", "-q", "--no-table-headers").stdout.split()
    users = dict(line.split("\t", 1) for line in rabbitmqctl("list_users", "-q", "--no-table-headers").stdout.splitlines())
    assert users[d.user].strip() == "[]", f"the berth user must have no tags (no management, no admin): {users[d.user]}"
    permissions = [line.split("\t") for line in rabbitmqctl("list_permissions", "-p", d.vhost, "-q", "--no-table-headers").stdout.splitlines()]
    (mine,) = [p for p in permissions if p[0] == d.user]
    expected = d.definitions["permissions"][0]
    assert mine[1:] == [expected["configure"], expected["write"], expected["read"]]
    # Only its vhost.
    assert rabbitmqctl("list_user_permissions", d.user, "-q", "--no-table-headers").stdout.strip().split("\t")[0] == d.vhost
    policies = {line.split("\t")[1]: line for line in rabbitmqctl("list_policies", "-p", d.vhost, "-q", "--no-table-headers").stdout.splitlines()}
    assert set(policies) == {"berth-rpc-queues", "berth-dead-letter-limits"}, policies
    assert '"delivery-limit":10' in policies["berth-rpc-queues"].replace(" ", "")


# --- a worker as the unit starts it, as the least-privilege user --------------------------------------


@pytest.fixture(scope="module")
def catalog(berth_bin, tmp_path_factory) -> tuple[str, str]:
    root = tmp_path_factory.mktemp("deploy-catalog")
    disk = root.parent / "deploy-root.raw"
    disk.write_bytes(b"\0" * (1 << 20))
    proc = subprocess.run(
        [berth_bin, "images", "create", "--name", "deploy", "--disk-format", "raw", "--file", str(disk),
         "--catalog", f"local:{root}"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return str(root), json.loads(proc.stdout)["id"]


def unit_environment(d: Deployment) -> dict[str, str]:
    """worker.env with the example's password, hosts and vhost replaced by this module's."""
    env = env_file(ENV_FILE.read_text())
    url, count = re.subn(r"berth:CHANGE-ME@[^,/]+", f"{d.user}:{d.password}@{broker_address()}",
                         env["BERTH_TRANSPORT_URL"])
    assert count >= 1 and url.endswith("/berth"), env["BERTH_TRANSPORT_URL"]
    env["BERTH_TRANSPORT_URL"] = url[: -len("berth")] + d.vhost
    env["BERTH_LIBVIRT_URI"] = "test:///default"
    return env


def unit_argv(binary: str, env: dict[str, str]) -> list[str]:
    """ExecStart as systemd runs it for instance INSTANCE: %i, ${VAR} (one argument each), the binary."""
    (exec_start,) = unit_directives(UNIT.read_text())["ExecStart"]
    argv = []
    for word in shlex.split(exec_start.replace("%i", INSTANCE).replace(CONFIG_PATH, str(SAMPLE_CONFIG))):
        argv.append(re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], word))
    assert argv[0] == "/usr/local/bin/berth", argv
    return [binary, *argv[1:]]


class UnitWorker:
    def __init__(self, argv, env, log_path):
        self.argv, self.env, self.log_path = argv, env, log_path
        out = open(log_path, "wb")
        self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        out.close()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def describe(self) -> str:
        return f"unit worker (pid {self.proc.pid}, exit {self.proc.poll()}); log {self.log_path}:\n{tail(self.log_path)}"


@pytest.fixture(scope="module")
def oslo_as_berth_user(deployment):
    transport = oslo_messaging.get_rpc_transport(
        make_conf(CONTROL_EXCHANGE),
        url=f"rabbit://{deployment.user}:{deployment.password}@{broker_address()}/{deployment.vhost}")
    yield transport
    transport.cleanup()


@pytest.fixture(scope="module")
def unit_worker(deployment, oslo_as_berth_user, berth_bin, catalog, tmp_path_factory):
    env = unit_environment(deployment)
    state = tmp_path_factory.mktemp("deploy-state")
    # systemd starts services with a clean environment plus EnvironmentFile=; the unit's StateDirectory is
    # /var/lib/berth, the worker's default. Here: a state directory and catalog of the test's own, and a
    # one-second metrics interval so a sample arrives quickly.
    argv = unit_argv(berth_bin, env) + ["--state-dir", str(state), "--catalog", f"local:{catalog[0]}",
                                        "--metrics-interval", "1"]
    w = UnitWorker(argv, {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env}, state.parent / "unit-worker.log")
    client = rpc_client(oslo_as_berth_user, TOPIC)
    deadline = time.monotonic() + 60
    while True:
        if w.proc.poll() is not None:
            pytest.fail(f"the worker exited during start-up.\n{w.describe()}", pytrace=False)
        try:
            if client.prepare(server=INSTANCE, timeout=2).call(request_context(), "ping")["host"] == INSTANCE:
                break
        except oslo_messaging.MessagingTimeout:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"the worker did not answer ping within 60s.\n{w.describe()}", pytrace=False)
    yield w
    if w.proc.poll() is None:
        w.proc.kill()
        w.proc.wait(timeout=30)


def body(message) -> bytes:
    return message.body if isinstance(message.body, bytes) else str(message.body).encode()


def get_message(channel, queue: str, predicate, timeout: float = 15):
    """The first message on `queue` that satisfies `predicate` (others are acked away), or None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = channel.basic_get(queue)
        if message is None:
            time.sleep(0.1)
            continue
        channel.basic_ack(message.delivery_tag)
        if predicate(message):
            return message
    return None


def test_stock_client_as_berth_user_pings_and_boots(unit_worker, oslo_as_berth_user, catalog):
    client = rpc_client(oslo_as_berth_user, TOPIC)
    assert client.prepare(timeout=15).call(request_context(), "ping")["host"] == INSTANCE
    instance = {
        "uuid": str(uuid.uuid4()), "name": "deploy", "image_id": catalog[1],
        "flavor": {"name": "tiny", "vcpus": 1, "memory_mb": 128, "root_gb": 0}, "metadata": {},
    }
    booted = client.prepare(server=INSTANCE, timeout=60).call(request_context(), "boot_instance", instance=instance)
    assert booted["status"] == "ACTIVE" and booted["host"] == INSTANCE, booted
    got = client.prepare(server=INSTANCE, timeout=15).call(request_context(), "get_instance",
                                                            instance_uuid=instance["uuid"])
    assert got["status"] == "ACTIVE", got
    # A fanout cast goes through <topic>_fanout; the worker is still there to answer afterwards.
    client.prepare(fanout=True).cast(request_context(), "ping")
    deleted = client.prepare(server=INSTANCE, timeout=30).call(request_context(), "delete_instance",
                                                               instance_uuid=instance["uuid"])
    assert deleted["status"] == "DELETED", deleted
    assert client.prepare(server=INSTANCE, timeout=15).call(request_context(), "ping")["host"] == INSTANCE


def test_events_samples_and_dead_letters_reach_their_queues(unit_worker, deployment):
    """As the berth user: read the worker's notification and metering queues, and publish a bad message
    that the worker dead-letters into berth.dead-letter."""
    with deployment.connect() as conn:
        ch = conn.channel()
        event = get_message(ch, "notifications.info", lambda m: b"instance." in body(m))
        assert event is not None, "no instance event on notifications.info"
        sample = get_message(ch, "metering.sample", lambda m: b"berth.metrics" in body(m))
        assert sample is not None, "no berth.metrics sample on metering.sample"

        marker = uuid.uuid4().hex
        ch.basic_publish(amqp.Message(f"not json {marker}", content_type="application/json"),
                         exchange=CONTROL_EXCHANGE, routing_key=TOPIC)
        dead = get_message(ch, "berth.dead-letter", lambda m: marker.encode() in body(m))
        assert dead is not None, f"the bad message was not dead-lettered.\n{unit_worker.describe()}"
        assert dead.headers.get("x-berth-reason"), dead.headers


def test_berth_monitor_as_berth_user(unit_worker, deployment, berth_bin):
    """`berth monitor` declares its own berth-monitor-<hex> queue on metering.sample: within the permissions."""
    proc = subprocess.run([berth_bin, "monitor", "--by", "host", "--json", "--duration", "3"], capture_output=True,
                          text=True, timeout=60, env=dict(os.environ, BERTH_TRANSPORT_URL=deployment.amqp_url))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1])["final"] is True, proc.stdout


def refused(action) -> str | None:
    """Runs `action(channel)` on a fresh connection as the berth user; the broker's refusal, or None."""
    try:
        action()
    except (amqp.exceptions.AccessRefused, amqp.exceptions.NotAllowed) as exc:
        return str(exc)
    return None


FOREIGN = {
    # label: what the berth user tries (ch: its channel)
    "declare exchange evil": lambda ch: ch.exchange_declare("evil", "topic", durable=False, auto_delete=True),
    "declare exchange berthx": lambda ch: ch.exchange_declare("berthx", "topic", durable=False, auto_delete=True),
    "declare exchange compute_fanoutx": lambda ch: ch.exchange_declare("compute_fanoutx", "fanout", auto_delete=True),
    "declare queue evil": lambda ch: ch.queue_declare("evil", auto_delete=True),
    "declare queue computer": lambda ch: ch.queue_declare("computer", auto_delete=True),
    "declare queue notifications.evil": lambda ch: ch.queue_declare("notifications.evil", auto_delete=True),
    # basic.publish has no answer: a synchronous method after it meets the channel the broker closed.
    "publish to amq.topic": lambda ch: (ch.basic_publish(amqp.Message("x"), "amq.topic", "k"), ch.basic_qos(0, 1, False)),
    "publish to amq.direct": lambda ch: (ch.basic_publish(amqp.Message("x"), "amq.direct", "k"),
                                                               ch.basic_qos(0, 1, False)),
    "bind compute to amq.fanout": lambda ch: ch.queue_bind("compute", "amq.fanout", ""),
    "read the foreign queue": lambda ch: ch.basic_get("foreign-secrets"),
    "delete exchange amq.direct": lambda ch: ch.exchange_delete("amq.direct"),
}


def test_berth_user_can_do_nothing_else(unit_worker, deployment):
    d = deployment
    # A queue someone else made in the same vhost.
    with amqp_connect(f"amqp://guest:guest@{broker_address()}/{d.vhost}") as admin:
        admin.channel().queue_declare("foreign-secrets", durable=False, auto_delete=False)
        admin.channel().basic_publish(amqp.Message("secret"), "", "foreign-secrets")

    with pytest.raises((amqp.exceptions.AccessRefused, amqp.exceptions.NotAllowed)) as caught:
        d.connect(vhost="/")
    assert "access to vhost '/' refused" in str(caught.value)

    allowed = []
    for label, attempt in FOREIGN.items():
        with d.connect() as conn:
            channel = conn.channel()
            reason = refused(lambda: attempt(channel))
        if reason is None:
            allowed.append(label)
        else:
            assert "ACCESS_REFUSED" in reason or "access to" in reason, (label, reason)
    assert not allowed, f"the berth user may: {allowed}"


def test_quorum_policy_limits_deliveries_and_dead_letters(deployment):
    """A quorum queue as `--rabbit-quorum-queue` declares `compute.<host>`: the policy gives it a delivery
    limit and routes what exceeds it to berth.dead-letter (the worker's own route), a backstop under
    Berth's --max-attempts (kept below the limit) for requests returned without Berth ever counting them."""
    d = deployment
    limit = d.definitions["policies"][0]["definition"]["delivery-limit"]
    queue = f"{TOPIC}.{unique('qprobe')}"
    marker = uuid.uuid4().hex
    with d.connect() as conn:
        ch = conn.channel()
        # The worker's declarations of the dead-letter route, as the berth user (already there if it ran).
        ch.exchange_declare("berth.dlx", "topic", durable=True, auto_delete=False)
        ch.queue_declare("berth.dead-letter", durable=True, auto_delete=False)
        ch.queue_bind("berth.dead-letter", "berth.dlx", "#")
        ch.queue_declare(queue, durable=True, auto_delete=False, arguments={"x-queue-type": "quorum"})
        ch.basic_publish(amqp.Message(marker, delivery_mode=2), "", queue)

        rows = rabbitmqctl("list_queues", "-p", d.vhost, "name", "type", "policy", "-q", "--no-table-headers").stdout.splitlines()
        table = {row.split("\t")[0]: row.split("\t")[1:] for row in rows}
        assert table[queue] == ["quorum", "berth-rpc-queues"], table
        assert table["berth.dead-letter"][1] == "berth-dead-letter-limits", table

        deliveries = 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            message = ch.basic_get(queue)
            if message is None:
                if deliveries:
                    break
                time.sleep(0.05)
                continue
            deliveries += 1
            ch.basic_reject(message.delivery_tag, requeue=True)
        assert deliveries == limit + 1, f"delivered {deliveries} times with delivery-limit {limit}"
        dead = get_message(ch, "berth.dead-letter", lambda m: body(m) == marker.encode())
        assert dead is not None, "the message past the delivery limit was not dead-lettered"
        reasons = [entry.get("reason") for entry in dead.headers.get("x-death", [])]
        assert "delivery_limit" in reasons, dead.headers
        ch.queue_delete(queue)
    print(f"\n[deploy figures] quorum queue under berth-rpc-queues: delivered {deliveries} times, then "
          f"dead-lettered with x-death reason delivery_limit")


def test_unit_worker_stops_cleanly_and_kept_the_password_secret(unit_worker, deployment):
    d = deployment
    title = process_title(unit_worker.proc.pid)
    assert d.password not in title and d.user not in title, title
    unit_worker.proc.send_signal(signal.SIGTERM)
    assert unit_worker.proc.wait(timeout=60) == 0, unit_worker.describe()
    log = unit_worker.log_text()
    # Everything it did was within its permissions: no refusal was logged (and retried) on the way.
    assert "ACCESS_REFUSED" not in log, unit_worker.describe()
    assert d.password not in log
    assert f"{d.user}:***@{broker_address()}/{d.vhost}" in log, unit_worker.describe()


# --- systemd's notify protocol ---------------------------------------------------------------------------------


# --- the bare-metal drop-in ------------------------------------------------------------------------------------


class ConfinedWorker(WorkerProcess):
    """A worker run as root with only the capabilities `bounding` leaves (setpriv), as a unit's
    CapabilityBoundingSet= confines it."""

    def __init__(self, bounding: str, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.bounding = bounding

    @property
    def argv(self):
        return ["setpriv", "--bounding-set", self.bounding, "--inh-caps", "-all", "--", *super().argv]


@pytest.fixture(scope="module")
def loop_node(berth_bin, tmp_path_factory):
    """A 128 MiB loop device holding content of its own, and a local catalog with an 8 MiB GPT image."""
    for tool in ("losetup", "setpriv", "sfdisk"):
        if shutil.which(tool) is None:
            unavailable(f"{tool} not found (util-linux, fdisk)")
    if os.geteuid() != 0:
        unavailable("loop devices and setpriv need root")
    work = tmp_path_factory.mktemp("loop-node")
    backing = work / "node.img"
    with open(backing, "wb") as f:
        f.write(os.urandom(1 << 20))
        f.truncate(128 << 20)
    attach = subprocess.run(["losetup", "--find", "--show", str(backing)], capture_output=True, text=True)
    if attach.returncode != 0:
        unavailable(f"no loop device here: {attach.stderr.strip()}")
    device = attach.stdout.strip()
    image = work / "image.raw"
    with open(image, "wb") as f:
        f.truncate(8 << 20)
    subprocess.run(["sfdisk", "-q", str(image)], input="label: gpt\nstart=2048, size=8192, type=L\n", text=True,
                   check=True)
    catalog = work / "catalog"
    made = subprocess.run([berth_bin, "images", "create", "--name", "bm", "--disk-format", "raw", "--file", str(image),
                           "--catalog", f"local:{catalog}"], capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    try:
        yield {"device": device, "backing": backing, "catalog": catalog, "image_id": json.loads(made.stdout)["id"],
               "work": work}
    finally:
        subprocess.run(["losetup", "--detach", device], capture_output=True)


def deploy_to_loop(loop_node, berth_bin, broker_url, names, rpc_transport, bounding: str, label: str):
    worker = ConfinedWorker(
        bounding, berth_bin, broker_url, unique(f"bm-{label}"), loop_node["work"], rpc_transport, names.exchange,
        names.topic, ["--catalog", f"local:{loop_node['catalog']}", "--state-dir", str(loop_node["work"] / label),
                      "--metrics-interval", "0", "--node", f"loop={loop_node['device']}"])
    names.hosts.append(worker.host)
    worker.start()
    instance = {"uuid": str(uuid.uuid4()), "name": f"bm-{label}", "image_id": loop_node["image_id"],
                "flavor": {"name": "bm", "vcpus": 1, "memory_mb": 64, "root_gb": 1}, "target": "baremetal",
                "node": "loop"}
    try:
        client = rpc_client(rpc_transport, names.topic).prepare(server=worker.host, timeout=120)
        return client.call(request_context(), "boot_instance", instance=instance)
    finally:
        assert worker.stop() == 0, worker.describe()


def test_a_deploy_without_cap_sys_admin_is_refused_before_writing(loop_node, berth_bin, broker_url, names,
                                                                  rpc_transport):
    """The plain unit's confinement: the deploy is refused, saying what to install, and the disk is untouched."""
    before = hashlib.sha256(loop_node["backing"].read_bytes()).hexdigest()
    with pytest.raises(oslo_messaging.RemoteError) as caught:
        deploy_to_loop(loop_node, berth_bin, broker_url, names, rpc_transport, "-sys_admin", "nocap")
    assert caught.value.exc_type == "DeployFailed", caught.value
    assert "CAP_SYS_ADMIN" in caught.value.value and "baremetal.conf" in caught.value.value, caught.value.value
    assert "nothing was written" in caught.value.value
    assert hashlib.sha256(loop_node["backing"].read_bytes()).hexdigest() == before, "the refused deploy wrote"


def test_a_deploy_with_the_drop_ins_capabilities_succeeds(loop_node, berth_bin, broker_url, names, rpc_transport):
    """Exactly what deploy/berth-worker@.service.d/baremetal.conf grants: CAP_SYS_ADMIN and nothing else."""
    granted = unit_directives(DROP_IN.read_text())["CapabilityBoundingSet"]
    assert granted == ["CAP_SYS_ADMIN"], granted
    result = deploy_to_loop(loop_node, berth_bin, broker_url, names, rpc_transport, "-all,+sys_admin", "cap")
    assert result["status"] == "ACTIVE" and result["node"] == "loop", result
    table = json.loads(subprocess.run(["sfdisk", "--json", str(loop_node["backing"])], capture_output=True,
                                      text=True, check=True).stdout)["partitiontable"]
    assert table["label"] == "gpt" and len(table["partitions"]) == 2, table  # the image's and the config drive


def test_notify_protocol_ready_status_watchdog_stopping_and_sighup(berth_bin, broker_url, names, rpc_transport,
                                                                   tmp_path):
    """What a Type=notify unit with WatchdogSec= sees, read from a NOTIFY_SOCKET of the test's own; SIGHUP (the
    unit's ExecReload=) leaves the worker serving. The log as the journal gets it: `--log-format json` lines
    with their syslog priority in front (stderr is the stream $JOURNAL_STREAM names)."""
    path = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(path))
    listener.settimeout(0.2)
    host = unique("notify")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "2000000"}
    argv = [berth_bin, "worker", "--transport-url", broker_url, "--host", host, "--control-exchange", names.exchange,
            "--topic", names.topic, "--notification-topic", f"{names.topic}-notifications",
            "--metering-topic", f"{names.topic}-metering", "--libvirt-uri", "test:///default",
            "--state-dir", str(tmp_path / "state"), "--catalog", f"local:{tmp_path / 'catalog'}",
            "--metrics-interval", "0", "--log-format", "json"]
    log = open(tmp_path / "worker.log", "wb")
    identity = os.fstat(log.fileno())
    env["JOURNAL_STREAM"] = f"{identity.st_dev}:{identity.st_ino}"
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    messages: list[str] = []

    def receive(until: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                messages.append(listener.recv(4096).decode())
            except socket.timeout:
                continue
            if until in messages[-1]:
                return
        raise AssertionError(f"no {until} within {timeout}s; got {messages}\n{(tmp_path / 'worker.log').read_text()}")

    try:
        receive("READY=1")
        receive("WATCHDOG=1", timeout=5)
        assert any("STATUS=" in m for m in messages), messages
        # Reload: the worker says so and goes on serving.
        proc.send_signal(signal.SIGHUP)
        time.sleep(1)
        assert proc.poll() is None, (tmp_path / "worker.log").read_text()
        receive("WATCHDOG=1", timeout=5)
        context = request_context()
        assert rpc_client(rpc_transport, names.topic).prepare(server=host, timeout=10).call(context, "ping")["host"] == host
        proc.send_signal(signal.SIGTERM)
        receive("STOPPING=1")
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        listener.close()
    order = [next(i for i, m in enumerate(messages) if key in m) for key in ("READY=1", "WATCHDOG=1", "STOPPING=1")]
    assert order == sorted(order), messages
    lines = (tmp_path / "worker.log").read_text().splitlines()
    records = []
    for line in lines:
        match = re.match(r"<([0-7])>(\{.*\})$", line)
        assert match, f"not a journal-prefixed JSON line: {line!r}"
        records.append((int(match.group(1)), json.loads(match.group(2))))
    assert any("reload requested" in r["message"] and priority == 5 for priority, r in records), records
    done = [r for _, r in records if r["message"] == "request done" and r.get("request_id") == context["request_id"]]
    assert done and done[0]["method"] == "ping" and done[0]["level"] == "info", records
