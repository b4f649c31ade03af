import ArgumentParser
import BerthJSON
import BerthRPC
import BerthWire
import Foundation

struct Hosts: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the pool's workers from their service reports: up, draining or down, capacity and load.",
        discussion: """
            Every worker reports every --report-interval seconds to the stream berth.services. This reads the \
            reports of the last --since seconds: a worker whose last report is older than --service-down-time \
            is down (it died or lost the broker), one that is shutting down shows draining, and one that \
            stopped cleanly is gone from the list. Clocks must agree (NTP), as for nova's service list.

            --wait N waits until N workers are up and exits 0, or exits 2 after --timeout seconds. \
            Exit status 3: the broker could not be reached (within --timeout or 30 s, whichever is shorter).

            Examples:
              berth hosts
              berth hosts --all-topics --format json
              berth hosts --wait 3 --timeout 120
            """)

    @OptionGroup var bus: BusOptions

    @Option(help: "Seconds without a report after which a worker shows down (nova's service_down_time).")
    var serviceDownTime = 60.0

    @Option(help: "Seconds of reports read; a worker silent for longer is not listed.")
    var since = 600.0

    @Flag(help: "Every topic and control exchange, not only --topic on --control-exchange.")
    var allTopics = false

    @Option(help: "table or json.")
    var format = "table"

    @Option(help: ArgumentHelp("Wait until this many workers are up.", valueName: "count"))
    var wait: Int?

    @Option(help: "Seconds --wait waits; also bounds the wait for the broker.")
    var timeout = 60.0

    func validate() throws {
        guard serviceDownTime > 0, serviceDownTime <= 86400 else {
            throw ValidationError("--service-down-time must be more than 0 and at most 86400 s")
        }
        guard since >= 1, since <= 3600 else {
            throw ValidationError("--since must be 1-3600 s (the stream keeps reports for an hour)")
        }
        guard ["table", "json"].contains(format) else { throw ValidationError("--format must be table or json") }
        if let wait, !(1...10_000).contains(wait) { throw ValidationError("--wait must be 1-10000 workers") }
        guard timeout > 0, timeout <= 86400 else {
            throw ValidationError("--timeout must be more than 0 and at most 86400 s")
        }
    }

    func run() async throws {
        let settings = try bus.settings()
        let logger = BrokerOptions.logger("berth.hosts", settings, quiet: true)
        var reader = ServiceReportReader(urls: try BrokerOptions.urls(settings), logger: logger)
        let topic = settings.string(.topic) ?? "compute"
        let controlExchange = settings.string(.controlExchange) ?? "berth"
        let deadline = ContinuousClock.now + .milliseconds(Int(timeout * 1000))
        // A stopped broker fails the command within --timeout, as for every other command.
        reader.connectTimeout = min(reader.connectTimeout, .milliseconds(Int(timeout * 1000)))
        while true {
            let entries: [ServiceRoster.Entry]
            do {
                entries = try await reader.read(window: .seconds(Int(since.rounded(.up))))
                    .roster.entries(now: Date(), serviceDownTime: serviceDownTime)
                    .filter {
                        allTopics || ($0.report.topic == topic && $0.report.controlExchange == controlExchange)
                    }
            } catch .noBroker(let error) {
                throw CommandFailure.brokerUnreachable(error)
            } catch {
                throw CommandFailure("StreamUnavailable", error.description, status: ExitStatus.unreachable)
            }
            let up = entries.count { $0.status == .up }
            guard let wait, up < wait else { return show(entries) }
            if ContinuousClock.now >= deadline {
                show(entries)
                throw CommandFailure(
                    "Timeout", "only \(up) of \(wait) workers up after \(timeout) s; see the list above for the others",
                    status: ExitStatus.timeout)
            }
            try await Task.sleep(for: .milliseconds(500))
        }
    }

    private func show(_ entries: [ServiceRoster.Entry]) {
        switch format {
        case "json":
            let hosts = entries.map(HostsView.json)
            print(JSONCodec.serializeString(["hosts": .array(hosts), "service_down_time": .double(serviceDownTime)]))
        default:
            print(HostsView.table(entries), terminator: "")
        }
    }
}

/// How `berth hosts` shows the roster.
enum HostsView {
    static func json(_ entry: ServiceRoster.Entry) -> JSONValue {
        let report = entry.report
        var object: JSONObject = [
            "host": .string(report.host), "topic": .string(report.topic),
            "control_exchange": .string(report.controlExchange), "status": .string(entry.status.rawValue),
            "last_report_age_s": .double((entry.age * 10).rounded() / 10),
            "sent_at": .string(PythonDateTime.format(entry.sentAt)), "version": .string(report.version),
            "instance_id": .string(report.instanceID), "pid": .int(Int64(report.pid)),
            "uptime_s": .double(report.uptimeSeconds), "concurrency": .int(Int64(report.concurrency)),
            "in_flight": .int(Int64(report.inFlight)), "broker": report.broker.map(JSONValue.string) ?? .null,
            "instances": report.instances.map { .int(Int64($0)) } ?? .null,
        ]
        for (key, resources) in [("capacity", report.capacity), ("free", report.free)] {
            object[key] =
                resources.map { ["vcpus": .int(Int64($0.vcpus)), "memory_mb": .int(Int64($0.memoryMB))] } ?? .null
        }
        return .object(object)
    }

    static func table(_ entries: [ServiceRoster.Entry]) -> String {
        let header = [
            "HOST", "TOPIC", "STATUS", "LAST", "VCPUS FREE/ALL", "MEM MB FREE/ALL", "VMS", "BUSY", "VERSION", "BROKER",
        ]
        let rows = entries.map { entry in
            let report = entry.report
            return [
                report.host, report.topic, entry.status.rawValue, "\(Int(entry.age.rounded()))s ago",
                pair(report.free?.vcpus, report.capacity?.vcpus),
                pair(report.free?.memoryMB, report.capacity?.memoryMB),
                report.instances.map(String.init) ?? "?", "\(report.inFlight)/\(report.concurrency)", report.version,
                report.broker ?? "-",
            ]
        }
        guard !rows.isEmpty else {
            return "no workers reported in the window read (see --since, --topic, --all-topics)\n"
        }
        let widths = header.indices.map { column in ([header] + rows).map { $0[column].count }.max() ?? 0 }
        return ([header] + rows).map { row in
            zip(row, widths).map { $0.padding(toLength: $1, withPad: " ", startingAt: 0) }.joined(separator: "  ")
                .trimmingCharacters(in: .whitespaces)
        }.joined(separator: "\n") + "\n"
    }

    private static func pair(_ free: Int?, _ total: Int?) -> String {
        "\(free.map(String.init) ?? "?")/\(total.map(String.init) ?? "?")"
    }
}
