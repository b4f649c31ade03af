import Synchronization

/// A value behind a lock that tasks can wait on: `wait(until:)` suspends until a predicate holds, and
/// every `update` wakes the waiters whose predicate it made true. What a connect or a drain waits for
/// (the connection's status, the number of requests in hand), so neither polls.
public final class Watched<Value: Sendable>: Sendable {
    private struct Waiter {
        let predicate: @Sendable (Value) -> Bool
        let continuation: CheckedContinuation<Value?, Never>
    }

    private struct State {
        var value: Value
        var waiters: [Int: Waiter] = [:]
        var nextID = 0
    }

    private let state: Mutex<State>

    public init(_ value: Value) {
        state = Mutex(State(value: value))
    }

    public var value: Value { state.withLock { $0.value } }

    /// Changes the value and wakes the waiters it satisfies; returns what `body` returns.
    @discardableResult
    public func update<Result>(_ body: (inout Value) -> Result) -> Result {
        let (result, value, ready) = state.withLock { state in
            let result = body(&state.value)
            var ready: [CheckedContinuation<Value?, Never>] = []
            for (id, waiter) in state.waiters where waiter.predicate(state.value) {
                ready.append(waiter.continuation)
                state.waiters[id] = nil
            }
            return (result, state.value, ready)
        }
        for continuation in ready { continuation.resume(returning: value) }
        return result
    }

    /// Waits until `predicate` holds and returns the value that satisfied it; nil when the task is cancelled
    /// first (pair with `withTimeLimit` for a deadline).
    public func wait(until predicate: @escaping @Sendable (Value) -> Bool) async -> Value? {
        let id = state.withLock { state in
            state.nextID += 1
            return state.nextID
        }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Value?, Never>) in
                let answer: Value?? = state.withLock { state in
                    if predicate(state.value) { return .some(state.value) }
                    if Task.isCancelled { return .some(nil) }
                    state.waiters[id] = Waiter(predicate: predicate, continuation: continuation)
                    return nil
                }
                if let answer { continuation.resume(returning: answer) }
            }
        } onCancel: {
            let waiter = state.withLock { $0.waiters.removeValue(forKey: id) }
            waiter?.continuation.resume(returning: nil)
        }
    }
}

/// Runs `body` until it returns or `limit` has passed, when it is cancelled: its value, or nil after the
/// limit. `body` must end promptly when cancelled (as `Watched.wait` does).
public func withTimeLimit<T: Sendable>(_ limit: Duration, _ body: @escaping @Sendable () async -> T?) async -> T? {
    await withTaskGroup(of: T?.self) { group in
        group.addTask { await body() }
        group.addTask {
            try? await Task.sleep(for: limit)
            return nil
        }
        let first = await group.next() ?? nil
        group.cancelAll()
        return first
    }
}
