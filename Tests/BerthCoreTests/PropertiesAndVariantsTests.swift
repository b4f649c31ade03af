import Foundation
import BerthCore
import BerthJSON
import Testing

@Suite("Effective properties")
struct EffectivePropertiesTests {
    struct LayerCase: CustomTestStringConvertible, Sendable {
        var label: String
        var volume: [String: String]?
        var image: [String: String]
        var overrides: VMOverrides
        var key: String
        var expected: String?
        var testDescription: String { label }
    }

    static let layerCases: [LayerCase] = [
        LayerCase(
            label: "volume metadata alone", volume: ["hw_disk_bus": "scsi"], image: [:], overrides: VMOverrides(),
            key: "hw_disk_bus", expected: "scsi"),
        LayerCase(
            label: "placeholder properties over volume metadata", volume: ["hw_disk_bus": "scsi"],
            image: ["hw_disk_bus": "sata"], overrides: VMOverrides(), key: "hw_disk_bus", expected: "sata"),
        LayerCase(
            label: "per-VM over placeholder and volume", volume: ["hw_disk_bus": "scsi"],
            image: ["hw_disk_bus": "sata"], overrides: VMOverrides(diskBus: .ide), key: "hw_disk_bus", expected: "ide"),
        LayerCase(
            label: "image only", volume: nil, image: ["hw_vif_model": "e1000"], overrides: VMOverrides(),
            key: "hw_vif_model", expected: "e1000"),
        LayerCase(
            label: "per-VM vif model", volume: nil, image: ["hw_vif_model": "e1000"],
            overrides: VMOverrides(vifModel: .rtl8139), key: "hw_vif_model", expected: "rtl8139"),
        LayerCase(
            label: "per-VM machine type", volume: nil, image: ["hw_machine_type": "pc"],
            overrides: VMOverrides(machineType: "q35"), key: "hw_machine_type", expected: "q35"),
        LayerCase(
            label: "kernel_id from volume metadata survives", volume: ["kernel_id": "k1"],
            image: ["block_device_mapping": "[]"], overrides: VMOverrides(), key: "kernel_id", expected: "k1"),
        LayerCase(
            label: "stored metadata does not become a property", volume: nil, image: [:],
            overrides: VMOverrides(stored: ["role": "web"]), key: "role", expected: nil),
    ]

    @Test(arguments: layerCases)
    func precedence(_ testCase: LayerCase) throws {
        let properties = try EffectiveProperties.resolve(
            image: image(testCase.image), volumeImageMetadata: testCase.volume, overrides: testCase.overrides,
            codec: JSONCodec.self)
        #expect(properties[testCase.key] == testCase.expected)
    }

    @Test(arguments: [
        (["hw_disk_bus": "floppy"], "property hw_disk_bus \"floppy\"", "allowed: virtio, scsi, sata, ide, xen, usb"),
        (["hw_vif_model": "vmxnet3"], "property hw_vif_model", "allowed: virtio, e1000"),
        (["hw_machine_type": "PC"], "property hw_machine_type", "QEMU machine type"),
        (["vm_mode": "exe"], "property vm_mode", "allowed: hvm, xen"),
        (["kernel_id": "../../etc/passwd"], "property kernel_id", "1-255 characters"),
        (["boot_options": "{"], "boot_options is not valid JSON", "JSON list"),
    ])
    func invalidImageProperties(properties: [String: String], names: String, allowed: String) {
        let failure = error { () throws(BerthError) in
            try EffectiveProperties.resolve(image: image(properties), codec: JSONCodec.self)
        }
        #expect(failure?.kind == .invalidImage)
        #expect(failure?.message.contains(names) == true, "\(failure?.message ?? "accepted")")
        #expect(failure?.message.contains(allowed) == true, "\(failure?.message ?? "accepted")")
        #expect(failure?.message.contains("image \"img-1\"") == true)
    }

    @Test func invalidVolumeMetadataNamesTheVolume() {
        let failure = error { () throws(BerthError) in
            try EffectiveProperties.resolve(
                image: image([:]), volumeImageMetadata: ["hw_disk_bus": "floppy"], codec: JSONCodec.self)
        }
        #expect(failure?.kind == .invalidImage)
        #expect(failure?.message.contains("volume_image_metadata") == true)
    }

    @Test func legacyVMModeNamesAreAccepted() throws {
        #expect(try EffectiveProperties.resolve(image: image(["vm_mode": "pv"]), codec: JSONCodec.self).vmMode == .xen)
        #expect(try EffectiveProperties.resolve(image: image(["vm_mode": "hv"]), codec: JSONCodec.self).vmMode == .hvm)
    }
}

@Suite("Boot variants")
struct BootVariantTests {
    static let xenPV = #"{"hypervisor_type": "xen", "vm_mode": "xen", "architecture": "x86_64", "kernel_id": "k-xen"}"#
    static let kvm =
        #"{"hypervisor_type": "kvm", "vm_mode": "hvm", "architecture": "x86_64", "kernel_id": "k-kvm", "#
        + #""hw_disk_bus": "virtio", "kernel_args": "root=/dev/vda1"}"#
    static let pae32 = #"{"vm_mode": "hvm", "architecture": "i686", "pae": false}"#

    struct SelectionCase: CustomTestStringConvertible, Sendable {
        var label: String
        var properties: [String: String]
        var host: FakeHost
        var index: Int?
        var summary: String?
        var testDescription: String { label }
    }

    static let selectionCases: [SelectionCase] = [
        SelectionCase(
            label: "first runnable picked", properties: ["boot_options": "[\(kvm), \(xenPV)]"],
            host: FakeHost(hypervisorTypes: ["kvm", "xen"], vmModes: ["hvm", "xen"]), index: 1,
            summary: "variant 1 (kvm/hvm/x86_64)"),
        SelectionCase(
            label: "first cannot run, second picked", properties: ["boot_options": "[\(xenPV), \(kvm)]"],
            host: FakeHost(), index: 2, summary: "variant 2 (kvm/hvm/x86_64)"),
        SelectionCase(
            label: "pae constraint", properties: ["boot_options": "[\(pae32)]"],
            host: FakeHost(architectures: ["i686"], pae: false), index: 1, summary: "variant 1 (any/hvm/i686/nonpae)"),
        SelectionCase(
            label: "implicit variant from image properties",
            properties: ["architecture": "x86_64", "hypervisor_type": "kvm"], host: FakeHost(), index: nil,
            summary: "image properties (kvm/any/x86_64)"),
        SelectionCase(
            label: "no constraints, no variant", properties: ["os_type": "linux"], host: FakeHost(),
            index: nil, summary: nil),
    ]

    @Test(arguments: selectionCases)
    func selection(_ testCase: SelectionCase) throws {
        let selection = try BootVariantSelection.select(
            properties: testCase.properties, host: testCase.host, codec: JSONCodec.self)
        #expect(selection.index == testCase.index)
        #expect(selection.summary == testCase.summary)
    }

    @Test func noneRunnableListsEveryVariantInOrder() {
        let properties = ["boot_options": "[\(Self.xenPV), \(Self.pae32)]"]
        let failure = error { () throws(BerthError) in
            try BootVariantSelection.select(
                properties: properties, host: FakeHost(architectures: ["aarch64"]), codec: JSONCodec.self)
        }
        #expect(failure?.kind == .hostIncompatible)
        let message = failure?.message ?? ""
        #expect(
            message.contains(
                "variant 1 (xen/xen/x86_64): host has no xen hypervisor, host runs no xen guests, host has no "
                    + "x86_64 guests; variant 2 (any/hvm/i686/nonpae): host has no i686 guests, host cannot run "
                    + "non-PAE kernels"
            ),
            "\(message)")
    }

    @Test func implicitVariantThatCannotRun() {
        let failure = error { () throws(BerthError) in
            try BootVariantSelection.select(
                properties: ["architecture": "ppc64le"], host: FakeHost(), codec: JSONCodec.self)
        }
        #expect(failure?.kind == .hostIncompatible)
        #expect(failure?.message.contains("image properties (any/any/ppc64le): host has no ppc64le guests") == true)
    }

    @Test func variantOverridesTheImagesKernelAndBus() throws {
        let props = [
            "boot_options": "[\(Self.xenPV), \(Self.kvm)]", "kernel_id": "k-image", "hw_disk_bus": "ide",
            "kernel_args": "root=/dev/hda", "ramdisk_id": "r-image",
        ]
        let resolved = try ResolvedBoot.resolve(
            image: image(props), overrides: VMOverrides(), host: FakeHost(), codec: JSONCodec.self)
        #expect(resolved.selection.index == 2)
        #expect(resolved.kernelID == "k-kvm")
        // The image's ramdisk belongs to the image's kernel, not to the variant's.
        #expect(resolved.ramdiskID == nil)
        #expect(resolved.diskBus == .virtio)
        #expect(resolved.kernelCommandLine?.text == "root=/dev/vda1")
    }

    @Test(arguments: [
        (BootVariant(kernelID: "k2", ramdiskID: "r2"), "k2", "r2"),
        (BootVariant(kernelID: "k2"), "k2", nil),
        (BootVariant(ramdiskID: "r2"), "k1", "r2"),
        (BootVariant(diskBus: .sata), "k1", "r1"),
    ])
    func variantKernelBringsItsOwnRamdisk(variant: BootVariant, kernel: String, ramdisk: String?) {
        let applied = variant.applied(to: ["kernel_id": "k1", "ramdisk_id": "r1"])
        #expect(applied["kernel_id"] == kernel)
        #expect(applied["ramdisk_id"] == ramdisk)
    }

    @Test func variantInheritsTheImagesOwnConstraints() throws {
        // The image says aarch64; a variant naming only the hypervisor must not pick an x86_64 host.
        let props = ["architecture": "aarch64", "boot_options": #"[{"hypervisor_type": "kvm"}]"#]
        let failure = error { () throws(BerthError) in
            try BootVariantSelection.select(properties: props, host: FakeHost(), codec: JSONCodec.self)
        }
        #expect(failure?.message.contains("variant 1 (kvm/any/aarch64): host has no aarch64 guests") == true)
        let arm = FakeHost(architectures: ["aarch64"])
        #expect(
            try BootVariantSelection.select(properties: props, host: arm, codec: JSONCodec.self).summary
                == "variant 1 (kvm/any/aarch64)")
    }

    @Test func xenVariantGetsXenDefaults() throws {
        let props = ["boot_options": "[\(Self.xenPV)]"]
        let host = FakeHost(hypervisorTypes: ["xen"], vmModes: ["xen"])
        let resolved = try ResolvedBoot.resolve(
            image: image(props), overrides: VMOverrides(), host: host, codec: JSONCodec.self)
        #expect(resolved.vmMode == .xen)
        #expect(resolved.diskBus == .xen)
        #expect(resolved.vifModel == .netfront)
        #expect(resolved.kernelCommandLine?.text == "root=/dev/xvda console=hvc0")
    }

    @Test func perVMOverridesBeatTheVariant() throws {
        let props = ["boot_options": "[\(Self.kvm)]"]
        let overrides = try VMOverrides(metadata: [
            "kernel_args": "root=/dev/sda", "hw_disk_bus": "scsi", "timezone": "Europe/Paris",
        ])
        let resolved = try ResolvedBoot.resolve(
            image: image(props), overrides: overrides, host: FakeHost(), codec: JSONCodec.self)
        #expect(resolved.kernelCommandLine?.text == "root=/dev/sda")
        #expect(resolved.diskBus == .scsi)
        #expect(resolved.clock == .timezone(try Timezone(validating: "Europe/Paris")))
    }

    @Test func hostCheckHappensBeforeTheKernelLine() {
        // An image this host cannot run is HostIncompatible even when its command line is also bad: the
        // operator learns the decisive problem first.
        let props = ["architecture": "s390x", "kernel_id": "k", "kernel_args": "a\nb"]
        let failure = error { () throws(BerthError) in
            try ResolvedBoot.resolve(
                image: image(props), overrides: VMOverrides(), host: FakeHost(), codec: JSONCodec.self)
        }
        #expect(failure?.kind == .hostIncompatible)
    }

    @Test(arguments: [
        ("[]", "empty list"),
        ("{}", "must be a JSON list"),
        ("[1]", "variant 1 must be an object, got integer"),
        (#"[{"vm_mode": "hvm"}, {"vm_mode": "paravirt"}]"#, "variant 2 field vm_mode \"paravirt\""),
        (#"[{"pae": "yes"}]"#, "variant 1 field pae must be true or false"),
        (#"[{"kernel_id": 7}]"#, "variant 1 field kernel_id must be a string, got integer"),
        (#"[{"hw_disk_bus": "floppy"}]"#, "allowed: virtio, scsi"),
        (#"[{"arch": "x86_64"}]"#, "unknown field \"arch\"; allowed fields: hypervisor_type"),
        (#"[{"kernel_args": "a\nb"}]"#, "variant 1 field kernel_args contains U+000A"),
        (#"[{"architecture": "x86 64"}]"#, "field architecture"),
        ("[" + Array(repeating: "{}", count: 17).joined(separator: ",") + "]", "at most 16"),
    ])
    func malformedBootOptions(text: String, messageContains: String) {
        let failure = error { () throws(BerthError) in try BootVariant.parseList(text, codec: JSONCodec.self) }
        #expect(failure?.kind == .invalidImage)
        #expect(failure?.message.contains(messageContains) == true, "\(failure?.message ?? "accepted")")
    }

    @Test func parsesEveryField() throws {
        let text =
            #"[{"hypervisor_type": "KVM", "vm_mode": "pv", "architecture": "x86_64", "pae": true, "#
            + #""kernel_id": "k", "ramdisk_id": "r", "kernel_args": "ro", "hw_disk_bus": "xen", "extra": null}]"#
        let failure = error { () throws(BerthError) in try BootVariant.parseList(text, codec: JSONCodec.self) }
        #expect(failure?.message.contains("unknown field \"extra\"") == true)
        let variants = try BootVariant.parseList(
            text.replacingOccurrences(of: #", "extra": null"#, with: ""), codec: JSONCodec.self)
        #expect(
            variants == [
                BootVariant(
                    hypervisorType: "kvm", vmMode: .xen, architecture: "x86_64", pae: true, kernelID: "k",
                    ramdiskID: "r", kernelArgs: "ro", diskBus: .xen)
            ])
    }
}
