import Foundation
import Logging
import Prometheus
import Synchronization
import Testing

@testable import BerthRPC
@testable import BerthWorker

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

struct MetricsListenAddressTests {
    @Test(arguments: [
        ("127.0.0.1:9180", "127.0.0.1:9180"), ("0.0.0.0:80", "0.0.0.0:80"), ("[::1]:9180", "[::1]:9180"),
    ])
    func acceptsAddressLiterals(text: String, shown: String) throws {
        #expect(try MetricsListenAddress(parsing: text).description == shown)
    }

    @Test(arguments: [
        ("localhost:9180", "'localhost:9180': the host must be an IPv4 address"), ("9180", "must be HOST:PORT"),
        ("127.0.0.1:0", "the port must be 1-65535"), ("127.0.0.1:65536", "the port must be 1-65535"),
        ("127.0.0.1:", "the port must be 1-65535"), ("1.2.3:80", "the host must be an IPv4 address"),
        ("[::g]:80", "the host is not an IPv6 address"), ("::1:80", "the host must be an IPv4 address"),
        ("127.0.0.1:80\u{1b}[2J", "'127.0.0.1:80?[2J': the port"),
    ])
    func refusesWhatIsNotAnAddressNamingIt(text: String, message: String) {
        #expect {
            try MetricsListenAddress(parsing: text)
        } throws: { error in
            "\(error)".contains(message) && "\(error)".contains("--metrics-listen")
        }
    }
}

struct MetricsEndpointTests {
    static func get(_ url: String) async throws -> (status: Int, body: String) {
        let (data, response) = try await URLSession.shared.data(from: URL(string: url)!)
        return ((response as! HTTPURLResponse).statusCode, String(decoding: data, as: UTF8.self))
    }

    static func freePort() -> UInt16 {
        UInt16.random(in: 20_000...60_000)
    }

    @Test func servesMetricsAndHealthAndRefusesABusyAddress() async throws {
        let registry = PrometheusCollectorRegistry()
        registry.makeCounter(descriptor: .init(metricName: "berth_test", unitName: "total", helpText: "t")).increment()
        let health = Mutex(WorkerHealth.consuming)
        let refreshed = Mutex(0)
        var endpoint: MetricsEndpoint?
        var address = try MetricsListenAddress(parsing: "127.0.0.1:\(Self.freePort())")
        for _ in 0..<5 {
            let candidate = try MetricsEndpoint(
                address: address, registry: registry, health: { health.withLock { $0 } },
                refresh: { refreshed.withLock { $0 += 1 } }, logger: Logger(label: "test"))
            do {
                try await candidate.start()
                endpoint = candidate
                break
            } catch {
                address = try MetricsListenAddress(parsing: "127.0.0.1:\(Self.freePort())")
            }
        }
        let running = try #require(endpoint)
        let base = "http://\(address)"
        let metrics = try await Self.get(base + "/metrics")
        #expect(metrics.status == 200)
        #expect(metrics.body.contains("berth_test_total 1"))
        #expect(refreshed.withLock { $0 } == 1)
        #expect(try await Self.get(base + "/healthz") == (200, "consuming\n"))
        health.withLock { $0 = .draining }
        #expect(try await Self.get(base + "/healthz") == (503, "draining\n"))
        health.withLock { $0 = .disconnected }
        #expect(try await Self.get(base + "/healthz") == (503, "disconnected\n"))
        #expect(try await Self.get(base + "/other").status == 404)

        let second = try MetricsEndpoint(
            address: address, registry: registry, health: { .consuming }, logger: Logger(label: "test"))
        await #expect {
            try await second.start()
        } throws: { error in
            "\(error)".contains("cannot serve metrics on \(address)") && "\(error)".contains("in use")
        }
        await running.stop()
        await #expect(throws: (any Error).self) { try await Self.get(base + "/healthz") }
    }

    /// When another service of the worker fails, the group cancels the rest: the endpoint must end then, or
    /// the worker would never exit.
    @Test func runEndsWhenCancelled() async throws {
        let endpoint = try MetricsEndpoint(
            address: MetricsListenAddress(parsing: "127.0.0.1:\(Self.freePort())"),
            registry: PrometheusCollectorRegistry(), health: { .consuming }, logger: Logger(label: "test"))
        try await endpoint.start()
        let ended = Mutex(false)
        let runner = Task {
            try? await endpoint.run()
            ended.withLock { $0 = true }
        }
        try await Task.sleep(for: .milliseconds(100))
        runner.cancel()
        // Polled rather than awaited: a run() that ignores cancellation must fail the test, not hang it.
        for _ in 0..<500 where !ended.withLock({ $0 }) {
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(ended.withLock { $0 })
    }
}
