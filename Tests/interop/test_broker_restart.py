"""A broker restart while a worker has events to publish loses none of them (DESIGN §2, §7): events made
while RabbitMQ was away wait in the worker's outbox and go out, confirmed, after it reconnects.

Marked `disruptive`: it stops the broker, so scripts/test.sh runs it after the rest of the suite.
"""

from __future__ import annotations

import subprocess
import time

import oslo_messaging
import pytest

from conftest import DEBUG_NAMESPACE, request_context, rpc_client

pytestmark = pytest.mark.disruptive

NODE = "rabbit@localhost"


def rabbitmqctl(*args: str, timeout: float = 120):
    proc = subprocess.run(["rabbitmqctl", "-n", NODE, *args], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"rabbitmqctl {' '.join(args)} failed: {proc.stderr}"


class Recorder:
    def __init__(self):
        self.tags = []

    def info(self, ctxt, publisher_id, event_type, payload, metadata):
        if event_type == "berth.debug.event":
            self.tags.append((payload["tag"], payload["index"]))


def test_events_made_while_the_broker_is_away_arrive_after_it_returns(
    worker_factory, names, rpc_transport, notification_transport
):
    worker = worker_factory().start()
    recorder = Recorder()
    target = oslo_messaging.Target(topic=f"{names.topic}-notifications")
    listener = oslo_messaging.get_notification_listener(
        notification_transport, [target], [recorder], executor="threading")
    listener.start()
    try:
        client = rpc_client(rpc_transport, worker.topic, namespace=DEBUG_NAMESPACE)
        # Events due in 4 s; the broker is stopped before then and started again after.
        scheduled = client.prepare(server=worker.host, timeout=30).call(
            request_context(), "emit_later", seconds=4, count=5, tag="outage")
        assert scheduled == {"scheduled": 5}
        called_at = time.monotonic()
        rabbitmqctl("stop_app")
        # Otherwise the events went out before the outage and the test would prove nothing.
        assert time.monotonic() - called_at < 4, "the broker took too long to stop; the events were not made while away"
        time.sleep(max(0.0, 7 - (time.monotonic() - called_at)))
        assert "outage" not in [t for t, _ in recorder.tags]
        rabbitmqctl("start_app")
        rabbitmqctl("await_startup")
        back_at = time.monotonic()

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(recorder.tags) < 5:
            time.sleep(0.2)
        assert sorted(recorder.tags) == [("outage", i) for i in range(5)], worker.describe()
        assert worker.wait_for_log("connected to the broker", timeout=1)
        # The worker is back on the bus: a call after the restart is answered.
        pong = rpc_client(rpc_transport, worker.topic).prepare(server=worker.host, timeout=30).call(
            request_context(), "ping")
        assert pong["host"] == worker.host
        print(f"events delivered {time.monotonic() - back_at:.1f}s after the broker returned")
    finally:
        listener.stop()
        listener.wait()
    assert worker.stop() == 0, worker.describe()
