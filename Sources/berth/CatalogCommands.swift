import ArgumentParser
import BerthCatalog
import BerthCompute
import BerthConfig
import BerthCore
import BerthJSON
import BerthLibvirt
import Foundation

/// Where the catalog is: `local:PATH` (the default, `local:/var/lib/berth/catalog`) or `glance:URL` (images in
/// Glance v2; volumes and volume snapshots stay in the local catalog at `--volume-catalog`). docs/glance.md.
/// The worker also takes these from its configuration files and environment (`CatalogSettings`).
struct CatalogOptions: ParsableArguments {
    @Option(help: ArgumentHelp(.catalog, valueName: "catalog"))
    var catalog: String?

    @Option(help: ArgumentHelp(.glanceTokenFile, valueName: "path"))
    var glanceTokenFile: String?

    @Option(help: ArgumentHelp(.glanceCacheDir, valueName: "path"))
    var glanceCacheDir: String?

    @Option(help: ArgumentHelp(.volumeCatalog, valueName: "path"))
    var volumeCatalog: String?

    /// The options given on the command line, as a configuration layer.
    var commandLine: [WorkerOption: WorkerConfiguration.CommandLineValue] {
        var given: [WorkerOption: WorkerConfiguration.CommandLineValue] = [:]
        given[.catalog] = catalog.map { .text($0) }
        given[.glanceTokenFile] = glanceTokenFile.map { .text($0) }
        given[.glanceCacheDir] = glanceCacheDir.map { .text($0) }
        given[.volumeCatalog] = volumeCatalog.map { .text($0) }
        return given
    }

    /// `stateDirectory`: the command's `--state-dir`, under which the Glance cache goes unless
    /// `--glance-cache-dir` says otherwise (the worker's image cache hard-links it, so they share a file system).
    func open(stateDirectory: String = "/var/lib/berth") throws -> any Catalog {
        let configuration: WorkerConfiguration
        do {
            configuration = try WorkerConfiguration(commandLine: commandLine)
        } catch {
            throw ValidationError(error.message)
        }
        let settings = CatalogSettings(configuration)
        return try settings.open(stateDirectory: stateDirectory, token: GlanceToken(try settings.glanceToken()))
    }
}

/// The catalog's settings, from the command line or the worker's configuration.
struct CatalogSettings {
    var catalog: String
    var glanceTokenFile: String?
    var glanceCacheDir: String?
    var volumeCatalog: String

    init(_ configuration: WorkerConfiguration) {
        catalog = configuration.string(.catalog) ?? ""
        glanceTokenFile = configuration.string(.glanceTokenFile)
        glanceCacheDir = configuration.string(.glanceCacheDir)
        volumeCatalog = configuration.string(.volumeCatalog) ?? ""
    }

    /// `token`: what a Glance catalog sends, shared with whoever replaces it (the worker's reload).
    func open(stateDirectory: String, token: GlanceToken) throws -> any Catalog {
        if catalog.hasPrefix("local:"), catalog.count > 6 {
            return LocalCatalog(root: String(catalog.dropFirst(6)))
        }
        if catalog.hasPrefix("glance:"), catalog.count > 7 {
            let endpoint: GlanceEndpoint
            do {
                endpoint = try GlanceEndpoint(String(catalog.dropFirst(7)))
            } catch {
                throw ValidationError("--catalog: \(error.message)")
            }
            return GlanceCatalog(
                endpoint: endpoint, token: token, cacheDirectory: glanceCacheDir ?? "\(stateDirectory)/cache/glance",
                volumes: LocalCatalog(root: volumeCatalog))
        }
        throw ValidationError(
            "--catalog must be local:PATH or glance:URL (e.g. local:/var/lib/berth/catalog, "
                + "glance:http://127.0.0.1:9292)")
    }

    /// The token from the file, else the environment; nil (Glance without auth) when none is given. The value
    /// is never printed: messages name only where it came from.
    func glanceToken() throws -> String? {
        if let glanceTokenFile {
            var info = stat()
            guard stat(glanceTokenFile, &info) == 0, let data = FileManager.default.contents(atPath: glanceTokenFile)
            else {
                throw ValidationError("--glance-token-file: cannot read \(glanceTokenFile)")
            }
            guard info.st_mode & 0o077 == 0 else {
                throw ValidationError(
                    "--glance-token-file: \(glanceTokenFile) is readable by group or others; chmod 600 it")
            }
            return try Self.token(String(decoding: data, as: UTF8.self), from: "--glance-token-file")
        }
        let environment = ProcessInfo.processInfo.environment
        for name in ["BERTH_GLANCE_TOKEN", "OS_AUTH_TOKEN"] {
            if let value = environment[name], !value.isEmpty { return try Self.token(value, from: name) }
        }
        return nil
    }

    private static func token(_ text: String, from source: String) throws -> String {
        let token = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !token.isEmpty, token.utf8.count <= 8192,
            token.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value < 0x7f })
        else {
            throw ValidationError("the Glance token from \(source) is empty, too long or not printable ASCII")
        }
        return token
    }
}

/// Catalog records as the CLI prints them: JSON objects the way their files hold them and Glance shows them.
enum CatalogRecord {
    static func json<T: Encodable>(_ record: T) throws -> JSONObject {
        try RecordCoding.json(record).objectValue ?? [:]
    }

    /// The columns of `images list` and `volumes list` as a table, as `openstack image list` shows them.
    static let imageColumns = ["id", "name", "status", "disk_format", "size"]
    static let volumeColumns = ["id", "name", "status", "size", "bootable"]
}

/// Where the CLI takes an image or volume, it takes its id or its name, as the openstack CLI does. An id is
/// used as it is; anything else must name exactly one record, or the command fails listing the matches.
enum CatalogLookup {
    static func image(_ reference: String, in catalog: any Catalog) async throws -> CatalogImage {
        try await find(
            reference, kind: "image", notFound: .imageNotFound, byID: { try await catalog.image(id: reference) },
            all: { try await catalog.images() }, id: \.id, name: \.name)
    }

    static func volume(_ reference: String, in catalog: any Catalog) async throws -> CatalogVolume {
        try await find(
            reference, kind: "volume", notFound: .volumeNotFound, byID: { try await catalog.volume(id: reference) },
            all: { try await catalog.volumes() }, id: \.id, name: \.name)
    }

    private static func find<Record>(
        _ reference: String, kind: String, notFound: CatalogError.Kind, byID: () async throws -> Record,
        all: () async throws -> [Record], id: (Record) -> String, name: (Record) -> String
    ) async throws -> Record {
        do {
            return try await byID()
        } catch let failure as CatalogError where failure.kind == notFound {
            let named = try await all().filter { name($0) == reference }
            switch named.count {
            case 0:
                throw CatalogError(
                    kind: notFound,
                    message: "no \(kind) has the id or name \(reference.debugDescription); "
                        + "list them with `berth \(kind)s list`")
            case 1: return named[0]
            default:
                throw CommandFailure(
                    "AmbiguousName",
                    "\(named.count) \(kind)s are named \(reference.debugDescription): "
                        + "\(named.map(id).sorted().joined(separator: ", ")); give the id of the one you mean")
            }
        }
    }
}

func parseProperties(_ arguments: [String]) throws -> [String: String] {
    var properties: [String: String] = [:]
    for argument in arguments {
        guard let equals = argument.firstIndex(of: "="), equals != argument.startIndex else {
            throw ValidationError("--property takes key=value, got '\(argument)'")
        }
        properties[String(argument[..<equals])] = String(argument[argument.index(after: equals)...])
    }
    return properties
}

struct Images: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "images", abstract: "Manage images in the catalog (local or Glance).",
        discussion: "Wherever an image is named, its id or its name will do; a name must be unique.",
        subcommands: [Create.self, List.self, Show.self, Update.self, Delete.self, Check.self, Verify.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create an image from a file.",
            discussion: """
                Examples:
                  berth images create --name vmlinuz --disk-format aki --file /boot/vmlinuz
                  berth images create --name guest --disk-format raw --file disk.img \\
                      --property kernel_id=<id> --property kernel_args="root=/dev/vda console=ttyS0"
                """)
        @OptionGroup var catalog: CatalogOptions
        @Option(help: "Image name.") var name: String
        @Option(help: "raw, qcow2, aki (kernel), ari (ramdisk), ami, iso, ...") var diskFormat: String
        @Option(help: "bare, aki, ari, ami, ovf (default: from the disk format).") var containerFormat: String?
        @Option(help: "The image data; omit for an image without data (queued).") var file: String?
        @Option(name: .customLong("property"), help: "An image property key=value (repeatable).")
        var properties: [String] = []
        @OptionGroup var output: OutputOptions

        func run() async throws {
            let properties = try parseProperties(self.properties)
            let image = try await catalog.open().createImage(
                name: name, diskFormat: diskFormat, containerFormat: containerFormat, properties: properties,
                data: file.map(ImageDataSource.file))
            try output.show(try CatalogRecord.json(image))
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List images.")
        @OptionGroup var catalog: CatalogOptions
        @OptionGroup var output: OutputOptions

        func run() async throws {
            let images = try await catalog.open().images()
            try output.list(images.map(CatalogRecord.json), defaultColumns: CatalogRecord.imageColumns)
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show one image.")
        @OptionGroup var catalog: CatalogOptions
        @Argument(help: "Image id or name.") var image: String
        @OptionGroup var output: OutputOptions

        func run() async throws {
            try output.show(try CatalogRecord.json(try await CatalogLookup.image(image, in: catalog.open())))
        }
    }

    struct Verify: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Hash an image's data on this host and compare it with the image's checksum.",
            discussion: """
                Boots and deploys trust data verified when it arrived while its file is unchanged (a stamp beside \
                it); this reads the whole file again, which also catches corruption below the file system. Data \
                that does not match fails with InvalidImage and loses its stamp.
                """)
        @OptionGroup var catalog: CatalogOptions
        @Argument(help: "Image id or name.") var image: String
        @OptionGroup var output: OutputOptions

        func run() async throws {
            let catalog = try catalog.open()
            let id = try await CatalogLookup.image(image, in: catalog).id
            try await catalog.verifyImageData(id: id)
            try output.show(["image_id": .string(id), "verified": true])
        }
    }

    struct Update: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Set or remove image properties.")
        @OptionGroup var catalog: CatalogOptions
        @Argument(help: "Image id or name.") var image: String
        @Option(name: .customLong("property"), help: "Set key=value (repeatable).") var properties: [String] = []
        @Option(name: .customLong("remove-property"), help: "Remove a property (repeatable).") var remove: [String] = []
        @OptionGroup var output: OutputOptions

        func run() async throws {
            let properties = try parseProperties(self.properties)
            let catalog = try catalog.open()
            let id = try await CatalogLookup.image(image, in: catalog).id
            let updated = try await catalog.updateImage(id: id, setProperties: properties, removeProperties: Set(remove))
            try output.show(try CatalogRecord.json(updated))
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete an image and its data.")
        @OptionGroup var catalog: CatalogOptions
        @Argument(help: "Image id or name.") var image: String

        func run() async throws {
            let catalog = try catalog.open()
            try await catalog.deleteImage(id: try await CatalogLookup.image(image, in: catalog).id)
        }
    }

    struct Check: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Can this host boot the image? The answer boot_instance would give, without booting.",
            discussion: "Prints the chosen boot variant and kernel command line, or every reason it cannot run.")
        @OptionGroup var catalog: CatalogOptions
        @Argument(help: "Image id or name.") var image: String
        @Option(help: "libvirt connection URI.") var libvirtURI = "qemu:///system"
        @Option(name: .customLong("meta"), help: "Per-VM metadata key=value, as in boot (repeatable).")
        var metadata: [String] = []
        @OptionGroup var output: OutputOptions

        func run() async throws {
            let metadata = try parseProperties(self.metadata)
            let catalog = try catalog.open()
            let libvirt = LibvirtHost(uri: libvirtURI)
            let capabilities = try await libvirt.capabilities()
            let image = try await CatalogLookup.image(self.image, in: catalog)
            let overrides = try VMOverrides(metadata: metadata)
            let resolved = try ResolvedBoot.resolve(
                image: image, overrides: overrides, host: capabilities, codec: JSONCodec.self)
            try output.show([
                "image_id": .string(image.id), "runnable": true,
                "boot_variant": resolved.selection.summary.map(JSONValue.string) ?? .null,
                "kernel_cmdline": resolved.kernelCommandLine.map { .string($0.text) } ?? .null,
                "disk_bus": .string(resolved.diskBus.rawValue), "vm_mode": .string(resolved.vmMode.rawValue),
            ])
        }
    }
}

struct Volumes: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "volumes", abstract: "Manage volumes and volume snapshots in the local catalog.",
        discussion: "Wherever a volume is named, its id or its name will do; a name must be unique.",
        subcommands: [Create.self, List.self, Show.self, Snapshot.self, Image.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a volume: blank, from an image, or from a snapshot.",
            discussion: "Example: berth volumes create --name root --size 1 --image <image id or name> --bootable")
        @OptionGroup var catalog: CatalogOptions
        @Option(help: "Volume name.") var name: String
        @Option(help: "Size in GiB.") var size: Int
        @Option(help: "Copy this image's data and properties (id or name).") var image: String?
        @Option(help: "Copy this snapshot.") var snapshot: String?
        @Flag(help: "Mark bootable.") var bootable = false
        @OptionGroup var output: OutputOptions

        func run() async throws {
            let catalog = try catalog.open()
            var imageID: String?
            if let image { imageID = try await CatalogLookup.image(image, in: catalog).id }
            let volume = try await catalog.createVolume(
                name: name, sizeGB: size, fromImage: imageID, fromSnapshot: snapshot, bootable: bootable)
            try output.show(try CatalogRecord.json(volume))
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List volumes.")
        @OptionGroup var catalog: CatalogOptions
        @OptionGroup var output: OutputOptions

        func run() async throws {
            let volumes = try await catalog.open().volumes()
            try output.list(volumes.map(CatalogRecord.json), defaultColumns: CatalogRecord.volumeColumns)
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show one volume.")
        @OptionGroup var catalog: CatalogOptions
        @Argument(help: "Volume id or name.") var volume: String
        @OptionGroup var output: OutputOptions

        func run() async throws {
            try output.show(try CatalogRecord.json(try await CatalogLookup.volume(volume, in: catalog.open())))
        }
    }

    struct Image: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a placeholder image for a volume or a volume snapshot (create_placeholder_image).",
            discussion: """
                A placeholder has no data; its block_device_mapping names the volume or snapshot, so booting it \
                boots from the volume and the instance still has an image_id.

                Examples:
                  berth volumes image <volume id> --name root-image
                  berth volumes image <snapshot id> --snapshot --name root-image
                """)
        @OptionGroup var catalog: CatalogOptions
        @Argument(help: "Volume id or name (or snapshot id with --snapshot).") var id: String
        @Flag(help: "The id is a volume snapshot's.") var snapshot = false
        @Option(help: "Image name.") var name: String
        @Option(name: .customLong("property"), help: "An image property key=value (repeatable).")
        var properties: [String] = []
        @OptionGroup var output: OutputOptions

        func run() async throws {
            let properties = try parseProperties(self.properties)
            let catalog = try catalog.open()
            let volumeID = snapshot ? nil : try await CatalogLookup.volume(id, in: catalog).id
            let image = try await ComputeService.mintPlaceholder(
                catalog: catalog, volumeID: volumeID, snapshotID: snapshot ? id : nil, name: name,
                properties: properties)
            try output.show(try CatalogRecord.json(image))
        }
    }

    struct Snapshot: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Snapshot a volume.")
        @OptionGroup var catalog: CatalogOptions
        @Argument(help: "Volume id or name.") var volume: String
        @Option(help: "Snapshot name.") var name: String
        @OptionGroup var output: OutputOptions

        func run() async throws {
            let catalog = try catalog.open()
            let id = try await CatalogLookup.volume(volume, in: catalog).id
            try output.show(try CatalogRecord.json(try await catalog.snapshotVolume(id: id, name: name)))
        }
    }
}
