import Synchronization
import Testing

@testable import BerthRPC

/// "A crash must not dead-letter innocent requests" (issue 16): a request that may have crashed the worker runs
/// alone, so the next crash counts against it only.
@Suite struct RequestAdmissionTests {
    @Test func ordinaryRequestsRunTogether() {
        var rules = AdmissionRules()
        let step1 = rules.request(1, alone: false)
        #expect(step1)
        let step2 = rules.request(2, alone: false)
        #expect(step2)
        #expect(rules.running == 2)
    }

    @Test func aSuspectWaitsForTheRunningOnesAndHoldsBackThoseBehindIt() {
        var rules = AdmissionRules()
        let step3 = rules.request(1, alone: false)
        #expect(step3)
        let step4 = rules.request(2, alone: false)
        #expect(step4)
        let step5 = rules.request(3, alone: true)
        #expect(!step5)
        // First come, first served: an ordinary request behind the suspect waits too.
        let step6 = rules.request(4, alone: false)
        #expect(!step6)
        let step7 = rules.finish(wasAlone: false)
        #expect(step7 == [])
        let step8 = rules.finish(wasAlone: false)
        #expect(step8 == [3])
        #expect(rules.runningAlone)
        let step9 = rules.request(5, alone: false)
        #expect(!step9)
        let step10 = rules.finish(wasAlone: true)
        #expect(step10 == [4, 5])
        #expect(rules.running == 2 && !rules.runningAlone)
    }

    @Test func suspectsRunOneAtATime() {
        var rules = AdmissionRules()
        let step11 = rules.request(1, alone: true)
        #expect(step11)
        let step12 = rules.request(2, alone: true)
        #expect(!step12)
        let step13 = rules.request(3, alone: true)
        #expect(!step13)
        let step14 = rules.finish(wasAlone: true)
        #expect(step14 == [2])
        let step15 = rules.finish(wasAlone: true)
        #expect(step15 == [3])
        let step16 = rules.finish(wasAlone: true)
        #expect(step16 == [])
        #expect(rules.running == 0)
    }

    @Test func aWithdrawnSuspectLetsTheOthersIn() {
        var rules = AdmissionRules()
        let step17 = rules.request(1, alone: false)
        #expect(step17)
        let step18 = rules.request(2, alone: true)
        #expect(!step18)
        let step19 = rules.request(3, alone: false)
        #expect(!step19)
        let step20 = rules.withdraw(2)
        #expect(step20 == [3])
    }

    @Test func tasksThatMustRunAloneNeverOverlap() async {
        let admission = RequestAdmission()
        let concurrent = Overlap()
        await withTaskGroup(of: Void.self) { group in
            for index in 0..<40 {
                let alone = index % 5 == 0
                group.addTask {
                    _ = await admission.run(alone: alone) {
                        concurrent.enter(alone: alone)
                        try? await Task.sleep(for: .milliseconds(2))
                        concurrent.leave(alone: alone)
                    }
                }
            }
        }
        let result = concurrent.state.withLock { $0 }
        #expect(!result.aloneOverlapped)
        #expect(result.now == 0)
        #expect(result.most > 1)
    }

    @Test func aCancelledWaiterIsNotRun() async {
        let admission = RequestAdmission()
        let release = AsyncStream<Void>.makeStream()
        let holder = Task { await admission.run(alone: true) { for await _ in release.stream {} } }
        try? await Task.sleep(for: .milliseconds(20))
        let waiter = Task { await admission.run(alone: false) { 1 } }
        try? await Task.sleep(for: .milliseconds(20))
        waiter.cancel()
        #expect(await waiter.value == nil)
        release.continuation.finish()
        _ = await holder.value
        let after = await admission.run(alone: true) { 2 }
        #expect(after == 2)
    }
}


/// How many tasks run at once, and whether one that had to run alone ever had company.
private final class Overlap: Sendable {
    let state = Mutex((now: 0, most: 0, aloneOverlapped: false))

    func enter(alone: Bool) {
        state.withLock { state in
            state.now += 1
            state.most = max(state.most, state.now)
            if alone && state.now > 1 { state.aloneOverlapped = true }
        }
    }

    func leave(alone: Bool) {
        state.withLock { state in
            if alone && state.now > 1 { state.aloneOverlapped = true }
            state.now -= 1
        }
    }
}
