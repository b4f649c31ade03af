import Foundation

/// A broker address in the form oslo.messaging's `transport_url` uses for one host:
/// `amqp://user:password@host:port/vhost?heartbeat=60`, or `amqps://` for TLS.
///
/// The password never appears in `description`, so a URL can be logged as it is.
public struct AMQPURL: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public var user: String
    public var password: String
    public var vhost: String
    /// Seconds; 0 turns heartbeats off. oslo's default is 60 (`heartbeat_timeout_threshold`).
    public var heartbeat: Int
    public var tls: Bool
    /// CA bundle for `amqps://` (query `cacert=` or `ssl_ca_file=`); certificate and host-name checks are
    /// always on.
    public var caCertificatePath: String?
    /// Client certificate and its key (PEM), for brokers that ask for one (`ssl_cert_file=`, `ssl_key_file=`).
    public var clientCertificatePath: String?
    public var clientKeyPath: String?
    public var connectTimeout: Double

    public init(
        host: String = "127.0.0.1", port: Int? = nil, user: String = "guest", password: String = "guest",
        vhost: String = "/", heartbeat: Int = 60, tls: Bool = false, caCertificatePath: String? = nil,
        connectTimeout: Double = 5
    ) {
        self.host = host
        self.port = port ?? (tls ? 5671 : 5672)
        self.user = user
        self.password = password
        self.vhost = vhost
        self.heartbeat = heartbeat
        self.tls = tls
        self.caCertificatePath = caCertificatePath
        self.connectTimeout = connectTimeout
    }

    /// What a URL does not say for itself: oslo's `[oslo_messaging_rabbit]` options (`heartbeat_timeout_threshold`,
    /// `ssl`, `ssl_ca_file`, `ssl_cert_file`, `ssl_key_file`). The URL's own query options win.
    public struct Defaults: Sendable, Equatable {
        public var heartbeat = 60
        public var tls = false
        public var caCertificatePath: String?
        public var clientCertificatePath: String?
        public var clientKeyPath: String?

        public init(
            heartbeat: Int = 60, tls: Bool = false, caCertificatePath: String? = nil,
            clientCertificatePath: String? = nil, clientKeyPath: String? = nil
        ) {
            self.heartbeat = heartbeat
            self.tls = tls
            self.caCertificatePath = caCertificatePath
            self.clientCertificatePath = clientCertificatePath
            self.clientKeyPath = clientKeyPath
        }
    }

    /// Parses every host of an oslo-style comma list (`rabbit://u:p@h1:5672,u:p@h2:5672/`).
    public static func parseList(_ text: String, defaults: Defaults = Defaults()) throws(AMQPError) -> [AMQPURL] {
        guard let schemeEnd = text.range(of: "://") else {
            throw AMQPError(
                .invalidURL,
                "transport URL has no scheme ('://' not found; the text is not shown, as it may hold a password); "
                    + "use rabbit://user:password@host:5672/vhost")
        }
        let scheme = String(text[..<schemeEnd.lowerBound])
        let rest = text[schemeEnd.upperBound...]
        // The vhost and query follow the last host, and apply to every host in the list.
        let pathStart = rest.firstIndex(of: "/") ?? rest.endIndex
        let hosts = rest[..<pathStart].split(separator: ",", omittingEmptySubsequences: false)
        let tail = rest[pathStart...]
        return try hosts.map { host throws(AMQPError) in try parse("\(scheme)://\(host)\(tail)", defaults: defaults) }
    }

    public static func parse(_ text: String, defaults: Defaults = Defaults()) throws(AMQPError) -> AMQPURL {
        guard let components = URLComponents(string: text), let scheme = components.scheme?.lowercased() else {
            throw AMQPError(
                .invalidURL,
                "transport URL is not a URL (the text is not shown, as it may hold a password); "
                    + "use rabbit://user:password@host:5672/vhost, with %XX for any of :@/?# in the user or password")
        }
        let tls: Bool
        switch scheme {
        case "amqp", "rabbit": tls = defaults.tls
        case "amqps": tls = true
        default:
            throw AMQPError(.invalidURL, "transport URL scheme '\(scheme)' is not supported; use rabbit:// (oslo's spelling; amqp:// is accepted too) or amqps://")
        }
        guard let host = components.host, !host.isEmpty else {
            throw AMQPError(.invalidURL, "transport URL '\(scheme)://...' has no host; use \(scheme)://user:password@host:5672/vhost")
        }
        let credentials = try Credentials(of: text)
        var url = AMQPURL(
            host: host, port: components.port, user: credentials.user ?? "guest",
            password: credentials.password ?? "guest", heartbeat: defaults.heartbeat, tls: tls,
            caCertificatePath: defaults.caCertificatePath)
        url.clientCertificatePath = defaults.clientCertificatePath
        url.clientKeyPath = defaults.clientKeyPath
        // RabbitMQ's URI spec: an empty path is the default vhost "/", otherwise the path minus its slash,
        // percent-decoded ("/%2F" is "/").
        let path = components.percentEncodedPath
        if path.isEmpty || path == "/" {
            url.vhost = "/"
        } else {
            url.vhost = String(path.dropFirst()).removingPercentEncoding ?? String(path.dropFirst())
        }
        for item in components.queryItems ?? [] {
            switch item.name {
            case "heartbeat":
                guard let value = item.value.flatMap(Int.init), (0...3600).contains(value) else {
                    throw AMQPError(.invalidURL, "heartbeat must be 0-3600 seconds, got '\(item.value ?? "")'")
                }
                url.heartbeat = value
            case "cacert", "ssl_ca_file":
                url.caCertificatePath = item.value
            case "ssl_cert_file":
                url.clientCertificatePath = item.value
            case "ssl_key_file":
                url.clientKeyPath = item.value
            case "ssl":
                // oslo's rabbit driver reads the query's ssl as a boolean, as oslo.config does.
                switch item.value?.lowercased() {
                case "1", "true", "yes", "on": url.tls = true
                case "0", "false", "no", "off": url.tls = false
                default: throw AMQPError(.invalidURL, "ssl must be 1 or 0 (true/false), got '\(item.value ?? "")'")
                }
            case "connection_timeout":
                guard let value = item.value.flatMap(Double.init), value > 0 else {
                    throw AMQPError(.invalidURL, "connection_timeout must be a positive number of seconds")
                }
                url.connectTimeout = value
            default:
                throw AMQPError(
                    .invalidURL,
                    "unknown transport URL option '\(item.name)'; known: heartbeat, ssl, ssl_ca_file (or cacert), "
                        + "ssl_cert_file, ssl_key_file, connection_timeout")
            }
        }
        // The port follows TLS when the URL gives none: ?ssl=1 makes rabbit://host mean host:5671.
        if components.port == nil { url.port = url.tls ? 5671 : 5672 }
        guard (url.clientCertificatePath == nil) == (url.clientKeyPath == nil) else {
            throw AMQPError(.invalidURL, "ssl_cert_file and ssl_key_file go together: give both, or neither")
        }
        return url
    }

    public var description: String {
        let vhostPart = vhost == "/" ? "" : vhost.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed) ?? vhost
        return "\(tls ? "amqps" : "amqp")://\(user):***@\(host):\(port)/\(vhostPart)"
    }
}

/// The user and password of a transport URL, %-decoded from the text itself. Foundation's decoding turns
/// a bad escape into nil, which used to become the default user `guest` without a word; here it is an
/// error that says where the escape is (never what the password is).
private struct Credentials {
    var user: String?
    var password: String?

    init(of text: String) throws(AMQPError) {
        guard let schemeEnd = text.range(of: "://") else { return }
        let authority = text[schemeEnd.upperBound...].prefix { !"/?#".contains($0) }
        guard let at = authority.lastIndex(of: "@") else { return }
        let userInfo = authority[..<at]
        guard let colon = userInfo.firstIndex(of: ":") else {
            user = try Self.decode(userInfo, field: "user", in: text)
            return
        }
        user = try Self.decode(userInfo[..<colon], field: "user", in: text)
        password = try Self.decode(userInfo[userInfo.index(after: colon)...], field: "password", in: text)
    }

    private static func decode(_ field: Substring, field name: String, in text: String) throws(AMQPError) -> String {
        var bytes: [UInt8] = []
        var index = field.utf8.startIndex
        while index < field.utf8.endIndex {
            let byte = field.utf8[index]
            guard byte == UInt8(ascii: "%") else {
                bytes.append(byte)
                index = field.utf8.index(after: index)
                continue
            }
            let digits = field.utf8[index...].dropFirst().prefix(2)
            guard digits.count == 2, let value = UInt8(String(decoding: digits, as: UTF8.self), radix: 16) else {
                throw failure(name, at: index, in: text, "is not followed by two hex digits")
            }
            bytes.append(value)
            index = digits.endIndex
        }
        guard let decoded = String(validating: bytes, as: UTF8.self) else {
            throw AMQPError(
                .invalidURL,
                "transport URL: the \(name) is not UTF-8 once its %-escapes are decoded; escape each byte of its "
                    + "UTF-8 form as %XX")
        }
        return decoded
    }

    private static func failure(_ name: String, at index: String.Index, in text: String, _ problem: String) -> AMQPError {
        let position = text.distance(from: text.startIndex, to: index) + 1
        return AMQPError(
            .invalidURL,
            "transport URL: the '%' at character \(position) (in the \(name)) \(problem); write a literal '%' as %25, "
                + "and escape :@/?# as %3A %40 %2F %3F %23")
    }
}
