/// The command line of a direct kernel boot (DESIGN §4, seed 000):
/// 1. base = per-VM `kernel_args` ?? image `kernel_args` ?? image `os_command_line` ?? a default that names the
///    root disk and the console;
/// 2. then image `kernel_extra_args`, then per-VM `kernel_extra_args`, one space between parts;
/// 3. at most 2048 bytes and no control characters, or the boot is refused, blaming the image
///    (`InvalidImage`) or the boot request (`InvalidMetadata`) for the part that is wrong.
public struct KernelCommandLine: Sendable, Hashable, CustomStringConvertible {
    /// Where the base of the line came from; reported so an operator can see why a line is what it is.
    public enum BaseSource: String, Sendable, Hashable {
        case metadataKernelArgs = "metadata kernel_args"
        case imageKernelArgs = "image kernel_args"
        case imageOSCommandLine = "image os_command_line"
        case defaultLine = "default"
    }

    /// x86 Linux's COMMAND_LINE_SIZE; the tightest limit among the architectures Berth boots.
    public static let maxBytes = 2048

    public let text: String
    public let base: BaseSource

    public var description: String { text }

    /// `root=/dev/vda console=tty0 console=ttyS0`; Xen paravirtual guests have no emulated serial port, only
    /// the hypervisor console `hvc0`.
    public static func defaultLine(diskBus: DiskBus, vmMode: VMMode) -> String {
        switch vmMode {
        case .hvm: "root=\(diskBus.rootDevice) console=tty0 console=ttyS0"
        case .xen: "root=\(diskBus.rootDevice) console=hvc0"
        }
    }

    /// The bus a guest of this mode gets when neither the image nor the metadata names one.
    public static func defaultDiskBus(for vmMode: VMMode) -> DiskBus {
        vmMode == .xen ? .xen : .virtio
    }

    /// The line for a boot, or nil when the image (with its chosen boot variant applied) has no `kernel_id` and
    /// so boots from its disk, where a command line has no meaning.
    ///
    /// - Parameters:
    ///   - image: the image layer of the effective properties (volume metadata, image properties, chosen
    ///     variant), without the per-VM overrides, so that each part can be blamed on its source.
    ///   - overrides: the per-VM metadata.
    public static func resolve(image: [String: String], overrides: VMOverrides) throws(BerthError)
        -> KernelCommandLine?
    {
        guard image.kernelID != nil else { return nil }
        let vmMode = image.vmMode ?? .hvm
        let bus = overrides.diskBus ?? image.diskBus ?? defaultDiskBus(for: vmMode)

        let imageKernelArgs = nonEmpty(image[ImageProperty.kernelArgs])
        let imageOSCommandLine = nonEmpty(image[ImageProperty.osCommandLine])
        let imageExtra = nonEmpty(image[ImageProperty.kernelExtraArgs])
        let metadataExtra = nonEmpty(overrides.kernelExtraArgs)

        let baseText: String
        let base: BaseSource
        let basePart: Part
        if let value = nonEmpty(overrides.kernelArgs) {
            (baseText, base, basePart) = (value, .metadataKernelArgs, .metadata(ImageProperty.kernelArgs))
        } else if let value = imageKernelArgs {
            (baseText, base, basePart) = (value, .imageKernelArgs, .image(ImageProperty.kernelArgs))
        } else if let value = imageOSCommandLine {
            (baseText, base, basePart) = (value, .imageOSCommandLine, .image(ImageProperty.osCommandLine))
        } else {
            (baseText, base, basePart) = (defaultLine(diskBus: bus, vmMode: vmMode), .defaultLine, .image("default"))
        }

        var parts: [(String, Part)] = [(baseText, basePart)]
        if let imageExtra { parts.append((imageExtra, .image(ImageProperty.kernelExtraArgs))) }
        if let metadataExtra { parts.append((metadataExtra, .metadata(ImageProperty.kernelExtraArgs))) }
        for (text, part) in parts {
            try check(text, part: part)
        }

        let trimmed = parts.map { (trimSpaces($0.0), $0.1) }.filter { !$0.0.isEmpty }
        let line = trimmed.map(\.0).joined(separator: " ")
        let bytes = line.utf8.count
        if bytes > maxBytes {
            // The image's own parts alone decide whether the image is at fault; otherwise the metadata pushed
            // the line over the limit and the caller can fix it by sending less.
            let imageOnly = trimmed.filter { !$0.1.isMetadata }.map(\.0).joined(separator: " ").utf8.count
            let sources = trimmed.map { "\($0.1.name) \($0.0.utf8.count)" }.joined(separator: ", ")
            if imageOnly > maxBytes || trimmed.allSatisfy({ !$0.1.isMetadata }) {
                throw .invalidImage(
                    "kernel command line would be \(bytes) bytes (\(sources)); the limit is \(maxBytes) bytes. "
                        + "Shorten the image's kernel_args, os_command_line or kernel_extra_args")
            }
            throw .invalidMetadata(
                "kernel command line would be \(bytes) bytes (\(sources)); the limit is \(maxBytes) bytes. "
                    + "Shorten the metadata kernel_args or kernel_extra_args")
        }
        return KernelCommandLine(text: line, base: base)
    }

    /// One source of the line, to blame the right party.
    enum Part {
        case image(String)
        case metadata(String)

        var isMetadata: Bool { if case .metadata = self { true } else { false } }

        var name: String {
            switch self {
            case .image(let key): key == "default" ? "default" : "image \(key)"
            case .metadata(let key): "metadata \(key)"
            }
        }

        func error(_ message: String) -> BerthError {
            switch self {
            case .image: .invalidImage(message)
            case .metadata: .invalidMetadata(message)
            }
        }
    }

    /// A single part on its own: no control characters and within the limit. Shared with `VMOverrides` so the
    /// metadata is refused at the door even for an image that boots from its disk.
    static func check(_ text: String, part: Part) throws(BerthError) {
        if let index = text.unicodeScalars.firstIndex(where: isControl) {
            let scalar = text.unicodeScalars[index]
            let offset = text.unicodeScalars[..<index].reduce(0) { $0 + String($1).utf8.count }
            throw part.error(
                "\(part.name) contains \(describeCharacter(scalar)) at byte \(offset); a kernel command line is "
                    + "one line of printable text. Remove the character (use spaces between arguments)")
        }
        let bytes = text.utf8.count
        if bytes > maxBytes {
            throw part.error(
                "\(part.name) is \(bytes) bytes; a kernel command line may be at most \(maxBytes) bytes. Shorten it")
        }
    }

    private static func nonEmpty(_ value: String?) -> String? {
        guard let value, !trimSpaces(value).isEmpty else { return nil }
        return value
    }

    private static func trimSpaces(_ text: String) -> String {
        var scalars = Substring(text).unicodeScalars
        while scalars.first == " " { scalars.removeFirst() }
        while scalars.last == " " { scalars.removeLast() }
        return String(scalars)
    }
}
