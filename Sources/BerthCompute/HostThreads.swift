import BerthBlocking

/// The threads the host side's blocking work runs on, one executor per kind of work so that none waits behind
/// another: a bare-metal deploy writing a disk for minutes or a snapshot's `qemu-img` never holds up the image
/// inspection on a boot's path. Threads start as work arrives, so a bound costs nothing until it is used.
enum HostThreads {
    /// Bare-metal deploys: each writes a whole disk, for minutes. Eight nodes deploy at once; more wait their turn
    /// (each already holds its node's lease, so a waiting deploy is not refused).
    static let deploys = BlockingExecutor(name: "berth-deploy", threads: 8)
    /// Snapshots' `qemu-img convert`, seconds to minutes each. Its guest stays paused while a snapshot waits for a
    /// thread, so the bound is generous.
    static let snapshots = BlockingExecutor(name: "berth-snapshot", threads: 8)
    /// The inspection of a boot's backing image (a header read): its own threads, behind no deploy or snapshot.
    static let inspections = BlockingExecutor(name: "berth-inspect", threads: 4)
}
