import BerthAMQP
import Foundation
import Glibc
import Testing

/// Where the integration tests find the real services, and what happens when they are missing:
/// with `BERTH_REQUIRE_SERVICES=1` (the test script and CI) a missing service fails the tests;
/// by hand without it they are skipped, and the skip says why.
enum Services {
    static var environment: [String: String] { ProcessInfo.processInfo.environment }

    static var required: Bool { environment["BERTH_REQUIRE_SERVICES"] == "1" }

    static var amqpURLText: String { environment["BERTH_AMQP_URL"] ?? "amqp://guest:guest@127.0.0.1:5672/" }

    static var amqpURL: AMQPURL { try! AMQPURL.parse(amqpURLText) }

    static let brokerReachable: Bool = {
        let url = amqpURL
        return tcpReachable(host: url.host, port: url.port)
    }()

    /// Run the broker tests when the broker is there, or when it must be (then they fail loudly).
    static var runBrokerTests: Bool { brokerReachable || required }

    static let brokerSkipReason: Comment =
        "RabbitMQ is not reachable at \(amqpURLText); start it (scripts/start-services.sh) or set BERTH_REQUIRE_SERVICES=1 to fail instead"

    static func tcpReachable(host: String, port: Int) -> Bool {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { return false }
        defer { close(descriptor) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        guard inet_pton(AF_INET, host == "localhost" ? "127.0.0.1" : host, &address.sin_addr) == 1 else { return false }
        return withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
    }

    /// Runs `rabbitmqctl` against the test broker and returns its standard output.
    @discardableResult
    static func rabbitmqctl(_ arguments: String...) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/sbin/rabbitmqctl")
        process.arguments = ["-n", environment["BERTH_RABBITMQ_NODE"] ?? "rabbit@localhost", "-q"] + arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return String(decoding: data, as: UTF8.self)
    }

    /// A name no other test run uses, for exchanges and queues.
    static func unique(_ prefix: String) -> String {
        "\(prefix)-\(UUID().uuidString.prefix(8).lowercased())"
    }
}
