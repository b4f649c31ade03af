/// The key of an array element in a coding path, so paths print as `roles[1]`.
struct JSONIndexKey: CodingKey {
    let index: Int

    init(_ index: Int) { self.index = index }
    init?(stringValue: String) { nil }
    init?(intValue: Int) { self.index = intValue }

    var intValue: Int? { index }
    var stringValue: String { "Index \(index)" }
}

/// Any object member name, for containers whose keys are only known at run time.
struct JSONMemberKey: CodingKey {
    let stringValue: String

    init(_ name: String) { self.stringValue = name }
    init?(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { self.stringValue = String(intValue) }

    var intValue: Int? { nil }

    static let `super` = JSONMemberKey("super")
}

public enum JSONCodingPath {
    /// A coding path the way operators read JSON: `instance.flavor.vcpus`, `args.roles[1]`, or
    /// `(top level)` for the document itself.
    public static func describe(_ path: [any CodingKey]) -> String {
        var text = ""
        for key in path {
            if let index = key as? JSONIndexKey {
                text += "[\(index.index)]"
            } else {
                if !text.isEmpty { text += "." }
                text += key.stringValue
            }
        }
        return text.isEmpty ? "(top level)" : text
    }

    /// One line for a log or a failure reply: `instance.flavor.vcpus: expected integer, got string`.
    /// Understands `DecodingError`, `EncodingError` and `JSONError`; anything else is described as is.
    public static func describe(_ error: any Error) -> String {
        switch error {
        case let error as JSONError:
            return error.description
        case DecodingError.keyNotFound(let key, let context):
            return "\(describe(context.codingPath + [key])): missing required key"
        case DecodingError.typeMismatch(_, let context), DecodingError.valueNotFound(_, let context),
            DecodingError.dataCorrupted(let context):
            return "\(describe(context.codingPath)): \(context.debugDescription)"
        case EncodingError.invalidValue(_, let context):
            return "\(describe(context.codingPath)): \(context.debugDescription)"
        default:
            return String(describing: error)
        }
    }
}
