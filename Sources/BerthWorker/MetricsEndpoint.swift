import BerthCompute
import BerthRPC
import FlyingFox
import FlyingSocks
import Foundation
import Logging
import Metrics
import Prometheus
import ServiceLifecycle
import Synchronization

/// `--metrics-listen HOST:PORT`: where the worker serves `/metrics` and `/healthz`. Operator input, so it is
/// checked before anything binds: an IPv4 literal or a bracketed IPv6 literal (no names: a name could resolve
/// to an address the operator did not mean to expose), and a port 1-65535.
public struct MetricsListenAddress: Sendable, Hashable, CustomStringConvertible {
    public enum Host: Sendable, Hashable {
        case ipv4(String)
        case ipv6(String)
    }

    public let host: Host
    public let port: UInt16

    public init(parsing text: String) throws(MetricsListenError) {
        // Echoed in errors: printable ASCII only, truncated.
        let shown = String(
            text.unicodeScalars.prefix(64).map { (0x20..<0x7f).contains($0.value) ? Character($0) : "?" })
        guard let colon = text.lastIndex(of: ":") else {
            throw MetricsListenError("--metrics-listen '\(shown)' must be HOST:PORT, e.g. 127.0.0.1:9180")
        }
        let hostText = String(text[..<colon])
        guard let port = UInt16(text[text.index(after: colon)...]), port > 0 else {
            throw MetricsListenError("--metrics-listen '\(shown)': the port must be 1-65535")
        }
        if hostText.hasPrefix("["), hostText.hasSuffix("]") {
            let literal = String(hostText.dropFirst().dropLast())
            var address = in6_addr()
            guard inet_pton(AF_INET6, literal, &address) == 1 else {
                throw MetricsListenError("--metrics-listen '\(shown)': the host is not an IPv6 address")
            }
            host = .ipv6(literal)
        } else {
            var address = in_addr()
            guard inet_pton(AF_INET, hostText, &address) == 1 else {
                throw MetricsListenError(
                    "--metrics-listen '\(shown)': the host must be an IPv4 address or a bracketed IPv6 address, "
                        + "e.g. 127.0.0.1:9180 or [::1]:9180")
            }
            host = .ipv4(hostText)
        }
        self.port = port
    }

    public var description: String {
        switch host {
        case .ipv4(let address): "\(address):\(port)"
        case .ipv6(let address): "[\(address)]:\(port)"
        }
    }

    func socketAddress() throws -> any SocketAddress {
        switch host {
        case .ipv4(let address): try sockaddr_in.inet(ip4: address, port: port)
        case .ipv6(let address): try sockaddr_in6.inet6(ip6: address, port: port)
        }
    }
}

public struct MetricsListenError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// The worker's HTTP endpoint: `/metrics` (Prometheus text exposition of the registry swift-metrics reports
/// into, plus the per-instance series) and `/healthz`. A Service that keeps serving while the rest of the
/// worker drains, so a scraper sees the drain (503) rather than a refused connection; put it first in the
/// service group, which stops services in reverse order.
public final class MetricsEndpoint: Service, Sendable {
    public let address: MetricsListenAddress
    let registry: PrometheusCollectorRegistry
    let health: @Sendable () -> WorkerHealth
    /// Called before each exposition, for gauges that are read rather than pushed (in-flight requests, outbox).
    let refresh: @Sendable () -> Void
    let logger: Logger
    private let server: HTTPServer
    private let serving = Mutex<Task<Void, any Error>?>(nil)

    /// Makes swift-metrics report into a new registry (once per process, before any metric is created: the
    /// worker's counters bind to the backend when they are made), with buckets that fit Berth's figures.
    public static func bootstrapMetrics() -> PrometheusCollectorRegistry {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.durationHistogramBuckets = [
            WorkerMetrics.requestDuration: [0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 1800].map(Duration.seconds),
            // From accepting a boot to the domain running: image download and conversion included.
            MetricsRecorder.bootDurationLabel: [0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300].map(Duration.seconds),
        ]
        factory.valueHistogramBuckets = [
            MetricsRecorder.deployThroughputLabel: [1, 4, 16, 64, 128, 256, 512, 1024, 2048].map { $0 * 1_048_576 }
        ]
        MetricsSystem.bootstrap(factory)
        return registry
    }

    public init(
        address: MetricsListenAddress, registry: PrometheusCollectorRegistry,
        health: @escaping @Sendable () -> WorkerHealth, refresh: @escaping @Sendable () -> Void = {}, logger: Logger
    ) throws {
        self.address = address
        self.registry = registry
        self.health = health
        self.refresh = refresh
        var logger = logger
        logger[metadataKey: "component"] = "metrics-endpoint"
        self.logger = logger
        server = HTTPServer(
            config: .init(address: try address.socketAddress(), timeout: 15, logger: .disabled), handler: nil)
    }

    /// Binds and listens; throws a message naming the address when it cannot (in use, not an address of
    /// this machine, a privileged port), so the worker refuses to start rather than run unobserved.
    public func start() async throws {
        // The routes capture what they read, not self: the server is self's, and a route holding self would keep
        // both alive for ever.
        let (registry, refresh, health) = (registry, refresh, health)
        await server.appendRoute("GET /metrics") { _ in Self.metricsResponse(registry, refresh: refresh) }
        await server.appendRoute("GET /healthz") { _ in Self.healthResponse(health()) }
        await server.appendRoute("*") { _ in
            HTTPResponse(statusCode: .notFound, body: Data("not found: try /metrics or /healthz\n".utf8))
        }
        let failure = Mutex<(any Error)?>(nil)
        let task = Task { [server] in
            do { try await server.run() } catch {
                failure.withLock { $0 = error }
                throw error
            }
        }
        serving.withLock { $0 = task }
        // run() reports a bind failure by ending; a listening socket is the success signal.
        let deadline = ContinuousClock.now + .seconds(5)
        while await server.listeningAddress == nil {
            if let error = failure.withLock({ $0 }) {
                throw MetricsListenError("cannot serve metrics on \(address): \(Self.describe(error))")
            }
            guard ContinuousClock.now < deadline else {
                task.cancel()
                throw MetricsListenError("cannot serve metrics on \(address): not listening after 5 s")
            }
            try await Task.sleep(for: .milliseconds(10))
        }
        logger.info("serving /metrics and /healthz", metadata: ["address": "\(address)"])
    }

    public func run() async throws {
        if serving.withLock({ $0 == nil }) { try await start() }
        guard let task = serving.withLock({ $0 }) else { return }
        // Stopped last on a graceful shutdown (see the type's comment): by then the worker has drained. Cancelled
        // (another service failed), it stops at once: the serving task is not a child, so cancel it by hand.
        await withTaskCancellationHandler {
            await withGracefulShutdownHandler {
                try? await task.value
            } onGracefulShutdown: {
                Task { await self.stop() }
            }
        } onCancel: {
            task.cancel()
        }
    }

    /// Closes the listening socket and lets open scrapes finish (for at most a second).
    public func stop() async {
        await server.stop(timeout: 1)
    }

    static func metricsResponse(
        _ registry: PrometheusCollectorRegistry, refresh: @Sendable () -> Void
    ) -> HTTPResponse {
        refresh()
        var headers = HTTPHeaders()
        headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
        return HTTPResponse(statusCode: .ok, headers: headers, body: Data(registry.emitToBuffer()))
    }

    static func healthResponse(_ state: WorkerHealth) -> HTTPResponse {
        HTTPResponse(
            statusCode: state == .consuming ? .ok : .serviceUnavailable, body: Data("\(state.rawValue)\n".utf8))
    }

    static func describe(_ error: any Error) -> String {
        if let socketError = error as? SocketError, case .failed(let call, let errno, let message) = socketError {
            return "\(call): \(message) (errno \(errno))"
        }
        return "\(error)"
    }
}
