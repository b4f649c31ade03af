import BerthJSON

/// A remote exception in oslo's failure format. Sent as the `failure` field of a reply, itself a JSON string.
public struct RPCFailure: Error, Sendable, Hashable, CustomStringConvertible {
    public var className: String
    public var module: String
    public var message: String
    /// Python traceback lines, each ending in "\n"; the oslo client appends them to the message it raises.
    public var traceback: [String]
    /// Exception constructor arguments; the client calls `klass(*args, **kwargs)` when the module is allowed.
    public var args: [JSONValue]
    public var kwargs: JSONObject

    public init(
        className: String, module: String, message: String, traceback: [String]? = nil, args: [JSONValue]? = nil,
        kwargs: JSONObject = [:]
    ) {
        self.className = className
        self.module = module
        self.message = message
        self.traceback = traceback ?? Self.traceback(className: className, module: module, message: message)
        self.args = args ?? [.string(message)]
        self.kwargs = kwargs
    }

    public var description: String { "\(module).\(className): \(message)" }

    /// Module of Berth's own exceptions. Clients that list it in `allowed_remote_exmods` (and can import it)
    /// get the class back; others see `RemoteError` carrying class and message.
    public static let berthModule = "berth.exceptions"
    /// Module of the dispatcher's exceptions, as oslo reports them.
    public static let dispatcherModule = "oslo_messaging.rpc.dispatcher"

    /// The error classes of Berth's RPC API (DESIGN §3).
    public static let berthClasses: Set<String> = [
        "InvalidRequest", "ImageNotFound", "VolumeNotFound", "InvalidImage", "InvalidMetadata", "HostIncompatible",
        "InstanceExists", "InstanceNotFound", "NodeNotFound", "BuildFailed", "DeployFailed", "SnapshotFailed",
        "RetryLimitExceeded",
    ]

    /// A Berth error (`berth.exceptions.<className>`), args `[message]` like a one-argument Python exception.
    public static func berth(_ className: String, _ message: String) -> RPCFailure {
        RPCFailure(className: className, module: berthModule, message: message)
    }

    /// oslo's `UnsupportedVersion`, with its exact wording.
    public static func unsupportedVersion(_ version: RPCVersion, method: String) -> RPCFailure {
        let text = "Endpoint does not support RPC version \(version). Attempted method: \(method)"
        return RPCFailure(
            className: "UnsupportedVersion", module: dispatcherModule, message: text,
            traceback: traceback(
                className: "UnsupportedVersion", module: dispatcherModule, message: text, frame: "dispatch"))
    }

    /// oslo's `NoSuchMethod`, with its exact wording.
    public static func noSuchMethod(_ method: String) -> RPCFailure {
        let text = "Endpoint does not support RPC method \(method)"
        return RPCFailure(
            className: "NoSuchMethod", module: dispatcherModule, message: text,
            traceback: traceback(className: "NoSuchMethod", module: dispatcherModule, message: text, frame: "dispatch"))
    }

    /// A short traceback in Python's shape. Real frames would name files on the worker host, which callers
    /// cannot use and should not see; the last line is what the client shows and what operators grep for.
    public static func traceback(
        className: String, module: String, message: String, frame: String = "berth"
    ) -> [String] {
        // Python prints builtin exceptions without their module.
        let qualified = module == "builtins" || module == "exceptions" ? className : "\(module).\(className)"
        return [
            "Traceback (most recent call last):\n",
            "  File \"<berth>\", in \(frame)\n",
            "\(qualified): \(message)\n",
        ]
    }

    /// The dict oslo serialises, keys in its order. A class and module both ending in `_Remote` (an exception
    /// that was itself re-raised from a remote) lose the suffix, as oslo does before sending.
    public func encode() -> JSONObject {
        var className = className
        var module = module
        let suffix = "_Remote"
        if className.hasSuffix(suffix) && module.hasSuffix(suffix) {
            className.removeLast(suffix.count)
            module.removeLast(suffix.count)
        }
        return [
            "class": .string(className),
            "module": .string(module),
            "message": .string(message),
            "tb": .array(traceback.map(JSONValue.string)),
            "args": .array(args),
            "kwargs": .object(kwargs),
        ]
    }

    /// The reply's `failure` field: the dict above, JSON-encoded as a string.
    public var jsonString: String { JSONCodec.serializeString(.object(encode())) }

    /// Parses a reply's `failure` string (client side). Like oslo's client, only `class` is really needed;
    /// `module` and `message` default to "", and `tb`, `args`, `kwargs` to empty.
    public static func decode(
        fromJSONString text: String, limits: JSONLimits = .default
    ) throws(WireError) -> RPCFailure {
        let value: JSONValue
        do {
            value = try JSONCodec.parse(Array(text.utf8), limits: limits)
        } catch {
            throw WireError(decoding: error, what: "'failure'")
        }
        guard case .object(let object) = value else {
            throw WireError(.badField, "'failure' decodes to a JSON \(value.typeName), expected an object")
        }
        guard let classValue = object["class"] else {
            throw WireError(.missingField, "'failure' has no 'class'")
        }
        let className = try requireString(classValue, field: "failure.class")
        let module = try optionalAnyString(object["module"], field: "failure.module") ?? ""
        let message = try optionalAnyString(object["message"], field: "failure.message") ?? ""
        var traceback: [String] = []
        if let tb = object["tb"], !tb.isNull {
            guard case .array(let lines) = tb else {
                throw WireError(.badField, "'failure.tb' is a JSON \(tb.typeName); it must be a list of strings")
            }
            traceback = lines.map { $0.stringValue ?? "" }
        }
        var args: [JSONValue] = []
        if let argsValue = object["args"], !argsValue.isNull {
            guard case .array(let list) = argsValue else {
                throw WireError(.badField, "'failure.args' is a JSON \(argsValue.typeName); it must be a list")
            }
            args = list
        }
        var kwargs = JSONObject()
        if let kwargsValue = object["kwargs"], !kwargsValue.isNull {
            guard case .object(let dict) = kwargsValue else {
                throw WireError(.badField, "'failure.kwargs' is a JSON \(kwargsValue.typeName); it must be an object")
            }
            kwargs = dict
        }
        return RPCFailure(
            className: className, module: module, message: message, traceback: traceback, args: args,
            kwargs: kwargs)
    }

    /// The text oslo's client builds for the exception it raises: message, newline, then the traceback lines.
    public var remoteText: String { message + "\n" + traceback.joined(separator: "\n") }
}

/// Like `optionalString`, but an empty string is a valid value.
private func optionalAnyString(_ value: JSONValue?, field: String) throws(WireError) -> String? {
    guard let value, !value.isNull else { return nil }
    guard case .string(let text) = value else {
        throw WireError(.badField, "'\(field)' is a JSON \(value.typeName); it must be a string")
    }
    return text
}
