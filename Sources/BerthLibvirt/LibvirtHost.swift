import Logging

/// The worker's libvirt connection, shared by all tasks.
///
/// Runs on its own thread (see `LibvirtThread`), so awaiting it never blocks the cooperative pool. Opens the
/// connection on first use; if libvirtd went away, the next call reopens it once and, if that fails, throws
/// the open error (which tells the operator whether libvirtd is down).
public actor LibvirtHost {
    public nonisolated let uri: String
    private let thread: LibvirtThread
    private let logger: Logger
    private var connection: LibvirtConnection?
    /// Capabilities change only when libvirtd restarts (e.g. after a QEMU upgrade), so they are read once per
    /// connection rather than on every boot request.
    private var cachedCapabilities: HostCapabilities?
    /// Set while a connection is wanted: an open after a loss is then a reconnect, after `close()` it is not.
    private var wantsConnection = false
    /// How many times a lost connection was replaced; a number worth a metric.
    public private(set) var reconnects = 0
    /// Storage pools (name → directory) found or made ready on this connection: a boot does not check its pool
    /// again (a pool refresh scans every volume in it); a boot that fails in the pool checks it again.
    var readyPools: [String: String] = [:]

    public nonisolated var unownedExecutor: UnownedSerialExecutor {
        thread.asUnownedSerialExecutor()
    }

    /// Does not connect; call `connect()` to fail fast at startup.
    public init(uri: String, logger: Logger = Logger(label: "berth.libvirt")) {
        self.uri = uri
        self.thread = LibvirtThread(name: "berth-libvirt")
        var logger = logger
        logger[metadataKey: "libvirt_uri"] = .string(uri)
        self.logger = logger
    }

    deinit {
        // The connection itself is closed when the stored property goes; this lets the thread exit after it.
        thread.shutdown()
    }

    /// Opens the connection now if it is not open and alive.
    public func connect() throws {
        _ = try liveConnection()
    }

    /// Closes the connection on the libvirt thread; a later call opens a new one.
    public func close() {
        connection?.close()
        connection = nil
        cachedCapabilities = nil
        readyPools = [:]
        wantsConnection = false
    }

    /// Runs `body` with a live connection. If the call fails because the connection died, reopens it and runs
    /// `body` once more, so only retry-safe work belongs here.
    public func withConnection<T: Sendable>(
        _ body: (LibvirtConnection) throws -> T
    ) throws -> T {
        let current = try liveConnection()
        do {
            return try body(current)
        } catch {
            guard !current.isAlive() else { throw error }
            logger.warning("libvirt connection lost during a call; reopening", metadata: ["error": "\(error)"])
            return try body(reopen())
        }
    }

    /// Parsed once per connection: finding the connection dead (which reopens it) drops the cache first.
    public func capabilities() throws -> HostCapabilities {
        _ = try liveConnection()
        if let cachedCapabilities {
            return cachedCapabilities
        }
        let parsed = try HostCapabilities.parse(xml: withConnection { try $0.capabilitiesXML() })
        cachedCapabilities = parsed
        return parsed
    }

    public func hostname() throws -> String {
        try withConnection { try $0.hostname() }
    }

    public func nodeInfo() throws -> NodeInfo {
        try withConnection { try $0.nodeInfo() }
    }

    public func freeMemoryBytes() throws -> UInt64 {
        try withConnection { try $0.freeMemoryBytes() }
    }

    public func isAlive() -> Bool {
        connection?.isAlive() ?? false
    }

    /// The `describe_host` result. `hostName` overrides libvirt's host name (the worker's configured name
    /// is what the scheduler targets).
    public func describe(hostName: String? = nil) throws -> HostDescription {
        let capabilities = try capabilities()
        return try withConnection { connection throws in
            try HostDescription(
                host: hostName ?? connection.hostname(),
                capabilities: capabilities,
                nodeInfo: connection.nodeInfo(),
                freeMemoryBytes: connection.freeMemoryBytes(),
                activeVcpus: connection.activeVcpus(),
                libvirtVersion: connection.libVersion(),
                hypervisorVersion: connection.hypervisorVersion())
        }
    }

    /// What a service report says of the host: its CPUs and memory, what running domains leave free, and how
    /// many domains whose names start with `domainPrefix` it holds (running or not).
    public func capacity(domainPrefix: String) throws -> HostCapacity {
        try withConnection { connection throws in
            let node = try connection.nodeInfo()
            return HostCapacity(
                vcpus: node.cpus, memoryMB: Int(clamping: node.memoryKiB / 1024),
                freeVcpus: max(0, node.cpus - (try connection.activeVcpus())),
                freeMemoryMB: Int(clamping: try connection.freeMemoryBytes() / (1024 * 1024)),
                domains: try connection.listDomains(namePrefix: domainPrefix).count)
        }
    }

    private func liveConnection() throws -> LibvirtConnection {
        if let connection, connection.isAlive() {
            return connection
        }
        return try reopen()
    }

    private func reopen() throws -> LibvirtConnection {
        connection?.close()
        connection = nil
        cachedCapabilities = nil
        readyPools = [:]
        let fresh = try LibvirtConnection(uri: uri)
        connection = fresh
        defer { wantsConnection = true }
        if wantsConnection {
            reconnects += 1
            logger.notice("libvirt connection reopened", metadata: ["reconnects": "\(reconnects)"])
        } else {
            logger.info("libvirt connection opened")
        }
        return fresh
    }

    /// Tests: whether actor code really runs on the dedicated thread.
    func isOnLibvirtThread() -> Bool {
        thread.isCurrent
    }

    /// Tests: what a lost libvirtd looks like from here — a connection object that is no longer alive.
    func dropConnectionForTesting() {
        connection?.close()
    }
}
