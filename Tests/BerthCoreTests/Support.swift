import BerthCore
import Foundation

/// A host described by lists, standing in for libvirt's capabilities.
struct FakeHost: HostRunCheck {
    var hypervisorTypes: [String] = ["qemu", "kvm"]
    var vmModes: [String] = ["hvm"]
    var architectures: [String] = ["x86_64"]
    var pae = true

    func reasonsCannotRun(hypervisorType: String?, vmMode: String?, architecture: String?, pae: Bool?) -> [String] {
        var reasons: [String] = []
        if let hypervisorType, !hypervisorTypes.contains(hypervisorType) {
            reasons.append("host has no \(hypervisorType) hypervisor")
        }
        if let vmMode, !vmModes.contains(vmMode) {
            reasons.append("host runs no \(vmMode) guests")
        }
        if let architecture, !architectures.contains(architecture) {
            reasons.append("host has no \(architecture) guests")
        }
        if let pae, pae != self.pae {
            reasons.append(pae ? "host cannot run PAE kernels" : "host cannot run non-PAE kernels")
        }
        return reasons
    }
}

func image(_ properties: [String: String], id: String = "img-1") -> CatalogImage {
    CatalogImage(
        id: id, name: "test image", diskFormat: "qcow2", size: 1024, properties: properties,
        createdAt: Date(timeIntervalSince1970: 0), updatedAt: Date(timeIntervalSince1970: 0))
}

/// The error a throwing call threw, or nil.
func error<T>(_ body: () throws(BerthError) -> T) -> BerthError? {
    do {
        _ = try body()
        return nil
    } catch {
        return error
    }
}

let sampleUUID = "3f2a8c1e-5b7d-4e9a-8c2f-1a2b3c4d5e6f"
let sampleFlavor = Flavor(name: "m1.small", vcpus: 1, memoryMB: 512, rootGB: 1)
