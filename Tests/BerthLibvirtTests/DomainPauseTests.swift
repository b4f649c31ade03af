import Testing

@testable import BerthLibvirt

/// Pausing around a snapshot: the guest is paused only if it ran, and resumed after.
struct DomainPauseTests {
    @Test func runningDomainIsPausedAndResumed() async throws {
        let host = try await IsolatedTestDriver.host()
        let uuid = newUUID()
        _ = try await host.defineAndStart(xml: testDomainXML(uuid: uuid))

        #expect(try await host.pauseIfRunning(uuid: uuid))
        #expect(try await host.domain(uuid: uuid)?.state == .paused)
        // Already paused: nothing to pause, and the caller must not resume what it did not pause.
        #expect(try await host.pauseIfRunning(uuid: uuid) == false)
        try await host.resume(uuid: uuid)
        #expect(try await host.domain(uuid: uuid)?.state == .running)
        #expect(try await host.destroyAndUndefine(uuid: uuid))
    }

    @Test func missingOrStoppedDomainIsNotPaused() async throws {
        let host = try await IsolatedTestDriver.host()
        #expect(try await host.pauseIfRunning(uuid: newUUID()) == false)
        // Resuming what is gone is not an error: there is nothing left to resume.
        try await host.resume(uuid: newUUID())
    }
}
