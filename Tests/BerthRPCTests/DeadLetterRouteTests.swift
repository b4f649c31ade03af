import BerthAMQP
import BerthWire
import Testing

@testable import BerthRPC

@Suite struct DeadLetterRouteTests {
    @Test func classicByDefaultQuorumWithQuorumQueues() {
        let route = DeadLetterRoute()
        #expect(route.queueDeclaration(quorum: false).arguments.isEmpty)
        let quorum = route.queueDeclaration(quorum: true)
        #expect(quorum.durable && !quorum.autoDelete)
        #expect(quorum.arguments.map(\.key) == ["x-queue-type"])
        #expect(quorum.arguments.first?.value == .string("quorum"))
    }
}
