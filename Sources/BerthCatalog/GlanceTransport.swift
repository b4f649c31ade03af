import BerthCore
import BerthDigest
import BerthJSON
import BerthBlocking
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// HTTP to Glance through libcurl's easy interface (already on every host: Foundation's networking uses it),
/// driven directly rather than through URLSession: libcurl hands each piece of an answer to `CurlExchange`'s
/// callback from its own read loop, so nothing more is read from the socket while Berth writes and hashes a
/// chunk. URLSession on Linux queues every chunk for its delegate without waiting, and a fast server filled
/// hundreds of MiB before any limit was seen (docs/glance.md). Sends the token as `X-Auth-Token` and never puts
/// it in a message.
///
/// Berth's rules are enforced while the bytes arrive: a JSON answer stops at `answerLimit`, image data at the
/// size Glance's record gives, an error body at `errorBodyLimit` (Content-Length first, then a running count),
/// and a redirect is followed only on the endpoint's own origin, so neither a hostile answer nor a hostile
/// server gets Berth's memory, disk or token.
final class GlanceTransport: Sendable {
    let endpoint: GlanceEndpoint
    private let token: GlanceToken
    private let requestTimeout: Int

    /// Bytes of an error body kept for the message; the rest is not read.
    static let errorBodyLimit = 64 << 10
    /// Bytes of a JSON answer (a listing page of 100 images with 128 properties each stays far below).
    static let answerLimit = 32 << 20
    /// Redirects followed on the endpoint's origin before the answer counts as a loop.
    static let redirectLimit = 5

    init(endpoint: GlanceEndpoint, token: GlanceToken, requestTimeout: Int = 60) {
        self.endpoint = endpoint
        self.token = token
        self.requestTimeout = requestTimeout
    }

    /// Sends a request whose answer is JSON (or nothing); maps every failure to a `CatalogError`.
    func json(
        _ method: String, _ url: String, body: JSONValue? = nil, contentType: String = "application/json",
        operation: GlanceOperation, expect: Set<Int> = [200]
    ) async throws(CatalogError) -> JSONValue? {
        let limit = Self.answerLimit
        let request = CurlExchange.Request(
            method: method, url: url,
            headers: headers(accept: "application/json", contentType: body.map { _ in contentType }),
            body: body.map { .bytes(JSONCodec.serialize($0)) }, timeout: requestTimeout)
        let answer = try await exchange(
            request, limit: Int64(limit), operation,
            tooLarge: { seen, declared in
                GlanceRecord.malformed(
                    "an answer to \(operation.verb)\(operation.imageID.map { " \($0)" } ?? "") larger than "
                        + "\(limit) bytes (\(declared ? "Content-Length" : "already") \(seen)); it was not read")
            })
        guard expect.contains(answer.status) else {
            throw GlanceErrors.error(
                status: answer.status, body: answer.errorBody, operation: operation, endpoint: endpoint)
        }
        guard !answer.body.isEmpty else { return nil }
        do {
            return try JSONCodec.parse(answer.body, limits: JSONLimits(maxBytes: limit, maxDepth: 16))
        } catch {
            throw GlanceRecord.malformed("not JSON: \(error.message)")
        }
    }

    enum UploadBody {
        case file(URL, size: Int64)
        case bytes(Data)
    }

    /// `PUT /v2/images/{id}/file`, streamed from the file by libcurl (not read into memory), with a length, not
    /// chunked encoding: Glance checks it against image_size_cap before reading.
    func upload(_ url: String, body: UploadBody, operation: GlanceOperation) async throws(CatalogError) {
        let content: CurlExchange.Body
        switch body {
        case .file(let file, let size): content = .file(file.path, size: size)
        case .bytes(let data): content = .bytes([UInt8](data))
        }
        let request = CurlExchange.Request(
            method: "PUT", url: url,
            headers: headers(accept: "application/json", contentType: "application/octet-stream"),
            body: content, timeout: requestTimeout)
        let answer = try await exchange(
            request, limit: Int64(Self.errorBodyLimit), operation,
            tooLarge: { _, _ in GlanceRecord.malformed("a long answer to an upload") })
        guard answer.status == 204 || answer.status == 200 else {
            throw GlanceErrors.error(
                status: answer.status, body: answer.errorBody, operation: operation, endpoint: endpoint)
        }
    }

    /// `GET /v2/images/{id}/file` streamed into `file` (each chunk written and hashed as it arrives), with its
    /// size, md5 and the `os_hash_algo` digest. More than `expectedSize` bytes (the record's `size`) is refused as
    /// soon as Content-Length or the running count says so; the caller verifies the rest and commits.
    func download(
        _ url: String, into file: Descriptor, expectedSize: Int64, algorithm: GlanceHash.Algorithm,
        operation: GlanceOperation
    ) async throws(CatalogError) -> GlanceHash.Result {
        let endpoint = self.endpoint
        var hasher = GlanceHash.Hasher(algorithm)
        let request = CurlExchange.Request(
            method: "GET", url: url, headers: headers(accept: "application/octet-stream", contentType: nil), body: nil,
            timeout: requestTimeout)
        let answer = try await exchange(
            request, limit: expectedSize, operation,
            tooLarge: { seen, declared in
                .invalidImage(
                    "Glance at \(endpoint) sends more data for image \(operation.imageID ?? "?") than its record's "
                        + "size of \(expectedSize) bytes (\(declared ? "Content-Length" : "already") \(seen)); the "
                        + "download was stopped and nothing was cached. Re-upload the image to Glance")
            },
            consume: { chunk throws(CatalogError) in
                hasher.update(chunk)
                try Files.writeAll(file, chunk)
            })
        switch answer.status {
        case 200:
            return hasher.finalize()
        case 204:
            // Only active images are downloaded: Glance answers 204 when its store lost the data file.
            throw .invalidImage(
                "Glance at \(endpoint) returned no data for image \(operation.imageID ?? "?") (HTTP 204) although "
                    + "the image is active: its store has lost the data. Nothing was cached; re-upload the image")
        default:
            throw GlanceErrors.error(
                status: answer.status, body: answer.errorBody, operation: operation, endpoint: endpoint)
        }
    }

    private func headers(accept: String, contentType: String?) -> [String] {
        var headers = ["Accept: \(accept)"]
        if let contentType { headers.append("Content-Type: \(contentType)") }
        if let token = token.current { headers.append("X-Auth-Token: \(token)") }
        // libcurl waits up to a second for "100 Continue" before a body; Glance never sends one.
        headers.append("Expect:")
        return headers
    }

    /// Runs the exchange on `CatalogThreads.glance` (libcurl blocks), following redirects only on the endpoint's
    /// origin, and maps libcurl's failures to `CatalogError`.
    private func exchange(
        _ request: CurlExchange.Request, limit: Int64, _ operation: GlanceOperation,
        tooLarge: @escaping (Int64, Bool) -> CatalogError,
        consume: ((UnsafeRawBufferPointer) throws(CatalogError) -> Void)? = nil
    ) async throws(CatalogError) -> CurlExchange.Answer {
        let endpoint = self.endpoint
        let work = CurlExchange.Work(
            limit: limit, tooLarge: tooLarge, consume: consume)
        return try await CatalogThreads.glance.runToCompletion { () throws(CatalogError) in
            var request = request
            for _ in 0...Self.redirectLimit {
                let answer = try CurlExchange.perform(request, work: work, endpoint: endpoint, operation)
                guard let location = answer.redirect else { return answer }
                guard endpoint.isSameOrigin(location) else {
                    throw .unavailable(
                        "Glance at \(endpoint) redirected to another origin "
                            + "(\(GlanceEndpoint.origin(of: location))); Berth does not follow it, so its token "
                            + "is not sent there. Point --catalog at the URL that serves the Glance API")
                }
                request.url = location.absoluteString
            }
            throw GlanceRecord.malformed("more than \(Self.redirectLimit) redirects")
        }
    }
}

/// The digests Glance records: `os_hash_algo` (sha512 by default) and the legacy md5 `checksum`.
enum GlanceHash {
    enum Algorithm: Sendable, Equatable {
        case sha512, sha384, sha256, md5

        /// Nil for an algorithm Berth cannot compute (then the image cannot be verified and is refused).
        init?(_ name: String) {
            switch name.lowercased() {
            case "sha512": self = .sha512
            case "sha384": self = .sha384
            case "sha256": self = .sha256
            case "md5": self = .md5
            default: return nil
            }
        }
    }

    struct Result: Sendable, Equatable {
        var size: Int64
        var md5: String
        var osHash: String
    }

    struct Hasher {
        let algorithm: Algorithm
        private var md5 = MD5Digest()
        private var sha512 = SHA512Digest()
        private var sha384 = SHA512Digest(truncatedTo384: true)
        private var sha256 = SHA256Digest()
        private(set) var size: Int64 = 0

        init(_ algorithm: Algorithm) { self.algorithm = algorithm }

        mutating func update(_ chunk: UnsafeRawBufferPointer) {
            md5.update(chunk)
            switch algorithm {
            case .sha512: sha512.update(chunk)
            case .sha384: sha384.update(chunk)
            case .sha256: sha256.update(chunk)
            case .md5: break
            }
            size += Int64(chunk.count)
        }

        mutating func finalize() -> Result {
            let md5 = self.md5.finalize()
            let osHash: String
            switch algorithm {
            case .sha512: osHash = sha512.finalize()
            case .sha384: osHash = sha384.finalize()
            case .sha256: osHash = sha256.finalize()
            case .md5: osHash = md5
            }
            return Result(size: size, md5: md5, osHash: osHash)
        }
    }

    /// Hashes a file already on this host (the cache copy), for `verifyImageData` and the first use per process.
    static func file(_ descriptor: Descriptor, algorithm: Algorithm) throws(CatalogError) -> Result {
        var hasher = Hasher(algorithm)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Files.chunkBytes, alignment: 16)
        defer { buffer.deallocate() }
        while true {
            let got = try Files.readFull(descriptor, into: buffer, action: "read")
            if got > 0 { hasher.update(UnsafeRawBufferPointer(rebasing: buffer[..<got])) }
            if got < buffer.count { break }
        }
        return hasher.finalize()
    }

    /// Nil when the data is what the record says; otherwise what differs, for the message.
    static func mismatch(_ result: Result, image: CatalogImage) -> String? {
        if result.size != image.size { return "size \(result.size), expected \(image.size)" }
        if let expected = image.osHashValue, expected.lowercased() != result.osHash {
            return "\(image.osHashAlgo ?? "os_hash") \(result.osHash.prefix(16))…, expected \(expected.prefix(16))…"
        }
        if let expected = image.checksum, expected.lowercased() != result.md5 {
            return "md5 \(result.md5), expected \(expected)"
        }
        return nil
    }
}
