/// libvirt domain XML for a `DomainSpec` (https://libvirt.org/formatdomain.html), built with `XMLWriter` so every
/// value is escaped. Call `DomainSpec.validate()` first: rendering does not refuse anything. The metadata's
/// fingerprint is written as the caller set it (the digest of `DomainSpec.canonicalText`).
public enum DomainXML {
    public static func render(_ spec: DomainSpec) -> String {
        var metadata = spec.metadata
        if case .kernel(_, _, let cmdline) = spec.boot {
            metadata.kernelCmdline = cmdline
        }

        var xml = XMLWriter()
        xml.element("domain", [("type", spec.domainType.rawValue)]) { w in
            w.element("name", text: spec.name)
            w.element("uuid", text: spec.uuid)
            w.element("metadata") { metadata.write(to: &$0) }
            w.element("memory", [("unit", "MiB")], text: String(spec.memoryMB))
            w.element("vcpu", [("placement", "static")], text: String(spec.vcpus))
            writeOS(spec, to: &w)
            writeFeatures(spec, to: &w)
            writeClock(spec.clock, to: &w)
            w.element("on_poweroff", text: "destroy")
            w.element("on_reboot", text: "restart")
            w.element("on_crash", text: "destroy")
            w.element("devices") { devices in
                let targets = spec.diskTargets
                for (disk, target) in zip(spec.disks, targets) {
                    writeDisk(disk, target: target, to: &devices)
                }
                writeNetwork(spec.network, to: &devices)
                writeConsole(spec, to: &devices)
            }
        }
        return xml.result
    }

    private static func writeOS(_ spec: DomainSpec, to w: inout XMLWriter) {
        // A Xen PV guest has no BIOS to read its disk: without a kernel of its own, pygrub reads the guest's
        // grub configuration from the disk (libvirt's schema requires a bootloader then).
        if spec.osType == .xen, spec.boot == .disk {
            w.element("bootloader", text: "pygrub")
        }
        // QEMU machine types mean nothing to a Xen PV guest; libvirt's schema allows only xenpv there, its default.
        let machine = spec.osType == .hvm ? spec.machineType : nil
        w.element("os") { os in
            os.element("type", [("arch", spec.architecture), ("machine", machine)], text: spec.osType.rawValue)
            switch spec.boot {
            case .kernel(let kernel, let initrd, let cmdline):
                os.element("kernel", text: kernel)
                if let initrd { os.element("initrd", text: initrd) }
                os.element("cmdline", text: cmdline)
            case .disk:
                if spec.osType == .hvm { os.element("boot", [("dev", "hd")]) }
            }
        }
    }

    /// ACPI lets `virsh shutdown` stop the guest cleanly; the APIC is what x86 guests expect. Other
    /// architectures and Xen PV get neither.
    private static func writeFeatures(_ spec: DomainSpec, to w: inout XMLWriter) {
        guard spec.osType == .hvm else { return }
        let arch = spec.architecture ?? "x86_64"
        let x86 = arch == "x86_64" || arch == "i686"
        guard x86 || arch == "aarch64" else { return }
        w.element("features") { features in
            features.element("acpi")
            if x86 { features.element("apic") }
        }
    }

    private static func writeClock(_ clock: DomainSpec.Clock, to w: inout XMLWriter) {
        switch clock {
        case .utc: w.element("clock", [("offset", "utc")])
        case .timezone(let zone): w.element("clock", [("offset", "timezone"), ("timezone", zone.name)])
        }
    }

    private static func writeDisk(_ disk: DiskSpec, target: String, to w: inout XMLWriter) {
        let (type, sourceAttributes): (String, [(String, String?)]) =
            switch disk.source {
            case .volume(let pool, let name): ("volume", [("pool", pool), ("volume", name)])
            case .file(let path): ("file", [("file", path)])
            case .block(let path): ("block", [("dev", path)])
            }
        w.element("disk", [("type", type), ("device", disk.device.rawValue)]) { d in
            d.element("driver", [("name", "qemu"), ("type", disk.format.rawValue)])
            d.element("source", sourceAttributes)
            d.element("target", [("dev", target), ("bus", disk.bus.rawValue)])
            if disk.readOnly { d.element("readonly") }
        }
    }

    private static func writeNetwork(_ network: DomainSpec.Network, to w: inout XMLWriter) {
        switch network {
        case .none:
            break
        case .user(let model):
            w.element("interface", [("type", "user")]) { i in
                i.element("model", [("type", model.libvirtModel)])
            }
        case .network(let name, let model):
            w.element("interface", [("type", "network")]) { i in
                i.element("source", [("network", name)])
                i.element("model", [("type", model.libvirtModel)])
            }
        }
    }

    /// The console goes to a file so its output survives the guest and is there to read after a failed boot.
    /// HVM guests log their first serial port; Xen PV guests have only the hypervisor console.
    private static func writeConsole(_ spec: DomainSpec, to w: inout XMLWriter) {
        guard let path = spec.consoleLogPath else { return }
        switch spec.osType {
        case .hvm:
            w.element("serial", [("type", "file")]) { s in
                s.element("source", [("path", path)])
                s.element("target", [("port", "0")])
            }
            w.element("console", [("type", "file")]) { c in
                c.element("source", [("path", path)])
                c.element("target", [("type", "serial"), ("port", "0")])
            }
        case .xen:
            w.element("console", [("type", "file")]) { c in
                c.element("source", [("path", path)])
                c.element("target", [("type", "xen"), ("port", "0")])
            }
        }
    }
}
