"""The benchmark's peer: what a Nova-style compute service written the usual way does for the same RPCs.

A stock oslo.messaging 18.3.1 RPC server (executor "threading", oslo's defaults: ack on receipt, no prefetch
limit, a pool of 64 threads) serving `ping`, `boot_instance` and `delete_instance` on the same topic layout as
`berth worker`, doing the same boot work through libvirt-python on `test:///default`:

- read the image's record from the same local catalog directory (`images/<id>.json`);
- per instance uuid: a lock, a lookup by uuid (a repeated boot answers ACTIVE), a qcow2 overlay volume over the
  image in a `dir` storage pool, a domain defined from comparable XML (metadata element, disk from the pool,
  ACPI/APIC, UTC clock) and started;
- `instance.create.start` / `.end` notifications through an oslo Notifier (messagingv2), as Berth emits them.

    oslo_peer.py --url amqp://... --exchange X --topic T --host H --catalog DIR --state-dir DIR
                 [--notification-topic N] [--libvirt-uri test:///default]

Prints "consuming" on stdout once the server has started; SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from xml.sax.saxutils import escape, quoteattr

try:
    import libvirt
except ImportError:
    # Debian's python3-libvirt (scripts/install-deps.sh) lives beside the system interpreter the venv was made
    # from; appended last, so nothing in the venv is shadowed.
    sys.path.append("/usr/lib/python3/dist-packages")
    import libvirt

import oslo_messaging
import oslo_messaging.opts
from oslo_config import cfg

POOL = "berth-peer"
METADATA_NS = "https://berth.example/peer/1.0"


class Failure(Exception):
    pass


class ComputeEndpoint:
    target = oslo_messaging.Target(version="1.0")

    def __init__(self, host: str, catalog: str, state_dir: str, uri: str, notifier):
        self.host, self.catalog, self.state_dir = host, catalog, state_dir
        self.notifier = notifier
        self.conn = libvirt.open(uri)
        self.locks: dict[str, threading.Lock] = {}
        self.locks_guard = threading.Lock()
        pool_path = os.path.join(state_dir, "instances")
        os.makedirs(pool_path, exist_ok=True)
        try:
            self.pool = self.conn.storagePoolLookupByName(POOL)
        except libvirt.libvirtError:
            self.pool = self.conn.storagePoolDefineXML(
                f"<pool type='dir'><name>{POOL}</name><target><path>{escape(pool_path)}</path></target></pool>")
        if not self.pool.isActive():
            self.pool.create()

    # --- RPC methods -------------------------------------------------------------------------------

    def ping(self, ctxt):
        return {"host": self.host, "version": "oslo-peer"}

    def boot_instance(self, ctxt, instance):
        uuid = instance["uuid"]
        flavor = instance["flavor"]
        image = self.image(instance["image_id"])
        payload = {"instance_uuid": uuid, "image_id": image["id"], "host": self.host,
                   "request_id": ctxt.get("request_id"), "state": "building"}
        self.notifier.info(ctxt, "instance.create.start", payload)
        with self.lock(uuid):
            try:
                self.conn.lookupByUUIDString(uuid)
                existing = True
            except libvirt.libvirtError:
                existing = False
            if not existing:
                volume = f"{uuid}-root.qcow2"
                capacity = max(int(flavor.get("root_gb", 0)) << 30, int(image.get("virtual_size") or image["size"]),
                               1 << 20)
                backing = os.path.join(self.catalog, "images", image["id"] + ".data")
                fmt = "qcow2" if image.get("disk_format") == "qcow2" else "raw"
                self.pool.createXML(
                    f"<volume><name>{escape(volume)}</name><capacity unit='bytes'>{capacity}</capacity>"
                    f"<target><format type='qcow2'/></target><backingStore><path>{escape(backing)}</path>"
                    f"<format type='{fmt}'/></backingStore></volume>", 0)
                domain = self.conn.defineXML(self.domain_xml(instance, image, volume))
                domain.create()
        payload = dict(payload, state="active")
        self.notifier.info(ctxt, "instance.create.end", payload)
        return {"uuid": uuid, "status": "ACTIVE", "host": self.host, "image_id": image["id"],
                "domain": f"berth-{uuid}", "kernel_cmdline": None, "boot_variant": None, "volume_id": None}

    def delete_instance(self, ctxt, instance_uuid):
        with self.lock(instance_uuid):
            try:
                domain = self.conn.lookupByUUIDString(instance_uuid)
                if domain.isActive():
                    domain.destroy()
                domain.undefine()
            except libvirt.libvirtError:
                pass
            try:
                self.pool.storageVolLookupByName(f"{instance_uuid}-root.qcow2").delete(0)
            except libvirt.libvirtError:
                pass
        return {"uuid": instance_uuid, "status": "DELETED", "host": self.host}

    # --- helpers -------------------------------------------------------------------------------------

    def image(self, image_id: str) -> dict:
        if "/" in image_id or image_id.startswith("."):
            raise Failure(f"invalid image id {image_id!r}")
        try:
            with open(os.path.join(self.catalog, "images", image_id + ".json")) as record:
                return json.load(record)
        except FileNotFoundError:
            raise Failure(f"image {image_id} not found") from None

    def lock(self, uuid: str) -> threading.Lock:
        with self.locks_guard:
            return self.locks.setdefault(uuid, threading.Lock())

    @staticmethod
    def domain_xml(instance: dict, image: dict, volume: str) -> str:
        flavor = instance["flavor"]
        return (
            f"<domain type='test'><name>berth-{escape(instance['uuid'])}</name><uuid>{escape(instance['uuid'])}</uuid>"
            f"<metadata><peer:instance xmlns:peer={quoteattr(METADATA_NS)}><peer:name>{escape(instance['name'])}"
            f"</peer:name><peer:image_id>{escape(image['id'])}</peer:image_id>"
            f"<peer:flavor name={quoteattr(str(flavor['name']))} vcpus='{int(flavor['vcpus'])}' "
            f"memory_mb='{int(flavor['memory_mb'])}' root_gb='{int(flavor['root_gb'])}'/></peer:instance></metadata>"
            f"<memory unit='MiB'>{int(flavor['memory_mb'])}</memory><vcpu placement='static'>{int(flavor['vcpus'])}"
            f"</vcpu><os><type arch='x86_64'>hvm</type><boot dev='hd'/></os><features><acpi/><apic/></features>"
            f"<clock offset='utc'/><on_poweroff>destroy</on_poweroff><on_reboot>restart</on_reboot>"
            f"<on_crash>destroy</on_crash><devices><disk type='volume' device='disk'>"
            f"<driver name='qemu' type='qcow2'/><source pool='{POOL}' volume={quoteattr(volume)}/>"
            f"<target dev='vda' bus='virtio'/></disk></devices></domain>")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="rabbit://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--exchange", default="berth")
    parser.add_argument("--topic", default="compute")
    parser.add_argument("--host", required=True)
    parser.add_argument("--catalog", required=True)
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--notification-topic", default="notifications")
    parser.add_argument("--libvirt-uri", default="test:///default")
    args = parser.parse_args()

    url = args.url.replace("amqp://", "rabbit://", 1)
    # The global CONF, as a service has it (oslo.messaging 18.3.1's tracing hook reads it); control_exchange
    # is read when a transport is made, so register oslo.messaging's options and override first.
    conf = cfg.CONF
    conf([], project="berth-bench-peer", default_config_files=[], default_config_dirs=[])
    for group, opts in oslo_messaging.opts.list_opts():
        conf.register_opts(opts, group=group)
    conf.set_override("control_exchange", args.exchange)
    transport = oslo_messaging.get_rpc_transport(conf, url=url)
    # A failed lookup (the usual case for a new uuid) is an exception here, not a line on stderr.
    libvirt.registerErrorHandler(lambda *_: None, None)
    notifier = oslo_messaging.Notifier(
        oslo_messaging.get_notification_transport(conf, url=url), publisher_id=f"compute.{args.host}",
        driver="messagingv2", topics=[args.notification_topic])
    endpoint = ComputeEndpoint(args.host, args.catalog, args.state_dir, args.libvirt_uri, notifier)
    server = oslo_messaging.get_rpc_server(
        transport, oslo_messaging.Target(topic=args.topic, server=args.host), [endpoint], executor="threading")

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server.start()
    print("consuming", flush=True)
    stop.wait()
    server.stop()
    server.wait()
    transport.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
