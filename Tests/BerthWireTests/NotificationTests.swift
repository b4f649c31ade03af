import BerthJSON
import Foundation
import Testing

@testable import BerthWire

@Suite("Notifications")
struct NotificationTests {
    static let captures = [
        "notification_info.json", "notification_error.json", "notification_info_dict_context.json",
        "notification_raw_pika.json", "notification_v1_no_envelope.json",
    ]

    @Test("captured notifications decode and re-encode key for key", arguments: captures)
    func roundTrip(name: String) throws {
        let capture = try Fixture.capture(name)
        let message = try OsloEnvelope.unwrap(try Fixture.bodyRaw(name))
        let notification = try OsloNotification.decode(message)
        #expect(notification.encode() == message)
        #expect(notification.encode().keys == message.keys)
        #expect(notification.routingKey(topic: "x") == "x." + (message["priority"]?.stringValue?.lowercased() ?? ""))
        // The capture's routing key is <topic>.<priority>.
        let routingKey = try #require(capture["routing_key"]?.stringValue)
        #expect(routingKey.hasSuffix("." + notification.priority.routingSuffix))
    }

    @Test("notification_info in detail: fields, timestamp, context")
    func infoDetail() throws {
        let notification = try OsloNotification.decode(
            try OsloEnvelope.unwrap(try Fixture.bodyRaw("notification_info.json")))
        #expect(notification.messageID == "249f172e-0cfa-4809-b5a0-34314f8c71fd")
        #expect(notification.publisherID == "compute.host-a")
        #expect(notification.eventType == "compute.instance.create.end")
        #expect(notification.priority == .info)
        #expect(notification.payload["image_id"] == "img-abc")
        #expect(PythonDateTime.format(notification.timestamp) == "2026-11-22 13:13:38.678233")
        #expect(notification.uniqueID == "ce11896d01b34eaeaa5a74ec39303e3c")
        #expect(notification.context["request_id"] == "req-11111111-2222-3333-4444-555555555555")
        #expect(notification.context.count == 17)
        #expect(notification.routingKey(topic: "notifications") == "notifications.info")
    }

    @Test("the v1 (no envelope) notification decodes")
    func v1() throws {
        let body = try Fixture.bodyRaw("notification_v1_no_envelope.json")
        let notification = try OsloNotification.decode(try OsloEnvelope.unwrap(body))
        #expect(notification.payload == ["image_id": "img-abc", "driver": "messaging"])
        #expect(notification.routingKey(topic: "probe-notif-v1") == "probe-notif-v1.info")
        #expect(notification.uniqueID == "feecac115d1f42fb8625d9e3c8f08b53")
    }

    @Test("a new notification has the captured structure")
    func encodeMatchesCapture() throws {
        let captured = try OsloEnvelope.unwrap(try Fixture.bodyRaw("notification_info.json"))
        let context = try OsloNotification.decode(captured).context
        let notification = OsloNotification(
            publisherID: "compute.host-a", eventType: "compute.instance.create.end", priority: .info,
            payload: ["instance_id": "inst-0001", "image_id": "img-abc", "state": "active", "host": "host-a"],
            context: context)
        let encoded = notification.encode()
        #expect(encoded.keys == captured.keys)
        for key in ["publisher_id", "event_type", "priority", "payload"] {
            #expect(encoded[key] == captured[key], "\(key)")
        }
        let messageID = try #require(encoded["message_id"]?.stringValue)
        #expect(messageID.count == 36 && messageID == messageID.lowercased())
        #expect(messageID.split(separator: "-").map(\.count) == [8, 4, 4, 4, 12])
        let uniqueID = try #require(encoded["_unique_id"]?.stringValue)
        #expect(uniqueID.count == 32 && !uniqueID.contains("-") && uniqueID == uniqueID.lowercased())
        #expect(encoded["_context_roles"] == ["member", "reader"])
    }

    @Test("an empty context writes no _context_ keys (as oslo does for a dict context)")
    func emptyContext() throws {
        let captured = try OsloEnvelope.unwrap(try Fixture.bodyRaw("notification_info_dict_context.json"))
        let notification = OsloNotification(
            publisherID: "compute.host-a", eventType: "e", priority: .info, payload: [:])
        #expect(notification.encode().keys == captured.keys)
    }

    @Test(
        "priorities: upper-case in the body, lower-case in the routing key",
        arguments: OsloNotification.Priority.allCases)
    func priorities(priority: OsloNotification.Priority) {
        #expect(priority.wireValue == priority.rawValue.uppercased())
        #expect(OsloNotification.Priority(wireValue: priority.wireValue) == priority)
        let note = OsloNotification(publisherID: "p", eventType: "e", priority: priority, payload: nil)
        #expect(note.routingKey(topic: "metering") == "metering.\(priority.rawValue)")
    }

    @Test("WARNING is read as warn; unknown priorities are refused")
    func priorityAliases() {
        #expect(OsloNotification.Priority(wireValue: "WARNING") == .warn)
        #expect(OsloNotification.Priority(wireValue: "LOUD") == nil)
    }

    @Test(
        "timestamps are Python str(datetime) in UTC",
        arguments: [
            (1_795_353_218.678233, "2026-11-22 13:13:38.678233"),
            (1_795_353_218, "2026-11-22 13:13:38"),
            (0.5, "1970-01-01 00:00:00.500000"),
            (951_782_400.000001, "2000-02-29 00:00:00.000001"),
            (-1, "1969-12-31 23:59:59"),
        ])
    func timestamps(seconds: Double, text: String) throws {
        #expect(PythonDateTime.format(Date(timeIntervalSince1970: seconds)) == text)
        let parsed = try #require(PythonDateTime.parse(text))
        #expect(PythonDateTime.format(parsed) == text)
    }

    @Test(
        "malformed timestamps are refused",
        arguments: ["2026-11-22", "2026-13-01 00:00:00", "2026-11-22 13:13:38.", "x"])
    func badTimestamp(text: String) {
        #expect(PythonDateTime.parse(text) == nil)
    }

    @Test("a notification missing fields is refused with the field named")
    func missingField() {
        #expect {
            _ = try OsloNotification.decode(["message_id": "x", "publisher_id": "p", "priority": "INFO"])
        } throws: { error in
            (error as? WireError)?.message.contains("'event_type'") == true
        }
    }
}
