"""Reverse direction: `berth call` (Berth's RPC client) against a stock oslo.messaging
RPC server with the threading executor.

CLI contract: result JSON on stdout and exit 0; a remote failure prints
`<class>: <message>` on stderr and exits 1; a timeout exits 2.
"""

import json
import queue

import oslo_messaging
import pytest

from conftest import unique


class PeerEndpoint:
    target = oslo_messaging.Target(version="1.0")

    def __init__(self):
        self.casts = queue.Queue()
        self.contexts = queue.Queue()

    def echo(self, ctxt, **kwargs):
        self.contexts.put(ctxt)
        return kwargs

    def boom(self, ctxt):
        raise ValueError("boom: the oslo peer refused")

    def record(self, ctxt, tag):
        self.casts.put(tag)


class NamespacedEndpoint:
    target = oslo_messaging.Target(namespace="peer.ns", version="1.3")

    def version_probe(self, ctxt):
        return {"namespace": "peer.ns"}


@pytest.fixture(scope="module")
def oslo_peer(rpc_transport, names):
    endpoint = PeerEndpoint()
    server_name = unique("oslo-peer")
    names.hosts.append(server_name)
    target = oslo_messaging.Target(topic=names.topic, server=server_name)
    server = oslo_messaging.get_rpc_server(
        rpc_transport, target, [endpoint, NamespacedEndpoint()], executor="threading")
    server.start()
    yield server_name, endpoint
    server.stop()
    server.wait()


def explain(proc):
    return f"exit {proc.returncode}\nstdout: {proc.stdout!r}\nstderr: {proc.stderr[-2000:]!r}"


def test_call_echo_prints_result_json(berth_cli, oslo_peer):
    server, endpoint = oslo_peer
    proc = berth_cli.call("echo", {"a": 1, "nested": {"list": [1, "two", None], "uni": "é☃"}}, "--server", server,
                          "--timeout", "20")
    assert proc.returncode == 0, explain(proc)
    assert json.loads(proc.stdout) == {"a": 1, "nested": {"list": [1, "two", None], "uni": "é☃"}}, explain(proc)
    ctxt = endpoint.contexts.get(timeout=5)
    assert isinstance(ctxt, dict)


def test_call_by_topic(berth_cli, oslo_peer):
    proc = berth_cli.call("echo", {"by": "topic"}, "--timeout", "20")
    assert proc.returncode == 0, explain(proc)
    assert json.loads(proc.stdout) == {"by": "topic"}, explain(proc)


def test_call_remote_exception_exits_1(berth_cli, oslo_peer):
    server, _ = oslo_peer
    proc = berth_cli.call("boom", {}, "--server", server, "--timeout", "20")
    assert proc.returncode == 1, explain(proc)
    assert "ValueError" in proc.stderr and "boom: the oslo peer refused" in proc.stderr, explain(proc)
    assert proc.stdout.strip() == "", explain(proc)


def test_call_unknown_method_exits_1_with_no_such_method(berth_cli, oslo_peer):
    server, _ = oslo_peer
    proc = berth_cli.call("nope", {}, "--server", server, "--timeout", "20")
    assert proc.returncode == 1, explain(proc)
    assert "NoSuchMethod" in proc.stderr, explain(proc)


def test_call_namespace_and_version(berth_cli, oslo_peer):
    server, _ = oslo_peer
    proc = berth_cli.call("version_probe", {}, "--server", server, "--namespace", "peer.ns", "--api-version", "1.2",
                          "--timeout", "20")
    assert proc.returncode == 0, explain(proc)
    assert json.loads(proc.stdout) == {"namespace": "peer.ns"}
    proc = berth_cli.call("version_probe", {}, "--server", server, "--namespace", "peer.ns", "--api-version", "2.0",
                          "--timeout", "20")
    assert proc.returncode == 1, explain(proc)
    assert "UnsupportedVersion" in proc.stderr, explain(proc)


def test_version_on_call_is_refused_not_a_silent_no_op(berth_cli, oslo_peer):
    """`berth call ... --version 1.0` printed Berth's version, exited 0 and sent nothing (issue 22)."""
    server, _ = oslo_peer
    proc = berth_cli.call("version_probe", {}, "--server", server, "--version", "1.0", "--timeout", "20")
    assert proc.returncode == 64, explain(proc)
    assert "--api-version" in proc.stderr and proc.stdout == "", explain(proc)


def test_cast_exits_0_and_arrives(berth_cli, oslo_peer):
    server, endpoint = oslo_peer
    tag = unique("cast")
    proc = berth_cli.call("record", {"tag": tag}, "--server", server, "--cast")
    assert proc.returncode == 0, explain(proc)
    assert endpoint.casts.get(timeout=10) == tag


def test_fanout_cast_arrives(berth_cli, oslo_peer):
    _, endpoint = oslo_peer
    tag = unique("fanout")
    proc = berth_cli.call("record", {"tag": tag}, "--cast", "--fanout")
    assert proc.returncode == 0, explain(proc)
    assert endpoint.casts.get(timeout=10) == tag


def test_call_timeout_exits_2(berth_cli, oslo_peer):
    proc = berth_cli.call("echo", {}, "--server", unique("nobody"), "--timeout", "2", timeout=30)
    assert proc.returncode == 2, explain(proc)


def test_call_bad_args_json_is_rejected(berth_cli, oslo_peer):
    server, _ = oslo_peer
    proc = berth_cli.run("call", "echo", "--args", "{not json", "--server", server,
                         "--transport-url", berth_cli.url, "--control-exchange", berth_cli.names.exchange,
                         "--topic", berth_cli.names.topic, timeout=30)
    assert proc.returncode not in (0, 2), explain(proc)
    assert proc.stderr.strip(), explain(proc)
