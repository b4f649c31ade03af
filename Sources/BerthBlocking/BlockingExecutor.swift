#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Runs blocking work (file and disk I/O, libcurl, child processes, `flock` waits) on a fixed set of dedicated
/// threads, so it never occupies Swift's cooperative pool (a few threads, one per core: one blocked call there
/// stalls unrelated tasks) nor Dispatch's global pool (which grows a thread per blocked call, and stalls while it
/// does).
///
/// Work runs in the order it was submitted on at most `threads` threads at once; threads are started as work
/// arrives, up to that bound, and stay until the executor is released, when they finish the queued work and exit.
/// Each user that must not be starved by another (a deploy writing a disk for minutes, a boot looking up an image)
/// owns its own executor with its own bound.
///
/// A body must not wait for other work on the same executor (it would hold one of the threads that work needs).
public final class BlockingExecutor: Sendable {
    public let name: String
    /// The most bodies that run at once.
    public let threads: Int
    private let pool: WorkerPool

    /// `name` names the threads (`top -H`, `gdb`); `threads` is at least 1.
    public init(name: String, threads: Int) {
        precondition(threads >= 1, "a blocking executor needs at least one thread")
        self.name = name
        self.threads = threads
        self.pool = WorkerPool(name: name, limit: threads)
    }

    deinit {
        pool.stop()
    }

    /// Runs `body` on one of the executor's threads and returns its result or throws its error. If the calling
    /// task is cancelled before `body` starts, `body` never runs and this throws `CancellationError` at once;
    /// once started, `body` runs to completion.
    public func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        let job = Job()
        return try await withTaskCancellationHandler {
            try await withUnsafeThrowingContinuation { (continuation: UnsafeContinuation<T, any Error>) in
                pool.submit(
                    job, work: { continuation.resume(with: Result(catching: body)) },
                    abandon: { continuation.resume(throwing: CancellationError()) })
            }
        } onCancel: {
            pool.cancel(job)
        }
    }

    /// Runs `body` on one of the executor's threads whether or not the calling task is cancelled: for work whose
    /// skipping would leave something half done (a cleanup, the next step of a commit). Its typed error comes back
    /// as it was thrown.
    public func runToCompletion<T: Sendable, E: Error>(_ body: @escaping @Sendable () throws(E) -> T)
        async throws(E) -> T
    {
        let result: Result<T, E> = await withUnsafeContinuation { continuation in
            pool.submit(Job(), work: { continuation.resume(returning: Result(catching: body)) }, abandon: nil)
        }
        return try result.get()
    }

    /// Work submitted and not yet started (cancelled work that no thread has passed yet included); for tests.
    var queuedCount: Int { pool.queuedCount }
}

/// One submitted body. Its fields are read and written only with the pool's lock held.
final class Job: @unchecked Sendable {
    enum Phase {
        /// Created; its task may be cancelled before it reaches the queue.
        case created
        case queued
        case running
        case cancelled
    }

    var phase = Phase.created
    /// Runs the body and resumes its caller.
    var work: (() -> Void)?
    /// Resumes the caller with `CancellationError`; nil for work that runs regardless.
    var abandon: (() -> Void)?
}

/// The queue and threads behind a `BlockingExecutor`. Threads hold it, so it outlives the executor until the
/// queued work is done.
final class WorkerPool: @unchecked Sendable {
    // @unchecked: every stored var is touched only with `lock` held.
    private let name: String
    private let limit: Int
    private let lock = ConditionLock()
    private var queue: [Job] = []
    private var head = 0
    private var started = 0
    private var idle = 0
    private var stopping = false

    init(name: String, limit: Int) {
        self.name = name
        self.limit = limit
    }

    func submit(_ job: Job, work: @escaping () -> Void, abandon: (() -> Void)?) {
        lock.lock()
        if job.phase == .cancelled {
            lock.unlock()
            abandon?()
            return
        }
        job.phase = .queued
        job.work = work
        job.abandon = abandon
        queue.append(job)
        // A new thread only when the idle ones cannot take every queued job.
        let spawn = queue.count - head > idle && started < limit
        if spawn { started += 1 }
        lock.signal()
        lock.unlock()
        if spawn { startThread() }
    }

    /// Withdraws `job` if no thread has started it; a job that is running finishes.
    func cancel(_ job: Job) {
        lock.lock()
        var abandon: (() -> Void)?
        switch job.phase {
        case .created:
            job.phase = .cancelled
        case .queued where job.abandon != nil:
            job.phase = .cancelled
            abandon = job.abandon
            job.work = nil
            job.abandon = nil
        case .queued, .running, .cancelled:
            break
        }
        lock.unlock()
        abandon?()
    }

    /// Lets the threads finish the queued work, then exit.
    func stop() {
        lock.lock()
        stopping = true
        lock.broadcast()
        lock.unlock()
    }

    var queuedCount: Int {
        lock.lock()
        defer { lock.unlock() }
        return queue.count - head
    }

    private func startThread() {
        let context = Unmanaged.passRetained(ThreadStart(pool: self, name: name)).toOpaque()
        var thread = pthread_t()
        let result = pthread_create(
            &thread, nil,
            { context in
                let start = Unmanaged<ThreadStart>.fromOpaque(context!).takeRetainedValue()
                nameCurrentThread(start.name)
                start.pool.serve()
                return nil
            }, context)
        precondition(result == 0, "cannot start a blocking-work thread: \(String(cString: strerror(result)))")
        pthread_detach(thread)
    }

    /// A thread's life: take the oldest queued job, run it, until stopped with nothing queued.
    private func serve() {
        lock.lock()
        while true {
            if head == queue.count {
                if stopping { break }
                idle += 1
                lock.wait()
                idle -= 1
                continue
            }
            let job = queue[head]
            head += 1
            if head == queue.count {
                queue.removeAll(keepingCapacity: true)
                head = 0
            } else if head >= 64 && head * 2 >= queue.count {
                queue.removeFirst(head)
                head = 0
            }
            guard job.phase == .queued, let work = job.work else { continue }
            job.phase = .running
            job.work = nil
            job.abandon = nil
            lock.unlock()
            work()
            lock.lock()
        }
        lock.unlock()
    }
}

/// Names the calling thread as `perf`, `top -H` and `gdb` show it. Glibc's `pthread_setname_np` is not visible to
/// Swift; the thread's `comm` file is the same setting. Linux keeps 15 bytes.
private func nameCurrentThread(_ name: String) {
    #if os(Linux)
        let fd = open("/proc/thread-self/comm", O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { return }
        let bytes = Array(name.utf8.prefix(15))
        _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
    #endif
}

private final class ThreadStart {
    let pool: WorkerPool
    let name: String

    init(pool: WorkerPool, name: String) {
        self.pool = pool
        self.name = name
    }
}

/// A pthread mutex with its condition variable.
final class ConditionLock {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)

    init() {
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(condition, nil)
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        condition.deallocate()
        mutex.deallocate()
    }

    func lock() { pthread_mutex_lock(mutex) }
    func unlock() { pthread_mutex_unlock(mutex) }
    /// Waits for a signal; the caller holds the lock.
    func wait() { pthread_cond_wait(condition, mutex) }
    func signal() { pthread_cond_signal(condition) }
    func broadcast() { pthread_cond_broadcast(condition) }
}
