"""Transport security (DESIGN.md §9, docs/security.md): credentials only from the environment or a
private file, never in logs or process titles; `amqps://` with certificate and host-name checks; limits
on the RPC fields a stock oslo client can send.

- Credentials: a RabbitMQ user made for this module, with a password nobody else uses, is given to a
  worker through BERTH_TRANSPORT_URL or --transport-url-file (0600, 0400, a symbolic link as Kubernetes
  mounts secrets). The worker serves calls; the password is in neither its log (at --log-level trace) nor
  /proc/<pid>/cmdline or comm. A file group or others can reach is refused before anything connects.
- TLS: a second RabbitMQ node, started by this module on free loopback ports (a plain listener for the
  oslo client, a TLS listener for the worker), with a server certificate for `localhost` and 127.0.0.1 signed by a
  CA this module makes with openssl. A worker on `amqps://...@localhost?cacert=<CA>` serves a stock oslo
  client and `berth call` over TLS (the broker lists the connection as ssl, with its protocol). A wrong CA, no CA, an
  unreadable CA file and an IP-address host (librabbitmq matches DNS names only) are each refused at start,
  with exit status 1 and an error that says what to change.
"""

from __future__ import annotations

import base64
import os
import pathlib
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse

import oslo_messaging
import pytest

from capture import RABBITMQ_NODE, RABBITMQCTL
from conftest import (
    AMQP_URL, WorkerProcess, make_conf, oslo_transport_url, request_context, rpc_client, tail, unavailable, unique,
)

# --- helpers shared with test_deploy.py -----------------------------------------------------------


def rabbitmqctl(*args: str, node: str = RABBITMQ_NODE, check: bool = True, timeout: float = 60):
    """Runs rabbitmqctl against `node`; fails the test (or skips without the tool) when asked to check."""
    if shutil.which(RABBITMQCTL) is None:
        unavailable(f"{RABBITMQCTL} not found (install rabbitmq-server: scripts/install-deps.sh)")
    proc = subprocess.run([RABBITMQCTL, "-n", node, *args], stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        pytest.fail(f"rabbitmqctl {' '.join(args[:2])} failed ({proc.returncode}): {proc.stderr or proc.stdout}",
                    pytrace=False)
    return proc


def broker_address(url: str = AMQP_URL) -> str:
    """host:port of the suite's broker, for URLs with other credentials or another vhost."""
    parts = urllib.parse.urlparse(url)
    return f"{parts.hostname or '127.0.0.1'}:{parts.port or 5672}"


def process_title(pid: int) -> str:
    """What `ps` shows for a process: its command line and its name."""
    cmdline = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    comm = pathlib.Path(f"/proc/{pid}/comm").read_text(errors="replace")
    return cmdline + "\n" + comm


class CredentialWorker(WorkerProcess):
    """A worker whose transport URL comes from `url_args` (e.g. --transport-url-file PATH, or nothing) and
    `env` instead of --transport-url; with `url_args=None` it keeps --transport-url `url`."""

    def __init__(self, *args, url_args=None, env=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.url_args = url_args
        self.env = env or {}

    @property
    def argv(self):
        argv = super().argv
        if self.url_args is None:
            return argv
        at = argv.index("--transport-url")
        return argv[:at] + list(self.url_args) + argv[at + 2:]

    def start(self, wait: bool = True):
        # The worker inherits the environment at fork; set it only around the start.
        saved = {key: os.environ.get(key) for key in self.env}
        os.environ.update(self.env)
        try:
            super().start(wait=False)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        if wait:
            self.wait_ready()
        return self


@pytest.fixture(scope="module")
def credential_workers(berth_bin, names, rpc_transport, tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("berth-security-logs")
    made: list[CredentialWorker] = []

    def make(*, url_args=None, env=None, url=AMQP_URL, transport=None, extra_args=()) -> CredentialWorker:
        host = unique("sec")
        names.hosts.append(host)
        w = CredentialWorker(berth_bin, url, host, log_dir, transport or rpc_transport, names.exchange, names.topic,
                             ["--metrics-interval", "0", *extra_args], url_args=url_args, env=env)
        made.append(w)
        return w

    yield make
    for w in made:
        w.kill()


# --- credentials ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def secret_user(broker_url):
    """A user of its own with a password that appears nowhere else, so a leak cannot hide behind `guest`."""
    user = unique("berth-sec")
    password = "pw-" + secrets.token_hex(16)
    rabbitmqctl("add_user", user, password)
    try:
        rabbitmqctl("set_permissions", "-p", "/", user, ".*", ".*", ".*")
        yield user, password, f"amqp://{user}:{password}@{broker_address()}/"
    finally:
        rabbitmqctl("delete_user", user, check=False)


def url_file(tmp_path: pathlib.Path, url: str, mode: int) -> pathlib.Path:
    path = tmp_path / "transport-url"
    path.write_text(url + "\n")
    path.chmod(mode)
    return path


@pytest.mark.parametrize("source", ["environment", "file-0600", "file-0400", "file-symlink"])
def test_password_never_in_log_or_process_title(source, credential_workers, secret_user, berth_bin, names,
                                                 rpc_transport, tmp_path):
    user, password, url = secret_user
    if source == "environment":
        w = credential_workers(url_args=[], env={"BERTH_TRANSPORT_URL": url}, extra_args=["--log-level", "trace"])
    else:
        path = url_file(tmp_path, url, 0o400 if source == "file-0400" else 0o600)
        if source == "file-symlink":
            link = tmp_path / "secret-link"
            link.symlink_to(path)
            path = link
        w = credential_workers(url_args=["--transport-url-file", str(path)], extra_args=["--log-level", "trace"])
    w.start()

    client = rpc_client(rpc_transport, names.topic)
    assert client.prepare(server=w.host, timeout=15).call(request_context(), "ping")["host"] == w.host
    assert client.prepare(server=w.host, timeout=15).call(request_context(), "describe_host")
    # The worker really logged in as the module's user (not as guest): the broker lists its connection.
    connections = rabbitmqctl("list_connections", "user", "client_properties", "-q", "--no-table-headers").stdout
    assert any(line.startswith(user) and "berth" in line for line in connections.splitlines()), connections

    title = process_title(w.proc.pid)
    assert password not in title, f"the password is in the worker's process title: {title!r}"
    assert user not in title, f"the user is on the worker's command line: {title!r}"

    assert w.stop() == 0, w.describe()
    log = w.log_text()
    assert password not in log, f"the password is in the worker's log {w.log_path}"
    # What the log does say: the broker, with the password masked.
    assert f"{user}:***@{broker_address()}" in log, w.describe()


def test_cli_password_never_in_output(secret_user, credential_workers, berth_bin, names):
    """`berth call` with the URL from the environment, at trace level: the answer, no password."""
    user, password, url = secret_user
    w = credential_workers().start()
    proc = subprocess.run(
        [berth_bin, "call", "ping", "--server", w.host, "--control-exchange", names.exchange, "--topic", names.topic,
         "--log-level", "trace", "--timeout", "15"],
        capture_output=True, text=True, timeout=60, env=dict(os.environ, BERTH_TRANSPORT_URL=url))
    assert proc.returncode == 0, proc.stderr
    assert w.host in proc.stdout
    assert password not in proc.stdout + proc.stderr


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o620, 0o602])
@pytest.mark.parametrize("command", ["worker", "call"])
def test_transport_url_file_others_can_reach_is_refused(mode, command, secret_user, berth_bin, tmp_path):
    _, password, url = secret_user
    path = url_file(tmp_path, url, mode)
    argv = [berth_bin, command] + (["--libvirt-uri", "test:///default"] if command == "worker" else ["ping"])
    started = time.monotonic()
    proc = subprocess.run(argv + ["--transport-url-file", str(path)], capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - started
    assert proc.returncode == 64, f"exit {proc.returncode}, expected 64 (usage error):\n{proc.stderr}"
    assert f"has mode {mode:04o}" in proc.stderr and f"chmod 600 {path}" in proc.stderr, proc.stderr
    assert password not in proc.stdout + proc.stderr
    assert elapsed < 10, f"refusing took {elapsed:.1f}s: it must not try the broker first"


def test_transport_url_file_must_be_a_file(berth_bin, tmp_path):
    tmp_path.chmod(0o700)
    proc = subprocess.run([berth_bin, "call", "ping", "--transport-url-file", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 64 and "not a regular file" in proc.stderr, proc.stderr
    proc = subprocess.run([berth_bin, "call", "ping", "--transport-url-file", str(tmp_path / "missing")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 64 and "No such file or directory" in proc.stderr, proc.stderr


def test_refused_login_names_the_user_not_the_password(secret_user, credential_workers):
    user, password, _ = secret_user
    wrong = "wrong-" + secrets.token_hex(8)
    w = credential_workers(url_args=[], env={"BERTH_TRANSPORT_URL": f"amqp://{user}:{wrong}@{broker_address()}/"})
    w.start(wait=False)
    assert w.proc.wait(timeout=60) == 1, w.describe()
    log = w.log_text()
    assert f"refused login as '{user}'" in log and "check the user, password and vhost" in log, w.describe()
    assert wrong not in log and password not in log


# --- TLS: a broker node of our own -------------------------------------------------------------------

TLS_NODE_TIMEOUT = float(os.environ.get("BERTH_TEST_TLS_NODE_TIMEOUT", "90"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def openssl(*args: str, cwd: pathlib.Path):
    if shutil.which("openssl") is None:
        unavailable("openssl not found (scripts/install-deps.sh installs it)")
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"openssl {args[0]} failed: {proc.stderr}"


def make_ca(directory: pathlib.Path, name: str):
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "2", "-subj", f"/CN={name}",
            "-keyout", f"{name}.key", "-out", f"{name}.pem", cwd=directory)
    return directory / f"{name}.pem"


def make_server_certificate(directory: pathlib.Path, ca: str):
    """A certificate for `localhost` and 127.0.0.1 (DNS and IP-address subjectAltNames), signed by `ca`."""
    (directory / "server.ext").write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
        "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-sha256", "-subj", "/CN=localhost",
            "-keyout", "server.key", "-out", "server.csr", cwd=directory)
    openssl("x509", "-req", "-in", "server.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-set_serial", "2",
            "-days", "2", "-sha256", "-extfile", "server.ext", "-out", "server.pem", cwd=directory)


class TLSBroker:
    def __init__(self, directory: pathlib.Path):
        self.dir = directory
        self.node = f"{unique('berth-tls')}@localhost"
        self.tls_port, self.plain_port, self.dist_port = free_port(), free_port(), free_port()
        self.ca = directory / "berth-test-ca.pem"
        self.wrong_ca = directory / "other-ca.pem"
        self.proc: subprocess.Popen | None = None
        self.log = directory / "rabbitmq-server.out"
        self.started_in = 0.0

    def url(self, host: str = "localhost", query: str | None = None) -> str:
        """An amqps:// URL for the TLS listener; by default it trusts the CA that signed the broker."""
        query = f"cacert={self.ca}" if query is None else query
        return f"amqps://guest:guest@{host}:{self.tls_port}/" + (f"?{query}" if query else "")

    @property
    def plain_url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.plain_port}/"

    def describe(self) -> str:
        logs = "\n".join(f"--- {p} ---\n{tail(p)}" for p in [self.log, *sorted((self.dir / "log").glob("*.log"))])
        return f"TLS node {self.node} (ports tls {self.tls_port}, amqp {self.plain_port}):\n{logs}"

    def start(self):
        (self.dir / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.plain_port}\n"
            f"listeners.ssl.default = 127.0.0.1:{self.tls_port}\n"
            f"ssl_options.cacertfile = {self.ca}\n"
            f"ssl_options.certfile = {self.dir / 'server.pem'}\n"
            f"ssl_options.keyfile = {self.dir / 'server.key'}\n"
            "ssl_options.verify = verify_none\n"
            "ssl_options.fail_if_no_peer_cert = false\n")
        (self.dir / "enabled_plugins").write_text("[].\n")
        for sub in ("mnesia", "log"):
            (self.dir / sub).mkdir()
        env = dict(
            os.environ,
            ERL_EPMD_ADDRESS="127.0.0.1",
            RABBITMQ_NODENAME=self.node,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.plain_port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_CONFIG_FILE=str(self.dir / "rabbitmq.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.dir / "enabled_plugins"),
            RABBITMQ_MNESIA_BASE=str(self.dir / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.dir / "log"),
            RABBITMQ_PID_FILE=str(self.dir / "rabbitmq.pid"),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
        )
        # The Debian wrapper runs the node as user rabbitmq: it must own what the node reads and writes.
        owner = pwd.getpwnam("rabbitmq")
        for path in [self.dir, *self.dir.rglob("*")]:
            os.chown(path, owner.pw_uid, owner.pw_gid)
        started = time.monotonic()
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(["rabbitmq-server"], env=env, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = started + TLS_NODE_TIMEOUT
        while True:
            ready = rabbitmqctl("await_startup", "--timeout", "5", node=self.node, check=False, timeout=30)
            if ready.returncode == 0:
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the TLS RabbitMQ node did not start.\n{self.describe()}", pytrace=False)
            time.sleep(0.5)
        self.started_in = time.monotonic() - started

    def stop(self):
        if self.proc is None:
            return
        rabbitmqctl("stop", node=self.node, check=False, timeout=60)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the session this fixture started, nothing else
            self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def tls_broker(broker_url):
    if os.geteuid() != 0:
        unavailable("the TLS test starts a RabbitMQ node as user rabbitmq, which needs root")
    if shutil.which("rabbitmq-server") is None:
        unavailable("rabbitmq-server not found (scripts/install-deps.sh)")
    directory = pathlib.Path(tempfile.mkdtemp(prefix="berth-tls-"))
    broker = TLSBroker(directory)
    try:
        make_ca(directory, "berth-test-ca")
        make_ca(directory, "other-ca")
        make_server_certificate(directory, "berth-test-ca")
        # The CAs are public; the keys stay with the owner.
        for pem in (broker.ca, broker.wrong_ca):
            pem.chmod(0o644)
        broker.start()
        print(f"\n[security figures] TLS node {broker.node} ready in {broker.started_in:.1f}s")
        yield broker
    finally:
        broker.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def tls_transport(tls_broker, names):
    """A stock oslo transport to the TLS node's plain listener, on this module's control exchange."""
    transport = oslo_messaging.get_rpc_transport(make_conf(names.exchange),
                                                 url=oslo_transport_url(tls_broker.plain_url))
    yield transport
    transport.cleanup()


def test_worker_serves_over_verified_tls(tls_broker, tls_transport, credential_workers, berth_bin, names):
    started = time.monotonic()
    w = credential_workers(url=tls_broker.url(), transport=tls_transport).start()
    ready_in = time.monotonic() - started

    client = rpc_client(tls_transport, names.topic)
    assert client.prepare(server=w.host, timeout=15).call(request_context(), "ping")["host"] == w.host
    assert client.prepare(timeout=15).call(request_context(), "ping")["host"] == w.host

    # The broker's view: the worker's connection is TLS, with its protocol.
    rows = rabbitmqctl("list_connections", "ssl", "ssl_protocol", "client_properties", "-q", "--no-table-headers",
                       node=tls_broker.node).stdout.splitlines()
    berth_rows = [row for row in rows if "berth" in row and "connection_name" in row]
    assert berth_rows and all(row.split("\t")[0] == "true" for row in berth_rows), rows
    protocol = berth_rows[0].split("\t")[1]
    assert protocol in ("tlsv1.2", "tlsv1.3"), rows

    # The CLI over TLS too, with the URL from the environment.
    cli_started = time.monotonic()
    proc = subprocess.run(
        [berth_bin, "call", "ping", "--server", w.host, "--control-exchange", names.exchange, "--topic", names.topic,
         "--timeout", "15"],
        capture_output=True, text=True, timeout=60, env=dict(os.environ, BERTH_TRANSPORT_URL=tls_broker.url()))
    cli_seconds = time.monotonic() - cli_started
    assert proc.returncode == 0 and w.host in proc.stdout, proc.stderr
    assert w.stop() == 0, w.describe()
    print(f"\n[security figures] worker on amqps:// answered its first ping {ready_in:.2f}s after start; "
          f"protocol {protocol}; `berth call ping` over TLS took {cli_seconds:.2f}s")


def test_oslo_tls_options_reach_the_tls_listener(tls_broker, tls_transport, credential_workers, berth_bin, names,
                                                tmp_path):
    """TLS the oslo way: a rabbit:// URL with [oslo_messaging_rabbit] ssl and ssl_ca_file from a configuration
    file (the worker), and ?ssl=1&ssl_ca_file= in the URL (the CLI)."""
    config = tmp_path / "tls.conf"
    config.write_text(f"[oslo_messaging_rabbit]\nssl = true\nssl_ca_file = {tls_broker.ca}\n")
    url = f"rabbit://guest:guest@localhost:{tls_broker.tls_port}/"
    w = credential_workers(url=url, transport=tls_transport, extra_args=["--config-file", str(config)]).start()
    client = rpc_client(tls_transport, names.topic)
    assert client.prepare(server=w.host, timeout=15).call(request_context(), "ping")["host"] == w.host
    rows = rabbitmqctl("list_connections", "ssl", "client_properties", "-q", "--no-table-headers",
                       node=tls_broker.node).stdout.splitlines()
    assert any(row.startswith("true") and w.host in row for row in rows), rows

    proc = subprocess.run(
        [berth_bin, "call", "ping", "--server", w.host, "--control-exchange", names.exchange, "--topic", names.topic,
         "--timeout", "15"],
        capture_output=True, text=True, timeout=60,
        env=dict(os.environ, BERTH_TRANSPORT_URL=f"{url}?ssl=1&ssl_ca_file={tls_broker.ca}"))
    assert proc.returncode == 0 and w.host in proc.stdout, proc.stderr
    assert w.stop() == 0, w.describe()


TLS_REFUSALS = {
    # label: (URL host, query given the broker, words the error must contain)
    "wrong-ca": ("localhost", lambda b: f"cacert={b.wrong_ca}", ["is not signed by a CA in", "other-ca.pem",
                                                                   "point cacert= at the CA"]),
    "no-ca": ("localhost", lambda b: "", ["names no CA bundle", "add cacert="]),
    "unreadable-ca": ("localhost", lambda b: f"cacert={b.dir}/missing.pem", ["cannot load the CA bundle",
                                                                             "missing.pem"]),
    # The certificate lists IP:127.0.0.1, but librabbitmq 0.11 matches the URL host against DNS names only:
    # if a later librabbitmq accepts this, the error text and docs/security.md must change with it.
    "ip-address-host": ("127.0.0.1", lambda b: f"cacert={b.ca}", ["is not for host '127.0.0.1'",
                                                                   "DNS subjectAltName"]),
}


@pytest.mark.parametrize("label", list(TLS_REFUSALS))
def test_tls_refusals_stop_the_worker_and_say_why(label, tls_broker, tls_transport, credential_workers):
    host, query, words = TLS_REFUSALS[label]
    w = credential_workers(url=tls_broker.url(host=host, query=query(tls_broker)), transport=tls_transport)
    started = time.monotonic()
    w.start(wait=False)
    try:
        rc = w.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        w.kill()
        pytest.fail(f"the worker kept running with {label}: a retry cannot cure it.\n{w.describe()}", pytrace=False)
    elapsed = time.monotonic() - started
    assert rc == 1, w.describe()
    log = w.log_text()
    for word in words:
        assert word in log, f"{word!r} missing from the error:\n{w.describe()}"
    assert "cannot start" in log
    line = next(line for line in log.splitlines() if "cannot start" in line)
    print(f"\n[security figures] {label}: exit {rc} after {elapsed:.2f}s: {line}")


# --- input limits over the wire --------------------------------------------------------------------

GOOD_INSTANCE = {
    "uuid": "6f1e8a34-1c8e-4a8e-9a0e-0c6a5f2b9d11", "name": "limits", "image_id": "img-limits",
    "flavor": {"name": "tiny", "vcpus": 1, "memory_mb": 128, "root_gb": 0}, "metadata": {},
}

FIELD_LIMITS = {
    # label: (changes to the instance, words of the failure)
    "uuid-not-canonical": ({"uuid": GOOD_INSTANCE["uuid"].upper()}, ["instance.uuid"]),
    "name-256": ({"name": "n" * 256}, ["instance.name"]),
    "name-control-char": ({"name": "a\x07b"}, ["instance.name"]),
    "image-id-too-long": ({"image_id": "i" * 300}, ["instance.image_id"]),
    "vcpus-0": ({"flavor": {**GOOD_INSTANCE["flavor"], "vcpus": 0}}, ["instance.flavor.vcpus"]),
    "metadata-129-keys": ({"metadata": {f"k{i}": "v" for i in range(129)}}, ["metadata"]),
    "metadata-key-256": ({"metadata": {"k" * 256: "v"}}, ["metadata"]),
    "metadata-value-64KiB": ({"metadata": {"note": "v" * 65536}}, ["metadata"]),
    "user-data-over-64KiB": ({"user_data": base64.b64encode(b"\0" * 65537).decode()}, ["instance.user_data"]),
    "unknown-field": ({"extra_field": 1}, ["extra_field"]),
}


@pytest.fixture(scope="module")
def limits_worker(credential_workers):
    w = credential_workers().start()
    yield w
    assert w.stop() == 0, w.describe()


@pytest.mark.parametrize("label", list(FIELD_LIMITS))
def test_boot_field_limits_over_the_wire(label, limits_worker, rpc_transport, names):
    """What test_bad_input.py checks for whole messages, per field of boot_instance, from a stock client:
    refused with the field's path, before anything is made."""
    changes, words = FIELD_LIMITS[label]
    client = rpc_client(rpc_transport, names.topic).prepare(server=limits_worker.host, timeout=30)
    with pytest.raises(oslo_messaging.RemoteError) as caught:
        client.call(request_context(), "boot_instance", instance={**GOOD_INSTANCE, **changes})
    assert caught.value.exc_type in ("InvalidRequest", "InvalidMetadata"), caught.value
    for word in words:
        assert word in caught.value.value, caught.value.value


@pytest.mark.parametrize("method,args", [
    ("get_instance", {"instance_uuid": "not-a-uuid"}),
    ("delete_instance", {"instance_uuid": "x" * 100}),
])
def test_instance_uuid_limits_over_the_wire(method, args, limits_worker, rpc_transport, names):
    client = rpc_client(rpc_transport, names.topic).prepare(server=limits_worker.host, timeout=30)
    with pytest.raises(oslo_messaging.RemoteError) as caught:
        client.call(request_context(), method, **args)
    assert caught.value.exc_type == "InvalidRequest" and "instance_uuid" in caught.value.value, caught.value
