import BerthBlocking

/// The threads the catalogs' blocking work runs on, one executor per kind of work so that none waits behind
/// another: a 20 GiB upload into the local catalog does not hold up a Glance lookup, and boots waiting for another
/// boot's download of the same image do not hold the threads that download needs to finish. Threads start as work
/// arrives, so a bound costs nothing until it is used. Shared by every catalog in the process.
enum CatalogThreads {
    /// The local catalog's file work: record reads and commits (short) beside data copies (as long as the data).
    /// Eight lets concurrent boots read records while a few uploads or volume copies run.
    static let local = BlockingExecutor(name: "berth-catalog", threads: 8)
    /// libcurl exchanges with Glance: lookups (milliseconds) beside image downloads and uploads (minutes).
    static let glance = BlockingExecutor(name: "berth-glance", threads: 8)
    /// Work on the Glance host cache: opening, hashing and inspecting cached data, committing a download.
    static let glanceCache = BlockingExecutor(name: "berth-cache", threads: 8)
    /// Waits for a cached image's lock, which its holder keeps until its download is committed on `glanceCache`.
    /// Waiters on one image queue waiters on others only until that download ends.
    static let cacheLocks = BlockingExecutor(name: "berth-cache-lock", threads: 4)
}
