import BerthJSONValue

extension JSONCodec {
    /// Bytes straight to a model: `JSONError` for a body that is not JSON, `DecodingError` for JSON
    /// of the wrong shape. `JSONCodingPath.describe(_:)` renders either for an operator.
    public static func decode<T: Decodable>(
        _ type: T.Type, from bytes: [UInt8], limits: JSONLimits = .default,
        decoder: JSONValueDecoder = JSONValueDecoder()
    ) throws -> T {
        try decoder.decode(type, from: parse(bytes, limits: limits))
    }

    public static func decode<T: Decodable>(
        _ type: T.Type, from text: String, limits: JSONLimits = .default,
        decoder: JSONValueDecoder = JSONValueDecoder()
    ) throws -> T {
        try decoder.decode(type, from: parse(text, limits: limits))
    }

    public static func encode<T: Encodable>(_ value: T, encoder: JSONValueEncoder = JSONValueEncoder()) throws
        -> [UInt8]
    {
        serialize(try encoder.encode(value))
    }

    public static func encodeString<T: Encodable>(
        _ value: T, encoder: JSONValueEncoder = JSONValueEncoder()
    ) throws -> String {
        serializeString(try encoder.encode(value))
    }
}
