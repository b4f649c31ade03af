import BerthAMQP
import Testing

@testable import BerthRPC

@Suite struct HostHandOffTests {
    @Test func aFreshMessageHasNoHandOff() {
        let handOff = HostHandOff(headers: [(key: "x-other", value: .string("kept"))])
        #expect(!handOff.isHandedOn)
        #expect(handOff.refusedBy.isEmpty)
    }

    @Test func refusalsTravelInTheHeadersAndKeepOtherHeaders() {
        var handOff = HostHandOff()
        handOff.record(host: "small-1", reason: "flavor big needs 8 vCPUs; this host has 2")
        let headers = handOff.headers(replacing: [(key: "x-other", value: .string("kept"))])
        #expect(headers.contains { $0.key == "x-other" })
        var next = HostHandOff(headers: headers)
        #expect(next.isHandedOn && next.count == 1 && next.wasRefused(by: "small-1"))
        next.record(host: "small-2", reason: "no\nnewlines")
        next.record(host: "small-1", reason: "")  // passed on again: counted, not listed twice
        let again = HostHandOff(headers: next.headers(replacing: headers))
        #expect(again.count == 3)
        #expect(again.refusedBy == ["small-1", "small-2"])
        #expect(again.reasons == ["small-1: flavor big needs 8 vCPUs; this host has 2", "small-2: no newlines"])
        #expect(headers.filter { $0.key == HostHandOff.countHeader }.count == 1)
        #expect(again.finalMessage.contains("refused by 2 hosts"))
    }

    @Test func pausesGrowAndAreBounded() {
        var handOff = HostHandOff()
        handOff.record(host: "a", reason: "r")
        #expect(handOff.pause == .milliseconds(250))
        for _ in 0..<20 { handOff.record(host: "a", reason: "") }
        #expect(handOff.pause == .seconds(2))
    }

    @Test func reasonsAreBounded() {
        var handOff = HostHandOff()
        for index in 0..<100 { handOff.record(host: "host-\(index)", reason: String(repeating: "x", count: 200)) }
        #expect(handOff.reasons.joined(separator: "\n").utf8.count < HostHandOff.maxReasonBytes)
        #expect(handOff.refusedBy.count == 100)
    }
}
