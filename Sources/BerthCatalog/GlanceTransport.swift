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
final class GlanceTransport: Sendable {
    let endpoint: GlanceEndpoint
    private let token: String?
    private let session: URLSession

    /// Bytes of an error body kept for the message; the rest is dropped.
    static let errorBodyLimit = 64 << 10
    /// Bytes of a JSON answer (a listing page of 100 images with 128 properties each stays far below).
    static let answerLimit = 32 << 20

    init(endpoint: GlanceEndpoint, token: String?, requestTimeout: TimeInterval = 60) {
        self.endpoint = endpoint
        self.token = token
        let configuration = URLSessionConfiguration.ephemeral
        configuration.timeoutIntervalForRequest = requestTimeout
        configuration.timeoutIntervalForResource = 24 * 3600
        configuration.httpCookieAcceptPolicy = .never
        configuration.urlCache = nil
        self.session = URLSession(configuration: configuration)
        self.requestTimeout = requestTimeout
    }

    private let requestTimeout: TimeInterval

    deinit { session.invalidateAndCancel() }

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
        let (status, bytes) = try await send(request, upload: nil, operation: operation)
        guard expect.contains(status) else {
            throw GlanceErrors.error(status: status, body: bytes, operation: operation, endpoint: endpoint)
        }
        guard !bytes.isEmpty else { return nil }
        do {
            return try JSONCodec.parse(bytes, limits: JSONLimits(maxBytes: Self.answerLimit, maxDepth: 16))
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
        let (status, bytes) = try await send(request, upload: body, operation: operation)
        guard status == 204 || status == 200 else {
            throw GlanceErrors.error(status: status, body: bytes, operation: operation, endpoint: endpoint)
        }
    }

    private func send(_ request: URLRequest, upload: UploadBody?, operation: GlanceOperation) async throws(CatalogError)
        -> (Int, [UInt8])
    {
        let endpoint = self.endpoint
        let result: Result<(Int, [UInt8]), CatalogError> = await withCheckedContinuation { continuation in
            let handler: @Sendable (Data?, URLResponse?, Error?) -> Void = { data, response, error in
                if let error {
                    continuation.resume(
                        returning: .failure(
                            GlanceErrors.unreachable(endpoint, operation: operation, reason: Self.describe(error))))
                    return
                }
                guard let http = response as? HTTPURLResponse else {
                    continuation.resume(returning: .failure(GlanceRecord.malformed("not an HTTP answer")))
                    return
                }
                let bytes = [UInt8](data ?? Data())
                let kept = (200..<300).contains(http.statusCode) ? bytes : Array(bytes.prefix(Self.errorBodyLimit))
                continuation.resume(returning: .success((http.statusCode, kept)))
            }
            let task: URLSessionTask
            switch upload {
            case .file(let url, _)?: task = session.uploadTask(with: request, fromFile: url, completionHandler: handler)
            case .bytes(let data)?: task = session.uploadTask(with: request, from: data, completionHandler: handler)
            case nil: task = session.dataTask(with: request, completionHandler: handler)
            }
            task.resume()
        }
        return try result.get()
    }

    /// `GET /v2/images/{id}/file` streamed into `file` (bounded memory: each chunk is written and hashed as
    /// it arrives), with its size, md5 and the `os_hash_algo` digest. The caller verifies and commits.
    func download(_ url: String, into file: Descriptor, algorithm: GlanceHash.Algorithm, operation: GlanceOperation)
        async throws(CatalogError) -> GlanceHash.Result
    {
        let sink = DownloadSink(file: file, algorithm: algorithm)
        let queue = OperationQueue()
        queue.maxConcurrentOperationCount = 1
        queue.name = "berth.glance.download"
        let configuration = session.configuration
        let downloadSession = URLSession(configuration: configuration, delegate: sink, delegateQueue: queue)
        defer { downloadSession.finishTasksAndInvalidate() }
        var request = request("GET", url)
        request.setValue("application/octet-stream", forHTTPHeaderField: "Accept")
        let outcome = await withCheckedContinuation {
            (continuation: CheckedContinuation<DownloadSink.Outcome, Never>) in
            sink.finish = { continuation.resume(returning: $0) }
            downloadSession.dataTask(with: request).resume()
        }
        switch outcome {
        case .failed(let error):
            throw error
        case .transport(let error):
            throw GlanceErrors.unreachable(endpoint, operation: operation, reason: Self.describe(error))
        case .status(let status, let body):
            if status == 204 {
                // Only active images are downloaded: Glance answers 204 when its store lost the data file.
                throw .invalidImage(
                    "Glance at \(endpoint) returned no data for image \(operation.imageID ?? "?") (HTTP 204) although "
                        + "the image is active: its store has lost the data. Nothing was cached; re-upload the image")
            }
            throw GlanceErrors.error(status: status, body: body, operation: operation, endpoint: endpoint)
        case .done(let result):
            return result
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

/// URLSession's delegate for one download: runs on a serial queue, so its state needs no lock of its own
/// beyond the one that hands the outcome over.
private final class DownloadSink: NSObject, URLSessionDataDelegate, @unchecked Sendable {
    enum Outcome: Sendable {
        case done(GlanceHash.Result)
        case status(Int, [UInt8])
        case failed(CatalogError)
        case transport(Error)
    }

    let file: Descriptor
    var hasher: GlanceHash.Hasher
    var status = 0
    var errorBody: [UInt8] = []
    var failure: CatalogError?
    var finish: (@Sendable (Outcome) -> Void)?

    init(file: Descriptor, algorithm: GlanceHash.Algorithm) {
        self.file = file
        self.hasher = GlanceHash.Hasher(algorithm)
    }

    func urlSession(
        _ session: URLSession, dataTask: URLSessionDataTask, didReceive response: URLResponse,
        completionHandler: @escaping (URLSession.ResponseDisposition) -> Void
    ) {
        status = (response as? HTTPURLResponse)?.statusCode ?? 0
        completionHandler(.allow)
    }

    func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive data: Data) {
        guard failure == nil else { return }
        guard status == 200 else {
            if errorBody.count < GlanceTransport.errorBodyLimit {
                errorBody += data.prefix(GlanceTransport.errorBodyLimit)
            }
            return
        }
        data.withUnsafeBytes { chunk in
            hasher.update(chunk)
            do throws(CatalogError) {
                try Files.writeAll(file, chunk)
            } catch {
                failure = error
                dataTask.cancel()
            }
        }
    }

    func urlSession(_ session: URLSession, task: URLSessionTask, didCompleteWithError error: Error?) {
        let outcome: Outcome
        if let failure {
            outcome = .failed(failure)
        } else if let error {
            outcome = .transport(error)
        } else if status != 200 {
            outcome = .status(status, errorBody)
        } else {
            outcome = .done(hasher.finalize())
        }
        let finish = self.finish
        self.finish = nil
        finish?(outcome)
    }
}
