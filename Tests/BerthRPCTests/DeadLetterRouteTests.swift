import BerthAMQP
import Testing

@testable import BerthRPC

@Suite struct DeadLetterRouteTests {
    @Test func classicByDefaultQuorumWithQuorumQueues() {
        let route = DeadLetterRoute()
        #expect(route.queueSpec.arguments.isEmpty)
        #expect(route.queueSpec(quorum: false).arguments.isEmpty)
        let quorum = route.queueSpec(quorum: true)
        #expect(quorum.durable && !quorum.autoDelete)
        #expect(quorum.arguments.map(\.key) == ["x-queue-type"])
        #expect(quorum.arguments.first?.value == .string("quorum"))
    }
}
