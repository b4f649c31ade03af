import Foundation

/// A serial executor with one dedicated thread.
///
/// libvirt calls block (an RPC to libvirtd, or worse, a hung daemon); running them on Swift's cooperative pool
/// would starve every other task on a 2-core worker. An actor that uses this executor runs all of its code,
/// and so every libvirt call, on this thread instead.
final class LibvirtThread: SerialExecutor, @unchecked Sendable {
    // @unchecked: `jobs`, `stopping` and `threadID` are only touched with `condition` locked.
    private let condition = NSCondition()
    private var jobs: [UnownedJob] = []
    private var stopping = false
    private var threadID: pthread_t?

    init(name: String) {
        // Not kept: the running thread holds itself and this executor, and lets both go when it exits.
        let thread = Thread { [self] in run() }
        thread.name = name
        thread.start()
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        condition.lock()
        jobs.append(job)
        condition.signal()
        condition.unlock()
    }

    /// Lets the thread finish the jobs already queued, then exit.
    func shutdown() {
        condition.lock()
        stopping = true
        condition.signal()
        condition.unlock()
    }

    /// Whether the caller is running on this executor's thread.
    var isCurrent: Bool {
        condition.lock()
        defer { condition.unlock() }
        return threadID.map { pthread_equal($0, pthread_self()) != 0 } ?? false
    }

    func checkIsolated() {
        precondition(isCurrent, "expected to run on the libvirt thread")
    }

    private func run() {
        let executor = asUnownedSerialExecutor()
        condition.lock()
        threadID = pthread_self()
        condition.unlock()
        while true {
            condition.lock()
            while jobs.isEmpty && !stopping {
                condition.wait()
            }
            if jobs.isEmpty {
                condition.unlock()
                return
            }
            let batch = jobs
            jobs.removeAll(keepingCapacity: true)
            condition.unlock()
            for job in batch {
                job.runSynchronously(on: executor)
            }
        }
    }
}
