import BerthRPC

#if canImport(Glibc)
    import Glibc
#endif

extension DebugEndpoints {
    /// `crash`: the worker dies on the spot with SIGKILL, as a handler that brings the process down would
    /// (a segfault, the OOM killer). For the poison-request tests: the request stays unacked and is
    /// redelivered, and `--max-attempts` bounds how often.
    static let crash: RPCMethod = { call in
        try ArgumentCheck(call.args, method: "crash").allowOnly([])
        call.logger.warning("debug crash requested: killing this worker with SIGKILL")
        kill(getpid(), SIGKILL)
        return .null
    }

    /// `crash` once the bug is fixed: it answers, so a dead-lettered crash request replayed to this worker
    /// (`berth dead-letters replay`) gets its answer.
    static let fixedCrash: RPCMethod = { call in
        try ArgumentCheck(call.args, method: "crash").allowOnly([])
        return ["fixed": true]
    }
}
