/// Why a body could not be parsed, or a parsed value did not have the expected shape.
public struct JSONError: Error, Sendable, CustomStringConvertible, Equatable {
    public enum Code: String, Sendable {
        case tooLarge
        case tooDeep
        case invalidUTF8
        case syntax
        case truncated
        case typeMismatch
        case missingKey
    }

    public let code: Code
    /// A sentence for an operator: what was wrong, where, and what to change.
    public let message: String

    public init(code: Code, message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code.rawValue): \(message)" }
}

extension JSONError {
    /// For callers that pick fields out of a `JSONValue` by hand: `path` names the field the way the
    /// Codable bridge does (`args.instance.uuid`).
    public static func typeMismatch(at path: String, expected: String, got value: JSONValue) -> JSONError {
        JSONError(code: .typeMismatch, message: "\(path): expected \(expected), got \(value.typeName)")
    }

    public static func missingKey(_ key: String, in path: String) -> JSONError {
        let field = path.isEmpty ? key : "\(path).\(key)"
        return JSONError(code: .missingKey, message: "\(field): missing required key \"\(key)\"")
    }
}
