import BerthDiskImage

/// The node's disk the image is planned and written onto: large enough for every seed, small enough that
/// a write stays quick (the plan refuses a bigger virtual size before anything is written).
private let diskBytes: UInt64 = 8 << 20

/// qcow2 (and raw) images as every path takes them: the inspector for a VM's base image, the qcow2 reader's
/// own table walk, then the bare-metal plan and the write, which converts every cluster and inflates every
/// compressed one onto a disk file. Everything that can refuse an image happens in the plan, before the
/// first byte is written (issue 15): a write after a plan that passed must not fail, nor grow the disk.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let image = FuzzFile.write(fuzzBytes(data, size), name: "image")
    _ = try? ImageInspector.inspect(path: image, for: .virtualMachine)
    if let qcow2 = try? QCOW2Image(path: image) {
        _ = try? qcow2.validate()
    }
    let disk = FuzzFile.write([], name: "disk", size: diskBytes)
    if let plan = try? ImageWriter.plan(imagePath: image, diskPath: disk, checksum: nil) {
        do {
            _ = try plan.write()
        } catch {
            fuzzViolation("the write of a planned image failed, the disk is partly written: \(error)")
        }
        if FuzzFile.size(disk) != diskBytes {
            fuzzViolation("writing a planned image changed the disk file's size to \(FuzzFile.size(disk))")
        }
    }
    return 0
}
