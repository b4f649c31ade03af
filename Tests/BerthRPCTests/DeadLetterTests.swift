import BerthJSON
import BerthWire
import Foundation
import Testing

@testable import BerthAMQP
@testable import BerthRPC

@Suite("Dead letters")
struct DeadLetterTests {
    static let request = OsloEnvelope.wrap([
        "method": "boot_instance", "args": [:], "_unique_id": "0123456789abcdef0123456789abcdef",
    ])

    static func delivery(body: [UInt8] = request, headers: AMQPTable) -> AMQPDelivery {
        AMQPDelivery(
            consumerTag: "t", deliveryTag: 1, redelivered: false, exchange: "berth.dlx", routingKey: "compute",
            properties: AMQPProperties(contentType: "application/json", headers: headers), body: body,
            oversized: nil, connectionGeneration: 1)
    }

    static let headers: AMQPTable = [
        (key: "x-custom", value: .string("kept")),
        (key: DeadLetter.Header.reason, value: .string("boot_instance was started 3 times without finishing")),
        (key: DeadLetter.Header.originalExchange, value: .string("berth")),
        (key: DeadLetter.Header.originalRoutingKey, value: .string("compute.host-1")),
        (key: DeadLetter.Header.host, value: .string("host-1")),
        (key: DeadLetter.Header.deadLetteredAt, value: .int(1_000_000)),
    ]

    @Test func readsWhatTheWorkerWrote() {
        let letter = DeadLetter(Self.delivery(headers: Self.headers))
        #expect(letter.method == "boot_instance")
        #expect(letter.host == "host-1")
        #expect(letter.id.count == 12)
        #expect(letter.age(now: Date(timeIntervalSince1970: 1_000_060)) == 60)
        #expect(letter.replayRefusal == nil)
    }

    @Test func theReplayedCopyKeepsTheReasonAndDropsTheDeadLetterHeaders() {
        let properties = DeadLetter(Self.delivery(headers: Self.headers)).replayProperties
        #expect(properties.headers?.map(\.key) == ["x-custom", DeadLetter.Header.replayedReason])
        #expect(
            properties.header(DeadLetter.Header.replayedReason)
                == .string("boot_instance was started 3 times without finishing"))
        #expect(properties.contentType == "application/json")
    }

    @Test func anExcerptIsNeverReplayed() {
        let letter = DeadLetter(
            Self.delivery(
                body: Array(Self.request.prefix(20)),
                headers: Self.headers + [(key: DeadLetter.Header.originalBytes, value: .int(2_000_000))]))
        #expect(letter.method == nil)
        #expect(letter.replayRefusal?.contains("only the first 20 of its 2000000 bytes") == true)
    }

    @Test func aLetterWithoutItsOriginIsNotReplayedAndHostileHeadersAreIgnored() {
        let letter = DeadLetter(
            Self.delivery(
                body: Array("not json".utf8),
                headers: [
                    (key: DeadLetter.Header.reason, value: .int(7)),
                    (key: DeadLetter.Header.deadLetteredAt, value: .int(Int64.max)),
                ]))
        #expect(letter.reason.hasPrefix("(no x-berth-reason"))
        #expect(letter.deadLetteredAt == nil)
        #expect(letter.message == nil)
        #expect(letter.replayRefusal?.contains("x-berth-original-exchange") == true)
    }

    @Test func aLetterTheBrokerDeadLetteredIsReadFromXDeath() {
        let death: AMQPFieldValue = .array([
            .table([
                (key: "count", value: .int(1)), (key: "reason", value: .string("delivery_limit")),
                (key: "queue", value: .string("compute")), (key: "exchange", value: .string("berth")),
                (key: "routing-keys", value: .array([.string("compute")])),
            ])
        ])
        let letter = DeadLetter(Self.delivery(headers: [(key: "x-death", value: death)]))
        #expect(letter.reason == "broker: delivery_limit (x-death)")
        #expect(letter.originalExchange == "berth" && letter.originalRoutingKey == "compute")
        #expect(letter.replayRefusal == nil)
    }

    @Test func filtersNeedEveryCriterion() {
        let letter = DeadLetter(Self.delivery(headers: Self.headers))
        let now = Date(timeIntervalSince1970: 1_000_100)
        var filter = DeadLetterFilter()
        #expect(filter.selectsEverything && filter.matches(letter, now: now))
        filter.reason = "STARTED 3 TIMES"
        filter.method = "boot_instance"
        filter.olderThan = 50
        #expect(!filter.selectsEverything && filter.matches(letter, now: now))
        filter.newerThan = 90
        #expect(!filter.matches(letter, now: now))
        filter.newerThan = nil
        filter.ids = ["000000000000"]
        #expect(!filter.matches(letter, now: now))
        filter.ids = [letter.id]
        #expect(filter.matches(letter, now: now))
    }

    @Test func aLetterOfUnknownAgeMatchesNoAgeCriterion() {
        let letter = DeadLetter(Self.delivery(headers: Array(Self.headers.dropLast())))
        var filter = DeadLetterFilter()
        filter.olderThan = 0
        #expect(!filter.matches(letter, now: Date()))
    }
}
