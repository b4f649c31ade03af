"""The message contracts in contracts/ hold for what a running Berth sends (DESIGN.md §8).

The rest of the interop suite runs first (conftest.py moves this file to the end). Meanwhile the
session's firehose capture (capture.py) recorded every publish on the broker. Here every message the
suite's Berth workers and `berth` CLI runs published is classified and validated with a maintained
validator (jsonschema, Draft 2020-12) against contracts/schemas:

- replies of Berth workers: envelope, reply, decoded failure, the result schema of the called method,
  heartbeats only for calls with a call monitor;
- every request the suite sent to a Berth worker (calls it answered, casts to its queues): the request
  schema of its method, unless the worker refused it as invalid (those are counted, not failed);
- Berth's notifications: envelope, oslo notification, the payload schema of each event type and the
  metrics samples; an event or sample with a null, empty or missing image_id fails the test;
- requests and notifications published by the CLI, and dead letters the workers republished.

A failure prints the message, the schema path and the offending instance.
"""

from __future__ import annotations

import collections
import copy
import json
import os
import pathlib
import re

import jsonschema
import pytest
import referencing
import yaml
from jsonschema.exceptions import best_match

from capture import PYTHON_CONNECTIONS, decode_oslo
from conftest import CONTRACT_SESSION, DEAD_LETTER_EXCHANGE, DEBUG_NAMESPACE, REPO_ROOT, unavailable

CONTRACTS = REPO_ROOT / "contracts"
SCHEMAS = CONTRACTS / "schemas"
SCHEMA_BASE = "https://berth.example/contracts/schemas/"
# The recorded oslo.messaging traffic: shared/wire/captures beside the checkout, else the repository's copy
# (Tests/BerthWireTests/Fixtures, the same files), so a clone on its own still checks the schemas against it.
SHARED_CAPTURES = next(
    (path for path in (REPO_ROOT.parent / "shared" / "wire" / "captures", REPO_ROOT / "Tests" / "BerthWireTests" / "Fixtures")
     if path.is_dir()),
    REPO_ROOT.parent / "shared" / "wire" / "captures")

# RPC API 1.0: (namespace, method) -> name of the args/result schema files.
API = {
    (None, "ping"): "ping", (None, "describe_host"): "describe_host", (None, "boot_instance"): "boot_instance",
    (None, "get_instance"): "get_instance", (None, "delete_instance"): "delete_instance",
    (None, "snapshot_instance"): "snapshot_instance", (None, "create_placeholder_image"): "create_placeholder_image",
    ("berth.debug", "sleep"): "debug.sleep", ("berth.debug", "fail"): "debug.fail",
    ("berth.debug", "record"): "debug.record", ("berth.debug", "emit_later"): "debug.emit_later",
    ("berth.debug", "crash"): "debug.crash",
}
# A worker answering with one of these says the request itself was wrong: such a request need not fit the
# request schema (the bad-input tests send them on purpose).
REFUSALS = {"InvalidRequest", "InvalidMetadata", "NoSuchMethod", "UnsupportedVersion"}
EVENT_TYPES = sorted(p.name[: -len(".json")] for p in (SCHEMAS / "events").glob("*.json"))
METRICS_EVENT = "berth.metrics"
SERVICE_REPORT_EXCHANGE = "berth.services"
SERVICE_REPORT_SCHEMA = "services/berth.service.report.json"
SERVICE_REPORT_EVENT = "berth.service.report"
# Where the worker names its RPC methods and the events it emits: the composition (the method tables), the bus
# and host sides, and the wire types whose event types they publish (metrics batches, service reports).
WORKER_SOURCES = ("BerthWorker", "BerthRPC", "BerthCompute", "BerthWire")

# Minimum captures, so the test cannot pass on nothing.
MINIMUM = {
    "request boot_instance": 1,
    "result boot_instance": 1,
    "failure": 1,
    "event instance.create.end": 1,
    "service report": 1,
}

MAX_REPORTED = 25


# --- schemas --------------------------------------------------------------------------------------------------


def schema_files() -> list[pathlib.Path]:
    return sorted(SCHEMAS.rglob("*.json"))


def load_registry() -> referencing.Registry:
    resources = []
    for path in schema_files():
        contents = json.loads(path.read_text())
        expected = SCHEMA_BASE + path.relative_to(SCHEMAS).as_posix()
        assert contents.get("$id") == expected, f"{path}: $id must be {expected!r}, is {contents.get('$id')!r}"
        resources.append((expected, referencing.jsonschema.DRAFT202012.create_resource(contents)))
    return referencing.Registry().with_resources(resources)


class Contracts:
    def __init__(self):
        self.registry = load_registry()
        self._validators = {}

    def validator(self, name: str) -> jsonschema.Draft202012Validator:
        if name not in self._validators:
            schema = self.registry.contents(SCHEMA_BASE + name)
            self._validators[name] = jsonschema.Draft202012Validator(
                schema, registry=self.registry, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
        return self._validators[name]

    def errors(self, name: str, instance) -> list[str]:
        """Each error as text: what is wrong, where in the schema, and the offending instance."""
        found = []
        for error in sorted(self.validator(name).iter_errors(instance), key=lambda e: list(e.path)):
            detail = best_match([error] + list(error.context or [])) if error.context else error
            lines = [
                f"{detail.message}",
                f"    schema: {name} {'/'.join(str(p) for p in detail.absolute_schema_path)}",
                f"    at: {detail.json_path}",
                f"    offending instance: {short(detail.instance)}",
            ]
            if detail is not error:
                lines.insert(1, f"    (under {error.json_path}: {error.message[:200]})")
            found.append("\n".join(lines))
        return found


def short(value, limit: int = 600) -> str:
    text = json.dumps(value, sort_keys=True, default=repr)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


@pytest.fixture(scope="module")
def contracts() -> Contracts:
    return Contracts()


# --- the documents themselves ---------------------------------------------------------------------------------


def all_refs(node, found=None):
    found = [] if found is None else found
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                found.append(value)
            else:
                all_refs(value, found)
    elif isinstance(node, list):
        for value in node:
            all_refs(value, found)
    return found


def test_schemas_are_draft_2020_12_and_every_ref_resolves(contracts):
    assert schema_files(), f"no schemas under {SCHEMAS}"
    for path in schema_files():
        schema = json.loads(path.read_text())
        assert schema.get("$schema") == "https://json-schema.org/draft/2020-12/schema", path
        jsonschema.Draft202012Validator.check_schema(schema)
        resolver = contracts.registry.resolver(base_uri=schema["$id"])
        for ref in all_refs(schema):
            resolver.lookup(ref)  # raises Unresolvable


def test_asyncapi_document_references_existing_schemas():
    doc = yaml.safe_load((CONTRACTS / "asyncapi.yaml").read_text())
    assert doc["asyncapi"] == "3.0.0"
    assert doc["servers"] and all(s["protocol"] in ("amqp", "amqps") for s in doc["servers"].values())
    messages = doc["components"]["messages"]
    # Every external $ref names an existing file and, with a fragment, an existing definition.
    for ref in all_refs(doc):
        if ref.startswith("#"):
            node = doc
            for part in ref[2:].split("/"):
                assert part in node, f"asyncapi.yaml: {ref} does not resolve"
                node = node[part]
            continue
        file_part, _, fragment = ref.partition("#")
        target = (CONTRACTS / file_part).resolve()
        assert target.is_file(), f"asyncapi.yaml: {ref} names a missing file"
        node = json.loads(target.read_text()) if target.suffix == ".json" else None
        for part in filter(None, fragment.split("/")):
            assert part in node, f"asyncapi.yaml: {ref} does not resolve"
            node = node[part]
    # Every operation's channel and messages exist; every channel is used by an operation.
    used = set()
    for name, op in doc["operations"].items():
        assert op["action"] in ("send", "receive"), name
        assert op["bindings"]["amqp"]["deliveryMode"] == 2, f"operation {name}: delivery_mode must be 2"
        channel = op["channel"]["$ref"].split("/")[-1]
        assert channel in doc["channels"], f"operation {name}: unknown channel {channel}"
        used.add(channel)
        for message in op.get("messages", []):
            parts = message["$ref"].split("/")
            assert parts[:3] == ["#", "channels", channel] and parts[4] in doc["channels"][channel]["messages"], (
                f"operation {name}: {message['$ref']} is not a message of its channel")
    assert used == set(doc["channels"]), f"channels without operations: {sorted(set(doc['channels']) - used)}"
    for name, message in messages.items():
        if name != "deadLetter":  # republished as it came
            assert message["contentType"] == "application/json", name
            assert message["bindings"]["amqp"]["contentEncoding"] == "utf-8", name
    # Each event type and each method has its message.
    titles = {m["title"] for m in messages.values()}
    assert set(EVENT_TYPES) <= titles, sorted(set(EVENT_TYPES) - titles)


def test_asyncapi_covers_every_schema_and_what_the_worker_source_uses():
    """Every args, result and event schema has its AsyncAPI message, and every RPC method and event type the
    worker's source names (the worker's modules and the wire types they publish: WORKER_SOURCES) is in
    contracts/: a method or event added without its contract fails here, before any traffic is captured."""
    doc = yaml.safe_load((CONTRACTS / "asyncapi.yaml").read_text())
    messages = doc["components"]["messages"]

    def referenced(key):
        return {m[key]["$ref"].removeprefix("./schemas/") for m in messages.values() if key in m}

    files = {kind: {p.relative_to(SCHEMAS).as_posix() for p in (SCHEMAS / kind).glob("*.json")}
             for kind in ("rpc/args", "rpc/results", "events")}
    assert referenced("x-berth-args") == files["rpc/args"]
    assert referenced("x-berth-result") == files["rpc/results"]
    assert referenced("x-berth-payload") == files["events"] | {"metrics/berth.metrics.json", SERVICE_REPORT_SCHEMA}
    assert {f"rpc/args/{name}.json" for name in API.values()} == files["rpc/args"]
    # Each request message is on every RPC channel, each result on the reply queue.
    for channel in ("rpcTopic", "rpcServer", "rpcFanout"):
        on_channel = {ref["$ref"].split("/")[-1] for ref in doc["channels"][channel]["messages"].values()}
        assert on_channel == {n for n, m in messages.items() if "x-berth-args" in m}, channel
    replies = {ref["$ref"].split("/")[-1] for ref in doc["channels"]["replyQueue"]["messages"].values()}
    assert {n for n, m in messages.items() if "x-berth-result" in m} <= replies

    source = "\n".join(p.read_text() for module in WORKER_SOURCES
                         for p in sorted((REPO_ROOT / "Sources" / module).glob("*.swift")))
    compute = set(re.findall(r'methods\["(\w+)"\]\s*=', source))
    debug_block = source[source.index("enum DebugEndpoints"):]
    debug_block = debug_block[:debug_block.index("\n}\n")]
    debug = set(re.findall(r'^\s*"(\w+)": (?:\w+,|\w+ \? \w+ : \w+,|\{ call in)', debug_block, re.M))
    assert compute and debug, "the method tables moved: update this test"
    assert {(None, m) for m in compute} | {(DEBUG_NAMESPACE, m) for m in debug} == set(API), (compute, debug)
    emitted = set(re.findall(r'\.emit\(\s*"([a-z_.]+)"', source))
    for operation in re.findall(r'InstanceEvents\.around\(\s*"([a-z_.]+)"', source):
        emitted |= {f"{operation}.start", f"{operation}.end", f"{operation}.error"}
    emitted |= set(re.findall(r'static let eventType = "([a-z_.]+)"', source))
    assert emitted, "the event emitters moved: update this test"
    contracted = set(EVENT_TYPES) | {METRICS_EVENT, SERVICE_REPORT_EVENT}
    assert emitted == contracted, f"emitted, not in contracts/: {sorted(emitted - contracted)}; in contracts/, " \
                                  f"never emitted: {sorted(contracted - emitted)}"


def test_image_property_contract_agrees_with_the_schemas(contracts):
    properties = json.loads((CONTRACTS / "image-properties.json").read_text())
    by_name = {p["name"]: p for p in properties["properties"]}
    common = contracts.registry.contents(SCHEMA_BASE + "common.json")["$defs"]
    assert by_name["hw_disk_bus"]["allowed"] == common["diskBus"]["enum"]
    assert by_name["hw_vif_model"]["allowed"] == common["vifModel"]["enum"]
    assert by_name["hw_machine_type"]["pattern"] == common["machineType"]["pattern"]
    assert by_name["timezone"]["pattern"] == common["timezone"]["pattern"]
    overrides = properties["metadata"]["overrides"]
    assert sorted(overrides) == sorted(p["name"] for p in properties["properties"] if "metadata" in p["appears_in"])
    boot = contracts.registry.contents(SCHEMA_BASE + "rpc/args/boot_instance.json")
    metadata = boot["$defs"]["instance"]["properties"]["metadata"]["anyOf"][0]
    assert sorted(metadata["properties"]) == sorted(overrides)
    assert metadata["maxProperties"] == properties["metadata"]["max_keys"]
    layers = properties["precedence"]["effective_properties"]
    assert layers == ["volume_image_metadata", "image", "variant", "metadata"]
    # Each sample boot request in these shapes fits, and the refused keys are refused.
    instance = {"uuid": "3f2a8c1e-5b7d-4e9a-8c2f-1a2b3c4d5e6f", "name": "vm", "image_id": "img-1",
                "flavor": {"name": "m1.tiny", "vcpus": 1, "memory_mb": 64, "root_gb": 0}}
    for key in overrides:
        value = {"hw_disk_bus": "virtio", "hw_vif_model": "e1000", "hw_machine_type": "q35",
                 "timezone": "Europe/Paris"}.get(key, "console=ttyS0")
        assert not contracts.errors("rpc/args/boot_instance.json",
                                    {"instance": {**instance, "metadata": {key: value}}}), key
    for key in properties["metadata"]["refused"]["names"] + ["hw_disk_buss", "kernel_foo", "ramdisk_x"]:
        assert contracts.errors("rpc/args/boot_instance.json", {"instance": {**instance, "metadata": {key: "x"}}}), key


def test_generic_schemas_accept_real_oslo_messages(contracts):
    """Reference check: the oslo-level schemas accept what oslo.messaging 18.3.1 itself sent (the shared wire
    captures), so a failure on Berth's messages is Berth's, not an over-strict schema's."""
    if not SHARED_CAPTURES.is_dir():
        pytest.skip(f"no oslo wire captures at {SHARED_CAPTURES}")
    checked = 0
    for path in sorted(SHARED_CAPTURES.glob("*.json")):
        capture = json.loads(path.read_text())
        body = capture.get("body") if isinstance(capture, dict) else None
        if not isinstance(body, dict) or "oslo.message" not in body:
            continue  # the v1 notification driver sends no envelope
        assert not contracts.errors("amqp/envelope.json", body), path.name
        inner = json.loads(body["oslo.message"])
        if "method" in inner:
            name = "rpc/request.json"
        elif "event_type" in inner:
            name = "notifications/notification.json"
        else:
            name = "rpc/reply.json"
        errors = contracts.errors(name, inner)
        assert not errors, f"{path.name} vs {name}:\n" + "\n".join(errors)
        checked += 1
    assert checked >= 10


def test_only_a_minted_placeholder_event_has_a_null_instance_uuid(contracts):
    """The one event whose instance_uuid may be null (contracts/README.md): image.placeholder.create from
    create_placeholder_image. From snapshot_instance it names the instance and the volume snapshot; every other
    event names its instance; no event may drop the key or have a null image_id."""
    base = {"image_id": "img-1", "host": "compute-1", "request_id": "req-1", "state": "active"}
    uuid_ = "3f2a8c1e-5b7d-4e9a-8c2f-1a2b3c4d5e6f"
    placeholder = "events/image.placeholder.create.json"
    accepted = [
        {**base, "instance_uuid": None},  # create_placeholder_image(volume_id)
        {**base, "instance_uuid": None, "snapshot_id": "snap-1"},  # create_placeholder_image(snapshot_id)
        {**base, "instance_uuid": uuid_, "snapshot_id": "snap-1"},  # snapshot_instance, volume-backed
    ]
    refused = [
        {**base, "instance_uuid": uuid_},  # from an instance, but without the snapshot it took
        base,  # instance_uuid must be present, if null
        {**base, "instance_uuid": None, "image_id": None},
        {**base, "instance_uuid": ""},
    ]
    for payload in accepted:
        assert not contracts.errors(placeholder, payload), payload
    for payload in refused:
        assert contracts.errors(placeholder, payload), payload
    for event_type in EVENT_TYPES:
        if event_type == "image.placeholder.create":
            continue
        schema = contracts.registry.contents(SCHEMA_BASE + f"events/{event_type}.json")
        assert "instance_uuid" in schema["required"], event_type
        assert contracts.errors(f"events/{event_type}.json", {**base, "instance_uuid": None}), event_type


def test_snapshot_result_is_image_id_and_kind(contracts):
    """DESIGN §3: image_id and kind (snapshot_id with a placeholder); nothing else, snapshot_image_id included."""
    result = "rpc/results/snapshot_instance.json"
    assert not contracts.errors(result, {"image_id": "img-2", "kind": "image"})
    assert not contracts.errors(result, {"image_id": "img-2", "kind": "placeholder", "snapshot_id": "snap-1"})
    assert contracts.errors(result, {"image_id": "img-2", "kind": "placeholder"})
    assert contracts.errors(result, {"image_id": "img-2", "kind": "image", "snapshot_id": "snap-1"})
    assert contracts.errors(result, {"kind": "image"})
    assert contracts.errors(result, {"image_id": "img-2", "kind": "image", "snapshot_image_id": "img-2"})


# --- classifying the captured messages -------------------------------------------------------------------------


class Analysis:
    """What the session's capture holds, sorted by who sent it and what it is."""

    def __init__(self, messages, session):
        self.messages = messages
        names = session["names"]
        self.exchanges = set()
        for n in names:
            self.exchanges |= {n.exchange, f"{n.topic}_fanout", *n.extra_exchanges}
        self.workers = session["workers"]
        self.exchanges |= {w["exchange"] for w in self.workers} | {f"{w['topic']}_fanout" for w in self.workers}
        self.requests = []  # dicts: m, outer, inner, berth (published by a berth process)
        self.requests_by_msg_id = {}
        self.replies = []
        self.notifications = []
        self.dead_letters = []
        self.service_reports = []
        self.undecodable = []  # (captured, published by berth, error)
        self._classify()

    def from_berth(self, m) -> bool:
        return not PYTHON_CONNECTIONS.owns(m.client_port, m.received)

    def _classify(self):
        pending_replies = []
        for m in self.messages:
            if m.exchange == DEAD_LETTER_EXCHANGE:
                headers = m.properties.get("headers") or {}
                if headers.get("x-berth-original-exchange") in self.exchanges:
                    self.dead_letters.append({"m": m, "berth": self.from_berth(m)})
                continue
            if m.exchange == SERVICE_REPORT_EXCHANGE:
                self._classify_service_report(m)
                continue
            is_reply = m.exchange == "" and m.routing_key.startswith("reply_")
            if not is_reply and m.exchange not in self.exchanges:
                continue  # not this session's
            berth = self.from_berth(m)
            try:
                outer, inner = decode_oslo(m.body)
            except (ValueError, UnicodeDecodeError) as exc:
                if not is_reply:
                    self.undecodable.append((m, berth, exc))
                continue
            entry = {"m": m, "outer": outer, "inner": inner, "berth": berth}
            if not isinstance(inner, dict):
                if not is_reply:
                    self.undecodable.append((m, berth, f"message is a JSON {type(inner).__name__}"))
                continue
            if is_reply:
                pending_replies.append(entry)
            elif "event_type" in inner:
                self.notifications.append(entry)
            else:
                self.requests.append(entry)
                if isinstance(inner.get("_msg_id"), str):
                    self.requests_by_msg_id.setdefault(inner["_msg_id"], entry)
        for entry in pending_replies:
            request = self.requests_by_msg_id.get(entry["inner"].get("_msg_id"))
            if request is not None:
                entry["request"] = request
                self.replies.append(entry)
        # Which calls a Berth worker answered, and which topics an oslo server serves.
        self.answered_by_berth = {}
        oslo_routes = set()
        for entry in self.replies:
            msg_id = entry["inner"].get("_msg_id")
            request = entry["request"]
            if entry["berth"]:
                self.answered_by_berth.setdefault(msg_id, []).append(entry)
            else:
                oslo_routes.add((request["m"].exchange, request["m"].routing_key))
        self.oslo_routes = oslo_routes

    def _classify_service_report(self, m):
        """A report of one of this session's workers (the stream is the vhost's: other users report there too);
        `berth hosts` markers (routing key marker.<id>, empty body) are not reports."""
        if m.routing_key.startswith("marker.") or not self.from_berth(m):
            return
        try:
            outer, inner = decode_oslo(m.body)
        except (ValueError, UnicodeDecodeError) as exc:
            self.undecodable.append((m, True, exc))
            return
        payload = inner.get("payload") if isinstance(inner, dict) else None
        if isinstance(payload, dict) and payload.get("control_exchange") in self.exchanges:
            self.service_reports.append({"m": m, "outer": outer, "inner": inner, "berth": True})

    def cast_to_berth(self, request) -> bool:
        m = request["m"]
        if (m.exchange, m.routing_key) in self.oslo_routes:
            return False
        for w in self.workers:
            if w["started"] - 1 > m.received:
                continue
            if m.exchange == w["exchange"] and m.routing_key in (w["topic"], f"{w['topic']}.{w['host']}"):
                return True
            if m.exchange == f"{w['topic']}_fanout":
                return True
        return False

    def requests_to_berth(self):
        """(request, final reply or None) for every call a Berth worker answered and every cast to its queues."""
        for request in self.requests:
            msg_id = request["inner"].get("_msg_id")
            if msg_id is not None:
                replies = self.answered_by_berth.get(msg_id)
                if replies:
                    final = next((r for r in replies if r["inner"].get("ending") is True), None)
                    yield request, final
            elif self.cast_to_berth(request):
                yield request, None


def method_key(inner) -> tuple:
    return (inner.get("namespace"), inner.get("method"))


class Findings:
    def __init__(self):
        self.violations: list[str] = []
        self.counts = collections.Counter()
        self.notes: list[str] = []

    def check(self, contracts, kind, schema, instance, where):
        errors = contracts.errors(schema, instance)
        if errors:
            self.violations.append(f"[{kind}] {where}\n  " + "\n  ".join(errors))
        else:
            self.counts[kind] += 1
        return not errors

    def fail(self, kind, where, text):
        self.violations.append(f"[{kind}] {where}\n  {text}")


def image_id_problem(payload) -> str | None:
    if not isinstance(payload, dict):
        return f"payload is a JSON {type(payload).__name__}, not an object"
    if "image_id" not in payload:
        return "image_id is missing"
    value = payload["image_id"]
    if value is None:
        return "image_id is null"
    if not isinstance(value, str) or not value:
        return f"image_id is {value!r}, not a non-empty string"
    return None


def validate_capture(contracts, analysis) -> Findings:
    f = Findings()

    # Replies from Berth workers.
    heartbeat_ok = {}
    for entry in analysis.replies:
        if not entry["berth"]:
            continue
        m, inner, request = entry["m"], entry["inner"], entry["request"]
        where = f"reply {m.describe()} to {method_key(request['inner'])}"
        f.check(contracts, "amqp properties", "amqp/properties.json", m.properties, where)
        if "expiration" in m.properties:
            f.fail("amqp properties", where, f"a reply carries expiration {m.properties['expiration']!r}")
        f.check(contracts, "envelope", "amqp/envelope.json", entry["outer"], where)
        if not f.check(contracts, "reply", "rpc/reply.json", inner, where):
            continue
        if inner["ending"] is False:
            f.counts["heartbeat"] += 1
            if request["inner"].get("_timeout") is None:
                f.fail("heartbeat", where, "a heartbeat for a call whose _timeout was null (an oslo client "
                                           "without a call monitor crashes on it, OSLO-WIRE.md §6)")
            heartbeat_ok[inner["_msg_id"]] = True
            continue
        if inner["failure"] is not None:
            failure = json.loads(inner["failure"])
            if f.check(contracts, "failure", "rpc/failure.json", failure, where):
                f.counts[f"failure {failure['class']}"] += 1
                if failure["module"] == "berth.exceptions" and failure["args"] != [failure["message"]]:
                    f.fail("failure", where, f"args {short(failure['args'])} are not [message]")
                if failure["class"] == "InternalError":
                    f.fail("failure", where, f"InternalError (a worker bug): {failure['message']}")
            continue
        name = API.get(method_key(request["inner"]))
        if name is None:
            f.fail("result", where, f"a success reply to a method outside the API: {short(inner['result'])}")
        elif name == "debug.fail":
            f.fail("result", where, "berth.debug fail succeeded")
        else:
            f.check(contracts, f"result {name}", f"rpc/results/{name}.json", inner["result"], where)

    # Requests to Berth workers (from oslo clients, raw peers or the CLI).
    for request, final in analysis.requests_to_berth():
        m, inner = request["m"], request["inner"]
        where = f"request {m.describe()} {method_key(inner)}"
        refused = None
        if final is not None and final["inner"].get("failure"):
            try:
                refused = json.loads(final["inner"]["failure"]).get("class")
            except ValueError:
                refused = "?"
        if refused in REFUSALS:
            agrees = bool(contracts.errors("rpc/berth-request.json", inner))
            f.counts[f"refused request ({refused}), schema {'also rejects' if agrees else 'accepts'}"] += 1
            if not agrees:
                reason = json.loads(final["inner"]["failure"]).get("message", "")
                f.notes.append(f"{where}: refused ({refused}: {reason[:200]}) but fits the schema "
                               f"(properties {short(m.properties, 200)})")
            continue
        name = API.get(method_key(inner), "unknown")
        f.check(contracts, f"request {name}", "rpc/berth-request.json", inner, where)

    # Requests the CLI published (to oslo servers or workers).
    for request in analysis.requests:
        if not request["berth"]:
            continue
        m = request["m"]
        where = f"CLI request {m.describe()} {method_key(request['inner'])}"
        f.check(contracts, "amqp properties", "amqp/properties.json", m.properties, where)
        replayed = "x-berth-replayed-reason" in (m.properties.get("headers") or {})
        if replayed:
            f.counts["replayed dead letter"] += 1
            if "expiration" in m.properties:
                f.fail("amqp properties", where, "a replayed dead letter carries expiration")
        elif ("_msg_id" in request["inner"]) != ("expiration" in m.properties):
            f.fail("amqp properties", where, "expiration must be set on calls and only on calls")
        f.check(contracts, "envelope", "amqp/envelope.json", request["outer"], where)
        f.check(contracts, "CLI request", "rpc/request.json", request["inner"], where)

    # Notifications: status events and metrics from workers, anything from `berth notify`. Every status event
    # and every sample names an image: image_id null, empty or missing fails.
    worker_publishers = {f"compute.{w['host']}" for w in analysis.workers}
    for entry in analysis.notifications:
        if not entry["berth"]:
            continue
        m, inner = entry["m"], entry["inner"]
        event_type = inner.get("event_type")
        where = f"notification {event_type} {m.describe()}"
        f.check(contracts, "amqp properties", "amqp/properties.json", m.properties, where)
        if "expiration" in m.properties:
            f.fail("amqp properties", where, "a notification carries expiration")
        f.check(contracts, "envelope", "amqp/envelope.json", entry["outer"], where)
        priority = str(inner.get("priority", "")).lower()
        if not m.routing_key.endswith("." + priority):
            f.fail("notification", where, f"routing key {m.routing_key!r} does not end in .{priority}")
        if event_type in EVENT_TYPES or event_type == METRICS_EVENT:
            kind = "sample batch" if event_type == METRICS_EVENT else f"event {event_type}"
            f.check(contracts, kind, "notifications/berth-notification.json", inner, where)
        else:
            # Only `berth notify` publishes other event types (the payload is its user's): a worker must not.
            if inner.get("publisher_id") in worker_publishers:
                f.fail("event", where, f"a worker published event type {event_type!r}, which is not in "
                                       f"contracts/ (known: {', '.join(EVENT_TYPES + [METRICS_EVENT])})")
            f.check(contracts, "CLI notification", "notifications/notification.json", inner, where)
            continue
        payload = inner.get("payload")
        if event_type == METRICS_EVENT:
            samples = payload.get("samples") if isinstance(payload, dict) else None
            for index, sample in enumerate(samples if isinstance(samples, list) else [None]):
                problem = image_id_problem(sample)
                if problem:
                    f.fail("image_id", f"{where} sample {index}", f"{problem}: {short(sample)}")
                else:
                    f.counts["sample"] += 1
        else:
            problem = image_id_problem(payload)
            if problem:
                f.fail("image_id", where, f"{problem}: {short(payload)}")

    # Service reports (exchange berth.services).
    for entry in analysis.service_reports:
        m, inner = entry["m"], entry["inner"]
        where = f"service report {m.describe()}"
        f.check(contracts, "amqp properties", "amqp/properties.json", m.properties, where)
        f.check(contracts, "envelope", "amqp/envelope.json", entry["outer"], where)
        if f.check(contracts, "service report notification", "notifications/notification.json", inner, where):
            if inner["event_type"] != "berth.service.report" or inner["priority"] != "INFO":
                f.fail("service report", where, f"event_type {inner['event_type']!r}, priority {inner['priority']!r}")
            payload = inner["payload"]
            if f.check(contracts, "service report", SERVICE_REPORT_SCHEMA, payload, where):
                if m.routing_key != f"{payload['topic']}.{payload['host']}":
                    f.fail("service report", where, f"routing key {m.routing_key!r} is not <topic>.<host>")

    # Dead letters the workers republished.
    for entry in analysis.dead_letters:
        if entry["berth"]:
            f.check(contracts, "dead letter", "amqp/dead-letter.json", entry["m"].properties,
                    f"dead letter {entry['m'].describe()}")

    for m, berth, error in analysis.undecodable:
        if berth:
            f.fail("undecodable", m.describe(), f"Berth published a body that is not oslo JSON: {error}")
    return f


# --- the contract test -----------------------------------------------------------------------------------------


def report(findings: Findings, analysis: Analysis) -> str:
    lines = [f"captured {len(analysis.messages)} messages on the broker; this session's: "
             f"{len(analysis.requests)} requests, {len(analysis.replies)} replies, "
             f"{len(analysis.notifications)} notifications, {len(analysis.dead_letters)} dead letters"]
    lines += [f"  {count:5d}  {kind}" for kind, count in sorted(findings.counts.items())]
    return "\n".join(lines)


def test_captured_messages_match_contracts(contracts, firehose, tmp_path_factory):
    if firehose.error:
        unavailable(f"no firehose capture: {firehose.error}")
    if not CONTRACT_SESSION.get("other_tests"):
        pytest.skip("the contract test validates what the rest of the interop suite sent; run it with the suite")
    firehose.settle()
    analysis = Analysis(firehose.messages(), CONTRACT_SESSION)
    findings = validate_capture(contracts, analysis)
    summary = report(findings, analysis)
    out = os.environ.get("BERTH_CONTRACT_REPORT") or str(tmp_path_factory.mktemp("contracts") / "report.txt")
    pathlib.Path(out).write_text(summary + "\n\nnotes:\n" + "\n".join(findings.notes) + "\n\ngaps:\n"
                                 + "\n".join(firehose.gaps) + "\n\nviolations:\n\n"
                                 + "\n\n".join(findings.violations) + "\n")
    print(summary)

    if findings.violations:
        shown = findings.violations[:MAX_REPORTED]
        more = len(findings.violations) - len(shown)
        pytest.fail(f"{len(findings.violations)} captured message(s) break contracts/ (full list: {out}):\n\n"
                    + "\n\n".join(shown) + (f"\n\n... and {more} more" if more > 0 else "")
                    + f"\n\n{summary}", pytrace=False)

    assert not firehose.gaps, (
        "the capture missed part of the run, so not every message was validated; rerun (another process "
        "turned the firehose off, or the broker restarted):\n  " + "\n  ".join(firehose.gaps) + f"\n{summary}")
    failures = sum(count for kind, count in findings.counts.items() if kind.startswith("failure "))
    seen = dict(findings.counts, failure=failures)
    missing = {kind: (seen.get(kind, 0), n) for kind, n in MINIMUM.items() if seen.get(kind, 0) < n}
    assert not missing, f"too few captured messages of these kinds (seen, needed): {missing}\n{summary}"


def test_validator_rejects_a_null_image_id(contracts, firehose):
    """The check above has teeth: a captured event and sample with image_id null or missing are rejected."""
    if firehose.error:
        unavailable(f"no firehose capture: {firehose.error}")
    if not CONTRACT_SESSION.get("other_tests"):
        pytest.skip("needs the events the rest of the interop suite makes")
    analysis = Analysis(firehose.messages(), CONTRACT_SESSION)
    events = [e["inner"] for e in analysis.notifications
              if e["berth"] and e["inner"].get("event_type") == "instance.create.end"]
    assert events, "no instance.create.end captured to mutate"
    original = events[0]
    assert not contracts.errors("notifications/berth-notification.json", original)
    for mutate in (lambda p: p.update(image_id=None), lambda p: p.pop("image_id"), lambda p: p.update(image_id="")):
        event = copy.deepcopy(original)
        mutate(event["payload"])
        errors = contracts.errors("notifications/berth-notification.json", event)
        assert errors and any("image_id" in e for e in errors), (event["payload"], errors)
        assert image_id_problem(event["payload"])
    samples = [e["inner"] for e in analysis.notifications
               if e["berth"] and e["inner"].get("event_type") == METRICS_EVENT]
    batch = copy.deepcopy(samples[0]) if samples else {
        **copy.deepcopy(original), "event_type": METRICS_EVENT, "priority": "SAMPLE",
        "payload": {"samples": [{"name": "cpu.time", "unit": "ns", "type": "cumulative", "value": 1,
                                 "image_id": original["payload"]["image_id"],
                                 "instance_uuid": original["payload"]["instance_uuid"],
                                 "host": original["payload"]["host"], "flavor": "tiny",
                                 "timestamp": "2026-01-01T00:00:00.000000Z"}]}}
    assert not contracts.errors("notifications/berth-notification.json", batch)
    batch["payload"]["samples"][0]["image_id"] = None
    errors = contracts.errors("notifications/berth-notification.json", batch)
    assert errors and any("image_id" in e or "None" in e for e in errors), errors
