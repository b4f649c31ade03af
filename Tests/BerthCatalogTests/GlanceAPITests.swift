import BerthCore
import BerthJSON
import Foundation
import Testing

@testable import BerthCatalog

/// The pure half of `GlanceCatalog`: URLs, Glance records to `CatalogImage`, request bodies and Glance's
/// error answers to `CatalogError`. The JSON and HTML bodies are recorded from glance 33.0.0 (the version
/// scripts/start-glance.sh runs); Tests/interop/test_glance.py drives the same code against it.
@Suite struct GlanceAPITests {
    static let endpoint = try! GlanceEndpoint("http://127.0.0.1:9292")

    // Recorded: GET /v2/images/{id} of an uploaded image with a property.
    static let activeImage = """
        {"kernel_args": "a b", "name": "t", "disk_format": "raw", "container_format": "bare", "visibility": "shared", \
        "size": 1000, "virtual_size": 1000, "status": "active", "checksum": "bd86e6af8f551a8556f1dadcc426b000", \
        "protected": false, "min_ram": 0, "min_disk": 0, "owner": null, "os_hidden": false, "os_hash_algo": "sha512", \
        "os_hash_value": "f259a8eda3cf741172dbbbc17cd3ea5210c439d4ab71bd2ad8c5f47a54584b7ff405de147b875503fda740a8d31ab1c8b9460f07adb1e84bda423e789e533681", \
        "id": "96c26de9-7021-4624-8e58-45666416a064", "created_at": "2026-12-04T02:38:09Z", \
        "updated_at": "2026-12-04T02:38:18Z", "tags": [], "self": "/v2/images/96c26de9-7021-4624-8e58-45666416a064", \
        "file": "/v2/images/96c26de9-7021-4624-8e58-45666416a064/file", "schema": "/v2/schemas/image", "stores": "fs"}
        """

    // Recorded: POST /v2/images of a placeholder: Glance keeps a data-less image queued, size null.
    static let queuedPlaceholder = """
        {"block_device_mapping": "[{\\"boot_index\\": 0, \\"source_type\\": \\"volume\\", \\"volume_id\\": \
        \\"5b1c2d3e-0000-4000-8000-000000000001\\", \\"destination_type\\": \\"volume\\"}]", "bdm_v2": "True", \
        "kernel_id": null, "name": "root-image", "disk_format": "raw", "container_format": "bare", \
        "visibility": "shared", "size": null, "virtual_size": null, "status": "queued", "checksum": null, \
        "protected": false, "min_ram": 0, "min_disk": 0, "owner": null, "os_hidden": false, "os_hash_algo": null, \
        "os_hash_value": null, "id": "0f8e3c52-5b8a-4c1e-9a8e-2f6d0c7b1a90", "created_at": "2026-12-04T02:38:09Z", \
        "updated_at": "2026-12-04T02:38:09Z", "tags": [], "self": "/v2/images/0f8e3c52-5b8a-4c1e-9a8e-2f6d0c7b1a90", \
        "file": "/v2/images/0f8e3c52-5b8a-4c1e-9a8e-2f6d0c7b1a90/file", "schema": "/v2/schemas/image"}
        """

    static func parse(_ text: String) -> JSONValue { try! JSONCodec.parse(text) }

    @Test func mapsAnActiveImage() throws {
        let image = try GlanceRecord.image(Self.parse(Self.activeImage))
        #expect(image.id == "96c26de9-7021-4624-8e58-45666416a064")
        #expect(image.name == "t")
        #expect(image.diskFormat == "raw" && image.containerFormat == "bare" && image.status == "active")
        #expect(image.size == 1000 && image.virtualSize == 1000)
        #expect(image.checksum == "bd86e6af8f551a8556f1dadcc426b000")
        #expect(image.osHashAlgo == "sha512" && image.osHashValue?.hasPrefix("f259a8eda3cf") == true)
        // Only the free-form properties: no core field, no API link, no `stores`.
        #expect(image.properties == ["kernel_args": "a b"])
        #expect(image.createdAt == (try Date("2026-12-04T02:38:09Z", strategy: .iso8601)))
        #expect(!image.isPlaceholder)
    }

    @Test func aQueuedImageWithAMappingIsAPlaceholder() throws {
        let image = try GlanceRecord.image(Self.parse(Self.queuedPlaceholder))
        #expect(image.status == "queued")
        #expect(image.size == 0 && image.virtualSize == nil && image.osHashValue == nil)
        #expect(image.isPlaceholder)
        #expect(image.properties["bdm_v2"] == "True")
        // A null base-schema property (kernel_id) is absent, not an empty string.
        #expect(image.properties["kernel_id"] == nil)
        #expect(throws: Never.self) {
            try RootBlockDevice.parse(
                blockDeviceMapping: image.properties["block_device_mapping"]!, imageID: image.id, codec: JSONCodec.self)
        }
    }

    @Test func refusesRecordsWithoutAUUID() {
        for text in ["[]", #"{"name": "x"}"#, #"{"id": "../../etc"}"#] {
            #expect(throws: CatalogError.self) { try GlanceRecord.image(Self.parse(text)) }
        }
    }

    @Test func readsAListingPageAndFollowsOnlyGlanceLinks() throws {
        let page = try GlanceRecord.page(
            Self.parse(
                #"{"images": [\#(Self.activeImage)], "first": "/v2/images?limit=1", "schema": "/v2/schemas/images", "#
                    + #""next": "/v2/images?limit=1&marker=96c26de9-7021-4624-8e58-45666416a064"}"#))
        #expect(page.images.map(\.id) == ["96c26de9-7021-4624-8e58-45666416a064"])
        #expect(
            page.next.flatMap(Self.endpoint.next)
                == "http://127.0.0.1:9292/v2/images?limit=1&marker=96c26de9-7021-4624-8e58-45666416a064")
        #expect(Self.endpoint.next("http://evil.example/v2/images?marker=x") == nil)
        #expect(Self.endpoint.next("http://127.0.0.1:9292/v2/images?marker=x") != nil)
    }

    @Test(arguments: [
        ("http://127.0.0.1:9292", "http://127.0.0.1:9292"), ("http://127.0.0.1:9292/", "http://127.0.0.1:9292"),
        ("http://127.0.0.1:9292/v2", "http://127.0.0.1:9292"),
        ("https://cloud.example/image/v2/", "https://cloud.example/image"),
    ])
    func normalisesEndpoints(text: String, root: String) throws {
        let endpoint = try GlanceEndpoint(text)
        #expect(endpoint.root == root)
        let id = CatalogID("0f8e3c52-5b8a-4c1e-9a8e-2f6d0c7b1a90")!
        #expect(endpoint.image(id) == "\(root)/v2/images/0f8e3c52-5b8a-4c1e-9a8e-2f6d0c7b1a90")
        #expect(endpoint.file(id) == "\(root)/v2/images/0f8e3c52-5b8a-4c1e-9a8e-2f6d0c7b1a90/file")
        #expect(endpoint.images(limit: 100) == "\(root)/v2/images?limit=100&sort_key=created_at&sort_dir=desc")
    }

    /// A redirect carries the token: only the service's own scheme, host and port may be followed.
    @Test func aRedirectMayOnlyStayOnTheServicesOrigin() throws {
        let endpoint = try GlanceEndpoint("http://Glance.example:9292/image")
        for same in ["http://glance.example:9292/v2/images/x", "HTTP://GLANCE.EXAMPLE:9292/elsewhere"] {
            #expect(endpoint.isSameOrigin(URL(string: same)), "\(same)")
        }
        for other in [
            "http://glance.example:9293/v2", "https://glance.example:9292/v2", "http://evil.example:9292/v2",
            "http://glance.example/v2", "http://127.0.0.1:9292/v2",
        ] {
            #expect(!endpoint.isSameOrigin(URL(string: other)), "\(other)")
        }
        #expect(try GlanceEndpoint("https://h").isSameOrigin(URL(string: "https://h:443/x")))
        #expect(GlanceEndpoint.origin(of: URL(string: "http://evil.example:81/a?b")) == "\"http://evil.example:81\"")
    }

    @Test(arguments: ["", "127.0.0.1:9292", "ftp://host/", "http://", "http://h:9292/?x=1", "http://u:p@h:9292"])
    func refusesWhatIsNotAGlanceURL(text: String) {
        #expect(throws: CatalogError.self) { try GlanceEndpoint(text) }
    }

    @Test func createBodyPutsPropertiesAtTheTop() {
        let body = GlanceRecord.createBody(
            id: CatalogID("0f8e3c52-5b8a-4c1e-9a8e-2f6d0c7b1a90")!, name: "k", diskFormat: "aki",
            containerFormat: "aki",
            properties: ["kernel_args": "console=ttyS0"])
        #expect(
            JSONCodec.serializeString(body)
                == #"{"id":"0f8e3c52-5b8a-4c1e-9a8e-2f6d0c7b1a90","name":"k","disk_format":"aki","container_format":"aki","kernel_args":"console=ttyS0"}"#
        )
    }

    @Test func patchReplacesAddsAndRemovesOnlyWhatExists() {
        let patch = GlanceRecord.patchBody(
            current: ["a": "1", "gone": "x"], set: ["a": "2", "b/c": "3"], remove: ["gone", "absent"])
        #expect(
            JSONCodec.serializeString(patch)
                == #"[{"op":"remove","path":"/gone"},{"op":"replace","path":"/a","value":"2"},"#
                + #"{"op":"add","path":"/b~1c","value":"3"}]"#)
    }

    // MARK: Errors

    static let notFoundJSON = Array(
        #"{"message": "No image found with ID 11111111-1111-1111-1111-111111111111<br /><br />\n\n\n", "code": "404 Not Found", "title": "Not Found"}"#
            .utf8)
    static let conflictHTML = Array(
        """
        <html>
         <head>
          <title>409 Conflict</title>
         </head>
         <body>
          <h1>409 Conflict</h1>
          Image status transition from active to saving is not allowed<br /><br />



         </body>
        </html>
        """.utf8)
    static let tooLargeJSON = Array(
        #"{"message": "The incoming image is too large: The provided image is too large.<br /><br />\n\n\n", "code": "413 Request Entity Too Large", "title": "Request Entity Too Large"}"#
            .utf8)
    static let unauthorizedJSON = Array(
        #"{"error": {"code": 401, "title": "Unauthorized", "message": "The request you have made requires authentication."}}"#
            .utf8)

    @Test func readsGlanceExplanations() {
        #expect(
            GlanceErrors.explanation(Self.notFoundJSON) == "No image found with ID 11111111-1111-1111-1111-111111111111"
        )
        #expect(
            GlanceErrors.explanation(Self.conflictHTML)
                == "Image status transition from active to saving is not allowed")
        #expect(GlanceErrors.explanation(Self.unauthorizedJSON) == "The request you have made requires authentication.")
        #expect(GlanceErrors.explanation(Array("\u{1b}[31m evil\nline".utf8)) == nil)
        #expect(GlanceErrors.explanation([]) == nil)
    }

    @Test func mapsStatusesToCatalogErrors() {
        let id = "11111111-1111-1111-1111-111111111111"
        func map(_ status: Int, _ body: [UInt8], _ operation: GlanceOperation) -> CatalogError {
            GlanceErrors.error(status: status, body: body, operation: operation, endpoint: Self.endpoint)
        }
        let notFound = map(404, Self.notFoundJSON, .read(imageID: id))
        #expect(notFound.kind == .imageNotFound && notFound.rpcClassName == "ImageNotFound")

        let unauthorized = map(401, Self.unauthorizedJSON, .list)
        #expect(unauthorized.kind == .unauthorized)
        #expect(unauthorized.message.contains("HTTP 401") && unauthorized.message.contains("token"))
        #expect(map(403, [], .delete(imageID: id)).kind == .unauthorized)

        #expect(map(409, [], .create(imageID: id)).kind == .alreadyExists)
        let notQueued = map(409, Self.conflictHTML, .upload(imageID: id))
        #expect(notQueued.kind == .invalidRequest && notQueued.message.contains("transition from active to saving"))
        #expect(map(409, [], .delete(imageID: id)).kind == .inUse)

        let tooLarge = map(413, Self.tooLargeJSON, .upload(imageID: id))
        #expect(tooLarge.kind == .catalogUnavailable && tooLarge.message.contains("image_size_cap"))
        #expect(tooLarge.rpcClassName(operationFailure: "SnapshotFailed") == "SnapshotFailed")

        #expect(map(400, [], .create(imageID: id)).kind == .invalidProperty)
        #expect(map(503, [], .list).kind == .catalogUnavailable)

        let down = GlanceErrors.unreachable(
            Self.endpoint, operation: .download(imageID: id), reason: "connection refused")
        #expect(
            down.kind == .catalogUnavailable && down.message.contains("cannot reach Glance at http://127.0.0.1:9292"))
    }

    // MARK: Checksums

    @Test func verifiesWithTheRecordedAlgorithm() throws {
        let directory = try TemporaryDirectory()
        let bytes = Array(repeating: UInt8(7), count: 3000) + [1, 2, 3]
        let path = try directory.file("data", bytes)
        let descriptor = try Files.open(path, O_RDONLY, action: "open")
        let result = try GlanceHash.file(descriptor, algorithm: .sha512)
        var image = CatalogImage(
            id: "0f8e3c52-5b8a-4c1e-9a8e-2f6d0c7b1a90", name: "x", diskFormat: "raw", size: 3003,
            checksum: result.md5, osHashAlgo: "sha512", osHashValue: result.osHash)
        #expect(GlanceHash.mismatch(result, image: image) == nil)
        image.osHashValue = String(repeating: "0", count: 128)
        #expect(GlanceHash.mismatch(result, image: image)?.hasPrefix("sha512") == true)
        image.size = 1
        #expect(GlanceHash.mismatch(result, image: image) == "size 3003, expected 1")
        #expect(GlanceHash.Algorithm("SHA256") == .sha256 && GlanceHash.Algorithm("blake2") == nil)
    }
}

/// `GlanceCatalog` with no Glance listening (a closed loopback port): the error says so and no cache file or
/// temporary file is left. The rest of its behaviour is proved against real Glance in Tests/interop/test_glance.py.
@Suite struct GlanceCatalogUnreachableTests {
    @Test func aClosedPortIsAClearErrorAndCachesNothing() async throws {
        let directory = try TemporaryDirectory()
        let catalog = GlanceCatalog(
            endpoint: try GlanceEndpoint("http://127.0.0.1:9"), token: "secret-token-value",
            cacheDirectory: "\(directory.path)/cache", volumes: LocalCatalog(root: "\(directory.path)/volumes"))
        let id = "0f8e3c52-5b8a-4c1e-9a8e-2f6d0c7b1a90"
        do throws(CatalogError) {
            _ = try await catalog.localImageData(id: id)
            Issue.record("no error without Glance")
        } catch {
            #expect(error.kind == .catalogUnavailable)
            #expect(error.message.contains("cannot reach Glance at http://127.0.0.1:9"), "\(error.message)")
            #expect(!error.message.contains("secret-token-value"))
        }
        let left = (try? FileManager.default.contentsOfDirectory(atPath: "\(directory.path)/cache")) ?? []
        #expect(left.isEmpty, "\(left)")
        // Ids are checked before any request: a path never reaches a URL.
        await #expect(throws: CatalogError.self) { try await catalog.image(id: "../../v2/images") }
    }
}
