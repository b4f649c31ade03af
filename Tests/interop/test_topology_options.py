"""Queue and exchange flags (OSLO-WIRE.md §10): for each oslo option the worker mirrors, a stock
oslo RPC server and a Berth worker declare the same objects with identical flags, so either can
start second. A mismatch must stop the worker with an error naming the option to change
(DESIGN.md §2), not leave it half-running."""

import contextlib

import oslo_messaging
import pytest

from conftest import make_conf, oslo_transport_url, request_context, rpc_client, unique

# (oslo [oslo_messaging_rabbit] overrides, the matching berth worker flags)
VARIANTS = {
    "defaults": ({}, []),
    "amqp_durable_queues": ({"amqp_durable_queues": True}, ["--amqp-durable-queues"]),
    "rabbit_quorum_queue": ({"rabbit_quorum_queue": True}, ["--rabbit-quorum-queue"]),
    "rabbit_transient_quorum_queue": ({"rabbit_transient_quorum_queue": True}, ["--rabbit-transient-quorum-queue"]),
}


class Peer:
    target = oslo_messaging.Target(version="1.0")

    def ping(self, ctxt):
        return {"host": "oslo-peer", "version": "oslo"}


@contextlib.contextmanager
def oslo_transport(broker_url, exchange, rabbit_overrides):
    """An RPC transport with [oslo_messaging_rabbit] options set. The rabbit driver reads them when
    it declares (not when the transport is made), so they stay set until the transport is gone."""
    conf = make_conf(exchange)
    # The rabbit group is registered by the first rabbit transport.
    oslo_messaging.get_rpc_transport(conf, url=oslo_transport_url(broker_url)).cleanup()
    for key, value in rabbit_overrides.items():
        conf.set_override(key, value, group="oslo_messaging_rabbit")
    transport = oslo_messaging.get_rpc_transport(conf, url=oslo_transport_url(broker_url))
    try:
        yield transport
    finally:
        transport.cleanup()
        for key in rabbit_overrides:
            conf.clear_override(key, group="oslo_messaging_rabbit")


def run_oslo_server(transport, topic, server):
    srv = oslo_messaging.get_rpc_server(
        transport, oslo_messaging.Target(topic=topic, server=server), [Peer()], executor="threading")
    srv.start()
    return srv


def fresh_names(names, label):
    """Per variant: the control exchange's durability differs between variants too."""
    exchange, topic, host = unique("berth-test-topo"), unique(f"topo-{label[:12]}"), unique("topo")
    names.extra_queues += [topic, f"{topic}.{host}", f"{topic}-notifications.info", f"{topic}-notifications.error"]
    names.extra_exchanges += [exchange, f"{topic}_fanout"]
    return exchange, topic, host


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_oslo_first_then_berth(variant, worker_factory, broker_url, names):
    overrides, flags = VARIANTS[variant]
    exchange, topic, host = fresh_names(names, variant)
    with oslo_transport(broker_url, exchange, overrides) as transport:
        srv = run_oslo_server(transport, topic, host)
        client = rpc_client(transport, topic)
        # It really declared its queues: a call reaches it.
        assert client.prepare(server=host, timeout=10).call(request_context(), "ping")["host"] == "oslo-peer"
        srv.stop()
        srv.wait()

        w = worker_factory(host, flags, exchange=exchange, topic=topic, transport=transport).start()
        assert client.prepare(server=host, timeout=10).call(request_context(), "ping")["host"] == host
        assert client.prepare(timeout=10).call(request_context(), "ping")["host"] == host
        assert w.stop() == 0, w.describe()


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_berth_first_then_oslo(variant, worker_factory, broker_url, names):
    overrides, flags = VARIANTS[variant]
    exchange, topic, host = fresh_names(names, variant)
    with oslo_transport(broker_url, exchange, overrides) as transport:
        w = worker_factory(host, flags, exchange=exchange, topic=topic, transport=transport).start()
        assert w.stop() == 0, w.describe()
        # oslo declares the same queues with its flags; any difference is a 406 and no server.
        srv = run_oslo_server(transport, topic, host)
        try:
            client = rpc_client(transport, topic)
            assert client.prepare(server=host, timeout=10).call(request_context(), "ping")["host"] == "oslo-peer"
        finally:
            srv.stop()
            srv.wait()


@pytest.mark.parametrize("variant", ["amqp_durable_queues", "rabbit_quorum_queue"])
def test_mismatch_names_the_option(variant, worker_factory, broker_url, names):
    """oslo made the queues with the option on; a worker without it must refuse to run and say
    which option to set."""
    overrides, flags = VARIANTS[variant]
    exchange, topic, host = fresh_names(names, variant)
    with oslo_transport(broker_url, exchange, overrides) as transport:
        srv = run_oslo_server(transport, topic, host)
        srv.stop()
        srv.wait()
        w = worker_factory(host, exchange=exchange, topic=topic, transport=transport)
        w.start(wait=False)
        try:
            rc = w.proc.wait(timeout=60)
        except Exception:  # noqa: BLE001
            w.kill()
            pytest.fail(f"worker kept running against queues declared with {variant}.\n{w.describe()}",
                        pytrace=False)
    assert rc != 0, w.describe()
    log = w.log_text()
    assert variant in log or flags[0] in log, (
        f"the worker's error does not name {variant} / {flags[0]}:\n{w.describe()}")
