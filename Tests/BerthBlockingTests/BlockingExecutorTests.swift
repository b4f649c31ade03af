import Dispatch
#if canImport(Glibc)
    import Glibc
#endif
import Synchronization
import Testing

@testable import BerthBlocking

@Suite(.timeLimit(.minutes(1)))
struct BlockingExecutorTests {
    struct Refusal: Error, Equatable { let code: Int }

    /// A blocking gate: bodies wait on it until the test opens it.
    final class Gate: Sendable {
        private let semaphore = DispatchSemaphore(value: 0)
        func wait() { semaphore.wait() }
        func open(_ count: Int) { for _ in 0..<count { semaphore.signal() } }
    }

    /// What bodies saw, shared with them (atomics and mutexes cannot be captured on their own).
    final class Observed: Sendable {
        let order = Mutex<[Int]>([])
        let flag = Atomic<Bool>(false)
        let running = Atomic<Int>(0)
        let most = Atomic<Int>(0)
        var flagged: Bool { flag.load(ordering: .sequentiallyConsistent) }
        func raise() { flag.store(true, ordering: .sequentiallyConsistent) }
    }

    /// Occupies one of `executor`'s threads until `gate` opens; returns once the body has started.
    static func block(_ executor: BlockingExecutor, on gate: Gate) async -> Task<Void, any Error> {
        let started = Observed()
        let task = Task {
            try await executor.run {
                started.raise()
                gate.wait()
            }
        }
        while !started.flagged { await Task.yield() }
        return task
    }

    /// Waits until `executor` holds `count` queued bodies, so submissions happen in a known order.
    static func waitUntilQueued(_ executor: BlockingExecutor, _ count: Int) async {
        while executor.queuedCount < count { await Task.yield() }
    }

    @Test func returnsResultsAndErrors() async throws {
        let executor = BlockingExecutor(name: "test-results", threads: 2)
        #expect(try await executor.run { 6 * 7 } == 42)
        await #expect(throws: Refusal(code: 7)) {
            try await executor.run { () throws -> Int in throw Refusal(code: 7) }
        }
        #expect(await executor.runToCompletion { "done" } == "done")
        do throws(Refusal) {
            _ = try await executor.runToCompletion { () throws(Refusal) -> Int in throw Refusal(code: 9) }
            Issue.record("expected the body's error")
        } catch {
            #expect(error == Refusal(code: 9))  // typed: no cast needed
        }
    }

    @Test func oneThreadRunsInSubmissionOrder() async throws {
        let executor = BlockingExecutor(name: "test-fifo", threads: 1)
        let gate = Gate()
        let seen = Observed()
        let blocker = await Self.block(executor, on: gate)
        var tasks: [Task<Void, any Error>] = []
        for index in 0..<50 {
            tasks.append(Task { try await executor.run { seen.order.withLock { $0.append(index) } } })
            await Self.waitUntilQueued(executor, index + 1)
        }
        gate.open(1)
        try await blocker.value
        for task in tasks { try await task.value }
        #expect(seen.order.withLock { $0 } == Array(0..<50))
    }

    @Test func cancelledBeforeStartNeverRuns() async throws {
        let executor = BlockingExecutor(name: "test-cancel", threads: 1)
        let gate = Gate()
        let ran = Observed()
        let blocker = await Self.block(executor, on: gate)
        let waiting = Task { try await executor.run { ran.raise() } }
        await Self.waitUntilQueued(executor, 1)
        waiting.cancel()
        // Thrown at once, while the only thread is still blocked.
        await #expect(throws: CancellationError.self) { try await waiting.value }
        gate.open(1)
        try await blocker.value
        // FIFO: anything submitted now runs after the cancelled body's turn.
        try await executor.run {}
        #expect(!ran.flagged)
    }

    @Test func alreadyCancelledTaskDoesNotStart() async throws {
        let executor = BlockingExecutor(name: "test-cancelled", threads: 1)
        let ran = Observed()
        let task = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            return try await executor.run { ran.raise() }
        }
        await #expect(throws: CancellationError.self) { try await task.value }
        try await executor.run {}
        #expect(!ran.flagged)
    }

    @Test func startedWorkRunsToCompletion() async throws {
        let executor = BlockingExecutor(name: "test-started", threads: 1)
        let gate = Gate()
        let started = Observed()
        let task = Task {
            try await executor.run { () -> Int in
                started.raise()
                gate.wait()
                return 5
            }
        }
        while !started.flagged { await Task.yield() }
        task.cancel()
        gate.open(1)
        #expect(try await task.value == 5)
    }

    @Test func runToCompletionIgnoresCancellation() async throws {
        let executor = BlockingExecutor(name: "test-complete", threads: 1)
        let task = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            return await executor.runToCompletion { 11 }
        }
        #expect(await task.value == 11)
    }

    @Test(arguments: [1, 3, 8])
    func neverRunsMoreBodiesThanThreads(threads: Int) async throws {
        let executor = BlockingExecutor(name: "test-bound", threads: threads)
        let seen = Observed()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<64 {
                group.addTask {
                    try await executor.run {
                        let now = seen.running.add(1, ordering: .sequentiallyConsistent).newValue
                        _ = seen.most.max(now, ordering: .sequentiallyConsistent)
                        usleep(2_000)
                        seen.running.subtract(1, ordering: .sequentiallyConsistent)
                    }
                }
            }
            try await group.waitForAll()
        }
        #expect(seen.most.load(ordering: .sequentiallyConsistent) <= threads)
        #expect(seen.most.load(ordering: .sequentiallyConsistent) >= 1)
    }

    @Test func queuedWorkRunsOnceBusyThreadsFree() async throws {
        let executor = BlockingExecutor(name: "test-busy", threads: 2)
        let gate = Gate()
        let blockers = [await Self.block(executor, on: gate), await Self.block(executor, on: gate)]
        let queued = (0..<20).map { index in Task { try await executor.run { index } } }
        await Self.waitUntilQueued(executor, 20)
        gate.open(2)
        for blocker in blockers { try await blocker.value }
        var sum = 0
        for task in queued { sum += try await task.value }
        #expect(sum == (0..<20).reduce(0, +))
    }
}
