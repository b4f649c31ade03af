"""What both examples share: the broker options and an oslo.messaging configuration for them."""

from __future__ import annotations

import argparse
import os
import uuid

import oslo_messaging
from oslo_config import cfg


def bus_arguments(description: str) -> argparse.ArgumentParser:
    """A parser with the options every Berth command has, under the same names."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--transport-url",
        default=os.environ.get("BERTH_TRANSPORT_URL", "rabbit://guest:guest@127.0.0.1:5672/"),
        help="oslo transport URL (default: $BERTH_TRANSPORT_URL, else rabbit://guest:guest@127.0.0.1:5672/)")
    parser.add_argument("--control-exchange", default="berth", help="the workers' --control-exchange")
    return parser


def configure(control_exchange: str) -> cfg.ConfigOpts:
    """oslo's global configuration, as an OpenStack service has it, with Berth's control exchange.

    oslo.messaging reads some of its options (tracing) from cfg.CONF whatever configuration it is given,
    so the examples use cfg.CONF rather than a ConfigOpts of their own.
    """
    oslo_messaging.set_transport_defaults(control_exchange=control_exchange)
    cfg.CONF([], project="berth-example", default_config_files=[], default_config_dirs=[])
    return cfg.CONF


def rabbit_url(url: str) -> str:
    """oslo.messaging's RabbitMQ driver is `rabbit://`; Berth also accepts `amqp://`, oslo does not."""
    scheme, separator, rest = url.partition("://")
    return f"rabbit://{rest}" if separator and scheme == "amqp" else url


def request_context() -> dict:
    """The context a caller sends with each request; Berth logs its request_id with everything it does."""
    return {"request_id": f"req-{uuid.uuid4()}"}
