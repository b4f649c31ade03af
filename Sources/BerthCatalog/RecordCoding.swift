import BerthCore
import BerthJSON
import Foundation

/// Catalog records on disk: the records' own Codable form (snake_case keys, as Glance and Cinder show
/// them) with timestamps as ISO 8601 text instead of Foundation's seconds-since-2001, so an operator
/// reading `images/<id>.json` sees what `glance image-show` would show.
public enum RecordCoding {
    static let dateKeys = ["created_at", "updated_at"]
    /// Larger than any record the write rules allow (128 properties of 64 KiB, escaped).
    static let recordLimits = JSONLimits(maxBytes: 64 << 20, maxDepth: 16)

    static func encode<Record: Encodable>(_ record: Record) throws(CatalogError) -> [UInt8] {
        JSONCodec.serialize(try json(record)) + [UInt8(ascii: "\n")]
    }

    /// A record as JSON the way its file holds it and Glance shows it: snake_case keys, timestamps as ISO 8601
    /// text. What the CLI prints, too.
    public static func json<Record: Encodable>(_ record: Record) throws(CatalogError) -> JSONValue {
        let value: JSONValue
        do {
            value = try JSONValueEncoder().encode(record)
        } catch {
            throw .unavailable("could not encode a catalog record (\(error)); this is a bug in BerthCatalog")
        }
        guard var object = value.objectValue else { return value }
        for key in dateKeys {
            guard let seconds = object[key]?.doubleValue else { continue }
            let date = Date(timeIntervalSinceReferenceDate: seconds)
            object[key] = .string(date.formatted(.iso8601))
        }
        return .object(object)
    }

    struct Unreadable: Error {
        let reason: String
    }

    /// The record in `bytes`, or why it cannot be read.
    static func decode<Record: Decodable>(_ type: Record.Type, from bytes: [UInt8]) -> Result<Record, Unreadable> {
        do {
            let value = try JSONCodec.parse(bytes, limits: recordLimits)
            guard var object = value.objectValue else { return .failure(Unreadable(reason: "not a JSON object")) }
            for key in dateKeys {
                guard let text = object[key]?.stringValue else { continue }
                guard let date = try? Date(text, strategy: .iso8601) else {
                    return .failure(Unreadable(reason: "\(key) \(CatalogID.quoted(text)) is not an ISO 8601 time"))
                }
                object[key] = .double(date.timeIntervalSinceReferenceDate)
            }
            return .success(try JSONValueDecoder().decode(type, from: .object(object)))
        } catch let error as JSONError {
            return .failure(Unreadable(reason: error.message))
        } catch {
            return .failure(Unreadable(reason: JSONCodingPath.describe(error)))
        }
    }

    /// Now, to the second: the precision ISO 8601 text keeps, so a record read back equals the one written.
    static func now() -> Date { Date(timeIntervalSince1970: Date().timeIntervalSince1970.rounded(.down)) }
}
