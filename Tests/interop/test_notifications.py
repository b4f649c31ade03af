"""A stock oslo.messaging NotificationListener receives what `berth notify` publishes
(DESIGN.md §7, OSLO-WIRE.md §9)."""

import queue

import oslo_messaging
import pytest

from conftest import unique


class Collector:
    def __init__(self):
        self.got = queue.Queue()

    def _put(self, priority, ctxt, publisher_id, event_type, payload, metadata):
        self.got.put({"priority": priority, "ctxt": ctxt, "publisher_id": publisher_id,
                      "event_type": event_type, "payload": payload, "metadata": metadata})

    def info(self, ctxt, publisher_id, event_type, payload, metadata):
        self._put("info", ctxt, publisher_id, event_type, payload, metadata)

    def warn(self, ctxt, publisher_id, event_type, payload, metadata):
        self._put("warn", ctxt, publisher_id, event_type, payload, metadata)

    def error(self, ctxt, publisher_id, event_type, payload, metadata):
        self._put("error", ctxt, publisher_id, event_type, payload, metadata)


@pytest.fixture(scope="module")
def listener(notification_transport, names):
    collector = Collector()
    listener = oslo_messaging.get_notification_listener(
        notification_transport,
        [oslo_messaging.Target(topic=names.notification_topic)],
        [collector],
        executor="threading",
    )
    listener.start()
    yield collector
    listener.stop()
    listener.wait()


def explain(proc):
    return f"exit {proc.returncode}\nstdout: {proc.stdout!r}\nstderr: {proc.stderr[-2000:]!r}"


def next_matching(collector, event_type, timeout=15):
    """The next notification with this event type (others from the same run are skipped)."""
    seen = []
    while True:
        try:
            n = collector.got.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no {event_type} notification within {timeout}s; others seen: {seen}", pytrace=False)
        if n["event_type"] == event_type:
            return n
        seen.append(n["event_type"])


def test_info_notification_reaches_stock_listener(berth_cli, listener):
    host = unique("notify-host")
    proc = berth_cli.notify("compute.instance.test", {"image_id": "img-1"},
                            "--priority", "info", "--publisher-host", host)
    assert proc.returncode == 0, explain(proc)
    n = next_matching(listener, "compute.instance.test")
    assert n["priority"] == "info"
    assert n["publisher_id"] == f"compute.{host}"
    assert n["payload"] == {"image_id": "img-1"}
    # oslo gives the endpoint the envelope's message_id (uuid4 with dashes) and timestamp.
    assert len(n["metadata"]["message_id"]) == 36 and n["metadata"]["message_id"].count("-") == 4, n["metadata"]
    assert n["metadata"]["timestamp"], n["metadata"]


def test_error_priority_routes_to_error_endpoint(berth_cli, listener):
    host = unique("notify-host")
    payload = {"image_id": "img-2", "error": {"class": "BuildFailed", "message": "qemu exited"}}
    proc = berth_cli.notify("compute.instance.test.error", payload, "--priority", "error", "--publisher-host", host)
    assert proc.returncode == 0, explain(proc)
    n = next_matching(listener, "compute.instance.test.error")
    assert n["priority"] == "error"
    assert n["publisher_id"] == f"compute.{host}"
    assert n["payload"] == payload


def test_default_publisher_host(berth_cli, listener):
    """Without --publisher-host the publisher id is still compute.<something>."""
    proc = berth_cli.notify("compute.instance.default-host", {"image_id": "img-3"}, "--priority", "info")
    assert proc.returncode == 0, explain(proc)
    n = next_matching(listener, "compute.instance.default-host")
    assert n["publisher_id"].startswith("compute.") and len(n["publisher_id"]) > len("compute."), n


def test_bad_payload_is_rejected(berth_cli):
    proc = berth_cli.notify("compute.instance.test", {}, "--priority", "info")  # valid, for contrast
    assert proc.returncode == 0, explain(proc)
    proc = berth_cli.run("notify", "compute.instance.test", "--payload", "{broken",
                         "--transport-url", berth_cli.url, "--control-exchange", berth_cli.names.exchange,
                         "--notification-topic", berth_cli.names.notification_topic, timeout=30)
    assert proc.returncode != 0, explain(proc)
    assert proc.stderr.strip(), explain(proc)
