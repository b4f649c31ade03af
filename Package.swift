// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "Berth",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "berth", targets: ["berth"])
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.6.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.4.0"),
        // The worker's /metrics endpoint: the Prometheus backend for swift-metrics, and a small HTTP server with no
        // dependencies (docs/metrics.md says why not a NIO-based one).
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.0"),
        .package(url: "https://github.com/swhitty/FlyingFox", from: "0.27.0"),
    ],
    targets: [
        // C libraries, linked through pkg-config (Debian's -dev packages).
        .systemLibrary(
            name: "CRabbitMQ", pkgConfig: "librabbitmq",
            providers: [.apt(["librabbitmq-dev"])]),
        .systemLibrary(
            name: "CLibvirt", pkgConfig: "libvirt",
            providers: [.apt(["libvirt-dev"])]),
        .systemLibrary(
            name: "CJSONC", pkgConfig: "json-c",
            providers: [.apt(["libjson-c-dev"])]),
        .systemLibrary(
            name: "CCurl", pkgConfig: "libcurl",
            providers: [.apt(["libcurl4-openssl-dev"])]),
        .systemLibrary(
            name: "CCrypto", pkgConfig: "libcrypto",
            providers: [.apt(["libssl-dev"])]),
        .systemLibrary(
            name: "CZlib", pkgConfig: "zlib",
            providers: [.apt(["zlib1g-dev"])]),
        // What Swift cannot call in librabbitmq: variadic amqp_login, the method numbers (macros with casts); and
        // the AMQP I/O thread's eventfd. Seen only by BerthAMQP. libvirt needs no shim: BerthLibvirt calls it
        // directly and reads its per-thread error in Swift (LibvirtCall).
        .target(name: "CRabbitMQShims", dependencies: ["CRabbitMQ"]),

        // Pure Swift, no C: the dedicated threads blocking work (files, disks, libcurl, child processes) runs on,
        // off the cooperative pool; below every module that does such work.
        .target(name: "BerthBlocking"),
        // Pure: JSON as a Swift value, its Codable bridge and errors. No json-c, so BerthCore can use it.
        .target(name: "BerthJSONValue"),
        // json-c's parser and serialiser with the limits on hostile input, and the YAML writer; re-exports
        // BerthJSONValue.
        .target(name: "BerthJSON", dependencies: ["BerthJSONValue", "CJSONC"]),
        // Pure: the AMQP objects (exchange, queue, binding declarations, field tables) oslo's topology asks for and
        // the AMQP client declares; one model for both, with no librabbitmq in it.
        .target(name: "BerthAMQPModel"),
        // Optimised even in debug builds: OsloEnvelopeScanner follows every byte of bodies up to the broker's limit.
        .target(
            name: "BerthWire", dependencies: ["BerthJSON", "BerthAMQPModel"], swiftSettings: [.unsafeFlags(["-O"])]),
        // MD5, SHA-256, SHA-384, SHA-512 through libcrypto's EVP interface: the one owner of libcrypto.
        .target(name: "BerthDigest", dependencies: ["CCrypto"]),
        // Pure rules: properties, kernel command line, boot variants, domain XML. No I/O and no C library: the
        // JSON held in image properties is parsed by the codec (JSONTextCodec) its caller passes in.
        .target(name: "BerthCore", dependencies: ["BerthJSONValue"]),
        // Pure: the worker's settings from oslo.config-style files, the environment and the command line.
        .target(name: "BerthConfig"),
        // The image/volume catalog: the local directory catalog and Glance. Every image it takes or hands out goes
        // through BerthDiskImage's inspector.
        .target(
            name: "BerthCatalog", dependencies: ["BerthBlocking", "BerthCore", "BerthJSON", "BerthDigest", "BerthDiskImage", "CCurl"]),
        // Disk images for bare metal: format detection, qcow2 streaming conversion, partition tables, config drive.
        // Its byte loops (qcow2 conversion, inflate, zero detection, digests) run over whole disks: optimised even
        // in debug builds, or a test deploy of a few hundred MiB takes minutes instead of seconds.
        .target(
            name: "BerthDiskImage", dependencies: ["BerthCore", "BerthJSON", "BerthDigest", "CZlib"],
            swiftSettings: [.unsafeFlags(["-O"])]),
        .target(
            name: "BerthAMQP",
            dependencies: [
                "CRabbitMQ", "CRabbitMQShims", "BerthAMQPModel", .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ]),
        .target(
            name: "BerthLibvirt",
            dependencies: ["CLibvirt", .product(name: "Logging", package: "swift-log")]),
        // The bus side of the worker: the oslo RPC server (intake, admission, attempts, hand-off, delivery), its
        // event outbox and notifier, the RPC client, the metering publisher, dead letters, service reports. Never
        // libvirt: what it runs is handed to it as RPC methods.
        .target(
            name: "BerthRPC",
            dependencies: [
                "BerthJSON", "BerthWire", "BerthAMQP", "BerthDigest",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Metrics", package: "swift-metrics"),
            ]),
        // The host side of the worker: VMs on libvirt, snapshots, bare-metal deploys, the metrics poller. Never the
        // broker: events and samples leave through protocols the composition binds to BerthRPC.
        .target(
            name: "BerthCompute",
            dependencies: [
                "BerthBlocking", "BerthJSON", "BerthWire", "BerthLibvirt", "BerthCore", "BerthCatalog",
                "BerthDiskImage", "BerthDigest",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]),
        // The worker assembled: the compute RPC API (RPC methods onto the compute service), the service reports'
        // host capacity from libvirt, /metrics and /healthz, systemd readiness.
        .target(
            name: "BerthWorker",
            dependencies: [
                "BerthJSON", "BerthWire", "BerthRPC", "BerthCompute", "BerthLibvirt", "BerthCore",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "FlyingFox", package: "FlyingFox"),
            ]),
        .executableTarget(
            name: "berth",
            dependencies: [
                "BerthJSON", "BerthWire", "BerthAMQP", "BerthLibvirt", "BerthRPC", "BerthCompute", "BerthWorker",
                "BerthConfig", "BerthCatalog", "BerthCore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]),

        .testTarget(name: "BerthBlockingTests", dependencies: ["BerthBlocking"]),
        .testTarget(name: "BerthJSONTests", dependencies: ["BerthJSON"]),
        .testTarget(name: "BerthWireTests", dependencies: ["BerthWire", "BerthJSON"], exclude: ["Fixtures"]),
        .testTarget(name: "BerthAMQPTests", dependencies: ["BerthAMQP", .product(name: "Logging", package: "swift-log")]),
        .testTarget(name: "BerthRPCTests", dependencies: ["BerthRPC", "BerthWire", "BerthJSON", "BerthAMQP", .product(name: "Logging", package: "swift-log")]),
        .testTarget(
            name: "BerthComputeTests",
            dependencies: [
                "BerthCompute", "BerthLibvirt", "BerthCatalog", "BerthCore", "BerthWire", "BerthJSON",
                "BerthDiskImage", .product(name: "Prometheus", package: "swift-prometheus"),
            ]),
        .testTarget(
            name: "BerthWorkerTests",
            dependencies: [
                "BerthWorker", "BerthRPC", "BerthCompute", "BerthWire", "BerthJSON",
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]),
        .testTarget(name: "BerthCoreTests", dependencies: ["BerthCore", "BerthJSON", "BerthDigest"]),
        .testTarget(name: "BerthDigestTests", dependencies: ["BerthDigest"]),
        .testTarget(name: "BerthConfigTests", dependencies: ["BerthConfig"]),
        .testTarget(name: "BerthDiskImageTests", dependencies: ["BerthDiskImage", "BerthCore", "BerthJSON", "BerthDigest"]),
        .testTarget(
            name: "BerthCatalogTests", dependencies: ["BerthCatalog", "BerthCore", "BerthJSON", "BerthDigest", "BerthDiskImage"]),
        .testTarget(name: "BerthLibvirtTests", dependencies: ["BerthLibvirt"]),
        .testTarget(
            name: "BerthIntegrationTests",
            dependencies: ["BerthAMQP", "BerthLibvirt", "BerthWire", "BerthJSON", "BerthRPC"]),
    ],
    swiftLanguageModes: [.v6]
)
