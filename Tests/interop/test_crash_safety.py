"""Delivery better than oslo (DESIGN.md §2): the worker acks a request only after its work is
done and the reply is confirmed, so a worker killed mid-call loses nothing: the broker
redelivers the request and a replacement worker with the same host name answers it."""

import signal
import threading
import time

from conftest import DEBUG_NAMESPACE, request_context, rpc_client, unique


def test_call_survives_sigkill_of_worker(worker_factory, rpc_transport, names):
    host = unique("crash")
    first = worker_factory(host).start()

    client = rpc_client(rpc_transport, names.topic, namespace=DEBUG_NAMESPACE)
    outcome = {}

    def long_call():
        try:
            outcome["result"] = client.prepare(server=host, timeout=60).call(request_context(), "sleep", seconds=4)
        except Exception as exc:  # noqa: BLE001
            outcome["error"] = exc

    started = time.monotonic()
    caller = threading.Thread(target=long_call, daemon=True)
    caller.start()
    time.sleep(1.0)
    assert "error" not in outcome and "result" not in outcome, f"sleep(4) finished within 1s: {outcome}"
    first.kill(signal.SIGKILL)
    assert first.proc.returncode == -signal.SIGKILL

    # Same host name, so it consumes the same `<topic>.<host>` queue, where the request is back.
    second = worker_factory(host)
    second.start(wait=False)
    caller.join(70)
    assert not caller.is_alive(), f"the call never returned.\n{second.describe()}"
    assert "error" not in outcome, f"the call failed after the crash: {outcome['error']!r}.\n{second.describe()}"
    assert outcome["result"] == {"slept": 4}, outcome
    # It took the redelivery: at least 1 s before the kill plus a full 4 s on the second worker.
    assert time.monotonic() - started >= 5

    rc = second.stop()
    assert rc == 0, f"replacement worker exited {rc} after SIGTERM.\n{second.describe()}"


def test_sigterm_finishes_in_flight_call(worker_factory, rpc_transport, names):
    """SIGTERM: stop consuming, finish in-flight work within the grace period, exit 0."""
    w = worker_factory().start()
    client = rpc_client(rpc_transport, names.topic, namespace=DEBUG_NAMESPACE)
    outcome = {}

    def long_call():
        try:
            outcome["result"] = client.prepare(server=w.host, timeout=30).call(request_context(), "sleep", seconds=3)
        except Exception as exc:  # noqa: BLE001
            outcome["error"] = exc

    caller = threading.Thread(target=long_call, daemon=True)
    caller.start()
    time.sleep(1.0)
    rc = w.stop()
    caller.join(40)
    assert rc == 0, f"worker exited {rc} after SIGTERM.\n{w.describe()}"
    assert outcome.get("result") == {"slept": 3}, f"{outcome!r}\n{w.describe()}"
