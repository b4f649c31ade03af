"""The harness itself, without Berth: a stock oslo RPC server and client, and a
stock notifier and listener, on the real broker with this suite's fixtures.

If these fail, the Berth tests beside them prove nothing: the broker, the venv
or the fixtures are broken, not the worker.
"""

import queue
import time

import oslo_messaging
import pytest

from conftest import request_context, rpc_client, unique


class Endpoint:
    target = oslo_messaging.Target(version="1.0")

    def __init__(self):
        self.casts = queue.Queue()

    def echo(self, ctxt, **kwargs):
        return kwargs

    def boom(self, ctxt):
        raise ValueError("boom from the oslo endpoint")

    def record(self, ctxt, tag):
        self.casts.put(tag)


@pytest.fixture(scope="module")
def oslo_server(rpc_transport, names):
    endpoint = Endpoint()
    server_name = unique("oslo-peer")
    names.hosts.append(server_name)
    target = oslo_messaging.Target(topic=names.topic, server=server_name)
    server = oslo_messaging.get_rpc_server(rpc_transport, target, [endpoint], executor="threading")
    server.start()
    yield server_name, endpoint
    server.stop()
    server.wait()


def test_oslo_call_cast_fanout_and_failure(rpc_transport, names, oslo_server):
    server_name, endpoint = oslo_server
    client = rpc_client(rpc_transport, names.topic)
    ctxt = request_context()

    assert client.prepare(server=server_name, timeout=10).call(ctxt, "echo", a=1, b=[1, 2]) == {"a": 1, "b": [1, 2]}
    assert client.prepare(timeout=10).call(ctxt, "echo", by="topic") == {"by": "topic"}

    with pytest.raises(ValueError, match="boom from the oslo endpoint"):
        client.prepare(server=server_name, timeout=10).call(ctxt, "boom")

    with pytest.raises(oslo_messaging.RemoteError) as info:
        client.prepare(server=server_name, timeout=10).call(ctxt, "no_such_method")
    assert info.value.exc_type == "NoSuchMethod"

    client.prepare(server=server_name).cast(ctxt, "record", tag="direct")
    client.prepare(fanout=True).cast(ctxt, "record", tag="fanout")
    got = {endpoint.casts.get(timeout=10), endpoint.casts.get(timeout=10)}
    assert got == {"direct", "fanout"}


def test_oslo_call_to_missing_server_times_out(rpc_transport, names):
    client = rpc_client(rpc_transport, names.topic)
    start = time.monotonic()
    with pytest.raises(oslo_messaging.MessagingTimeout):
        client.prepare(server=unique("nobody"), timeout=2).call(request_context(), "echo")
    assert time.monotonic() - start < 6


def test_oslo_notifier_to_listener(notification_transport, names):
    received = queue.Queue()

    class Listener:
        def info(self, ctxt, publisher_id, event_type, payload, metadata):
            received.put((publisher_id, event_type, payload))

    listener = oslo_messaging.get_notification_listener(
        notification_transport,
        [oslo_messaging.Target(topic=names.notification_topic)],
        [Listener()],
        executor="threading",
    )
    listener.start()
    try:
        notifier = oslo_messaging.Notifier(
            notification_transport,
            publisher_id="compute.harness",
            driver="messagingv2",
            topics=[names.notification_topic],
        )
        notifier.info({}, "compute.instance.harness", {"image_id": "img-h"})
        assert received.get(timeout=15) == ("compute.harness", "compute.instance.harness", {"image_id": "img-h"})
    finally:
        listener.stop()
        listener.wait()

