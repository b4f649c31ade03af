import BerthJSON
import BerthLibvirt
import BerthWire
import Logging

public enum BerthVersion {
    public static let string = "0.1.0"
    /// The RPC API version this worker serves (DESIGN §3).
    public static let rpcAPI = RPCVersion(major: 1, minor: 0)
}

/// The compute RPC API (namespace none, version 1.0). Methods arrive issue by issue; those not yet here are
/// answered with oslo's `NoSuchMethod`.
public struct ComputeEndpoints: Sendable {
    public let host: String
    public let libvirt: LibvirtHost

    public init(host: String, libvirt: LibvirtHost) {
        self.host = host
        self.libvirt = libvirt
    }

    public var endpoint: RPCEndpointMethods {
        let host = self.host
        let libvirt = self.libvirt
        return RPCEndpointMethods(
            namespace: nil, version: BerthVersion.rpcAPI,
            methods: [
                "ping": { call in
                    try ArgumentCheck(call.args, method: "ping").allowOnly([])
                    return ["host": .string(host), "version": .string(BerthVersion.string)]
                },
                "describe_host": { call in
                    try ArgumentCheck(call.args, method: "describe_host").allowOnly([])
                    do {
                        let description = try await libvirt.describe(hostName: host)
                        return try JSONValueEncoder().encode(description)
                    } catch let error as LibvirtError {
                        throw RPCFailure.berth("HostIncompatible", "cannot read this host's capabilities: \(error)")
                    }
                },
            ])
    }
}

/// Test and operations helpers, served only with `berth worker --debug-rpc` (namespace `berth.debug`):
/// a slow method for call-monitor and drain tests, a failing one, and one that leaves a mark in the log.
public enum DebugEndpoints {
    public static let namespace = "berth.debug"
    static let maximumSleepSeconds = 600.0

    public static var endpoint: RPCEndpointMethods {
        RPCEndpointMethods(
            namespace: namespace, version: .oneZero,
            methods: [
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
