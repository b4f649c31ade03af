"""The `berth` command line as openstack and virsh users expect it (issue 22): names wherever an id is
taken, `-f/--format table|json|yaml|value` and `-c/--column`, a table on a terminal and JSON lines in a pipe,
one error style without a usage dump after a runtime error, documented exit statuses, a timeout that
holds when the broker is down, `boot --wait`/`--no-wait` with progress, help wrapped by the terminal,
and shell completion that can be found.

Catalog commands run on a local catalog of this module's own; `boot` against a worker on the
in-process libvirt test driver.
"""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import time

import oslo_messaging
import pytest
import yaml

from conftest import request_context, rpc_client

ERROR_LINE = re.compile(r"^berth: error: (\w+): (.+)$")


def berth(berth_bin, *args, env=None, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run([berth_bin, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def explain(proc) -> str:
    return f"exit {proc.returncode}\nstdout: {proc.stdout[-2000:]!r}\nstderr: {proc.stderr[-2000:]!r}"


def one_error(proc, class_name: str, status: int) -> str:
    """The runtime error style: exactly one line on stderr, no usage, and the exit status."""
    assert proc.returncode == status, explain(proc)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, explain(proc)
    match = ERROR_LINE.match(lines[0])
    assert match and match.group(1) == class_name, explain(proc)
    assert "Usage:" not in proc.stderr and "USAGE:" not in proc.stderr
    return match.group(2)


class Catalog:
    def __init__(self, berth_bin, root):
        self.berth_bin, self.root = berth_bin, root

    def run(self, *args, **kwargs) -> subprocess.CompletedProcess:
        return berth(self.berth_bin, *args, "--catalog", f"local:{self.root}", **kwargs)

    def json(self, *args) -> dict:
        proc = self.run(*args)
        assert proc.returncode == 0, explain(proc)
        return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def catalog(berth_bin, tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-catalog")
    disk = root.parent / "cli-disk.raw"
    disk.write_bytes(b"\0" * 65536)
    cat = Catalog(berth_bin, root)
    made = lambda name: cat.json("images", "create", "--name", name, "--disk-format", "raw", "--file", str(disk))
    cat.unique = made("cli-unique")
    cat.twins = [made("cli-twin"), made("cli-twin")]
    return cat


# --- names wherever an id is taken ---------------------------------------------------------------


def test_images_show_takes_a_unique_name(catalog):
    assert catalog.json("images", "show", "cli-unique")["id"] == catalog.unique["id"]
    assert catalog.json("images", "show", catalog.unique["id"])["name"] == "cli-unique"


def test_an_ambiguous_name_is_an_error_listing_the_matches(catalog):
    message = one_error(catalog.run("images", "show", "cli-twin"), "AmbiguousName", 1)
    for twin in catalog.twins:
        assert twin["id"] in message, message


def test_an_unknown_name_says_so(catalog):
    message = one_error(catalog.run("images", "update", "no-such-image", "--property", "a=b"), "ImageNotFound", 1)
    assert '"no-such-image"' in message and "berth images list" in message, message


# --- formats and columns ---------------------------------------------------------------------------


def test_list_formats_and_columns(catalog):
    # JSON lines when the output is a pipe: what scripts (and the rest of these tests) parse.
    lines = catalog.run("images", "list").stdout.splitlines()
    assert {json.loads(line)["id"] for line in lines} == {catalog.unique["id"], *(t["id"] for t in catalog.twins)}

    table = catalog.run("images", "list", "-f", "table")
    assert table.returncode == 0, explain(table)
    rows = table.stdout.splitlines()
    assert rows[0].startswith("+-") and rows[-1].startswith("+-"), table.stdout
    assert [cell.strip() for cell in rows[1].strip("|").split("|")] == ["id", "name", "status", "disk_format", "size"]
    assert any(catalog.unique["id"] in row and "cli-unique" in row for row in rows), table.stdout

    values = catalog.run("images", "list", "--format", "value", "-c", "name", "--column", "id").stdout.splitlines()
    assert f"cli-unique {catalog.unique['id']}" in values, values

    picked = catalog.run("images", "list", "-f", "json", "-c", "id").stdout.splitlines()
    assert all(set(json.loads(line)) == {"id"} for line in picked), picked


def test_show_formats_and_columns(catalog):
    table = catalog.run("images", "show", "cli-unique", "-f", "table").stdout.splitlines()
    assert [cell.strip() for cell in table[1].strip("|").split("|")] == ["Field", "Value"], table
    assert any(re.fullmatch(rf"\| id\s+\| {catalog.unique['id']}\s+\|", row) for row in table), table
    assert catalog.run("images", "show", "cli-unique", "-f", "value", "-c", "status").stdout == "active\n"


# Quotes, a colon and a comment, a list item of booleans, a trailing space, unicode: in a name. Line breaks
# and other control characters, which names may not hold, in a property (Glance's names may hold them).
HOSTILE_NAME = '- say "hi": it\'s #1, yes: no été 日本語 😀 '
HOSTILE_VALUE = 'two\nlines\r\n\ttab \x07bell \x1b[31mred ~ null'


def test_yaml_reads_back_as_the_json(berth_bin, tmp_path):
    root = tmp_path / "catalog"
    root.mkdir()
    (tmp_path / "disk.raw").write_bytes(b"\0" * 4096)
    cat = Catalog(berth_bin, root)
    assert yaml.safe_load(cat.run("images", "list", "-f", "yaml").stdout) == []
    image = cat.json("images", "create", f"--name={HOSTILE_NAME}", "--disk-format", "raw",
                     "--file", str(tmp_path / "disk.raw"))
    cat.json("images", "create", "--name", "null", "--disk-format", "raw", "--file", str(tmp_path / "disk.raw"))
    cat.json("images", "update", image["id"], "--property", "os_version=12.0", "--property", "hw:note=yes",
             "--property", f"hostile={HOSTILE_VALUE}")

    def both(*args):
        as_yaml, as_json = cat.run(*args, "-f", "yaml"), cat.run(*args, "-f", "json")
        assert as_yaml.returncode == 0 and as_json.returncode == 0, (explain(as_yaml), explain(as_json))
        assert all(c == "\n" or c.isprintable() for c in as_yaml.stdout), as_yaml.stdout
        return yaml.safe_load(as_yaml.stdout), [json.loads(line) for line in as_json.stdout.splitlines()]

    records, lines = both("images", "list")
    assert records == lines and {r["name"] for r in records} == {HOSTILE_NAME, "null"}, records
    record, [line] = both("images", "show", image["id"])
    assert record == line and record["name"] == HOSTILE_NAME, record
    assert record["properties"] == {"os_version": "12.0", "hw:note": "yes", "hostile": HOSTILE_VALUE}, record
    picked, picked_lines = both("images", "list", "-c", "name", "-c", "size")
    assert picked == picked_lines and all(list(r) == ["name", "size"] for r in picked), picked


def test_monitor_yaml_is_its_json_as_documents(berth_cli):
    args = ["monitor", "--transport-url", berth_cli.url, "--control-exchange", berth_cli.names.exchange,
            "--duration", "1"]
    as_yaml, as_json = berth_cli.run(*args, "-f", "yaml"), berth_cli.run(*args, "-f", "json")
    assert as_yaml.returncode == 0 and as_yaml.stdout.startswith("---\n"), explain(as_yaml)
    assert list(yaml.safe_load_all(as_yaml.stdout)) == [json.loads(as_json.stdout)], (as_yaml.stdout, as_json.stdout)

def test_an_unknown_column_is_a_usage_error_naming_the_fields(catalog):
    message = one_error(catalog.run("images", "list", "-c", "colour"), "InvalidArgument", 64)
    assert "disk_format" in message, message


def test_a_table_by_default_on_a_terminal(catalog):
    controller, terminal = pty.openpty()
    try:
        proc = subprocess.run([catalog.berth_bin, "images", "list", "--catalog", f"local:{catalog.root}"],
                              stdout=terminal, stderr=subprocess.PIPE, timeout=60)
        os.close(terminal)
        terminal = None
        out = b""
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the terminal's other end is closed and drained
                break
            if not chunk:
                break
            out += chunk
    finally:
        if terminal is not None:
            os.close(terminal)
        os.close(controller)
    assert proc.returncode == 0, proc.stderr
    assert out.startswith(b"+-") and b"cli-unique" in out, out[:500]


# --- one error style, exit statuses ---------------------------------------------------------------


def test_catalog_errors_name_their_class_not_build_failed(berth_bin, tmp_path):
    proc = berth(berth_bin, "images", "list", "--catalog", f"local:{tmp_path / 'missing'}")
    message = one_error(proc, "CatalogUnavailable", 1)
    assert "BuildFailed" not in proc.stderr and "missing" in message, explain(proc)


def test_a_runtime_validation_error_has_no_usage_dump(berth_bin):
    one_error(berth(berth_bin, "call", "ping", "--args", "[1]", "--transport-url", "rabbit://127.0.0.1:1/"),
              "InvalidArgument", 64)


def test_a_usage_error_shows_the_usage_and_exits_64(berth_bin):
    proc = berth(berth_bin, "images", "show")
    assert proc.returncode == 64 and "Usage: berth images show" in proc.stderr, explain(proc)
    assert proc.stderr.startswith("berth: error: InvalidArgument: Missing expected argument '<image>'\n"), explain(proc)


def test_exit_statuses_are_in_the_help(berth_bin):
    proc = berth(berth_bin, "--help", env={"COLUMNS": "300"})
    assert proc.returncode == 0, explain(proc)
    assert ("Exit status: 0 success, 1 the operation failed, 2 timeout, 3 broker unreachable or request not "
            "delivered, 64 usage error.") in proc.stdout, proc.stdout



@pytest.mark.parametrize("args", [
    ["call", "--version", "2"],                  # no method: ArgumentParser's version flag won, exit 0
    ["call", "ping", "--version", "2"],
    ["images", "list", "--version"],
    ["--version", "images", "list"],
])
def test_version_anywhere_but_alone_is_a_usage_error_naming_api_version(berth_bin, args):
    # Nothing listens on port 1: had anything been sent, the exit status would be 3, not 64.
    proc = berth(berth_bin, *args, env={"BERTH_TRANSPORT_URL": "rabbit://127.0.0.1:1/"})
    message = one_error(proc, "InvalidArgument", 64)
    assert "--api-version" in message and "berth --version" in message and proc.stdout == "", explain(proc)


def test_berth_version_alone_prints_the_version(berth_bin):
    proc = berth(berth_bin, "--version")
    assert proc.returncode == 0 and re.fullmatch(r"\S+\n", proc.stdout), explain(proc)


@pytest.mark.parametrize("command", [["call", "ping"], ["notify", "test.event"], ["hosts"]])
def test_a_stopped_broker_fails_within_the_timeout_in_one_line(berth_bin, command):
    # Nothing listens on port 1: what a client sees of a stopped broker (connection refused, retried).
    started = time.monotonic()
    proc = berth(berth_bin, *command, "--timeout", "3", "--transport-url", "rabbit://guest:guest@127.0.0.1:1/")
    elapsed = time.monotonic() - started
    message = one_error(proc, "BrokerUnreachable", 3)
    assert 2.5 <= elapsed < 6, f"took {elapsed:.1f}s\n{explain(proc)}"
    assert "127.0.0.1:1" in message and "guest:guest" not in message, message



def test_hosts_waiting_in_vain_is_one_timeout_line(berth_cli):
    # This module's own control exchange: no worker reports there.
    proc = berth_cli.run("hosts", "--transport-url", berth_cli.url, "--control-exchange", berth_cli.names.exchange,
                         "--wait", "1", "--timeout", "1", "--format", "json")
    assert "only 0 of 1 workers up" in one_error(proc, "Timeout", 2), explain(proc)
    assert json.loads(proc.stdout)["hosts"] == [], explain(proc)

# --- help, completion ------------------------------------------------------------------------------


def test_help_is_wrapped_by_the_terminal_not_in_the_source(berth_bin):
    wide = berth(berth_bin, "worker", "--help", env={"COLUMNS": "300"}).stdout
    assert ("Consumes <topic> (shared by the pool), <topic>.<host> and the fanout queue on the control exchange, "
            "declared exactly as oslo.messaging declares them") in wide, wide[:800]


def test_completion_is_a_documented_command(berth_bin):
    assert re.search(r"^\s+completion\s+Print a shell completion script", berth(berth_bin, "--help").stdout, re.M)
    for shell, marker in (("bash", "-F _berth berth"), ("zsh", "#compdef berth"), ("fish", "complete -c 'berth'")):
        proc = berth(berth_bin, "completion", shell)
        assert proc.returncode == 0 and marker in proc.stdout, (shell, explain(proc))


# --- boot --wait / --no-wait ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def boot_worker(worker_factory, catalog, tmp_path_factory):
    w = worker_factory(extra_args=["--catalog", f"local:{catalog.root}",
                                   "--state-dir", str(tmp_path_factory.mktemp("cli-state"))])
    w.start()
    yield w
    assert w.stop() == 0, w.describe()


def boot_args(berth_cli, *extra):
    return ["boot", "--transport-url", berth_cli.url, "--control-exchange", berth_cli.names.exchange,
            "--topic", berth_cli.names.topic, *extra]


def test_boot_waits_with_progress_and_prints_the_instance(berth_cli, boot_worker, catalog):
    image = catalog.unique["id"]
    proc = berth_cli.run(*boot_args(berth_cli, "--image", image, "--server", boot_worker.host))
    assert proc.returncode == 0, explain(proc)
    instance = json.loads(proc.stdout)
    assert instance["status"] == "ACTIVE" and instance["image_id"] == image, instance
    lines = proc.stderr.splitlines()
    assert re.fullmatch(rf"berth: booting instance {instance['uuid']} from image {image} on worker "
                        rf"{re.escape(boot_worker.host)}; waiting up to 300 s for ACTIVE", lines[0]), explain(proc)
    assert re.fullmatch(rf"berth: instance {instance['uuid']} is ACTIVE on {re.escape(boot_worker.host)} "
                        r"after [0-9.]+ s", lines[-1]), explain(proc)


def test_boot_no_wait_returns_at_once(berth_cli, boot_worker, catalog, rpc_transport):
    proc = berth_cli.run(*boot_args(berth_cli, "--image", catalog.unique["id"], "--server", boot_worker.host,
                                    "--no-wait", "-f", "value", "-c", "uuid", "-c", "status"))
    assert proc.returncode == 0, explain(proc)
    uuid_, status = proc.stdout.split()
    assert status == "BUILD", explain(proc)
    client = rpc_client(rpc_transport, boot_worker.topic).prepare(server=boot_worker.host, timeout=10)
    deadline = time.monotonic() + 60
    while True:
        try:
            assert client.call(request_context(), "get_instance", instance_uuid=uuid_)["status"] == "ACTIVE"
            break
        except oslo_messaging.RemoteError as error:
            assert error.exc_type == "InstanceNotFound" and time.monotonic() < deadline, error
            time.sleep(0.2)


def test_boot_of_a_missing_image_is_one_error_line(berth_cli, boot_worker):
    proc = berth_cli.run(*boot_args(berth_cli, "--image", "00000000-0000-4000-8000-000000000000",
                                    "--server", boot_worker.host))
    assert proc.returncode == 1, explain(proc)
    *progress, last = proc.stderr.splitlines()
    assert [line.startswith("berth: booting instance") for line in progress] == [True], explain(proc)
    assert ERROR_LINE.match(last) and ERROR_LINE.match(last).group(1) == "ImageNotFound", explain(proc)
