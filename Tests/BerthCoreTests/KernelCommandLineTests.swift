import BerthCore
import Testing

@Suite("Kernel command line")
struct KernelCommandLineTests {
    struct PrecedenceCase: CustomTestStringConvertible, Sendable {
        var label: String
        var image: [String: String]
        var overrides: VMOverrides
        var expected: String
        var base: KernelCommandLine.BaseSource
        var testDescription: String { label }
    }

    static let kernel = ["kernel_id": "kernel-1"]

    static let precedenceCases: [PrecedenceCase] = [
        PrecedenceCase(
            label: "per-VM kernel_args beats image kernel_args",
            image: kernel.merging(["kernel_args": "root=/dev/vdb", "os_command_line": "ro"]) { $1 },
            overrides: VMOverrides(kernelArgs: "root=/dev/vdc quiet"), expected: "root=/dev/vdc quiet",
            base: .metadataKernelArgs),
        PrecedenceCase(
            label: "image kernel_args beats os_command_line",
            image: kernel.merging(["kernel_args": "root=/dev/vdb", "os_command_line": "ro"]) { $1 },
            overrides: VMOverrides(), expected: "root=/dev/vdb", base: .imageKernelArgs),
        PrecedenceCase(
            label: "os_command_line beats default", image: kernel.merging(["os_command_line": "ro quiet"]) { $1 },
            overrides: VMOverrides(), expected: "ro quiet", base: .imageOSCommandLine),
        PrecedenceCase(
            label: "default", image: kernel, overrides: VMOverrides(),
            expected: "root=/dev/vda console=tty0 console=ttyS0", base: .defaultLine),
        PrecedenceCase(
            label: "empty per-VM kernel_args is unset", image: kernel.merging(["kernel_args": "root=/dev/vdb"]) { $1 },
            overrides: VMOverrides(kernelArgs: ""), expected: "root=/dev/vdb", base: .imageKernelArgs),
        PrecedenceCase(
            label: "extra args appended image then VM",
            image: kernel.merging(["kernel_args": "root=/dev/vda", "kernel_extra_args": "selinux=0"]) { $1 },
            overrides: VMOverrides(kernelExtraArgs: "ks=http://x/ks.cfg"),
            expected: "root=/dev/vda selinux=0 ks=http://x/ks.cfg", base: .imageKernelArgs),
        PrecedenceCase(
            label: "extra args appended to default and to per-VM base",
            image: kernel.merging(["kernel_extra_args": "  selinux=0 "]) { $1 },
            overrides: VMOverrides(kernelArgs: "root=/dev/sda", kernelExtraArgs: "quiet"),
            expected: "root=/dev/sda selinux=0 quiet", base: .metadataKernelArgs),
        PrecedenceCase(
            label: "per-VM extra args on default", image: kernel, overrides: VMOverrides(kernelExtraArgs: "single"),
            expected: "root=/dev/vda console=tty0 console=ttyS0 single", base: .defaultLine),
        PrecedenceCase(
            label: "per-VM disk bus changes default root",
            image: kernel.merging(["hw_disk_bus": "virtio"]) { $1 }, overrides: VMOverrides(diskBus: .ide),
            expected: "root=/dev/hda console=tty0 console=ttyS0", base: .defaultLine),
        PrecedenceCase(
            label: "Xen PV console", image: kernel.merging(["vm_mode": "xen"]) { $1 }, overrides: VMOverrides(),
            expected: "root=/dev/xvda console=hvc0", base: .defaultLine),
        PrecedenceCase(
            label: "legacy vm_mode pv is Xen PV", image: kernel.merging(["vm_mode": "pv"]) { $1 },
            overrides: VMOverrides(), expected: "root=/dev/xvda console=hvc0", base: .defaultLine),
    ]

    @Test(arguments: precedenceCases)
    func precedence(_ testCase: PrecedenceCase) throws {
        let line = try #require(try KernelCommandLine.resolve(image: testCase.image, overrides: testCase.overrides))
        #expect(line.text == testCase.expected)
        #expect(line.base == testCase.base)
    }

    @Test(arguments: [
        (DiskBus.virtio, "/dev/vda"), (.scsi, "/dev/sda"), (.sata, "/dev/sda"), (.usb, "/dev/sda"), (.ide, "/dev/hda"),
        (.xen, "/dev/xvda"),
    ])
    func defaultRootFollowsImageDiskBus(bus: DiskBus, root: String) throws {
        let image = ["kernel_id": "k", "hw_disk_bus": bus.rawValue]
        let line = try #require(try KernelCommandLine.resolve(image: image, overrides: VMOverrides()))
        #expect(line.text == "root=\(root) console=tty0 console=ttyS0")
    }

    @Test func noKernelMeansNoCommandLine() throws {
        let image = ["kernel_args": "root=/dev/vda", "kernel_id": ""]
        #expect(try KernelCommandLine.resolve(image: image, overrides: VMOverrides(kernelArgs: "x")) == nil)
    }

    struct LimitCase: CustomTestStringConvertible, Sendable {
        var label: String
        var image: [String: String]
        var overrides: VMOverrides
        /// nil: accepted.
        var kind: BerthError.Kind?
        var messageContains: String = ""
        var testDescription: String { label }
    }

    static let arg2048 = "a=" + String(repeating: "x", count: 2046)
    static let limitCases: [LimitCase] = [
        LimitCase(
            label: "image kernel_args of 2048 bytes accepted", image: ["kernel_id": "k", "kernel_args": arg2048],
            overrides: VMOverrides(), kind: nil),
        LimitCase(
            label: "image kernel_args of 2049 bytes", image: ["kernel_id": "k", "kernel_args": arg2048 + "y"],
            overrides: VMOverrides(), kind: .invalidImage, messageContains: "image kernel_args is 2049 bytes"),
        LimitCase(
            label: "metadata kernel_args of 2048 bytes accepted", image: ["kernel_id": "k"],
            overrides: VMOverrides(kernelArgs: arg2048), kind: nil),
        LimitCase(
            label: "metadata kernel_args of 2049 bytes", image: ["kernel_id": "k"],
            overrides: VMOverrides(kernelArgs: arg2048 + "y"), kind: .invalidMetadata,
            messageContains: "metadata kernel_args is 2049 bytes"),
        LimitCase(
            label: "metadata extra args push the line over", image: ["kernel_id": "k", "kernel_args": arg2048],
            overrides: VMOverrides(kernelExtraArgs: "q"), kind: .invalidMetadata,
            messageContains: "would be 2050 bytes"),
        LimitCase(
            label: "image extra args push the line over",
            image: ["kernel_id": "k", "kernel_args": arg2048, "kernel_extra_args": "q"], overrides: VMOverrides(),
            kind: .invalidImage, messageContains: "would be 2050 bytes"),
        LimitCase(
            label: "image parts over even though metadata also adds",
            image: ["kernel_id": "k", "kernel_args": arg2048, "kernel_extra_args": "q"],
            overrides: VMOverrides(kernelExtraArgs: "r"), kind: .invalidImage),
        LimitCase(
            label: "line feed in image kernel_args", image: ["kernel_id": "k", "kernel_args": "ro\nquiet"],
            overrides: VMOverrides(), kind: .invalidImage, messageContains: "U+000A (line feed) at byte 2"),
        LimitCase(
            label: "tab in image os_command_line", image: ["kernel_id": "k", "os_command_line": "ro\tquiet"],
            overrides: VMOverrides(), kind: .invalidImage, messageContains: "image os_command_line contains U+0009"),
        LimitCase(
            label: "DEL in image kernel_extra_args",
            image: ["kernel_id": "k", "kernel_extra_args": "quiet\u{7f}"], overrides: VMOverrides(),
            kind: .invalidImage, messageContains: "U+007F (DEL)"),
        LimitCase(
            label: "line feed in metadata kernel_args", image: ["kernel_id": "k"],
            overrides: VMOverrides(kernelArgs: "ro\ninit=/bin/sh"), kind: .invalidMetadata,
            messageContains: "metadata kernel_args contains U+000A"),
        LimitCase(
            label: "tab in metadata kernel_extra_args", image: ["kernel_id": "k"],
            overrides: VMOverrides(kernelExtraArgs: "a\tb"), kind: .invalidMetadata,
            messageContains: "metadata kernel_extra_args contains U+0009"),
        LimitCase(
            label: "DEL in metadata kernel_extra_args", image: ["kernel_id": "k"],
            overrides: VMOverrides(kernelExtraArgs: "\u{7f}"), kind: .invalidMetadata),
        LimitCase(
            label: "C1 control in metadata", image: ["kernel_id": "k"],
            overrides: VMOverrides(kernelExtraArgs: "a\u{85}b"), kind: .invalidMetadata),
        LimitCase(
            label: "control character in an unused image os_command_line is ignored",
            image: ["kernel_id": "k", "kernel_args": "ro", "os_command_line": "a\nb"], overrides: VMOverrides(),
            kind: nil),
        LimitCase(
            label: "UTF-8 counts in bytes",
            image: ["kernel_id": "k", "kernel_args": String(repeating: "é", count: 1025)],
            overrides: VMOverrides(), kind: .invalidImage, messageContains: "2050 bytes"),
    ]

    @Test(arguments: limitCases)
    func limits(_ testCase: LimitCase) {
        let failure = error { () throws(BerthError) in
            try KernelCommandLine.resolve(image: testCase.image, overrides: testCase.overrides)
        }
        #expect(failure?.kind == testCase.kind, "\(failure?.message ?? "accepted")")
        if !testCase.messageContains.isEmpty {
            #expect(failure?.message.contains(testCase.messageContains) == true, "\(failure?.message ?? "")")
        }
    }

    @Test func acceptedLineAtLimitIsExactly2048Bytes() throws {
        let line = try #require(
            try KernelCommandLine.resolve(
                image: ["kernel_id": "k", "kernel_args": Self.arg2048], overrides: VMOverrides()))
        #expect(line.text.utf8.count == 2048)
    }
}
