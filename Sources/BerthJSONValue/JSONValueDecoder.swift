/// Decodes any `Decodable` from a `JSONValue`. Errors are `DecodingError`s whose coding path and
/// description read well through `JSONCodingPath.describe(_:)`:
/// `instance.flavor.vcpus: expected integer, got string`.
///
/// Integers are range-checked for the requested type, and a number with no fractional part (`2.0`,
/// which Python writes for floats) is accepted where an integer is expected.
public struct JSONValueDecoder: Sendable {
    public var userInfo: [CodingUserInfoKey: any Sendable] = [:]

    public init() {}

    public func decode<T: Decodable>(_ type: T.Type, from value: JSONValue) throws -> T {
        try ValueDecoder(value: value, codingPath: [], userInfo: userInfo).decode(type)
    }
}

final class ValueDecoder: Decoder {
    let value: JSONValue
    let codingPath: [any CodingKey]
    let sendableUserInfo: [CodingUserInfoKey: any Sendable]

    init(value: JSONValue, codingPath: [any CodingKey], userInfo: [CodingUserInfoKey: any Sendable]) {
        self.value = value
        self.codingPath = codingPath
        self.sendableUserInfo = userInfo
    }

    var userInfo: [CodingUserInfoKey: Any] { sendableUserInfo }

    func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
        guard case .object(let object) = value else {
            throw ScalarDecoding.mismatch([String: JSONValue].self, expected: "object", got: value, at: codingPath)
        }
        return KeyedDecodingContainer(KeyedValueDecoder<Key>(decoder: self, object: object))
    }

    func unkeyedContainer() throws -> any UnkeyedDecodingContainer {
        guard case .array(let elements) = value else {
            throw ScalarDecoding.mismatch([JSONValue].self, expected: "array", got: value, at: codingPath)
        }
        return UnkeyedValueDecoder(decoder: self, elements: elements)
    }

    func singleValueContainer() throws -> any SingleValueDecodingContainer {
        SingleValueDecoder(decoder: self)
    }

    func decode<T: Decodable>(_ type: T.Type) throws -> T {
        // JSONValue is returned as is, which keeps .int and .double apart and skips a rebuild.
        if T.self == JSONValue.self { return value as! T }
        if T.self == JSONObject.self {
            guard case .object(let object) = value else {
                throw ScalarDecoding.mismatch(type, expected: "object", got: value, at: codingPath)
            }
            return object as! T
        }
        return try T(from: self)
    }

    func child(_ value: JSONValue, key: any CodingKey) -> ValueDecoder {
        ValueDecoder(value: value, codingPath: codingPath + [key], userInfo: sendableUserInfo)
    }
}

/// Scalar conversions shared by all three container kinds.
enum ScalarDecoding {
    static func mismatch(
        _ type: Any.Type, expected: String, got value: JSONValue, at path: [any CodingKey]
    ) -> DecodingError {
        let context = DecodingError.Context(
            codingPath: path, debugDescription: "expected \(expected), got \(value.typeName)")
        // Foundation reports null where a value is required as valueNotFound; callers may switch on that.
        return value.isNull ? .valueNotFound(type, context) : .typeMismatch(type, context)
    }

    static func bool(_ value: JSONValue, at path: [any CodingKey]) throws -> Bool {
        guard case .bool(let flag) = value else { throw mismatch(Bool.self, expected: "boolean", got: value, at: path) }
        return flag
    }

    static func string(_ value: JSONValue, at path: [any CodingKey]) throws -> String {
        guard case .string(let text) = value else {
            throw mismatch(String.self, expected: "string", got: value, at: path)
        }
        return text
    }

    static func integer<T: FixedWidthInteger>(_ type: T.Type, _ value: JSONValue, at path: [any CodingKey]) throws -> T
    {
        let converted: T?
        let shown: String
        switch value {
        case .int(let number):
            converted = T(exactly: number)
            shown = String(number)
        case .double(let number):
            guard number.rounded(.towardZero) == number else {
                throw DecodingError.typeMismatch(
                    type,
                    DecodingError.Context(
                        codingPath: path, debugDescription: "expected integer, got number \(number) with a fraction"))
            }
            converted = T(exactly: number)
            shown = number.description
        default:
            throw mismatch(type, expected: "integer", got: value, at: path)
        }
        guard let converted else {
            throw DecodingError.dataCorrupted(
                DecodingError.Context(
                    codingPath: path,
                    debugDescription: "integer \(shown) does not fit in \(T.self) (\(T.min)...\(T.max))"))
        }
        return converted
    }

    static func floating<T: BinaryFloatingPoint>(_ type: T.Type, _ value: JSONValue, at path: [any CodingKey]) throws
        -> T
    {
        let number: Double
        switch value {
        case .int(let integer): number = Double(integer)
        case .double(let double): number = double
        default: throw mismatch(type, expected: "number", got: value, at: path)
        }
        let converted = T(number)
        guard converted.isFinite else {
            throw DecodingError.dataCorrupted(
                DecodingError.Context(codingPath: path, debugDescription: "number \(number) does not fit in \(T.self)"))
        }
        return converted
    }
}

struct KeyedValueDecoder<Key: CodingKey>: KeyedDecodingContainerProtocol {
    let decoder: ValueDecoder
    let object: JSONObject

    var codingPath: [any CodingKey] { decoder.codingPath }
    var allKeys: [Key] { object.keys.compactMap { Key(stringValue: $0) } }

    func contains(_ key: Key) -> Bool { object[key.stringValue] != nil }

    private func member(_ key: Key) throws -> JSONValue {
        guard let member = object[key.stringValue] else {
            throw DecodingError.keyNotFound(
                key,
                DecodingError.Context(
                    codingPath: codingPath, debugDescription: "missing required key \"\(key.stringValue)\""))
        }
        return member
    }

    private func path(_ key: Key) -> [any CodingKey] { codingPath + [key] }

    func decodeNil(forKey key: Key) throws -> Bool { try member(key).isNull }
    func decode(_ type: Bool.Type, forKey key: Key) throws -> Bool {
        try ScalarDecoding.bool(member(key), at: path(key))
    }
    func decode(_ type: String.Type, forKey key: Key) throws -> String {
        try ScalarDecoding.string(member(key), at: path(key))
    }
    func decode(_ type: Double.Type, forKey key: Key) throws -> Double {
        try ScalarDecoding.floating(type, member(key), at: path(key))
    }
    func decode(_ type: Float.Type, forKey key: Key) throws -> Float {
        try ScalarDecoding.floating(type, member(key), at: path(key))
    }
    func decode(_ type: Int.Type, forKey key: Key) throws -> Int {
        try ScalarDecoding.integer(type, member(key), at: path(key))
    }
    func decode(_ type: Int8.Type, forKey key: Key) throws -> Int8 {
        try ScalarDecoding.integer(type, member(key), at: path(key))
    }
    func decode(_ type: Int16.Type, forKey key: Key) throws -> Int16 {
        try ScalarDecoding.integer(type, member(key), at: path(key))
    }
    func decode(_ type: Int32.Type, forKey key: Key) throws -> Int32 {
        try ScalarDecoding.integer(type, member(key), at: path(key))
    }
    func decode(_ type: Int64.Type, forKey key: Key) throws -> Int64 {
        try ScalarDecoding.integer(type, member(key), at: path(key))
    }
    func decode(_ type: UInt.Type, forKey key: Key) throws -> UInt {
        try ScalarDecoding.integer(type, member(key), at: path(key))
    }
    func decode(_ type: UInt8.Type, forKey key: Key) throws -> UInt8 {
        try ScalarDecoding.integer(type, member(key), at: path(key))
    }
    func decode(_ type: UInt16.Type, forKey key: Key) throws -> UInt16 {
        try ScalarDecoding.integer(type, member(key), at: path(key))
    }
    func decode(_ type: UInt32.Type, forKey key: Key) throws -> UInt32 {
        try ScalarDecoding.integer(type, member(key), at: path(key))
    }
    func decode(_ type: UInt64.Type, forKey key: Key) throws -> UInt64 {
        try ScalarDecoding.integer(type, member(key), at: path(key))
    }

    func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T {
        try decoder.child(member(key), key: key).decode(type)
    }

    func nestedContainer<NestedKey: CodingKey>(
        keyedBy type: NestedKey.Type, forKey key: Key
    ) throws -> KeyedDecodingContainer<NestedKey> {
        try decoder.child(member(key), key: key).container(keyedBy: type)
    }

    func nestedUnkeyedContainer(forKey key: Key) throws -> any UnkeyedDecodingContainer {
        try decoder.child(member(key), key: key).unkeyedContainer()
    }

    func superDecoder() throws -> any Decoder {
        decoder.child(object[JSONMemberKey.super.stringValue] ?? .null, key: JSONMemberKey.super)
    }

    func superDecoder(forKey key: Key) throws -> any Decoder {
        decoder.child(object[key.stringValue] ?? .null, key: key)
    }
}

struct UnkeyedValueDecoder: UnkeyedDecodingContainer {
    let decoder: ValueDecoder
    let elements: [JSONValue]
    private(set) var currentIndex = 0

    init(decoder: ValueDecoder, elements: [JSONValue]) {
        self.decoder = decoder
        self.elements = elements
    }

    var codingPath: [any CodingKey] { decoder.codingPath }
    var count: Int? { elements.count }
    var isAtEnd: Bool { currentIndex >= elements.count }

    private var path: [any CodingKey] { codingPath + [JSONIndexKey(currentIndex)] }

    /// The next element, consumed only once `convert` succeeds so a failed attempt can be retried as
    /// another type, as Foundation allows.
    private mutating func next<T>(_ type: T.Type, _ convert: (JSONValue, [any CodingKey]) throws -> T) throws -> T {
        guard !isAtEnd else {
            throw DecodingError.valueNotFound(
                type,
                DecodingError.Context(
                    codingPath: path, debugDescription: "array has only \(elements.count) elements"))
        }
        let result = try convert(elements[currentIndex], path)
        currentIndex += 1
        return result
    }

    mutating func decodeNil() throws -> Bool {
        guard !isAtEnd else {
            throw DecodingError.valueNotFound(
                Never?.self,
                DecodingError.Context(codingPath: path, debugDescription: "array has only \(elements.count) elements"))
        }
        // Only a null is consumed: decodeIfPresent asks here first, then decodes the same element.
        guard elements[currentIndex].isNull else { return false }
        currentIndex += 1
        return true
    }

    mutating func decode(_ type: Bool.Type) throws -> Bool { try next(type, ScalarDecoding.bool) }
    mutating func decode(_ type: String.Type) throws -> String { try next(type, ScalarDecoding.string) }
    mutating func decode(_ type: Double.Type) throws -> Double {
        try next(type) { try ScalarDecoding.floating(type, $0, at: $1) }
    }
    mutating func decode(_ type: Float.Type) throws -> Float {
        try next(type) { try ScalarDecoding.floating(type, $0, at: $1) }
    }
    mutating func decode(_ type: Int.Type) throws -> Int {
        try next(type) { try ScalarDecoding.integer(type, $0, at: $1) }
    }
    mutating func decode(_ type: Int8.Type) throws -> Int8 {
        try next(type) { try ScalarDecoding.integer(type, $0, at: $1) }
    }
    mutating func decode(_ type: Int16.Type) throws -> Int16 {
        try next(type) { try ScalarDecoding.integer(type, $0, at: $1) }
    }
    mutating func decode(_ type: Int32.Type) throws -> Int32 {
        try next(type) { try ScalarDecoding.integer(type, $0, at: $1) }
    }
    mutating func decode(_ type: Int64.Type) throws -> Int64 {
        try next(type) { try ScalarDecoding.integer(type, $0, at: $1) }
    }
    mutating func decode(_ type: UInt.Type) throws -> UInt {
        try next(type) { try ScalarDecoding.integer(type, $0, at: $1) }
    }
    mutating func decode(_ type: UInt8.Type) throws -> UInt8 {
        try next(type) { try ScalarDecoding.integer(type, $0, at: $1) }
    }
    mutating func decode(_ type: UInt16.Type) throws -> UInt16 {
        try next(type) { try ScalarDecoding.integer(type, $0, at: $1) }
    }
    mutating func decode(_ type: UInt32.Type) throws -> UInt32 {
        try next(type) { try ScalarDecoding.integer(type, $0, at: $1) }
    }
    mutating func decode(_ type: UInt64.Type) throws -> UInt64 {
        try next(type) { try ScalarDecoding.integer(type, $0, at: $1) }
    }

    mutating func decode<T: Decodable>(_ type: T.Type) throws -> T {
        let decoder = self.decoder
        return try next(type) { value, path in
            try ValueDecoder(value: value, codingPath: path, userInfo: decoder.sendableUserInfo).decode(type)
        }
    }

    mutating func nestedContainer<NestedKey: CodingKey>(
        keyedBy type: NestedKey.Type
    ) throws -> KeyedDecodingContainer<NestedKey> {
        let decoder = self.decoder
        return try next(KeyedDecodingContainer<NestedKey>.self) { value, path in
            try ValueDecoder(value: value, codingPath: path, userInfo: decoder.sendableUserInfo).container(
                keyedBy: type)
        }
    }

    mutating func nestedUnkeyedContainer() throws -> any UnkeyedDecodingContainer {
        let decoder = self.decoder
        return try next((any UnkeyedDecodingContainer).self) { value, path in
            try ValueDecoder(value: value, codingPath: path, userInfo: decoder.sendableUserInfo).unkeyedContainer()
        }
    }

    mutating func superDecoder() throws -> any Decoder {
        let decoder = self.decoder
        return try next((any Decoder).self) { value, path in
            ValueDecoder(value: value, codingPath: path, userInfo: decoder.sendableUserInfo)
        }
    }
}

struct SingleValueDecoder: SingleValueDecodingContainer {
    let decoder: ValueDecoder

    var codingPath: [any CodingKey] { decoder.codingPath }
    private var value: JSONValue { decoder.value }

    func decodeNil() -> Bool { value.isNull }
    func decode(_ type: Bool.Type) throws -> Bool { try ScalarDecoding.bool(value, at: codingPath) }
    func decode(_ type: String.Type) throws -> String { try ScalarDecoding.string(value, at: codingPath) }
    func decode(_ type: Double.Type) throws -> Double { try ScalarDecoding.floating(type, value, at: codingPath) }
    func decode(_ type: Float.Type) throws -> Float { try ScalarDecoding.floating(type, value, at: codingPath) }
    func decode(_ type: Int.Type) throws -> Int { try ScalarDecoding.integer(type, value, at: codingPath) }
    func decode(_ type: Int8.Type) throws -> Int8 { try ScalarDecoding.integer(type, value, at: codingPath) }
    func decode(_ type: Int16.Type) throws -> Int16 { try ScalarDecoding.integer(type, value, at: codingPath) }
    func decode(_ type: Int32.Type) throws -> Int32 { try ScalarDecoding.integer(type, value, at: codingPath) }
    func decode(_ type: Int64.Type) throws -> Int64 { try ScalarDecoding.integer(type, value, at: codingPath) }
    func decode(_ type: UInt.Type) throws -> UInt { try ScalarDecoding.integer(type, value, at: codingPath) }
    func decode(_ type: UInt8.Type) throws -> UInt8 { try ScalarDecoding.integer(type, value, at: codingPath) }
    func decode(_ type: UInt16.Type) throws -> UInt16 { try ScalarDecoding.integer(type, value, at: codingPath) }
    func decode(_ type: UInt32.Type) throws -> UInt32 { try ScalarDecoding.integer(type, value, at: codingPath) }
    func decode(_ type: UInt64.Type) throws -> UInt64 { try ScalarDecoding.integer(type, value, at: codingPath) }

    func decode<T: Decodable>(_ type: T.Type) throws -> T { try decoder.decode(type) }
}
