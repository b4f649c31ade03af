/// Encodes any `Encodable` into a `JSONValue`, keeping object keys in the order they were encoded.
///
/// Unlike `JSONCodec.serialize`, which writes non-finite doubles as null, encoding NaN or Infinity
/// throws `EncodingError.invalidValue`: a Codable model that produces one has a bug worth hearing about.
/// `UInt64`/`UInt` values above `Int64.max` throw too, because `JSONValue` integers are 64-bit signed.
public struct JSONValueEncoder: Sendable {
    public var userInfo: [CodingUserInfoKey: any Sendable] = [:]

    public init() {}

    public func encode<T: Encodable>(_ value: T) throws -> JSONValue {
        let node = EncodingNode()
        try node.encode(value, codingPath: [], userInfo: userInfo)
        guard !node.isEmpty else {
            throw EncodingError.invalidValue(
                value,
                EncodingError.Context(codingPath: [], debugDescription: "\(T.self) did not encode any value"))
        }
        return node.value
    }
}

/// One place in the document being built. Containers hand out child nodes so nested containers can be
/// filled in any order and still end up in their parent; `value` assembles the result at the end.
final class EncodingNode {
    /// Members live in classes so adding one does not copy its siblings.
    private final class Members {
        var keys: [String] = []
        var nodes: [String: EncodingNode] = [:]
    }

    private final class Elements {
        var nodes: [EncodingNode] = []
    }

    private enum Content {
        case empty
        case value(JSONValue)
        case object(Members)
        case array(Elements)
    }

    private var content = Content.empty

    var isEmpty: Bool { if case .empty = content { true } else { false } }

    var value: JSONValue {
        switch content {
        // A value that asked for no container, e.g. an empty superclass, encodes as {} like Foundation.
        case .empty: return .object(JSONObject())
        case .value(let value): return value
        case .object(let members): return .object(JSONObject(members.keys.map { ($0, members.nodes[$0]!.value) }))
        case .array(let elements): return .array(elements.nodes.map(\.value))
        }
    }

    func set(_ value: JSONValue) { content = .value(value) }

    /// Turns this node into an object unless it already is one, so two keyed containers requested
    /// for the same value share their members.
    @discardableResult
    private func members() -> Members {
        if case .object(let members) = content { return members }
        let members = Members()
        content = .object(members)
        return members
    }

    @discardableResult
    private func elements() -> Elements {
        if case .array(let elements) = content { return elements }
        let elements = Elements()
        content = .array(elements)
        return elements
    }

    func becomeObject() { members() }
    func becomeArray() { elements() }

    /// The member node for `key`; `replacing` starts it afresh (a second encode for the same key wins,
    /// in the first key's position).
    func member(_ key: String, replacing: Bool) -> EncodingNode {
        let members = members()
        if let existing = members.nodes[key], !replacing { return existing }
        let node = EncodingNode()
        if members.nodes.updateValue(node, forKey: key) == nil { members.keys.append(key) }
        return node
    }

    func appendElement() -> EncodingNode {
        let node = EncodingNode()
        elements().nodes.append(node)
        return node
    }

    var elementCount: Int { if case .array(let elements) = content { elements.nodes.count } else { 0 } }

    func encode<T: Encodable>(
        _ value: T, codingPath: [any CodingKey], userInfo: [CodingUserInfoKey: any Sendable]
    ) throws {
        switch value {
        case let json as JSONValue: set(json)
        case let object as JSONObject: set(.object(object))
        default: try value.encode(to: ValueEncoder(node: self, codingPath: codingPath, userInfo: userInfo))
        }
    }
}

final class ValueEncoder: Encoder {
    let node: EncodingNode
    let codingPath: [any CodingKey]
    let sendableUserInfo: [CodingUserInfoKey: any Sendable]

    init(node: EncodingNode, codingPath: [any CodingKey], userInfo: [CodingUserInfoKey: any Sendable]) {
        self.node = node
        self.codingPath = codingPath
        self.sendableUserInfo = userInfo
    }

    var userInfo: [CodingUserInfoKey: Any] { sendableUserInfo }

    func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
        node.becomeObject()
        return KeyedEncodingContainer(KeyedValueEncoder<Key>(encoder: self, node: node))
    }

    func unkeyedContainer() -> any UnkeyedEncodingContainer {
        node.becomeArray()
        return UnkeyedValueEncoder(encoder: self, node: node)
    }

    func singleValueContainer() -> any SingleValueEncodingContainer {
        SingleValueEncoder(encoder: self)
    }

    func child(_ node: EncodingNode, key: any CodingKey) -> ValueEncoder {
        ValueEncoder(node: node, codingPath: codingPath + [key], userInfo: sendableUserInfo)
    }
}

/// Scalar conversions shared by all three container kinds.
enum ScalarEncoding {
    static func integer<T: BinaryInteger>(_ value: T, codingPath: [any CodingKey]) throws -> JSONValue {
        guard let exact = Int64(exactly: value) else {
            throw EncodingError.invalidValue(
                value,
                EncodingError.Context(
                    codingPath: codingPath,
                    debugDescription: "integer \(value) is larger than Int64.max, which JSONValue cannot hold"))
        }
        return .int(exact)
    }

    static func floating<T: BinaryFloatingPoint>(_ value: T, codingPath: [any CodingKey]) throws -> JSONValue {
        guard value.isFinite else {
            throw EncodingError.invalidValue(
                value,
                EncodingError.Context(
                    codingPath: codingPath, debugDescription: "\(value) is not finite and has no JSON form"))
        }
        // Float goes through its own shortest description so 0.1 as Float stays 0.1, not 0.100000001490116.
        if let float = value as? Float { return .double(Double(float.description) ?? Double(float)) }
        return .double(Double(value))
    }
}

struct KeyedValueEncoder<Key: CodingKey>: KeyedEncodingContainerProtocol {
    let encoder: ValueEncoder
    let node: EncodingNode

    var codingPath: [any CodingKey] { encoder.codingPath }

    private func store(_ value: JSONValue, forKey key: Key) {
        node.member(key.stringValue, replacing: true).set(value)
    }

    private func path(_ key: Key) -> [any CodingKey] { codingPath + [key] }

    mutating func encodeNil(forKey key: Key) throws { store(.null, forKey: key) }
    mutating func encode(_ value: Bool, forKey key: Key) throws { store(.bool(value), forKey: key) }
    mutating func encode(_ value: String, forKey key: Key) throws { store(.string(value), forKey: key) }
    mutating func encode(_ value: Double, forKey key: Key) throws {
        store(try ScalarEncoding.floating(value, codingPath: path(key)), forKey: key)
    }
    mutating func encode(_ value: Float, forKey key: Key) throws {
        store(try ScalarEncoding.floating(value, codingPath: path(key)), forKey: key)
    }
    mutating func encode(_ value: Int, forKey key: Key) throws { store(.int(Int64(value)), forKey: key) }
    mutating func encode(_ value: Int8, forKey key: Key) throws { store(.int(Int64(value)), forKey: key) }
    mutating func encode(_ value: Int16, forKey key: Key) throws { store(.int(Int64(value)), forKey: key) }
    mutating func encode(_ value: Int32, forKey key: Key) throws { store(.int(Int64(value)), forKey: key) }
    mutating func encode(_ value: Int64, forKey key: Key) throws { store(.int(value), forKey: key) }
    mutating func encode(_ value: UInt, forKey key: Key) throws {
        store(try ScalarEncoding.integer(value, codingPath: path(key)), forKey: key)
    }
    mutating func encode(_ value: UInt8, forKey key: Key) throws { store(.int(Int64(value)), forKey: key) }
    mutating func encode(_ value: UInt16, forKey key: Key) throws { store(.int(Int64(value)), forKey: key) }
    mutating func encode(_ value: UInt32, forKey key: Key) throws { store(.int(Int64(value)), forKey: key) }
    mutating func encode(_ value: UInt64, forKey key: Key) throws {
        store(try ScalarEncoding.integer(value, codingPath: path(key)), forKey: key)
    }

    mutating func encode<T: Encodable>(_ value: T, forKey key: Key) throws {
        let member = node.member(key.stringValue, replacing: true)
        try member.encode(value, codingPath: path(key), userInfo: encoder.sendableUserInfo)
    }

    mutating func nestedContainer<NestedKey: CodingKey>(
        keyedBy keyType: NestedKey.Type, forKey key: Key
    ) -> KeyedEncodingContainer<NestedKey> {
        encoder.child(node.member(key.stringValue, replacing: false), key: key).container(keyedBy: keyType)
    }

    mutating func nestedUnkeyedContainer(forKey key: Key) -> any UnkeyedEncodingContainer {
        encoder.child(node.member(key.stringValue, replacing: false), key: key).unkeyedContainer()
    }

    mutating func superEncoder() -> any Encoder {
        encoder.child(node.member(JSONMemberKey.super.stringValue, replacing: false), key: JSONMemberKey.super)
    }

    mutating func superEncoder(forKey key: Key) -> any Encoder {
        encoder.child(node.member(key.stringValue, replacing: false), key: key)
    }
}

struct UnkeyedValueEncoder: UnkeyedEncodingContainer {
    let encoder: ValueEncoder
    let node: EncodingNode

    var codingPath: [any CodingKey] { encoder.codingPath }
    var count: Int { node.elementCount }

    private var nextPath: [any CodingKey] { codingPath + [JSONIndexKey(count)] }
    private func append(_ value: JSONValue) { node.appendElement().set(value) }

    mutating func encodeNil() throws { append(.null) }
    mutating func encode(_ value: Bool) throws { append(.bool(value)) }
    mutating func encode(_ value: String) throws { append(.string(value)) }
    mutating func encode(_ value: Double) throws { append(try ScalarEncoding.floating(value, codingPath: nextPath)) }
    mutating func encode(_ value: Float) throws { append(try ScalarEncoding.floating(value, codingPath: nextPath)) }
    mutating func encode(_ value: Int) throws { append(.int(Int64(value))) }
    mutating func encode(_ value: Int8) throws { append(.int(Int64(value))) }
    mutating func encode(_ value: Int16) throws { append(.int(Int64(value))) }
    mutating func encode(_ value: Int32) throws { append(.int(Int64(value))) }
    mutating func encode(_ value: Int64) throws { append(.int(value)) }
    mutating func encode(_ value: UInt) throws { append(try ScalarEncoding.integer(value, codingPath: nextPath)) }
    mutating func encode(_ value: UInt8) throws { append(.int(Int64(value))) }
    mutating func encode(_ value: UInt16) throws { append(.int(Int64(value))) }
    mutating func encode(_ value: UInt32) throws { append(.int(Int64(value))) }
    mutating func encode(_ value: UInt64) throws { append(try ScalarEncoding.integer(value, codingPath: nextPath)) }

    mutating func encode<T: Encodable>(_ value: T) throws {
        let path = nextPath
        try node.appendElement().encode(value, codingPath: path, userInfo: encoder.sendableUserInfo)
    }

    mutating func nestedContainer<NestedKey: CodingKey>(
        keyedBy keyType: NestedKey.Type
    ) -> KeyedEncodingContainer<NestedKey> {
        let key = JSONIndexKey(count)
        return encoder.child(node.appendElement(), key: key).container(keyedBy: keyType)
    }

    mutating func nestedUnkeyedContainer() -> any UnkeyedEncodingContainer {
        let key = JSONIndexKey(count)
        return encoder.child(node.appendElement(), key: key).unkeyedContainer()
    }

    mutating func superEncoder() -> any Encoder {
        let key = JSONIndexKey(count)
        return encoder.child(node.appendElement(), key: key)
    }
}

struct SingleValueEncoder: SingleValueEncodingContainer {
    let encoder: ValueEncoder

    var codingPath: [any CodingKey] { encoder.codingPath }
    private var node: EncodingNode { encoder.node }

    mutating func encodeNil() throws { node.set(.null) }
    mutating func encode(_ value: Bool) throws { node.set(.bool(value)) }
    mutating func encode(_ value: String) throws { node.set(.string(value)) }
    mutating func encode(_ value: Double) throws {
        node.set(try ScalarEncoding.floating(value, codingPath: codingPath))
    }
    mutating func encode(_ value: Float) throws { node.set(try ScalarEncoding.floating(value, codingPath: codingPath)) }
    mutating func encode(_ value: Int) throws { node.set(.int(Int64(value))) }
    mutating func encode(_ value: Int8) throws { node.set(.int(Int64(value))) }
    mutating func encode(_ value: Int16) throws { node.set(.int(Int64(value))) }
    mutating func encode(_ value: Int32) throws { node.set(.int(Int64(value))) }
    mutating func encode(_ value: Int64) throws { node.set(.int(value)) }
    mutating func encode(_ value: UInt) throws { node.set(try ScalarEncoding.integer(value, codingPath: codingPath)) }
    mutating func encode(_ value: UInt8) throws { node.set(.int(Int64(value))) }
    mutating func encode(_ value: UInt16) throws { node.set(.int(Int64(value))) }
    mutating func encode(_ value: UInt32) throws { node.set(.int(Int64(value))) }
    mutating func encode(_ value: UInt64) throws {
        node.set(try ScalarEncoding.integer(value, codingPath: codingPath))
    }

    mutating func encode<T: Encodable>(_ value: T) throws {
        try node.encode(value, codingPath: codingPath, userInfo: encoder.sendableUserInfo)
    }
}
