#!/usr/bin/env python3
"""A minimal scheduler: boot an instance on a Berth worker, wait for ACTIVE, snapshot it, delete it.

Nothing but stock oslo.messaging, the way Nova's conductor drives a compute host: ask the pool which host
takes the instance (`ping`), cast `boot_instance` to that host, poll `get_instance` until the instance is
ACTIVE, then call `snapshot_instance` and `delete_instance`. The methods are in docs/rpc-api.md.

    ./scheduler.py --image <image id>
"""

from __future__ import annotations

import sys
import time
import uuid

import oslo_messaging

from common import bus_arguments, configure, rabbit_url, request_context


def parse_args():
    parser = bus_arguments(__doc__.splitlines()[0])
    parser.add_argument("--topic", default="compute", help="the workers' RPC --topic")
    parser.add_argument("--image", required=True, help="image id to boot (berth images list)")
    parser.add_argument("--server", help="boot on this worker (default: whichever answers ping first)")
    parser.add_argument("--flavor", default="tiny:1:256:1", help="name:vcpus:memory_mb:root_gb")
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait for each step")
    return parser.parse_args()


def wait_until_active(compute, instance_uuid: str, timeout: float) -> dict:
    """Polls get_instance: InstanceNotFound (not defined yet) and SHUTOFF (defined, not started) mean wait.

    A boot that fails is not answered (it was a cast): the worker publishes instance.create.error with the
    reason, which listener.py prints, and this gives up after `timeout`.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            instance = compute.call(request_context(), "get_instance", instance_uuid=instance_uuid)
        except oslo_messaging.RemoteError as error:
            if error.exc_type != "InstanceNotFound":
                raise
        else:
            if instance["status"] == "ACTIVE":
                return instance
            if instance["status"] == "ERROR":
                sys.exit(f"instance {instance_uuid} is in ERROR")
        time.sleep(0.2)
    sys.exit(f"instance {instance_uuid} was not ACTIVE after {timeout:.0f} s (see instance.create.error)")


def main():
    args = parse_args()
    name, vcpus, memory_mb, root_gb = args.flavor.split(":")
    conf = configure(args.control_exchange)
    transport = oslo_messaging.get_rpc_transport(conf, url=rabbit_url(args.transport_url))
    client = oslo_messaging.get_rpc_client(transport, oslo_messaging.Target(topic=args.topic, version="1.0"))
    try:
        host = args.server or client.prepare(timeout=30).call(request_context(), "ping")["host"]
        compute = client.prepare(server=host, timeout=args.timeout)
        instance_uuid = str(uuid.uuid4())
        started = time.monotonic()
        compute.cast(request_context(), "boot_instance", instance={
            "uuid": instance_uuid, "name": "example", "image_id": args.image,
            "flavor": {"name": name, "vcpus": int(vcpus), "memory_mb": int(memory_mb), "root_gb": int(root_gb)},
            "metadata": {},
        })
        print(f"boot sent: instance {instance_uuid} on {host}", flush=True)

        instance = wait_until_active(compute, instance_uuid, args.timeout)
        print(f"ACTIVE after {time.monotonic() - started:.1f} s: domain {instance['domain']}, "
              f"kernel command line {instance['kernel_cmdline']!r}", flush=True)

        snapshot = compute.call(request_context(), "snapshot_instance", instance_uuid=instance_uuid,
                                image_name=f"example-snapshot-{instance_uuid[:8]}")
        print(f"snapshot: image {snapshot['image_id']} ({snapshot['kind']})", flush=True)

        deleted = compute.call(request_context(), "delete_instance", instance_uuid=instance_uuid)
        print(f"deleted: instance {deleted['uuid']} is {deleted['status']}", flush=True)
    except oslo_messaging.RemoteError as error:
        sys.exit(f"{error.exc_type}: {error.value}")
    except oslo_messaging.MessagingTimeout as error:
        sys.exit(f"timed out: {error}")
    finally:
        transport.cleanup()


if __name__ == "__main__":
    main()
