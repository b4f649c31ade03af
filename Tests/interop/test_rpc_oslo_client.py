"""A stock oslo.messaging RPCClient calls a real Berth worker (DESIGN.md §2, §3).

The worker runs with `--libvirt-uri test:///default --debug-rpc`, so it also
serves namespace `berth.debug` 1.0: sleep(seconds), fail(class_name, message),
record(tag).
"""

import threading
import time

import oslo_messaging
import pytest

from conftest import DEBUG_NAMESPACE, request_context, rpc_client, unique


@pytest.fixture(scope="module")
def client(rpc_transport, names):
    return rpc_client(rpc_transport, names.topic)


@pytest.fixture(scope="module")
def debug_client(rpc_transport, names):
    return rpc_client(rpc_transport, names.topic, namespace=DEBUG_NAMESPACE)


# --- a. ping ------------------------------------------------------------------------------------


def check_ping(result, host):
    assert isinstance(result, dict), f"ping returned {result!r}"
    assert result.get("host") == host, f"ping answered by {result.get('host')!r}, expected {host!r}: {result!r}"
    assert isinstance(result.get("version"), str) and result["version"], f"ping has no version string: {result!r}"


def test_ping_by_server(worker, client):
    check_ping(client.prepare(server=worker.host, timeout=10).call(request_context(), "ping"), worker.host)


def test_ping_by_topic(worker, client):
    # The only worker on this module's topic, so the shared queue must reach it.
    check_ping(client.prepare(timeout=10).call(request_context(), "ping"), worker.host)


def test_ping_with_empty_context_and_no_version(worker, rpc_transport, names):
    """A target without a version: oslo sends no `version` key and the server assumes 1.0."""
    bare = oslo_messaging.get_rpc_client(rpc_transport, oslo_messaging.Target(topic=names.topic))
    check_ping(bare.prepare(server=worker.host, timeout=10).call({}, "ping"), worker.host)


# --- b. describe_host ---------------------------------------------------------------------------


def test_describe_host(worker, client):
    result = client.prepare(server=worker.host, timeout=20).call(request_context(), "describe_host")
    assert isinstance(result, dict), result
    expected = {"host", "architectures", "hypervisor_types", "vm_modes", "pae", "free", "version"}
    assert expected <= set(result), f"describe_host lacks {sorted(expected - set(result))}: {result!r}"
    assert result["host"] == worker.host
    # libvirt's test:///default driver: one i686 host with hvm and xen guests, PAE, domain type "test".
    assert "i686" in result["architectures"], result
    assert {"hvm", "xen"} <= set(result["vm_modes"]), result
    assert result["hypervisor_types"], result
    assert result["pae"] is True, result
    assert isinstance(result["free"].get("vcpus"), int) and isinstance(result["free"].get("memory_mb"), int), result
    assert result["version"].get("libvirt"), result


# --- c. casts and fanout ------------------------------------------------------------------------


def test_cast_returns_immediately(worker, client):
    start = time.monotonic()
    assert client.cast(request_context(), "ping") is None
    assert client.prepare(server=worker.host).cast(request_context(), "ping") is None
    assert time.monotonic() - start < 2.0


def test_cast_reaches_worker(worker, debug_client):
    tag = unique("cast")
    debug_client.prepare(server=worker.host).cast(request_context(), "record", tag=tag)
    assert worker.wait_for_log(f"debug record tag={tag}"), (
        f"cast record(tag={tag}) never logged by the worker.\n{worker.describe()}")


def test_fanout_cast_reaches_worker(worker, debug_client):
    tag = unique("fanout")
    assert debug_client.prepare(fanout=True).cast(request_context(), "record", tag=tag) is None
    assert worker.wait_for_log(f"debug record tag={tag}"), (
        f"fanout cast record(tag={tag}) never logged by the worker.\n{worker.describe()}")


# --- d. dispatcher errors -----------------------------------------------------------------------


def test_unknown_method_is_no_such_method(worker, client):
    with pytest.raises(oslo_messaging.RemoteError) as info:
        client.prepare(server=worker.host, timeout=10).call(request_context(), "no_such_method")
    assert info.value.exc_type == "NoSuchMethod", str(info.value)
    assert "no_such_method" in str(info.value)


def test_private_method_is_no_such_method(worker, client):
    """oslo refuses method names starting with `_` as NoSuchMethod."""
    with pytest.raises(oslo_messaging.RemoteError) as info:
        client.prepare(server=worker.host, timeout=10).call(request_context(), "_private")
    assert info.value.exc_type == "NoSuchMethod", str(info.value)


def test_wrong_version_is_unsupported_version(worker, client):
    with pytest.raises(oslo_messaging.RemoteError) as info:
        client.prepare(server=worker.host, version="2.0", timeout=10).call(request_context(), "ping")
    assert info.value.exc_type == "UnsupportedVersion", str(info.value)
    assert "2.0" in str(info.value)


def test_newer_minor_version_is_unsupported(worker, client):
    with pytest.raises(oslo_messaging.RemoteError) as info:
        client.prepare(server=worker.host, version="1.5", timeout=10).call(request_context(), "ping")
    assert info.value.exc_type == "UnsupportedVersion", str(info.value)


def test_unknown_namespace_is_unsupported_version(worker, rpc_transport, names):
    """oslo reports a namespace mismatch as UnsupportedVersion (captured)."""
    other = rpc_client(rpc_transport, names.topic, namespace="no.such.namespace")
    with pytest.raises(oslo_messaging.RemoteError) as info:
        other.prepare(server=worker.host, timeout=10).call(request_context(), "ping")
    assert info.value.exc_type == "UnsupportedVersion", str(info.value)


def test_berth_failure_reaches_client(worker, debug_client):
    """A Berth failure arrives as oslo's failure dict; its module is not allowed, so RemoteError."""
    with pytest.raises(oslo_messaging.RemoteError) as info:
        debug_client.prepare(server=worker.host, timeout=10).call(
            request_context(), "fail", class_name="ImageNotFound", message="image img-404 is not in the catalog")
    assert info.value.exc_type == "ImageNotFound", str(info.value)
    assert "image img-404 is not in the catalog" in str(info.value)


# --- e. timeouts --------------------------------------------------------------------------------


def test_call_to_missing_server_times_out(worker, client):
    start = time.monotonic()
    with pytest.raises(oslo_messaging.MessagingTimeout):
        client.prepare(server=unique("no-such-host"), timeout=3).call(request_context(), "ping")
    elapsed = time.monotonic() - start
    assert 2.5 <= elapsed < 6, f"MessagingTimeout after {elapsed:.1f}s for timeout=3"


def test_call_outlasting_timeout_times_out(worker, debug_client, client):
    start = time.monotonic()
    with pytest.raises(oslo_messaging.MessagingTimeout):
        debug_client.prepare(server=worker.host, timeout=2).call(request_context(), "sleep", seconds=4)
    assert time.monotonic() - start < 5
    time.sleep(2.5)  # let the late reply go to a caller that has given up; the worker must not mind
    check_ping(client.prepare(server=worker.host, timeout=10).call(request_context(), "ping"), worker.host)


# --- f. call monitor (heartbeats) ---------------------------------------------------------------


def test_call_monitor_heartbeats_keep_long_call_alive(worker, debug_client):
    start = time.monotonic()
    result = debug_client.prepare(server=worker.host, timeout=20, call_monitor_timeout=2).call(
        request_context(), "sleep", seconds=5)
    elapsed = time.monotonic() - start
    assert result == {"slept": 5}, result
    assert elapsed >= 4.5, f"sleep(5) returned after {elapsed:.1f}s"


def test_no_heartbeats_without_call_monitor(worker, debug_client):
    """`_timeout: null` must get no heartbeat: oslo 18.3.1's client crashes on one
    (AttributeError: 'NoneType' object has no attribute 'restart')."""
    result = debug_client.prepare(server=worker.host, timeout=20).call(request_context(), "sleep", seconds=3)
    assert result == {"slept": 3}, result


def test_concurrent_calls(worker, client, debug_client):
    """Several callers at once from threads of one client transport; every one gets its own answer."""
    results, errors = {}, []

    def call(i):
        try:
            if i % 2:
                results[i] = debug_client.prepare(server=worker.host, timeout=30).call(
                    request_context(), "sleep", seconds=1)
            else:
                results[i] = client.prepare(server=worker.host, timeout=30).call(request_context(), "ping")
        except Exception as exc:  # noqa: BLE001
            errors.append((i, exc))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    for i, r in results.items():
        if i % 2:
            assert r == {"slept": 1}
        else:
            check_ping(r, worker.host)
    assert len(results) == 8
