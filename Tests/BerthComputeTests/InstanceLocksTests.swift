import BerthCore
import Foundation
import Synchronization
import Testing

@testable import BerthCompute

@Suite struct InstanceLocksTests {
    @Test func aUuidAlwaysMapsToTheSameStripe() {
        // Workers on one host must agree on the file, across processes and versions.
        #expect(InstanceLocks.stripe("6f1c2a3e-0d7b-4c59-9a3e-2f1b5c7d8e90") == InstanceLocks.stripe("6F1C2A3E-0D7B-4C59-9A3E-2F1B5C7D8E90"))
        #expect(InstanceLocks.stripe("") == 2_166_136_261 % InstanceLocks.stripes)
        let stripes = Set((0..<2000).map { _ in InstanceLocks.stripe(UUID().uuidString.lowercased()) })
        #expect(stripes.allSatisfy { $0 < InstanceLocks.stripes })
        #expect(stripes.count > 200)
    }

    @Test func workOnOneUuidIsSerialisedAndTheDirectoryHoldsOnlyStripes() async throws {
        let directory = NSTemporaryDirectory() + "berth-locks-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let locks = InstanceLocks(directory: directory)
        let overlap = Overlap()
        let uuid = UUID().uuidString.lowercased()
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<8 {
                group.addTask {
                    try? await locks.withLock(uuid) { () async throws(BerthError) in
                        overlap.enter()
                        try? await Task.sleep(for: .milliseconds(5))
                        overlap.leave()
                    }
                }
            }
        }
        #expect(overlap.most == 1)
        for _ in 0..<50 {
            try await locks.withLock(UUID().uuidString.lowercased()) { () async throws(BerthError) in }
        }
        let names = try FileManager.default.contentsOfDirectory(atPath: directory)
        #expect(names.count <= 51)
        #expect(names.allSatisfy { $0.hasSuffix(".lock") && $0.count <= 7 })
    }
}

extension InstanceLocksTests {
    /// Another process holds the stripe's file (a second open file description, as another worker would): the
    /// wait must not sit in `flock` on a thread, so it ends when its task is cancelled, and other stripes go on.
    @Test(.timeLimit(.minutes(1)))
    func aLockHeldByAnotherProcessIsWaitedForWithoutBlockingAThread() async throws {
        let directory = NSTemporaryDirectory() + "berth-locks-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let locks = InstanceLocks(directory: directory)
        let uuid = UUID().uuidString.lowercased()
        let other = open("\(directory)/\(String(InstanceLocks.stripe(uuid), radix: 16)).lock", O_RDWR | O_CREAT, 0o600)
        #expect(other >= 0)
        defer { close(other) }
        #expect(flock(other, LOCK_EX) == 0)

        let held = Task { () async throws -> Void in
            try await locks.withLock(uuid) { () async throws(BerthError) in }
        }
        try await Task.sleep(for: .milliseconds(50))
        var elsewhere = UUID().uuidString.lowercased()
        while InstanceLocks.stripe(elsewhere) == InstanceLocks.stripe(uuid) { elsewhere = UUID().uuidString.lowercased() }
        try await locks.withLock(elsewhere) { () async throws(BerthError) in }
        held.cancel()
        let outcome = await held.result
        #expect(throws: BerthError.self) { try outcome.get() }

        // Released by the other process: taken at once.
        flock(other, LOCK_UN)
        try await locks.withLock(uuid) { () async throws(BerthError) in }
    }

    /// Uuids that share a stripe queue in the process, so at most one of them is ever in `flock`.
    @Test func uuidsOfOneStripeTakeTurns() async throws {
        let directory = NSTemporaryDirectory() + "berth-locks-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let locks = InstanceLocks(directory: directory)
        var sharing: [String] = []
        let stripe = InstanceLocks.stripe("anchor")
        while sharing.count < 16 {
            let uuid = UUID().uuidString.lowercased()
            if InstanceLocks.stripe(uuid) == stripe { sharing.append(uuid) }
        }
        let overlap = Overlap()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for uuid in sharing {
                group.addTask {
                    try await locks.withLock(uuid) { () async throws(BerthError) in
                        overlap.enter()
                        try? await Task.sleep(for: .milliseconds(2))
                        overlap.leave()
                    }
                }
            }
            try await group.waitForAll()
        }
        #expect(overlap.most == 1)
    }
}

/// How many holders were inside at once, at most.
private final class Overlap: Sendable {
    private let state = Mutex((inside: 0, most: 0))

    func enter() { state.withLock { $0.inside += 1; $0.most = max($0.most, $0.inside) } }
    func leave() { state.withLock { $0.inside -= 1 } }
    var most: Int { state.withLock { $0.most } }
}
