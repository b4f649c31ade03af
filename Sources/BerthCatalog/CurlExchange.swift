import CCurl
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// One HTTP request and its answer through libcurl's easy interface, run to completion on the calling thread.
/// Owns its handle and header list. The callbacks run inside `curl_easy_perform`, on this thread.
final class CurlExchange {
    struct Request: Sendable {
        var method: String
        var url: String
        var headers: [String]
        var body: Body?
        var timeout: Int
    }

    enum Body: Sendable {
        case bytes([UInt8])
        case file(String, size: Int64)
    }

    struct Answer {
        var status: Int
        var body: [UInt8]
        var errorBody: [UInt8]
        /// The `Location` of a 3xx answer, resolved against the request's URL.
        var redirect: URL?
    }

    /// What an exchange does with the answer's body; shared by the redirects it follows.
    final class Work: @unchecked Sendable {
        // Used by one exchange at a time, on the thread that runs it.
        let limit: Int64
        let tooLarge: (Int64, Bool) -> CatalogError
        /// Takes each chunk of a 2xx body; nil keeps the body in `Answer.body` (at most `limit` bytes).
        let consume: ((UnsafeRawBufferPointer) throws(CatalogError) -> Void)?

        init(
            limit: Int64, tooLarge: @escaping (Int64, Bool) -> CatalogError,
            consume: ((UnsafeRawBufferPointer) throws(CatalogError) -> Void)?
        ) {
            self.limit = limit
            self.tooLarge = tooLarge
            self.consume = consume
        }
    }

    private static let globalInit: CURLcode = curl_global_init(Int(CURL_GLOBAL_DEFAULT))

    private let handle: UnsafeMutableRawPointer
    private var headerList: UnsafeMutablePointer<curl_slist>?
    private let work: Work
    private var status = 0
    private var contentLength: Int64 = -1
    private var location: String?
    private var received: Int64 = 0
    private var body: [UInt8] = []
    private var errorBody: [UInt8] = []
    /// The error body reached its limit and the rest was not read: the abort that follows is not a failure.
    private var errorBodyComplete = false
    private var failure: CatalogError?
    private var upload: Int32 = -1

    private init?(work: Work) {
        _ = Self.globalInit
        guard let handle = curl_easy_init() else { return nil }
        self.handle = handle
        self.work = work
    }

    deinit {
        curl_slist_free_all(headerList)
        curl_easy_cleanup(handle)
        if upload >= 0 { close(upload) }
    }

    private var isSuccess: Bool { (200..<300).contains(status) }

    static func perform(_ request: Request, work: Work, endpoint: GlanceEndpoint, _ operation: GlanceOperation)
        throws(CatalogError) -> Answer
    {
        guard let exchange = CurlExchange(work: work) else {
            throw .unavailable("cannot start an HTTP request to Glance at \(endpoint): libcurl could not make a handle")
        }
        return try exchange.run(request, endpoint: endpoint, operation)
    }

    private func run(_ request: Request, endpoint: GlanceEndpoint, _ operation: GlanceOperation)
        throws(CatalogError) -> Answer
    {
        for line in request.headers { headerList = curl_slist_append(headerList, line) }
        let context = Unmanaged.passUnretained(self).toOpaque()
        let timeout = request.timeout
        var code = CURLE_OK
        func set(_ option: CURLoption, _ value: Int) {
            if code == CURLE_OK { code = berth_curl_set_long(handle, option, value) }
        }
        func set(_ option: CURLoption, _ value: UnsafeRawPointer?) {
            if code == CURLE_OK { code = berth_curl_set_pointer(handle, option, value) }
        }
        func set(_ option: CURLoption, _ value: String) {
            if code == CURLE_OK { code = berth_curl_set_string(handle, option, value) }
        }
        func set(_ option: CURLoption, _ value: berth_curl_callback) {
            if code == CURLE_OK { code = berth_curl_set_callback(handle, option, value) }
        }
        func set(_ option: CURLoption, offset value: Int64) {
            if code == CURLE_OK { code = berth_curl_set_offset(handle, option, curl_off_t(value)) }
        }
        set(CURLOPT_URL, request.url)
        set(CURLOPT_CUSTOMREQUEST, request.method)
        set(CURLOPT_PROTOCOLS_STR, "http,https")
        set(CURLOPT_HTTPHEADER, UnsafeRawPointer(headerList))
        set(CURLOPT_NOSIGNAL, 1)
        set(CURLOPT_CONNECTTIMEOUT, timeout)
        // No byte for `timeout` seconds is a timeout; a long transfer that moves is not.
        set(CURLOPT_LOW_SPEED_LIMIT, 1)
        set(CURLOPT_LOW_SPEED_TIME, timeout)
        set(CURLOPT_HEADERDATA, context)
        set(CURLOPT_WRITEDATA, context)
        set(CURLOPT_HEADERFUNCTION, curlHeader)
        set(CURLOPT_WRITEFUNCTION, curlWrite)
        switch request.body {
        case .file(let path, let size)?:
            upload = open(path, O_RDONLY | O_CLOEXEC)
            guard upload >= 0 else { throw Files.failure("open", path, errno) }
            set(CURLOPT_UPLOAD, 1)
            set(CURLOPT_INFILESIZE_LARGE, offset: size)
            set(CURLOPT_READDATA, context)
            set(CURLOPT_READFUNCTION, curlRead)
        case .bytes(let bytes)?:
            set(CURLOPT_POSTFIELDSIZE_LARGE, offset: Int64(bytes.count))
            if code == CURLE_OK { code = berth_curl_set_pointer(handle, CURLOPT_COPYPOSTFIELDS, bytes) }
        case nil:
            break
        }
        guard code == CURLE_OK else {
            throw .unavailable("cannot set up an HTTP request to Glance at \(endpoint): \(Self.describe(code))")
        }
        let result = curl_easy_perform(handle)
        if let failure { throw failure }
        guard result == CURLE_OK || (result == CURLE_WRITE_ERROR && errorBodyComplete) else {
            throw GlanceErrors.unreachable(endpoint, operation: operation, reason: Self.describe(result))
        }
        var redirect: URL?
        if (300..<400).contains(status), let location {
            redirect = URL(string: location, relativeTo: URL(string: request.url))?.absoluteURL
        }
        return Answer(status: status, body: body, errorBody: isSuccess ? [] : errorBody, redirect: redirect)
    }

    // MARK: libcurl's callbacks (return a count other than the one given to abort the transfer)

    fileprivate func header(_ line: UnsafeRawBufferPointer) -> Bool {
        let text = String(decoding: line, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        if text.hasPrefix("HTTP/") {
            // A new answer (after a "100 Continue" too): its own status and headers.
            let fields = text.split(separator: " ", maxSplits: 2)
            status = fields.count >= 2 ? Int(fields[1]) ?? 0 : 0
            contentLength = -1
            location = nil
            return true
        }
        guard let colon = text.firstIndex(of: ":") else {
            // The blank line that ends the headers: a body Content-Length declares too large is not read at all.
            if text.isEmpty && isSuccess && contentLength > work.limit {
                failure = work.tooLarge(contentLength, true)
                return false
            }
            return true
        }
        let name = text[..<colon].lowercased()
        let value = text[text.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        if name == "content-length" { contentLength = Int64(value) ?? -1 }
        if name == "location" { location = value }
        return true
    }

    fileprivate func write(_ chunk: UnsafeRawBufferPointer) -> Bool {
        guard isSuccess else {
            // An error or redirect body: its first bytes explain it; the rest is not read.
            errorBody += chunk.prefix(GlanceTransport.errorBodyLimit - errorBody.count)
            if errorBody.count >= GlanceTransport.errorBodyLimit {
                errorBodyComplete = true
                return false
            }
            return true
        }
        received += Int64(chunk.count)
        guard received <= work.limit else {
            failure = work.tooLarge(received, false)
            return false
        }
        guard let consume = work.consume else {
            body += chunk
            return true
        }
        do throws(CatalogError) {
            try consume(chunk)
        } catch {
            failure = error
            return false
        }
        return true
    }

    fileprivate func read(into buffer: UnsafeMutableRawBufferPointer) -> Int? {
        while true {
            let got = Glibc.read(upload, buffer.baseAddress, buffer.count)
            if got >= 0 { return got }
            if errno != EINTR { return nil }
        }
    }

    static func describe(_ code: CURLcode) -> String {
        switch code {
        case CURLE_COULDNT_CONNECT: "connection refused"
        case CURLE_OPERATION_TIMEDOUT: "timed out"
        case CURLE_COULDNT_RESOLVE_HOST: "host name not found"
        case CURLE_RECV_ERROR, CURLE_SEND_ERROR, CURLE_PARTIAL_FILE, CURLE_GOT_NOTHING: "connection lost mid-transfer"
        default: "\(String(cString: curl_easy_strerror(code))) (curl error \(code.rawValue))"
        }
    }
}

private func exchange(_ context: UnsafeMutableRawPointer?) -> CurlExchange {
    Unmanaged<CurlExchange>.fromOpaque(context!).takeUnretainedValue()
}

private let curlHeader: berth_curl_callback = { buffer, size, count, context in
    let bytes = size * count
    return exchange(context).header(UnsafeRawBufferPointer(start: buffer, count: bytes)) ? bytes : 0
}

private let curlWrite: berth_curl_callback = { buffer, size, count, context in
    let bytes = size * count
    return exchange(context).write(UnsafeRawBufferPointer(start: buffer, count: bytes)) ? bytes : 0
}

private let curlRead: berth_curl_callback = { buffer, size, count, context in
    exchange(context).read(into: UnsafeMutableRawBufferPointer(start: buffer, count: size * count))
        ?? Int(CURL_READFUNC_ABORT)
}
