import BerthCompute
import BerthLibvirt
import BerthRPC

// What binds the worker's two sides without either seeing the other: the host side's samples leave through the
// bus side's notifier, and the bus side's service reports carry what libvirt says of the host.

extension MeteringNotifier: MetricsPublisher {}

extension ReportedCapacity {
    /// The host's capacity as libvirt reads it, in the service report's terms.
    public init(_ capacity: HostCapacity) {
        self.init(
            total: .init(vcpus: capacity.vcpus, memoryMB: capacity.memoryMB),
            free: .init(vcpus: capacity.freeVcpus, memoryMB: capacity.freeMemoryMB), instances: capacity.domains)
    }
}
