import BerthJSONValue

/// Everything DESIGN §4 decides for one boot, in the order it must be decided: image layer, host check and
/// boot variant, kernel command line, then the per-VM overrides. Pure, so the worker calls it before it
/// touches the catalog's data, libvirt or a disk, and an image this host cannot boot costs nothing.
public struct ResolvedBoot: Sendable, Hashable {
    /// Volume metadata, image properties and the chosen variant, without the per-VM overrides.
    public var imageProperties: [String: String]
    /// `imageProperties` with the per-VM overrides on top: what the boot uses.
    public var properties: [String: String]
    public var selection: BootVariantSelection
    /// nil for an image that boots from its disk.
    public var kernelCommandLine: KernelCommandLine?
    public var kernelID: String?
    public var ramdiskID: String?
    public var vmMode: VMMode
    public var diskBus: DiskBus
    public var vifModel: VIFModel
    public var machineType: String?
    /// As the image or variant names it (`x86_64`, maybe an alias such as `amd64`); the worker canonicalises it
    /// with libvirt's names before it goes into the domain.
    public var architecture: String?
    public var clock: DomainSpec.Clock

    /// `codec` parses the image properties that hold JSON (`boot_options`).
    public static func resolve(
        image: CatalogImage, volumeImageMetadata: [String: String]? = nil, overrides: VMOverrides,
        host: some HostRunCheck, codec: any JSONTextCodec.Type
    ) throws(BerthError) -> ResolvedBoot {
        let base = try EffectiveProperties.imageLayer(
            image: image, volumeImageMetadata: volumeImageMetadata, codec: codec)
        let selection = try BootVariantSelection.select(properties: base, host: host, codec: codec)
        // The implicit variant is the image's own properties; applying it changes nothing but is harmless.
        let imageProperties = selection.variant.map { $0.applied(to: base) } ?? base
        let kernelCommandLine = try KernelCommandLine.resolve(image: imageProperties, overrides: overrides)
        var properties = imageProperties
        properties.merge(overrides.properties) { _, override in override }

        let vmMode = imageProperties.vmMode ?? .hvm
        return ResolvedBoot(
            imageProperties: imageProperties, properties: properties, selection: selection,
            kernelCommandLine: kernelCommandLine, kernelID: imageProperties.kernelID,
            ramdiskID: imageProperties.kernelID == nil ? nil : imageProperties.ramdiskID, vmMode: vmMode,
            diskBus: properties.diskBus ?? KernelCommandLine.defaultDiskBus(for: vmMode),
            vifModel: properties.vifModel ?? (vmMode == .xen ? .netfront : .virtio),
            machineType: properties.machineType, architecture: imageProperties.architecture,
            clock: DomainSpec.Clock(overrides.timezone))
    }
}
