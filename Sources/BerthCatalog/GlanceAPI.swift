import BerthCore
import BerthJSON
import Foundation

/// Glance v2's HTTP API as pure code: the URLs Berth calls, image records to `CatalogImage` and back, and
/// Glance's error answers to `CatalogError`. No I/O; `GlanceCatalog` sends what this builds.
public struct GlanceEndpoint: Sendable, Equatable, CustomStringConvertible {
    /// The service root without `/v2` and without a trailing slash, e.g. `http://127.0.0.1:9292`.
    public let root: String

    /// Accepts `http(s)://host[:port][/prefix]`, with or without a trailing `/` or `/v2` (the forms
    /// operators copy from a Keystone catalog). Anything else is refused: the URL is used as given, so a
    /// typo should fail at start-up rather than on the first boot.
    public init(_ text: String) throws(CatalogError) {
        var root = text
        while root.hasSuffix("/") { root.removeLast() }
        if root.hasSuffix("/v2") { root.removeLast(3) }
        while root.hasSuffix("/") { root.removeLast() }
        guard let url = URL(string: root), let scheme = url.scheme?.lowercased(), scheme == "http" || scheme == "https",
            let host = url.host, !host.isEmpty, url.query == nil, url.fragment == nil, url.user == nil
        else {
            throw .invalidRequest(
                "Glance URL \(CatalogID.quoted(text)) is not an http(s) URL of the image service; give it as "
                    + "glance:http://HOST:9292 (the image endpoint from `openstack endpoint list`, without /v2)")
        }
        self.root = root
    }

    public var description: String { root }

    /// One page of images, newest first (Glance's own default order, named so it cannot change under us).
    func images(limit: Int) -> String { "\(root)/v2/images?limit=\(limit)&sort_key=created_at&sort_dir=desc" }
    func image(_ id: CatalogID) -> String { "\(root)/v2/images/\(id.value)" }
    func file(_ id: CatalogID) -> String { "\(root)/v2/images/\(id.value)/file" }
    var createImage: String { "\(root)/v2/images" }

    /// Whether `url` is on the service's origin (scheme, host and port): the only place a redirect may lead,
    /// since the request carries the token.
    func isSameOrigin(_ url: URL?) -> Bool {
        guard let origin = url.flatMap(Origin.init) else { return false }
        return origin == URL(string: root).flatMap(Origin.init)
    }

    /// `scheme://host:port` of a URL from an answer, for a message: quoted, control characters escaped, short.
    static func origin(of url: URL?) -> String {
        url.flatMap(Origin.init).map { CatalogID.quoted("\($0.scheme)://\($0.host):\($0.port)") } ?? "an unreadable URL"
    }

    private struct Origin: Equatable {
        var scheme: String
        var host: String
        var port: Int

        init?(_ url: URL) {
            guard let scheme = url.scheme?.lowercased(), let host = url.host?.lowercased() else { return nil }
            self.scheme = scheme
            self.host = host
            port = url.port ?? (scheme == "https" ? 443 : scheme == "http" ? 80 : -1)
        }
    }

    /// Glance's `next` link of a listing is a path below the service root (`/v2/images?marker=...`); a full
    /// URL is followed only on the same service, so a listing cannot send Berth (and its token) elsewhere.
    func next(_ link: String) -> String? {
        if link.hasPrefix("/v2/") { return root + link }
        return link.hasPrefix(root + "/v2/") ? link : nil
    }
}

/// Glance image records (`GET /v2/images/{id}`, the items of `GET /v2/images`) and request bodies.
enum GlanceRecord {
    /// Fields of a Glance image that are not image properties: Glance's core attributes and what its API
    /// adds to a record (`self`, `file`, `schema`, `stores`, ...). Everything else with a string value is a
    /// property, as `glance image-show` lists them.
    static let coreFields: Set<String> = ImageRules.reservedKeys.union([
        "stores", "os_glance_failed_import",
        "os_glance_importing_to_stores",
    ])

    static func image(_ value: JSONValue) throws(CatalogError) -> CatalogImage {
        guard let object = value.objectValue else { throw malformed("an image record is not a JSON object") }
        guard let id = object["id"]?.stringValue, let canonical = CatalogID(id) else {
            throw malformed("an image record has no id, or one that is not a UUID")
        }
        func text(_ key: String) -> String? { object[key]?.stringValue }
        func number(_ key: String) -> Int64? { object[key]?.intValue }
        func date(_ key: String) -> Date {
            guard let text = text(key), let date = try? Date(text, strategy: .iso8601) else {
                return Date(timeIntervalSince1970: 0)
            }
            return date
        }
        var properties: [String: String] = [:]
        for (key, value) in object where !coreFields.contains(key) {
            // Glance's schema makes every extra property a string; base-schema ones such as kernel_id may be null.
            if case .string(let string) = value { properties[key] = string }
        }
        return CatalogImage(
            id: canonical.value, name: text("name") ?? "", diskFormat: text("disk_format") ?? "",
            containerFormat: text("container_format") ?? "", status: text("status") ?? "unknown",
            size: number("size") ?? 0, virtualSize: number("virtual_size"), checksum: text("checksum"),
            osHashAlgo: text("os_hash_algo"), osHashValue: text("os_hash_value"),
            minDiskGB: Int(number("min_disk") ?? 0), minRAMMB: Int(number("min_ram") ?? 0), properties: properties,
            createdAt: date("created_at"), updatedAt: date("updated_at"))
    }

    /// The images of one page of `GET /v2/images`, and the `next` link if there are more.
    static func page(_ value: JSONValue) throws(CatalogError) -> (images: [CatalogImage], next: String?) {
        guard let object = value.objectValue, let items = object["images"]?.arrayValue else {
            throw malformed("the image listing has no \"images\" list")
        }
        var images: [CatalogImage] = []
        for item in items { images.append(try image(item)) }
        return (images, object["next"]?.stringValue)
    }

    /// `POST /v2/images`: core fields plus the properties, which Glance takes as top-level string fields.
    static func createBody(
        id: CatalogID, name: String, diskFormat: String, containerFormat: String, properties: [String: String]
    ) -> JSONValue {
        var object: JSONObject = [
            "id": .string(id.value), "name": .string(name), "disk_format": .string(diskFormat),
            "container_format": .string(containerFormat),
        ]
        for key in properties.keys.sorted() { object[key] = .string(properties[key]!) }
        return .object(object)
    }

    /// `PATCH /v2/images/{id}` (`application/openstack-images-v2.1-json-patch`): `replace` for a property the
    /// image has, `add` for a new one, `remove` only for one it has (a repeated update is then the same
    /// request again, and Glance refuses removing what is not there).
    static func patchBody(current: [String: String], set: [String: String], remove: Set<String>) -> JSONValue {
        var operations: [JSONValue] = []
        for key in remove.sorted() where current[key] != nil {
            operations.append(["op": "remove", "path": .string("/\(pointerEscaped(key))")])
        }
        for key in set.keys.sorted() {
            operations.append([
                "op": .string(current[key] == nil ? "add" : "replace"), "path": .string("/\(pointerEscaped(key))"),
                "value": .string(set[key]!),
            ])
        }
        return .array(operations)
    }

    /// RFC 6901: `~` and `/` inside a key.
    static func pointerEscaped(_ key: String) -> String {
        key.replacingOccurrences(of: "~", with: "~0").replacingOccurrences(of: "/", with: "~1")
    }

    static func malformed(_ what: String) -> CatalogError {
        .unavailable(
            "Glance answered with something Berth cannot read (\(what)); check that the --catalog URL is a Glance v2 "
                + "endpoint")
    }
}

/// What Berth was doing when Glance said no: decides which `CatalogError` a status becomes.
enum GlanceOperation: Sendable, Equatable {
    case read(imageID: String?)
    case list
    case create(imageID: String)
    case upload(imageID: String)
    case download(imageID: String)
    case update(imageID: String)
    case delete(imageID: String)

    var imageID: String? {
        switch self {
        case .read(let id): id
        case .list: nil
        case .create(let id), .upload(let id), .download(let id), .update(let id), .delete(let id): id
        }
    }

    var verb: String {
        switch self {
        case .read: "read image"
        case .list: "list images"
        case .create: "create image"
        case .upload: "upload the data of image"
        case .download: "download the data of image"
        case .update: "update image"
        case .delete: "delete image"
        }
    }
}

enum GlanceErrors {
    /// Glance's explanation from an error body: JSON (`{"message": ...}` from webob with `Accept:
    /// application/json`, or `{"error": {"message": ...}}` from Keystone's middleware) or webob's HTML page.
    /// Trimmed of webob's `<br />` padding, control characters escaped, at most 300 characters.
    static func explanation(_ body: [UInt8]) -> String? {
        var message: String?
        if let value = try? JSONCodec.parse(body, limits: JSONLimits(maxBytes: 1 << 20, maxDepth: 8)),
            let object = value.objectValue
        {
            message =
                object["message"]?.stringValue ?? object["error"]?.objectValue?["message"]?.stringValue
                ?? object["explanation"]?.stringValue
        } else if let html = String(validating: body.prefix(1 << 16), as: UTF8.self),
            let heading = html.range(of: "</h1>")
        {
            message = String(html[heading.upperBound...])
        }
        guard var text = message else { return nil }
        if let tag = text.range(of: "<br") { text = String(text[..<tag.lowerBound]) }
        if let tag = text.range(of: "</body>") { text = String(text[..<tag.lowerBound]) }
        text = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !text.isEmpty else { return nil }
        let flat = text.unicodeScalars.map {
            $0.properties.generalCategory == .control ? " " : String($0)
        }.joined()
        return flat.count > 300 ? String(flat.prefix(300)) + "…" : flat
    }

    /// The `CatalogError` for an HTTP error status of Glance. The token is never part of a message.
    static func error(status: Int, body: [UInt8], operation: GlanceOperation, endpoint: GlanceEndpoint) -> CatalogError
    {
        let said = explanation(body).map { ": \($0)" } ?? ""
        let target = operation.imageID.map { " \($0)" } ?? ""
        let what = "Glance at \(endpoint) refused to \(operation.verb)\(target) (HTTP \(status)\(said))"
        switch status {
        case 401:
            return CatalogError(
                kind: .unauthorized,
                message: "\(what); the token is missing, wrong or expired. Give a valid one with --glance-token-file "
                    + "or OS_AUTH_TOKEN / BERTH_GLANCE_TOKEN")
        case 403:
            return CatalogError(
                kind: .unauthorized,
                message: "\(what); the token is valid but its user may not do this. Grant the role Glance's policy "
                    + "needs, or use a token of a user that has it")
        case 404:
            if let id = operation.imageID {
                return .imageNotFound(id)
            }
            return .unavailable("\(what); check that the --catalog URL is the Glance v2 endpoint")
        case 409:
            switch operation {
            case .create(let id):
                return CatalogError(
                    kind: .alreadyExists,
                    message: "an image with id \(id) already exists in Glance; a repeated request should look it up "
                        + "instead of creating it again (\(what))")
            case .upload(let id):
                return .invalidRequest(
                    "\(what): image \(id) is not queued, it already has data (or is being uploaded). Create a new "
                        + "image for new data")
            default:
                return .inUse("\(what); the image is protected or in a state that forbids this, retry or change it")
            }
        case 413:
            return .unavailable(
                "\(what): the data is larger than Glance accepts (its image_size_cap or the owner's storage quota); "
                    + "raise the limit in Glance or store a smaller image")
        case 400, 422:
            return .invalidProperty("\(what); fix the image's name, formats or properties")
        case 415:
            return .unavailable("\(what); this Glance does not accept direct uploads (PUT /file), enable image upload")
        case 500...599:
            return .unavailable("\(what); Glance is failing, check its log and retry")
        default:
            return .unavailable(what)
        }
    }

    /// Glance could not be reached at all: refused, timed out, name not resolved.
    static func unreachable(_ endpoint: GlanceEndpoint, operation: GlanceOperation, reason: String) -> CatalogError {
        let target = operation.imageID.map { " \($0)" } ?? ""
        return .unavailable(
            "cannot reach Glance at \(endpoint) to \(operation.verb)\(target): \(reason); check that Glance runs "
                + "and that the --catalog URL is right")
    }
}
