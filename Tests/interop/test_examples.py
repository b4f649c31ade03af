"""examples/python runs as documented: scheduler.py boots, waits for ACTIVE, snapshots and deletes an
instance on a Berth worker (real libvirtd/QEMU, the busybox guest of test_boot_e2e.py), and listener.py,
started first, prints the instance's events and its image's metrics. Both are run as a user would run
them, as scripts with stock oslo.messaging, on this module's exchange and topics.
"""

from __future__ import annotations

import queue
import re
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest

from conftest import REPO_ROOT, oslo_transport_url
from test_boot_e2e import LIBVIRT_URI, catalog, guest, libvirtd, virsh  # noqa: F401 (fixtures)

EXAMPLES = REPO_ROOT / "examples" / "python"


@pytest.fixture(scope="module")
def example_worker(worker_factory, catalog, tmp_path_factory):  # noqa: F811
    state = tmp_path_factory.mktemp("examples-state")
    pool = f"berth-test-{uuid.uuid4().hex[:8]}"
    w = worker_factory(extra_args=[
        "--libvirt-uri", LIBVIRT_URI, "--catalog", f"local:{catalog.root}", "--state-dir", str(state),
        "--storage-pool", pool, "--metrics-interval", "1",
    ])
    w.start()
    yield w
    assert w.stop() == 0, w.describe()
    virsh("pool-destroy", pool, check=False)
    virsh("pool-undefine", pool, check=False)


class Lines:
    """A process's stdout, line by line, read by a thread so the test can wait for a line with a timeout."""

    def __init__(self, proc: subprocess.Popen):
        self.proc, self.seen, self.fresh = proc, [], queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.fresh.put(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float) -> re.Match:
        deadline = time.monotonic() + timeout
        while True:
            for line in self.seen:
                if match := re.search(pattern, line):
                    return match
            try:
                self.seen.append(self.fresh.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                pytest.fail(f"no line matching {pattern!r} in {timeout}s; got:\n" + "\n".join(self.seen),
                            pytrace=False)


def test_scheduler_and_listener(example_worker, catalog, broker_url, names, tmp_path):  # noqa: F811
    url = oslo_transport_url(broker_url)
    errors = open(tmp_path / "listener.stderr", "w+")
    listener = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "listener.py"), "--transport-url", url,
         "--control-exchange", names.exchange, "--notification-topic", f"{names.topic}-notifications",
         "--metering-topic", f"{names.topic}-metering"],
        stdout=subprocess.PIPE, stderr=errors, text=True)
    try:
        lines = Lines(listener)
        lines.wait_for(r"^listening on ", 60)
        scheduler = subprocess.run(
            [sys.executable, str(EXAMPLES / "scheduler.py"), "--transport-url", url,
             "--control-exchange", names.exchange, "--topic", names.topic, "--image", catalog.image_id],
            capture_output=True, text=True, timeout=600)
        assert scheduler.returncode == 0, f"scheduler.py exited {scheduler.returncode}:\n{scheduler.stdout}\n{scheduler.stderr}"
        out = scheduler.stdout
        instance = re.search(rf"^boot sent: instance (\S+) on {re.escape(example_worker.host)}$", out, re.M)
        assert instance, out
        instance = instance.group(1)
        assert re.search(rf"^ACTIVE after [0-9.]+ s: domain berth-{instance}, kernel command line '.*berth.image=base", out, re.M), out
        snapshot = re.search(r"^snapshot: image (\S+) \(image\)$", out, re.M)
        assert snapshot, out
        assert re.search(rf"^deleted: instance {instance} is DELETED$", out, re.M), out
        assert catalog.run("images", "show", snapshot.group(1))["properties"]["instance_uuid"] == instance

        for event in ("instance.create.start", "instance.create.end", "instance.snapshot.end",
                      "instance.delete.end"):
            lines.wait_for(rf"^event {re.escape(event)} instance={instance} image={catalog.image_id} "
                           rf"host={re.escape(example_worker.host)}$", 60)
        # boot.duration goes out with the interval after the boot, even when the instance is gone by then.
        lines.wait_for(rf"^metrics compute\.{re.escape(example_worker.host)} image={catalog.image_id} "
                       r"instances=1 .*boot\.duration\(s\)=[0-9.e+-]+", 60)
    finally:
        listener.send_signal(signal.SIGINT)
        try:
            listener.wait(timeout=30)
        except subprocess.TimeoutExpired:
            listener.kill()
            raise
        errors.seek(0)
        err = errors.read()
        errors.close()
    assert listener.returncode == 0, f"listener.py exited {listener.returncode} on SIGINT:\n{err}"
