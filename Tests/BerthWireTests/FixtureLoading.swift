import BerthJSON
import Testing

/// Captured oslo.messaging messages live next to the tests (copied from the shared wire captures), so CI finds
/// them wherever the repository is cloned.
enum Fixture {
    static let directory: String = {
        let file = #filePath
        let parent = file[..<(file.lastIndex(of: "/") ?? file.endIndex)]
        return parent + "/Fixtures"
    }()

    static func bytes(_ name: String) throws -> [UInt8] {
        let path = directory + "/" + name
        guard let file = fopen(path, "rb") else { throw FixtureError("cannot open \(path)") }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65_536)
        while true {
            let count = fread(&chunk, 1, chunk.count, file)
            if count <= 0 { break }
            bytes.append(contentsOf: chunk[0..<count])
        }
        return bytes
    }

    /// The whole capture record (exchange, routing_key, properties, body, body_raw, ...).
    static func capture(_ name: String) throws -> JSONObject {
        let value = try JSONCodec.parse(try bytes(name), limits: JSONLimits(maxBytes: 1 << 20, maxDepth: 64))
        guard let object = value.objectValue else { throw FixtureError("\(name) is not an object") }
        return object
    }

    /// The exact AMQP body as published.
    static func bodyRaw(_ name: String) throws -> [UInt8] {
        guard let raw = try capture(name)["body_raw"]?.stringValue else {
            throw FixtureError("\(name) has no body_raw string")
        }
        return Array(raw.utf8)
    }
}

struct FixtureError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
