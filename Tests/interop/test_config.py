"""`berth worker` configured the OpenStack way (`--config-file`, `--config-dir`; docs/operations.md):

- a worker started from a configuration file alone, with no other flag, serves a stock oslo.messaging client;
- oslo.config itself, given the same file and the same option types, reads the same values Berth prints with
  `--print-config --print-format json`;
- precedence (command line > BERTH_* environment > files > default) and the sources `--print-config` names;
- unknown options and bad values are refused with the file and line.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess

import pytest
from oslo_config import cfg

from conftest import REPO_ROOT, WorkerProcess, oslo_transport_url, request_context, rpc_client


def print_config(berth_bin: str, *args: str, env: dict | None = None) -> dict:
    proc = subprocess.run([berth_bin, "worker", *args, "--print-config", "--print-format", "json"],
                          capture_output=True, text=True, timeout=30, env=clean_env(env))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def clean_env(extra: dict | None = None) -> dict:
    """The test's environment without any BERTH_* option variable, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BERTH_")}
    env.update(extra or {})
    return env


class ConfigFileWorker(WorkerProcess):
    """A worker whose only flag is --config-file."""

    def __init__(self, *args, config: pathlib.Path, **kwargs):
        super().__init__(*args, **kwargs)
        self.config = config

    @property
    def argv(self):
        return [self.binary, "worker", "--config-file", str(self.config)]


def test_a_worker_from_a_config_file_alone_serves_a_stock_oslo_client(berth_bin, broker_url, names, rpc_transport,
                                                                        tmp_path):
    host = "itest-conf-only"
    names.hosts.append(host)
    config = tmp_path / "berth.conf"
    config.write_text(f"""
# As deploy/berth.conf.sample lays it out, with this module's broker names.
[DEFAULT]
transport_url = {oslo_transport_url(broker_url)}
host = {host}
control_exchange = {names.exchange}

[oslo_messaging_notifications]
topics = {names.topic}-notifications

[libvirt]
connection_uri = test:///default

[berth]
topic = {names.topic}
metering_topic = {names.topic}-metering
state_dir = {tmp_path / "state"}
catalog = local:{tmp_path / "catalog"}
debug_rpc = yes
""")
    config.chmod(0o600)
    shown = print_config(berth_bin, "--config-file", str(config))
    assert shown["DEFAULT"]["host"] == {"value": host, "source": f"{config}:5"}
    assert shown["berth"]["debug_rpc"]["value"] is True
    assert ":***@" in shown["DEFAULT"]["transport_url"]["value"] or "@" not in broker_url

    worker = ConfigFileWorker(berth_bin, broker_url, host, tmp_path, rpc_transport, names.exchange, names.topic,
                              config=config)
    worker.start()  # waits for a stock oslo client's ping to this host
    try:
        client = rpc_client(rpc_transport, names.topic)
        assert client.prepare(timeout=10).call(request_context(), "ping")["host"] == host
        # The debug namespace is served because the file says debug_rpc = yes.
        debug = rpc_client(rpc_transport, names.topic, namespace="berth.debug")
        debug.prepare(server=host, timeout=10).call(request_context(), "sleep", seconds=0)
    finally:
        assert worker.stop() == 0, worker.describe()


# Each option of the file below, registered with oslo.config with the type Berth gives it.
OSLO_OPTIONS = {
    "DEFAULT": [cfg.StrOpt("transport_url"), cfg.StrOpt("host"), cfg.StrOpt("control_exchange"),
                cfg.BoolOpt("force_config_drive")],
    "oslo_messaging_rabbit": [cfg.BoolOpt("amqp_durable_queues"), cfg.BoolOpt("rabbit_quorum_queue"),
                              cfg.BoolOpt("rabbit_transient_quorum_queue"), cfg.IntOpt("rabbit_transient_queues_ttl"),
                              cfg.IntOpt("rabbit_quorum_delivery_limit"), cfg.IntOpt("heartbeat_timeout_threshold"),
                              cfg.BoolOpt("ssl"), cfg.StrOpt("ssl_ca_file"), cfg.StrOpt("ssl_cert_file"),
                              cfg.StrOpt("ssl_key_file")],
    "oslo_messaging_notifications": [cfg.ListOpt("topics")],
    "libvirt": [cfg.StrOpt("virt_type"), cfg.StrOpt("connection_uri")],
    "berth": [cfg.StrOpt("topic"), cfg.StrOpt("log_level"), cfg.IntOpt("concurrency"), cfg.FloatOpt("grace_period"),
              cfg.BoolOpt("debug_rpc"), cfg.StrOpt("state_dir"), cfg.FloatOpt("metrics_interval")],
    "glance": [cfg.StrOpt("token_file")],
    "baremetal": [cfg.ListOpt("nodes")],
}

SAME_FILE = """\
# Spellings oslo.config accepts: comments with # and ;, 'key: value', quotes, continuation lines,
# booleans in any case, lists split on commas.
[DEFAULT]
transport_url = rabbit://berth:pa$$word@rabbit-1:5672,berth:pa$$word@rabbit-2:5672/berth
host: compute-7
control_exchange = 'nova'
force_config_drive = On

[oslo_messaging_rabbit]
; durable and quorum
amqp_durable_queues = YES
rabbit_quorum_queue = true
rabbit_transient_quorum_queue = 0
rabbit_transient_queues_ttl = 600
rabbit_quorum_delivery_limit = 10
heartbeat_timeout_threshold = 30
ssl = off
ssl_ca_file = /etc/berth/ca.pem
ssl_cert_file = /etc/berth/client.pem
ssl_key_file = /etc/berth/client.key

[oslo_messaging_notifications]
topics = notifications,
  audit , ops

[LibVirt]
virt_type = kvm
connection_uri = "qemu:///system"

[berth]
topic = compute
log_level = debug
concurrency = 12
grace_period = 2.5
debug_rpc = no
state_dir = /var/lib/berth/compute-7
metrics_interval = 0

[glance]
token_file = /etc/berth/glance-token

[baremetal]
nodes = node1=/dev/sdb, node2=/dev/sdc:4096
"""


def mask(url: str) -> str:
    return re.sub(r"(?<=[/,])([^/,@:]+):[^@,/]*@", r"\1:***@", url)


def test_oslo_config_reads_the_file_as_berth_does(berth_bin, tmp_path):
    path = tmp_path / "same.conf"
    path.write_text(SAME_FILE)
    path.chmod(0o640)
    conf = cfg.ConfigOpts()
    for group, opts in OSLO_OPTIONS.items():
        conf.register_opts(opts, group=None if group == "DEFAULT" else group)
    conf(["--config-file", str(path)], project="berth", default_config_files=[], default_config_dirs=[])

    berth = print_config(berth_bin, "--config-file", str(path))
    compared = 0
    for group, opts in OSLO_OPTIONS.items():
        for opt in opts:
            oslo_value = conf[opt.dest] if group == "DEFAULT" else conf[group][opt.dest]
            if opt.dest == "transport_url":
                oslo_value = mask(oslo_value)
            entry = berth[group][opt.dest]
            assert entry["value"] == oslo_value, (group, opt.dest, entry, oslo_value)
            assert entry["source"].startswith(f"{path}:"), entry
            compared += 1
    assert compared == sum(len(opts) for opts in OSLO_OPTIONS.values())
    # The $$ escape is oslo's literal dollar: both read one '$'.
    assert "pa$word" in conf.transport_url


def test_precedence_and_sources(berth_bin, tmp_path):
    first, second = tmp_path / "a.conf", tmp_path / "b.conf"
    first.write_text("[berth]\nconcurrency = 2\nmax_attempts = 5\nmax_handoffs = 3\n")
    conf_dir = tmp_path / "berth.conf.d"
    conf_dir.mkdir()
    (conf_dir / "20-late.conf").write_text("[berth]\nmax_handoffs = 9\n")
    (conf_dir / "10-early.conf").write_text("[berth]\nmax_handoffs = 4\ngrace_period = 7\n")
    (conf_dir / "ignored.txt").write_text("[nonsense]\n")
    second.write_text("[berth]\nmax_attempts = 6\n")
    shown = print_config(berth_bin, "--config-file", str(first), "--config-file", str(second),
                         "--config-dir", str(conf_dir), "--concurrency", "4",
                         env={"BERTH_CONCURRENCY": "3", "BERTH_GRACE_PERIOD": "8"})["berth"]
    assert shown["concurrency"] == {"value": 4, "source": "--concurrency"}
    assert shown["grace_period"] == {"value": 8, "source": "environment BERTH_GRACE_PERIOD"}
    assert shown["max_attempts"] == {"value": 6, "source": f"{second}:2"}
    assert shown["max_handoffs"] == {"value": 9, "source": f"{conf_dir}/20-late.conf:2"}
    assert shown["handler_timeout"] == {"value": 3600, "source": "default"}


@pytest.mark.parametrize("text,message", [
    ("[berth]\nconcurrency = 4\nconcurency = 5\n", ":3: unknown option 'concurency' in [berth]"),
    ("[nova]\nhost = x\n", ":1: unknown section [nova]"),
    ("[berth]\n\nmax_attempts = lots\n", ":3: [berth] max_attempts = 'lots': expected a whole number from 1 to 100"),
    ("[DEFAULT]\ntransport_url = rabbit://u:$secret@h/\n", ":2: [DEFAULT] transport_url = (not shown)"),
])
def test_bad_files_are_refused_with_file_and_line(berth_bin, tmp_path, text, message):
    path = tmp_path / "bad.conf"
    path.write_text(text)
    path.chmod(0o600)
    proc = subprocess.run([berth_bin, "worker", "--config-file", str(path)], capture_output=True, text=True,
                          timeout=30, env=clean_env())
    assert proc.returncode != 0 and f"{path}{message}" in proc.stderr, proc.stderr
    assert "secret" not in proc.stderr


def test_a_file_with_the_broker_password_must_not_be_world_readable(berth_bin, tmp_path):
    path = tmp_path / "open.conf"
    path.write_text("[DEFAULT]\ntransport_url = rabbit://berth:hunter2@h/\n")
    path.chmod(0o644)
    proc = subprocess.run([berth_bin, "worker", "--config-file", str(path), "--print-config"], capture_output=True,
                          text=True, timeout=30, env=clean_env())
    assert proc.returncode != 0 and "others can read it; chmod o-rwx" in proc.stderr, proc.stderr
    assert "hunter2" not in proc.stderr + proc.stdout
    path.chmod(0o640)
    assert print_config(berth_bin, "--config-file", str(path))["DEFAULT"]["transport_url"]["value"] == \
        "rabbit://berth:***@h/"


def test_the_sample_file_is_what_berth_generates(berth_bin):
    """deploy/berth.conf.sample documents every option; regenerate it with the command below when one changes."""
    proc = subprocess.run([berth_bin, "worker", "--print-config", "--print-format", "sample"], capture_output=True,
                          text=True, timeout=30, env=clean_env())
    assert proc.returncode == 0, proc.stderr
    sample = REPO_ROOT / "deploy" / "berth.conf.sample"
    assert sample.read_text() == proc.stdout, (
        "deploy/berth.conf.sample is stale: berth worker --print-config --print-format sample > deploy/berth.conf.sample")
    # And it is a valid configuration: every option commented out, so the defaults.
    assert print_config(berth_bin, "--config-file", str(sample))["berth"]["concurrency"]["source"] == "default"
