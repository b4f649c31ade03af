import BerthJSON
import Foundation
import Testing

@testable import BerthWire

@Suite("Service reports")
struct ServiceReportTests {
    static func report(
        host: String = "compute-1", topic: String = "compute", state: ServiceReport.State = .up
    ) -> ServiceReport {
        ServiceReport(
            host: host, topic: topic, controlExchange: "berth", state: state, version: "0.1.0",
            instanceID: "0123456789abcdef0123456789abcdef", pid: 42, uptimeSeconds: 12, reportIntervalSeconds: 10,
            broker: "10.0.0.1:5672", concurrency: 8, inFlight: 1, capacity: .init(vcpus: 16, memoryMB: 65536),
            free: .init(vcpus: 12, memoryMB: 30000), instances: 3)
    }

    /// Through the envelope and back, as `berth hosts` reads what a worker sent.
    static func roundTrip(_ notification: OsloNotification) throws -> ServiceReport {
        let body = OsloEnvelope.wrap(notification.encode())
        return try ServiceReport.decode(OsloNotification.decode(OsloEnvelope.unwrap(body)))
    }

    @Test func aReportSurvivesTheWire() throws {
        let notification = try Self.report().notification()
        #expect(notification.publisherID == "compute.compute-1")
        #expect(notification.eventType == "berth.service.report")
        #expect(notification.priority == .info)
        #expect(try Self.roundTrip(notification) == Self.report())
        #expect(notification.payload["in_flight"] == .int(1))
        #expect(notification.payload["free"]?["memory_mb"] == .int(30000))
    }

    @Test func unknownCapacityIsLeftOutNotZero() throws {
        var report = Self.report()
        report.capacity = nil
        report.free = nil
        report.instances = nil
        report.broker = nil
        let notification = try report.notification()
        #expect(notification.payload["capacity"] == nil)
        #expect(try Self.roundTrip(notification) == report)
    }

    @Test(arguments: [
        ("pid", JSONValue.int(-1), "pid is -1"),
        ("host", .string(""), "host must be"),
        ("host", .string("a\u{1B}[2Jb"), "host must be"),
        ("state", .string("sleeping"), "does not match its contract"),
        ("uptime_s", .string("long"), "does not match its contract"),
        ("in_flight", .double(1e300), "does not match its contract"),
    ])
    func hostileFieldsAreRefusedByName(field: String, value: JSONValue, message: String) throws {
        var notification = try Self.report().notification()
        guard case .object(var payload) = notification.payload else { Issue.record("payload"); return }
        payload[field] = value
        notification.payload = .object(payload)
        #expect {
            _ = try ServiceReport.decode(notification)
        } throws: { error in
            (error as? WireError)?.message.contains(message) == true
        }
    }

    @Test func anotherEventTypeIsNotAReport() throws {
        var notification = try Self.report().notification()
        notification.eventType = "instance.create.end"
        #expect(throws: WireError.self) { try ServiceReport.decode(notification) }
    }
}

@Suite("Service roster")
struct ServiceRosterTests {
    let now = Date(timeIntervalSince1970: 1_000_000)

    @Test func upDrainingDownAndGone() {
        var roster = ServiceRoster()
        roster.add(ServiceReportTests.report(host: "a"), sentAt: now - 5)
        roster.add(ServiceReportTests.report(host: "b", state: .draining), sentAt: now - 1)
        roster.add(ServiceReportTests.report(host: "c"), sentAt: now - 61)
        roster.add(ServiceReportTests.report(host: "d", state: .stopped), sentAt: now - 1)
        let entries = roster.entries(now: now, serviceDownTime: 60)
        #expect(entries.map(\.report.host) == ["a", "b", "c"])
        #expect(entries.map(\.status) == [.up, .draining, .down])
        #expect(entries.map(\.age) == [5, 1, 61])
    }

    @Test func aDrainingWorkerThatGoesSilentIsDown() {
        var roster = ServiceRoster()
        roster.add(ServiceReportTests.report(state: .draining), sentAt: now - 90)
        #expect(roster.entries(now: now, serviceDownTime: 60).map(\.status) == [.down])
    }

    @Test func theLatestReportWinsWhateverTheOrderOfArrival() {
        var roster = ServiceRoster()
        roster.add(ServiceReportTests.report(state: .stopped), sentAt: now - 1)
        roster.add(ServiceReportTests.report(state: .up), sentAt: now - 2)
        #expect(roster.entries(now: now, serviceDownTime: 60).isEmpty)
        // A worker restarted under the same host name after a clean stop is back.
        roster.add(ServiceReportTests.report(state: .up), sentAt: now)
        #expect(roster.entries(now: now, serviceDownTime: 60).map(\.status) == [.up])
    }

    @Test func poolsAreToldApartByTopic() {
        var roster = ServiceRoster()
        roster.add(ServiceReportTests.report(host: "a", topic: "gpu"), sentAt: now)
        roster.add(ServiceReportTests.report(host: "a", topic: "compute"), sentAt: now)
        #expect(roster.entries(now: now, serviceDownTime: 60).map(\.report.topic) == ["compute", "gpu"])
    }
}
