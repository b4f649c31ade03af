import BerthCompute
import BerthCore
import BerthJSON
import BerthLibvirt
import BerthRPC
import BerthWire
import Foundation
import Logging
import Synchronization

/// The compute RPC API (namespace none, version 1.0). Methods arrive issue by issue; those not yet here are
/// answered with oslo's `NoSuchMethod`.
public struct ComputeEndpoints: Sendable {
    public let host: String
    public let libvirt: LibvirtHost
    public let compute: ComputeService
    public let bareMetal: BareMetalService

    public init(compute: ComputeService, bareMetal: BareMetalService) {
        self.host = compute.host
        self.libvirt = compute.libvirt
        self.compute = compute
        // Deploys report their throughput with the boots' durations, in the same metrics batches.
        var bareMetal = bareMetal
        if bareMetal.metrics == nil { bareMetal.metrics = compute.metrics }
        self.bareMetal = bareMetal
    }

    public var endpoint: RPCEndpointMethods {
        let host = self.host
        let libvirt = self.libvirt
        let compute = self.compute
        let bareMetal = self.bareMetal
        // One assignment per method: a single literal of these closures is too much for the type checker.
        var methods: [String: RPCMethod] = [:]
        methods["ping"] = { call in
            try ArgumentCheck(call.args, method: "ping").allowOnly([])
            return ["host": .string(host), "version": .string(BerthVersion.string)]
        }
        methods["boot_instance"] = { call in
            let check = ArgumentCheck(call.args, method: "boot_instance")
            try check.allowOnly(["instance"])
            guard let instance = call.args["instance"] else {
                throw RPCFailure.berth("InvalidRequest", "boot_instance: missing argument 'instance'")
            }
            // Whose instance: recorded in its domain, carried by its metrics samples.
            let request = try BerthError.rpc { () throws(BerthError) in
                var request = try BootRequest.decode(instance)
                try request.takeOwner(projectID: call.projectID, userID: call.userID)
                return request
            }
            if request.target == .baremetal {
                return try await InstanceEvents.around(
                    "baremetal.deploy", uuid: request.uuid, imageID: request.imageID, call: call
                ) { () async throws(BerthError) -> JSONValue in
                    // One uuid, one instance: a VM of this uuid here makes the deploy a different instance. (A host
                    // whose libvirt is away still deploys: bare metal does not need it.)
                    if (try? await compute.instanceImageID(request.uuid)) != nil {
                        throw .instanceExists(
                            request.uuid, differences: ["it is a VM on this host, not a bare-metal deploy"])
                    }
                    let progress = DeployProgressEvents(uuid: request.uuid, imageID: request.imageID, call: call)
                    let outcome: Result<JSONObject, BerthError>
                    do throws(BerthError) {
                        outcome = .success(
                            try await bareMetal.deploy(
                                request, requestID: call.requestID, logger: call.logger, progress: progress.report))
                    } catch {
                        outcome = .failure(error)
                    }
                    // Every progress event is out before `.end` or `.error`.
                    await progress.finish()
                    return .object(try outcome.get())
                }
            }
            return try await InstanceEvents.around(
                "instance.create", uuid: request.uuid, imageID: request.imageID, call: call
            ) { () async throws(BerthError) -> JSONValue in
                if let deployed = try bareMetal.describe(uuid: request.uuid) {
                    let node = deployed["node"]?.stringValue ?? "?"
                    throw .instanceExists(
                        request.uuid, differences: ["it is a bare-metal deploy to node \(node), not a VM"])
                }
                return .object(try await compute.boot(request, requestID: call.requestID, logger: call.logger))
            }
        }
        methods["get_instance"] = { call in
            let uuid = try ArgumentCheck(call.args, method: "get_instance").instanceUUID()
            return .object(
                try await BerthError.rpc { () async throws(BerthError) -> JSONObject in
                    if let deployed = try bareMetal.describe(uuid: uuid) { return deployed }
                    return try await compute.describe(uuid: uuid)
                })
        }
        methods["delete_instance"] = { call in
            let uuid = try ArgumentCheck(call.args, method: "delete_instance").instanceUUID()
            // Only an instance that exists has an image_id to report; deleting nothing emits nothing.
            var existingImageID = try? bareMetal.imageID(of: uuid)
            if existingImageID == nil { existingImageID = try? await compute.instanceImageID(uuid) }
            if let imageID = existingImageID {
                await call.events.emit(
                    "instance.delete.start",
                    payload: InstanceEvents.payload(uuid: uuid, imageID: imageID, call: call, state: "deleting"),
                    error: false)
            }
            let (result, imageID) = try await BerthError.rpc {
                () async throws(BerthError) -> (result: JSONObject, imageID: String?) in
                if let imageID = try bareMetal.delete(uuid: uuid) {
                    let answer: JSONObject = ["uuid": .string(uuid), "status": "DELETED", "host": .string(host)]
                    return (answer, imageID)
                }
                return try await compute.delete(uuid: uuid, logger: call.logger)
            }
            if let imageID {
                await call.events.emit(
                    "instance.delete.end",
                    payload: InstanceEvents.payload(uuid: uuid, imageID: imageID, call: call, state: "deleted"),
                    error: false)
            }
            return .object(result)
        }
        methods["snapshot_instance"] = { call in
            let check = ArgumentCheck(call.args, method: "snapshot_instance")
            try check.allowOnly(["instance_uuid", "image_name", "properties"])
            let uuid = try check.uuid("instance_uuid")
            let name = try check.string("image_name", maxLength: 255)
            let properties = try check.stringMap("properties")
            let imageID = try await BerthError.rpc { () async throws(BerthError) in
                try await compute.instanceImageID(uuid)
            }
            let answer = try await InstanceEvents.around(
                "instance.snapshot", uuid: uuid, imageID: imageID, call: call
            ) { () async throws(BerthError) -> JSONValue in
                let result = try await compute.snapshot(
                    uuid: uuid, imageName: name, properties: properties, logger: call.logger)
                if result.kind == "placeholder" {
                    await InstanceEvents.placeholderCreated(
                        result.imageID, instanceUUID: uuid, call: call, snapshotID: result.snapshotID)
                }
                var answer = result.json
                answer["snapshot_image_id"] = .string(result.imageID)
                return .object(answer)
            }
            // snapshot_image_id is for instance.snapshot.end, whose image_id is the instance's own image; the
            // result names the new image image_id and nothing else (DESIGN §3, contracts/README.md).
            guard var result = answer.objectValue else { return answer }
            _ = result.removeValue(forKey: "snapshot_image_id")
            return .object(result)
        }
        methods["create_placeholder_image"] = { call in
            let check = ArgumentCheck(call.args, method: "create_placeholder_image")
            try check.allowOnly(["volume_id", "snapshot_id", "name", "properties"])
            let volumeID = try check.optionalUUID("volume_id")
            let snapshotID = try check.optionalUUID("snapshot_id")
            let name = try check.string("name", maxLength: 255)
            let properties = try check.stringMap("properties")
            let image = try await BerthError.rpc { () async throws(BerthError) in
                try await compute.createPlaceholder(
                    volumeID: volumeID, snapshotID: snapshotID, name: name, properties: properties)
            }
            await InstanceEvents.placeholderCreated(image.id, instanceUUID: nil, call: call, snapshotID: snapshotID)
            return ["image_id": .string(image.id)]
        }
        methods["describe_host"] = { call in
            try ArgumentCheck(call.args, method: "describe_host").allowOnly([])
            do {
                let description = try await libvirt.describe(hostName: host)
                return try JSONValueEncoder().encode(description)
            } catch let error as LibvirtError {
                throw RPCFailure.berth("HostIncompatible", "cannot read this host's capabilities: \(error)")
            }
        }

        return RPCEndpointMethods(namespace: nil, version: BerthVersion.rpcAPI, methods: methods)
    }
}

/// Test and operations helpers, served only with `berth worker --debug-rpc` (namespace `berth.debug`):
/// a slow method for call-monitor and drain tests, a failing one, and one that leaves a mark in the log.
public enum DebugEndpoints {
    public static let namespace = "berth.debug"
    static let maximumSleepSeconds = 600.0

    /// - Parameter crashIsFixed: `crash` answers instead of killing the worker: the "fixed" build a dead
    ///   letter is replayed to (`berth worker --debug-crash-fixed`).
    public static func endpoint(crashIsFixed: Bool = false) -> RPCEndpointMethods {
        RPCEndpointMethods(
            namespace: namespace, version: .oneZero,
            methods: [
                "crash": crashIsFixed ? fixedCrash : crash,
                "sleep": { call in
                    let check = ArgumentCheck(call.args, method: "sleep")
                    try check.allowOnly(["seconds"])
                    let seconds = try check.number("seconds", in: 0...maximumSleepSeconds)
                    try await Task.sleep(for: .milliseconds(Int(seconds * 1000)))
                    return ["slept": .double(seconds)]
                },
                "fail": { call in
                    let check = ArgumentCheck(call.args, method: "fail")
                    try check.allowOnly(["class_name", "message"])
                    let className = try check.string("class_name", maxLength: 64)
                    let message = try check.string("message", maxLength: 4096)
                    guard RPCFailure.berthClasses.contains(className) else {
                        throw RPCFailure.berth(
                            "InvalidRequest",
                            "fail: class_name must be one of \(RPCFailure.berthClasses.sorted().joined(separator: ", "))")
                    }
                    throw RPCFailure.berth(className, message)
                },
                "emit_later": { call in
                    // Emits events after the call has returned: lets tests take the broker away in between and
                    // check that events made while it was away are delivered after the reconnect.
                    let check = ArgumentCheck(call.args, method: "emit_later")
                    try check.allowOnly(["seconds", "count", "tag"])
                    let seconds = try check.number("seconds", in: 0...600)
                    let count = Int(try check.number("count", in: 1...1000))
                    let tag = try check.string("tag", maxLength: 256)
                    Task {
                        try? await Task.sleep(for: .milliseconds(Int(seconds * 1000)))
                        for index in 0..<count {
                            await call.events.emit(
                                "berth.debug.event",
                                payload: [
                                    "instance_uuid": .string(UUID().uuidString.lowercased()),
                                    "image_id": "00000000-0000-4000-8000-000000000000", "host": .string(call.host),
                                    "request_id": call.requestID.map(JSONValue.string) ?? .null, "state": "debug",
                                    "tag": .string(tag), "index": .int(Int64(index)),
                                ],
                                error: false)
                        }
                    }
                    return ["scheduled": .int(Int64(count))]
                },
                "record": { call in
                    let check = ArgumentCheck(call.args, method: "record")
                    try check.allowOnly(["tag"])
                    let tag = try check.string("tag", maxLength: 256)
                    call.logger.notice("debug record tag=\(tag)")
                    return ["host": .string(call.host), "tag": .string(tag)]
                },
            ])
    }
}

/// Validates RPC arguments, failing with `InvalidRequest` messages that name the field and what to send.
public struct ArgumentCheck: Sendable {
    public let args: JSONObject
    public let method: String

    public init(_ args: JSONObject, method: String) {
        self.args = args
        self.method = method
    }

    public func allowOnly(_ names: Set<String>) throws(RPCFailure) {
        let unknown = args.keys.filter { !names.contains($0) }
        guard unknown.isEmpty else {
            let allowed = names.isEmpty ? "it takes no arguments" : "allowed: \(names.sorted().joined(separator: ", "))"
            throw invalid("unknown argument(s) \(unknown.sorted().joined(separator: ", ")); \(allowed)")
        }
    }

    public func string(_ name: String, maxLength: Int) throws(RPCFailure) -> String {
        guard let value = args[name] else { throw invalid("missing argument '\(name)'") }
        guard let text = value.stringValue else { throw invalid("'\(name)' must be a string, got \(value.typeName)") }
        guard !text.isEmpty, text.utf8.count <= maxLength else {
            throw invalid("'\(name)' must be 1 to \(maxLength) bytes long")
        }
        return text
    }

    /// `instance_uuid`, the only argument of the per-instance methods.
    public func instanceUUID() throws(RPCFailure) -> String {
        try allowOnly(["instance_uuid"])
        return try uuid("instance_uuid")
    }

    public func uuid(_ name: String) throws(RPCFailure) -> String {
        let uuid = try string(name, maxLength: 36)
        guard BootRequest.isCanonicalUUID(uuid) else {
            throw invalid("'\(name)' must be a lowercase canonical UUID, got '\(uuid.prefix(40))'")
        }
        return uuid
    }

    public func optionalUUID(_ name: String) throws(RPCFailure) -> String? {
        guard let value = args[name], !value.isNull else { return nil }
        return try uuid(name)
    }

    /// An optional {str: str} object such as image `properties` (at most 128 entries; the catalog checks
    /// names and values).
    public func stringMap(_ name: String) throws(RPCFailure) -> [String: String] {
        guard let value = args[name], !value.isNull else { return [:] }
        guard let object = value.objectValue else { throw invalid("'\(name)' must be an object of strings") }
        guard object.count <= 128 else { throw invalid("'\(name)' has \(object.count) entries; at most 128") }
        var map: [String: String] = [:]
        for (key, entry) in object {
            guard let text = entry.stringValue else {
                throw invalid("'\(name).\(key)' must be a string, got \(entry.typeName)")
            }
            map[key] = text
        }
        return map
    }

    public func number(_ name: String, in range: ClosedRange<Double>) throws(RPCFailure) -> Double {
        guard let value = args[name] else { throw invalid("missing argument '\(name)'") }
        guard let number = value.doubleValue else { throw invalid("'\(name)' must be a number, got \(value.typeName)") }
        guard range.contains(number) else {
            throw invalid("'\(name)' must be between \(range.lowerBound) and \(range.upperBound), got \(number)")
        }
        return number
    }

    private func invalid(_ text: String) -> RPCFailure {
        .berth("InvalidRequest", "\(method): \(text)")
    }
}

extension BerthError {
    /// Runs Berth's rules and reports their errors in the RPC failure format.
    static func rpc<T>(_ body: () async throws(BerthError) -> T) async throws(RPCFailure) -> T {
        do {
            return try await body()
        } catch {
            throw RPCFailure.berth(error.className, error.message)
        }
    }

    static func rpc<T>(_ body: () throws(BerthError) -> T) throws(RPCFailure) -> T {
        do {
            return try body()
        } catch {
            throw RPCFailure.berth(error.className, error.message)
        }
    }
}

/// The `<operation>.start/.end/.error` events around an instance operation (DESIGN §7): every payload has
/// `instance_uuid`, `image_id`, `host`, `request_id` and `state`; errors add `error` {class, message}.
enum InstanceEvents {
    static func payload(uuid: String, imageID: String, call: RPCCall, state: String) -> JSONObject {
        [
            "instance_uuid": .string(uuid), "image_id": .string(imageID), "host": .string(call.host),
            "request_id": call.requestID.map(JSONValue.string) ?? .null, "state": .string(state),
        ]
    }

    /// `image.placeholder.create`: its image_id is the new placeholder's; instance_uuid is the snapshotted
    /// instance, or null when the placeholder was minted straight from a volume or snapshot.
    static func placeholderCreated(_ imageID: String, instanceUUID: String?, call: RPCCall, snapshotID: String?) async {
        var payload: JSONObject = [
            "instance_uuid": instanceUUID.map(JSONValue.string) ?? .null, "image_id": .string(imageID),
            "host": .string(call.host), "request_id": call.requestID.map(JSONValue.string) ?? .null,
            "state": "active",
        ]
        if let snapshotID { payload["snapshot_id"] = .string(snapshotID) }
        await call.events.emit("image.placeholder.create", payload: payload, error: false)
    }

    static func around(
        _ operation: String, uuid: String, imageID: String, call: RPCCall,
        _ work: () async throws(BerthError) -> JSONValue
    ) async throws(RPCFailure) -> JSONValue {
        await call.events.emit(
            "\(operation).start", payload: payload(uuid: uuid, imageID: imageID, call: call, state: "building"),
            error: false)
        do {
            let result = try await work()
            var end = payload(uuid: uuid, imageID: imageID, call: call, state: "active")
            if let line = result["kernel_cmdline"] { end["kernel_cmdline"] = line }
            if let variant = result["boot_variant"] { end["boot_variant"] = variant }
            if let drive = result["config_drive"] { end["config_drive"] = drive }
            if let snapshot = result["snapshot_image_id"] { end["snapshot_image_id"] = snapshot }
            await call.events.emit("\(operation).end", payload: end, error: false)
            return result
        } catch {
            var failed = payload(uuid: uuid, imageID: imageID, call: call, state: "error")
            failed["error"] = ["class": .string(error.className), "message": .string(error.message)]
            await call.events.emit("\(operation).error", payload: failed, error: true)
            throw RPCFailure.berth(error.className, error.message)
        }
    }
}

/// `baremetal.deploy.progress` about every 5 % of the bytes. The deploy thread reports synchronously; the
/// events go out in the order they were reported, through one stream and one publishing task (a task per
/// event would let them overtake each other, and the `.end` event). `finish()` waits until all are out.
final class DeployProgressEvents: Sendable {
    let uuid: String
    let imageID: String
    let call: RPCCall
    private let lastStep = Mutex(-1)
    private let pending: AsyncStream<JSONObject>.Continuation
    private let publisher: Task<Void, Never>

    init(uuid: String, imageID: String, call: RPCCall) {
        self.uuid = uuid
        self.imageID = imageID
        self.call = call
        // Unbounded, but at most 21 events (one per 5 %) are ever queued.
        let (stream, continuation) = AsyncStream.makeStream(of: JSONObject.self)
        pending = continuation
        publisher = Task {
            for await payload in stream {
                await call.events.emit("baremetal.deploy.progress", payload: payload, error: false)
            }
        }
    }

    /// Ends the stream and waits until every reported event has been handed to the event sink.
    func finish() async {
        pending.finish()
        await publisher.value
    }

    var report: BareMetalService.Progress {
        { [self] done, total in
            let percent = total == 0 ? 100 : Int(done * 100 / total)
            let step = percent / 5
            // Chosen and queued under one lock, so concurrent reports cannot queue out of order.
            lastStep.withLock { last in
                guard step > last else { return }
                last = step
                var payload = InstanceEvents.payload(uuid: uuid, imageID: imageID, call: call, state: "deploying")
                payload["progress"] = .int(Int64(percent))
                payload["bytes_done"] = .int(Int64(done))
                payload["bytes_total"] = .int(Int64(total))
                pending.yield(payload)
            }
        }
    }
}
