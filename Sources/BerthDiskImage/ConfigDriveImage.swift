import BerthCore

/// A VM's config drive: a whole volume formatted as one vfat filesystem labelled `config-2`, with no partition
/// table, as Nova writes it (`config_drive_format = vfat`), so cloud-init finds it by label and reads the same
/// config-drive-v2 files a bare-metal node gets on its config partition.
public enum ConfigDriveImage {
    /// Nova's size for a vfat config drive (nova/virt/configdrive.py `CONFIGDRIVESIZE_BYTES`): room for the
    /// biggest user data (64 KiB) in every version directory, and little on disk (the file is sparse).
    public static let sizeBytes: UInt64 = 64 << 20

    /// Formats the file at `path` (which exists and is `sizeBytes` long, e.g. a new raw libvirt volume) and
    /// writes `content` into it.
    public static func write(_ content: ConfigDriveContent, toVolumeAt path: String) throws(BerthError) {
        let writer = FATImageWriter(label: ConfigPartitionFinder.label)
        try writer.write(files: content.files(), diskPath: path, offset: 0, size: sizeBytes, hiddenSectors: 0)
    }
}
