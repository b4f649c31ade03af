import BerthCore
import Testing

@Suite("Per-VM overrides")
struct VMOverridesTests {
    @Test(arguments: [
        ("hw_disk_bus", "virtio"), ("hw_disk_bus", "scsi"), ("hw_disk_bus", "sata"), ("hw_disk_bus", "ide"),
        ("hw_disk_bus", "xen"), ("hw_disk_bus", "usb"),
        ("hw_vif_model", "virtio"), ("hw_vif_model", "e1000"), ("hw_vif_model", "e1000e"),
        ("hw_vif_model", "rtl8139"), ("hw_vif_model", "ne2k_pci"), ("hw_vif_model", "pcnet"),
        ("hw_vif_model", "netfront"),
        ("hw_machine_type", "pc"), ("hw_machine_type", "q35"), ("hw_machine_type", "pc-i440fx-7.2"),
        ("hw_machine_type", "pc-q35-7.2"), ("hw_machine_type", "virt-8.0"),
        ("timezone", "Europe/Paris"), ("timezone", "UTC"), ("timezone", "GMT"),
        ("kernel_args", "root=/dev/vda ro"), ("kernel_extra_args", "selinux=0"),
    ])
    func allowedValues(key: String, value: String) throws {
        let overrides = try VMOverrides(metadata: [key: value])
        #expect(overrides.stored.isEmpty)
        switch key {
        case "hw_disk_bus": #expect(overrides.diskBus?.rawValue == value)
        case "hw_vif_model": #expect(overrides.vifModel?.rawValue == value)
        case "hw_machine_type": #expect(overrides.machineType == value)
        case "timezone": #expect(overrides.timezone?.name == value)
        case "kernel_args": #expect(overrides.kernelArgs == value)
        default: #expect(overrides.kernelExtraArgs == value)
        }
    }

    @Test(arguments: [
        ("hw_disk_bus", "floppy", "allowed: virtio, scsi, sata, ide, xen, usb"),
        ("hw_disk_bus", "VIRTIO", "allowed: virtio"),
        ("hw_disk_bus", "", "allowed: virtio"),
        ("hw_vif_model", "vmxnet3", "allowed: virtio, e1000, e1000e, rtl8139, ne2k_pci, pcnet, netfront"),
        ("hw_machine_type", "Q35", "QEMU machine type"),
        ("hw_machine_type", "pc'/><disk", "QEMU machine type"),
        ("hw_machine_type", "-pc", "QEMU machine type"),
        ("hw_machine_type", String(repeating: "p", count: 65), "QEMU machine type"),
        ("timezone", "Mars/Olympus", "Area one of Africa, America"),
        ("kernel_args", "a\nb", "U+000A"),
        ("kernel_extra_args", String(repeating: "x", count: 2049), "2049 bytes"),
        (
            "hw_disk_buss", "virtio",
            "kernel_args, kernel_extra_args, timezone, hw_disk_bus, hw_vif_model, hw_machine_type"
        ),
        ("kernel_id", "other-kernel", "cannot be set per VM"),
        ("ramdisk_id", "x", "cannot be set per VM"),
        ("vm_mode", "xen", "cannot be set per VM"),
        ("os_command_line", "x", "cannot be set per VM"),
        ("boot_options", "[]", "cannot be set per VM"),
        ("hw_cpu_policy", "dedicated", "cannot be set per VM"),
    ])
    func refusedValues(key: String, value: String, messageContains: String) {
        let failure = error { () throws(BerthError) in try VMOverrides(metadata: [key: value]) }
        #expect(failure?.kind == .invalidMetadata)
        #expect(failure?.message.contains(messageContains) == true, "\(failure?.message ?? "accepted")")
    }

    @Test func unknownKeysAreStoredNotInterpreted() throws {
        let metadata = [
            "role": "web", "owner:team": "infra", "note": "line one\nline two\ttabbed", "hw_disk_bus": "ide",
        ]
        let overrides = try VMOverrides(metadata: metadata)
        #expect(overrides.stored == ["role": "web", "owner:team": "infra", "note": "line one\nline two\ttabbed"])
        #expect(overrides.diskBus == .ide)
        #expect(overrides.properties == ["hw_disk_bus": "ide"])
    }

    @Test(arguments: [
        (["bad/key": "v"], "outside A-Z"),
        (["<key>": "v"], "outside A-Z"),
        (["": "v"], "1-255 bytes"),
        ([String(repeating: "k", count: 256): "v"], "256 bytes"),
        (["k": String(repeating: "v", count: 65536)], "65536 bytes"),
        (["k": "a\u{0}b"], "U+0000 (NUL)"),
        (["k": "a\u{1b}[31m"], "U+001B (escape)"),
        (["k": "\u{FFFE}"], "U+FFFE"),
    ])
    func metadataLimits(metadata: [String: String], messageContains: String) {
        let failure = error { () throws(BerthError) in try VMOverrides(metadata: metadata) }
        #expect(failure?.kind == .invalidMetadata)
        #expect(failure?.message.contains(messageContains) == true, "\(failure?.message ?? "accepted")")
    }

    @Test func atMost128Keys() throws {
        let full = Dictionary(uniqueKeysWithValues: (0..<128).map { ("k\($0)", "v") })
        #expect(try VMOverrides(metadata: full).stored.count == 128)
        var over = full
        over["one-more"] = "v"
        let failure = error { () throws(BerthError) in try VMOverrides(metadata: over) }
        #expect(failure?.kind == .invalidMetadata)
        #expect(failure?.message.contains("129 keys") == true)
    }

    @Test(arguments: [
        "Europe/Paris", "America/Argentina/Buenos_Aires", "America/Port-au-Prince", "Etc/GMT+5", "Etc/GMT-14",
        "Antarctica/DumontDUrville", "Asia/Ho_Chi_Minh", "UTC", "GMT", "Etc/UTC", "Pacific/Port_Moresby",
    ])
    func validTimezones(name: String) throws {
        #expect(try Timezone(validating: name).name == name)
    }

    @Test(arguments: [
        "", "Paris", "europe/Paris", "Europe/", "Europe//Paris", "Europe/../etc/passwd", "Europe/Par is",
        "Europe/Par.is",
        "/Europe/Paris", "Europe/Paris\n", "utc", "Mars/Base", "Europe/" + String(repeating: "a", count: 58),
        "Europe/Paris'", "Europe/Zürich", "Europe/1Paris",
    ])
    func invalidTimezones(name: String) {
        let failure = error { () throws(BerthError) in try Timezone(validating: name) }
        #expect(failure?.kind == .invalidMetadata)
        #expect(failure?.message.contains("IANA time zone name") == true)
    }

    @Test func timezoneOfExactly64CharactersIsAccepted() throws {
        let name = "Europe/" + String(repeating: "a", count: 57)
        #expect(name.count == 64)
        #expect(try Timezone(validating: name).name == name)
    }
}
