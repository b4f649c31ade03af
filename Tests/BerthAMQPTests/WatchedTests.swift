import BerthAMQP
import Testing

/// What a drain and a connect wait on instead of polling.
@Suite struct WatchedTests {
    @Test func aWaitEndsWithTheUpdateThatSatisfiesIt() async {
        let inFlight = Watched(2)
        let idle = Task { await inFlight.wait { $0 == 0 } }
        inFlight.update { $0 -= 1 }
        inFlight.update { $0 -= 1 }
        #expect(await idle.value == 0)
    }

    @Test func aWaitAlreadySatisfiedReturnsAtOnce() async {
        let value = Watched("open")
        #expect(await value.wait { $0 == "open" } == "open")
    }

    @Test func onlyTheWaitersAnUpdateSatisfiesWake() async {
        let count = Watched(0)
        let one = Task { await count.wait { $0 >= 1 } }
        let three = Task { await count.wait { $0 >= 3 } }
        count.update { $0 = 1 }
        #expect(await one.value == 1)
        count.update { $0 = 3 }
        #expect(await three.value == 3)
    }

    @Test func aCancelledWaitEndsWithNil() async {
        let value = Watched(false)
        let waiter = Task { await value.wait { $0 } }
        waiter.cancel()
        #expect(await waiter.value == nil)
        // A later update finds no waiter to resume twice.
        value.update { $0 = true }
    }

    @Test func aTimeLimitCancelsAWaitThatIsNotSatisfied() async {
        let value = Watched(0)
        // Ends (nil) instead of waiting for ever. No bound on how soon: other suites' synchronous disk work can
        // hold the cooperative threads the timer needs for a while.
        let outcome = await withTimeLimit(.milliseconds(50)) { await value.wait { $0 > 0 } }
        #expect(outcome == nil)
    }

    @Test func aTimeLimitReturnsTheValueInTime() async {
        let value = Watched(0)
        Task {
            try? await Task.sleep(for: .milliseconds(10))
            value.update { $0 = 7 }
        }
        #expect(await withTimeLimit(.seconds(30)) { await value.wait { $0 > 0 } } == 7)
    }
}
