import Synchronization

/// Who may start now. A request that may have crashed the worker before (redelivered by the broker, or
/// counted in this host's attempt ledger) runs alone: if it crashes the worker again, the restart counts an
/// attempt against it only, never against innocent requests that happened to be in flight with it. Without
/// this, every neighbour of a poison request reached `--max-attempts` with it and was dead-lettered too.
///
/// The rules, kept apart from the waiting so they are tested without tasks: first come, first served; a
/// request that must run alone waits for the ones running to finish, and everything behind it waits for it.
struct AdmissionRules: Sendable {
    typealias Ticket = Int

    private(set) var running = 0
    private(set) var runningAlone = false
    private var waiting: [(ticket: Ticket, alone: Bool)] = []

    /// A request asks to start; true when it may start at once, otherwise it waits for `finish` to admit it.
    mutating func request(_ ticket: Ticket, alone: Bool) -> Bool {
        waiting.append((ticket, alone))
        return admit().contains(ticket)
    }

    /// A request that was admitted finished; returns the tickets that may start now.
    mutating func finish(wasAlone: Bool) -> [Ticket] {
        running -= 1
        if wasAlone { runningAlone = false }
        return admit()
    }

    /// A waiting request gave up (its task was cancelled); returns the tickets that may start now.
    mutating func withdraw(_ ticket: Ticket) -> [Ticket] {
        waiting.removeAll { $0.ticket == ticket }
        return admit()
    }

    private mutating func admit() -> [Ticket] {
        var admitted: [Ticket] = []
        while let next = waiting.first, !runningAlone {
            if next.alone {
                guard running == 0 else { break }
                runningAlone = true
            }
            running += 1
            waiting.removeFirst()
            admitted.append(next.ticket)
            if next.alone { break }
        }
        return admitted
    }
}

/// `AdmissionRules` for tasks: `run(alone:)` waits its turn, then runs the work.
final class RequestAdmission: Sendable {
    private struct State {
        var rules = AdmissionRules()
        var next = 0
        var parked: [AdmissionRules.Ticket: CheckedContinuation<Bool, Never>] = [:]
    }

    private let state = Mutex(State())

    /// Runs `work` when its turn comes; nil when the task was cancelled while it waited.
    func run<T: Sendable>(alone: Bool, _ work: () async -> T) async -> T? {
        let ticket = state.withLock { state -> Int in
            state.next += 1
            return state.next
        }
        let admitted = await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
                // nil: parked, and whoever admits or cancels it resumes it.
                let answer = state.withLock { state -> Bool? in
                    if Task.isCancelled { return false }
                    if state.rules.request(ticket, alone: alone) { return true }
                    state.parked[ticket] = continuation
                    return nil
                }
                if let answer { continuation.resume(returning: answer) }
            }
        } onCancel: {
            let (parked, admitted) = state.withLock { state -> (CheckedContinuation<Bool, Never>?, [Waking]) in
                guard let parked = state.parked.removeValue(forKey: ticket) else { return (nil, []) }
                return (parked, Self.wake(state.rules.withdraw(ticket), &state))
            }
            parked?.resume(returning: false)
            for waking in admitted { waking.resume(returning: true) }
        }
        guard admitted else { return nil }
        let result = await work()
        let woken = state.withLock { state in Self.wake(state.rules.finish(wasAlone: alone), &state) }
        for continuation in woken { continuation.resume(returning: true) }
        return result
    }

    private typealias Waking = CheckedContinuation<Bool, Never>

    private static func wake(_ tickets: [AdmissionRules.Ticket], _ state: inout State) -> [Waking] {
        tickets.compactMap { state.parked.removeValue(forKey: $0) }
    }
}
