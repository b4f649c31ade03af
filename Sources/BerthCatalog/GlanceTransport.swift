import BerthCore
import BerthDigest
import BerthJSON
import Foundation
import Synchronization

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif
#if canImport(Glibc)
    import Glibc
#endif

/// HTTP to Glance through Foundation's URLSession (libcurl underneath on Linux): no package to build, which
/// keeps CI's build minutes where they are (docs/glance.md says why not AsyncHTTPClient). Sends the token as
/// `X-Auth-Token` and never puts it in a message.
///
/// Every answer is read through a `ResponseReader`, which enforces Berth's rules while the bytes arrive rather
/// than after: a JSON answer stops at `answerLimit`, image data at the size Glance's record gives, an error
/// body at `errorBodyLimit` (Content-Length first, then a running count), and a redirect to another origin is
/// refused, so neither a hostile answer nor a hostile server gets Berth's memory, disk or token.
final class GlanceTransport: Sendable {
    let endpoint: GlanceEndpoint
    private let token: String?
    private let requestTimeout: TimeInterval

    /// Bytes of an error body kept for the message; the rest is not read.
    static let errorBodyLimit = 64 << 10
    /// Bytes of a JSON answer (a listing page of 100 images with 128 properties each stays far below).
    static let answerLimit = 32 << 20

    init(endpoint: GlanceEndpoint, token: String?, requestTimeout: TimeInterval = 60) {
        self.endpoint = endpoint
        self.token = token
        self.requestTimeout = requestTimeout
    }

    func request(_ method: String, _ url: String, contentType: String? = nil) -> URLRequest {
        var request = URLRequest(url: URL(string: url)!)
        request.httpMethod = method
        request.setValue("application/json", forHTTPHeaderField: "Accept")
        if let contentType { request.setValue(contentType, forHTTPHeaderField: "Content-Type") }
        if let token { request.setValue(token, forHTTPHeaderField: "X-Auth-Token") }
        request.timeoutInterval = requestTimeout
        return request
    }

    /// Sends a request whose answer is JSON (or nothing); maps every failure to a `CatalogError`.
    func json(
        _ method: String, _ url: String, body: JSONValue? = nil, contentType: String = "application/json",
        operation: GlanceOperation, expect: Set<Int> = [200]
    ) async throws(CatalogError) -> JSONValue? {
        var request = request(method, url, contentType: body == nil ? nil : contentType)
        if let body { request.httpBody = Data(JSONCodec.serialize(body)) }
        let answer = JSONAnswer()
        let status = try await send(request, upload: nil, reader: answer.reader(endpoint, operation), operation)
        guard expect.contains(status.code) else {
            throw GlanceErrors.error(
                status: status.code, body: status.errorBody, operation: operation, endpoint: endpoint)
        }
        guard !answer.bytes.isEmpty else { return nil }
        do {
            return try JSONCodec.parse(
                [UInt8](answer.bytes), limits: JSONLimits(maxBytes: Self.answerLimit, maxDepth: 16))
        } catch {
            throw GlanceRecord.malformed("not JSON: \(error.message)")
        }
    }

    enum UploadBody {
        case file(URL, size: Int64)
        case bytes(Data)
    }

    /// `PUT /v2/images/{id}/file`, streamed from the file by URLSession (not read into memory).
    func upload(_ url: String, body: UploadBody, operation: GlanceOperation) async throws(CatalogError) {
        var request = request("PUT", url, contentType: "application/octet-stream")
        // A length, not chunked encoding: Glance checks it against image_size_cap before reading.
        switch body {
        case .file(_, let size): request.setValue(String(size), forHTTPHeaderField: "Content-Length")
        case .bytes(let data): request.setValue(String(data.count), forHTTPHeaderField: "Content-Length")
        }
        request.timeoutInterval = 24 * 3600
        let answer = JSONAnswer()
        let status = try await send(request, upload: body, reader: answer.reader(endpoint, operation), operation)
        guard status.code == 204 || status.code == 200 else {
            throw GlanceErrors.error(
                status: status.code, body: status.errorBody, operation: operation, endpoint: endpoint)
        }
    }

    /// `GET /v2/images/{id}/file` streamed into `file` (bounded memory: each chunk is written and hashed as
    /// it arrives), with its size, md5 and the `os_hash_algo` digest. More than `expectedSize` bytes (the
    /// record's `size`) is refused as soon as Content-Length or the running count says so; the caller verifies
    /// the rest and commits.
    func download(
        _ url: String, into file: Descriptor, expectedSize: Int64, algorithm: GlanceHash.Algorithm,
        operation: GlanceOperation
    ) async throws(CatalogError) -> GlanceHash.Result {
        var request = request("GET", url)
        request.setValue("application/octet-stream", forHTTPHeaderField: "Accept")
        let sink = DownloadSink(file: file, algorithm: algorithm)
        let endpoint = self.endpoint
        let reader = ResponseReader(
            endpoint: endpoint, limit: expectedSize,
            tooLarge: { seen, declared in
                .invalidImage(
                    "Glance at \(endpoint) sends more data for image \(operation.imageID ?? "?") than its record's "
                        + "size of \(expectedSize) bytes (\(declared ? "Content-Length" : "already") \(seen)); the "
                        + "download was stopped and nothing was cached. Re-upload the image to Glance")
            },
            consume: sink.consume)
        let status = try await send(request, upload: nil, reader: reader, operation)
        switch status.code {
        case 200:
            return sink.hasher.finalize()
        case 204:
            // Only active images are downloaded: Glance answers 204 when its store lost the data file.
            throw .invalidImage(
                "Glance at \(endpoint) returned no data for image \(operation.imageID ?? "?") (HTTP 204) although "
                    + "the image is active: its store has lost the data. Nothing was cached; re-upload the image")
        default:
            throw GlanceErrors.error(
                status: status.code, body: status.errorBody, operation: operation, endpoint: endpoint)
        }
    }

    /// Runs one request on a session of its own, whose delegate is `reader`, and waits for its outcome.
    private func send(
        _ request: URLRequest, upload: UploadBody?, reader: ResponseReader, _ operation: GlanceOperation
    ) async throws(CatalogError) -> ResponseReader.Status {
        let configuration = URLSessionConfiguration.ephemeral
        configuration.timeoutIntervalForRequest = requestTimeout
        configuration.timeoutIntervalForResource = 24 * 3600
        configuration.httpCookieAcceptPolicy = .never
        configuration.urlCache = nil
        let queue = OperationQueue()
        queue.maxConcurrentOperationCount = 1
        queue.name = "berth.glance"
        let session = URLSession(configuration: configuration, delegate: reader, delegateQueue: queue)
        defer { session.finishTasksAndInvalidate() }
        let outcome = await withCheckedContinuation {
            (continuation: CheckedContinuation<ResponseReader.Outcome, Never>) in
            reader.finish = { continuation.resume(returning: $0) }
            let task: URLSessionTask
            switch upload {
            case .file(let url, _)?: task = session.uploadTask(with: request, fromFile: url)
            case .bytes(let data)?: task = session.uploadTask(with: request, from: data)
            case nil: task = session.dataTask(with: request)
            }
            task.resume()
        }
        switch outcome {
        case .answered(let status): return status
        case .failed(let error): throw error
        case .transport(let error):
            throw GlanceErrors.unreachable(endpoint, operation: operation, reason: Self.describe(error))
        }
    }

    static func describe(_ error: Error) -> String {
        if let error = error as? URLError {
            switch error.code {
            case .cannotConnectToHost: return "connection refused"
            case .timedOut: return "timed out"
            case .cannotFindHost: return "host name not found"
            case .networkConnectionLost: return "connection lost mid-transfer"
            case .notConnectedToInternet: return "no route to the host"
            default: return "\(error.localizedDescription) (URLError \(error.code.rawValue))"
            }
        }
        return "\(error)"
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

/// The bytes of a JSON answer, collected by a `ResponseReader` that stops at `GlanceTransport.answerLimit`.
private final class JSONAnswer: @unchecked Sendable {
    // Written only on the reader's serial delegate queue, read after the request finished.
    private(set) var bytes = Data()

    func reader(_ endpoint: GlanceEndpoint, _ operation: GlanceOperation) -> ResponseReader {
        let limit = GlanceTransport.answerLimit
        return ResponseReader(
            endpoint: endpoint, limit: Int64(limit),
            tooLarge: { seen, declared in
                GlanceRecord.malformed(
                    "an answer to \(operation.verb)\(operation.imageID.map { " \($0)" } ?? "") larger than "
                        + "\(limit) bytes (\(declared ? "Content-Length" : "already") \(seen)); it was not read")
            },
            consume: { [unowned self] chunk throws(CatalogError) in self.bytes.append(contentsOf: chunk) })
    }
}

/// Image data written to the cache file and hashed as it arrives.
private final class DownloadSink: @unchecked Sendable {
    // Used only on the reader's serial delegate queue, read after the request finished.
    let file: Descriptor
    var hasher: GlanceHash.Hasher

    init(file: Descriptor, algorithm: GlanceHash.Algorithm) {
        self.file = file
        self.hasher = GlanceHash.Hasher(algorithm)
    }

    func consume(_ chunk: UnsafeRawBufferPointer) throws(CatalogError) {
        hasher.update(chunk)
        try Files.writeAll(file, chunk)
    }
}

/// URLSession's delegate for one request. Runs on a serial queue, so its state needs no lock of its own
/// beyond the one that hands the outcome over. The body of a 2xx answer goes to `consume` and stops at `limit`
/// bytes; an error body is kept up to `GlanceTransport.errorBodyLimit`; a redirect is followed only on the
/// endpoint's own origin, so the token is never sent to another host.
final class ResponseReader: NSObject, URLSessionDataDelegate, @unchecked Sendable {
    struct Status: Sendable {
        var code: Int
        var errorBody: [UInt8]
    }

    enum Outcome: Sendable {
        case answered(Status)
        case failed(CatalogError)
        case transport(Error)
    }

    let endpoint: GlanceEndpoint
    let limit: Int64
    let tooLarge: @Sendable (_ seen: Int64, _ declared: Bool) -> CatalogError
    let consume: (UnsafeRawBufferPointer) throws(CatalogError) -> Void
    var finish: (@Sendable (Outcome) -> Void)?

    private var status = 0
    private var received: Int64 = 0
    private var errorBody: [UInt8] = []
    /// The error body reached its limit and the rest was not read: the cancellation that follows is not a failure.
    private var errorBodyComplete = false
    private var failure: CatalogError?

    init(
        endpoint: GlanceEndpoint, limit: Int64, tooLarge: @escaping @Sendable (Int64, Bool) -> CatalogError,
        consume: @escaping (UnsafeRawBufferPointer) throws(CatalogError) -> Void
    ) {
        self.endpoint = endpoint
        self.limit = limit
        self.tooLarge = tooLarge
        self.consume = consume
    }

    private var isSuccess: Bool { (200..<300).contains(status) }

    private func fail(_ error: CatalogError, _ task: URLSessionTask) {
        failure = error
        task.cancel()
    }

    func urlSession(
        _ session: URLSession, task: URLSessionTask, willPerformHTTPRedirection response: HTTPURLResponse,
        newRequest request: URLRequest, completionHandler: @escaping (URLRequest?) -> Void
    ) {
        guard endpoint.isSameOrigin(request.url) else {
            // Not followed: the task ends with the redirect itself as its answer, which the failure replaces.
            failure = .unavailable(
                "Glance at \(endpoint) redirected to another origin (\(GlanceEndpoint.origin(of: request.url))); "
                    + "Berth does not follow it, so its token is not sent there. Point --catalog at the URL that "
                    + "serves the Glance API")
            completionHandler(nil)
            return
        }
        completionHandler(request)
    }

    func urlSession(
        _ session: URLSession, dataTask: URLSessionDataTask, didReceive response: URLResponse,
        completionHandler: @escaping (URLSession.ResponseDisposition) -> Void
    ) {
        status = (response as? HTTPURLResponse)?.statusCode ?? 0
        // -1 when the answer has no Content-Length (chunked): then the running count decides.
        if isSuccess && response.expectedContentLength > limit {
            failure = tooLarge(response.expectedContentLength, true)
            completionHandler(.cancel)
            return
        }
        completionHandler(.allow)
    }

    func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive data: Data) {
        guard failure == nil, !errorBodyComplete else { return }
        guard isSuccess else {
            errorBody += data.prefix(GlanceTransport.errorBodyLimit - errorBody.count)
            if errorBody.count >= GlanceTransport.errorBodyLimit {
                errorBodyComplete = true
                dataTask.cancel()
            }
            return
        }
        received += Int64(data.count)
        guard received <= limit else { return fail(tooLarge(received, false), dataTask) }
        data.withUnsafeBytes { chunk in
            do throws(CatalogError) {
                try consume(chunk)
            } catch {
                fail(error, dataTask)
            }
        }
    }

    func urlSession(_ session: URLSession, task: URLSessionTask, didCompleteWithError error: Error?) {
        let outcome: Outcome
        if let failure {
            outcome = .failed(failure)
        } else if let error, !errorBodyComplete {
            outcome = .transport(error)
        } else if status == 0 {
            outcome = .failed(GlanceRecord.malformed("not an HTTP answer"))
        } else {
            outcome = .answered(Status(code: status, errorBody: isSuccess ? [] : errorBody))
        }
        let finish = self.finish
        self.finish = nil
        finish?(outcome)
    }
}
