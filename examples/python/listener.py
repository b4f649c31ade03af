#!/usr/bin/env python3
"""Print what Berth workers publish: instance events as they happen, and their metrics added up by image.

A stock oslo.messaging NotificationListener on two topics: the workers' events (`--notification-topic`,
priorities info and error) and their berth.metrics samples (`--metering-topic`, priority sample). Each
metrics batch is printed as one line per image: how many instances reported and the total of each figure.
docs/metrics.md describes the samples.

    ./listener.py                 # until Ctrl-C
    ./listener.py --duration 60
"""

from __future__ import annotations

import collections
import threading

import oslo_messaging

from common import bus_arguments, configure, rabbit_url


class Printer:
    """The endpoint: oslo calls the method named after each notification's priority."""

    def __init__(self):
        self.lock = threading.Lock()  # the threading executor may call from several threads

    def info(self, ctxt, publisher_id, event_type, payload, metadata):
        self.show(f"event {event_type} instance={payload.get('instance_uuid')} image={payload.get('image_id')} "
                  f"host={payload.get('host')}")

    def error(self, ctxt, publisher_id, event_type, payload, metadata):
        failure = payload.get("error") or {}
        self.show(f"event {event_type} instance={payload.get('instance_uuid')} image={payload.get('image_id')} "
                  f"host={payload.get('host')} error={failure.get('class')}: {failure.get('message')}")

    def sample(self, ctxt, publisher_id, event_type, payload, metadata):
        instances = collections.defaultdict(set)
        totals = collections.defaultdict(collections.Counter)
        for sample in payload["samples"]:
            instances[sample["image_id"]].add(sample["instance_uuid"])
            totals[sample["image_id"]][f"{sample['name']}({sample['unit']})"] += sample["value"]
        for image_id in sorted(totals):
            figures = " ".join(f"{name}={value:g}" for name, value in sorted(totals[image_id].items()))
            self.show(f"metrics {publisher_id} image={image_id} instances={len(instances[image_id])} {figures}")

    def show(self, line: str):
        with self.lock:
            print(line, flush=True)


def main():
    parser = bus_arguments(__doc__.splitlines()[0])
    parser.add_argument("--notification-topic", default="notifications", help="the workers' --notification-topic")
    parser.add_argument("--metering-topic", default="metering", help="the workers' --metering-topic")
    parser.add_argument("--pool", help="listener pool: a queue of its own, so other consumers keep theirs")
    parser.add_argument("--duration", type=float, help="stop after this many seconds (default: run until Ctrl-C)")
    args = parser.parse_args()

    conf = configure(args.control_exchange)
    transport = oslo_messaging.get_notification_transport(conf, url=rabbit_url(args.transport_url))
    targets = [oslo_messaging.Target(topic=args.notification_topic), oslo_messaging.Target(topic=args.metering_topic)]
    listener = oslo_messaging.get_notification_listener(
        transport, targets, [Printer()], executor="threading", pool=args.pool)
    listener.start()
    print(f"listening on {args.notification_topic} and {args.metering_topic}", flush=True)
    try:
        threading.Event().wait(args.duration)
    except KeyboardInterrupt:
        pass
    finally:
        listener.stop()
        listener.wait()
        transport.cleanup()


if __name__ == "__main__":
    main()
