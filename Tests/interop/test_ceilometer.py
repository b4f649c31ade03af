"""A stock Ceilometer notification agent, configured with deploy/ceilometer/, turns a worker's samples and
status events into meters carrying resource_metadata.image_id (and the boot's project and user).

Opt-in, not in CI: Ceilometer from PyPI is a large install (about 240 packages, minutes cold) and must live
in a venv of its own, apart from the test venv. Point BERTH_CEILOMETER_VENV at such a venv
(`python3 -m venv V && V/bin/pip install ceilometer`); without it the module is skipped. The agent runs with
a file publisher and no Keystone.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import uuid

import pytest

from conftest import request_context, rpc_client, unique
from test_metrics import Catalog, wait_for

REPO = pathlib.Path(__file__).resolve().parents[2]
VENV = os.environ.get("BERTH_CEILOMETER_VENV")

pytestmark = pytest.mark.skipif(
    not VENV or not os.access(pathlib.Path(VENV or ".") / "bin" / "ceilometer-agent-notification", os.X_OK),
    reason="BERTH_CEILOMETER_VENV does not name a venv with Ceilometer (opt-in; see the module docstring)")


@pytest.fixture(scope="module")
def topics(names):
    made = {"events": unique("ceilo-n"), "samples": unique("ceilo-m")}
    names.extra_queues += [f"{made['events']}.info", f"{made['events']}.error", f"{made['samples']}.sample"]
    return made


@pytest.fixture(scope="module")
def agent(names, topics, broker_url, tmp_path_factory):
    root = tmp_path_factory.mktemp("ceilometer")
    out = root / "samples.log"
    # The shipped pipeline with its publisher swapped for a file; the shipped meter definitions as they are.
    pipeline = (REPO / "deploy/ceilometer/pipeline.yaml").read_text().replace("gnocchi://", f"file://{out}?json")
    (root / "pipeline.yaml").write_text(pipeline)
    (root / "ceilometer.conf").write_text(
        "[DEFAULT]\n"
        f"transport_url = {broker_url.replace('amqp://', 'rabbit://', 1)}\n"
        f"pipeline_cfg_file = {root / 'pipeline.yaml'}\n"
        "[notification]\n"
        f"notification_control_exchanges = {names.exchange}\n"
        "pipelines = meter\nworkers = 1\n"
        "[oslo_messaging_notifications]\n"
        f"topics = {topics['events']},{topics['samples']}\n"
        "[meter]\n"
        f"meter_definitions_dirs = {REPO / 'deploy/ceilometer/meters.d'}\n")
    log = open(root / "agent.log", "wb")
    proc = subprocess.Popen(
        [f"{VENV}/bin/ceilometer-agent-notification", "--config-file", str(root / "ceilometer.conf")],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    yield out
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


def test_ceilometer_meters_carry_image_id_and_owner(agent, worker_factory, berth_bin, topics, rpc_transport,
                                                    tmp_path_factory):
    root = tmp_path_factory.mktemp("ceilometer-catalog")
    disk = root / "disk.raw"
    disk.write_bytes(b"\0" * (1 << 20))
    catalog = Catalog(berth_bin, root / "catalog")
    image_id = catalog.run("images", "create", "--name", "ceilo", "--disk-format", "raw", "--file", str(disk))["id"]
    w = worker_factory(extra_args=[
        "--catalog", f"local:{root / 'catalog'}", "--state-dir", str(root / "state"), "--metrics-interval", "1",
        "--metering-topic", topics["samples"], "--notification-topic", topics["events"]])
    w.start()
    instance_uuid = str(uuid.uuid4())
    context = request_context()
    client = rpc_client(rpc_transport, w.topic).prepare(server=w.host, timeout=120)
    result = client.call(context, "boot_instance", instance={
        "uuid": instance_uuid, "name": "ceilo", "image_id": image_id,
        "flavor": {"name": "tiny", "vcpus": 1, "memory_mb": 128, "root_gb": 1}})
    assert result["status"] == "ACTIVE", result

    def meters() -> dict[str, list[dict]]:
        found: dict[str, list[dict]] = {}
        if agent.exists():
            for line in agent.read_text().splitlines():
                sample = json.loads(line)
                if sample["resource_id"] == instance_uuid:
                    found.setdefault(sample["name"], []).append(sample)
        return found

    wanted = {"berth.instance", "berth.cpu.time", "berth.memory.used", "berth.boot.duration"}
    wait_for(lambda: wanted <= set(meters()), 60, f"Ceilometer meters {sorted(wanted)}")
    w.stop()
    for name, samples in meters().items():
        for sample in samples:
            assert sample["resource_metadata"]["image_id"] == image_id, sample
            assert sample["resource_metadata"]["host"] == w.host, sample
            if name != "berth.instance":
                assert (sample["project_id"], sample["user_id"]) == ("p-interop", "u-interop"), sample
                assert sample["resource_metadata"]["flavor"] == "tiny", sample
    cpu = meters()["berth.cpu.time"][0]
    assert (cpu["type"], cpu["unit"]) == ("cumulative", "ns") and cpu["volume"] > 0, cpu
    memory = meters()["berth.memory.used"][0]
    assert (memory["type"], memory["unit"], memory["volume"]) == ("gauge", "B", 128 * 1024 * 1024), memory
