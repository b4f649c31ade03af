import CBerthShims
import CLibvirt

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The calling conventions of the `berth_vir*` wrappers, shared by the domain, pool and volume owners: each
/// wrapper fills a `berth_virt_error` in the same call, and these turn that into a thrown `LibvirtError`.
enum LibvirtCall {
    /// For wrappers that return a negative number on failure; returns the (non-negative) result.
    @discardableResult
    static func check(
        doing context: @autoclosure () -> String, _ call: (UnsafeMutablePointer<berth_virt_error>) -> Int32
    ) throws -> Int32 {
        var err = berth_virt_error()
        let rc = call(&err)
        if rc < 0 {
            throw LibvirtError(err, doing: context())
        }
        return rc
    }

    /// For wrappers that answer a yes/no question with 1 or 0.
    static func flag(
        doing context: @autoclosure () -> String, _ call: (UnsafeMutablePointer<berth_virt_error>) -> Int32
    ) throws -> Bool {
        try check(doing: context(), call) == 1
    }

    /// For wrappers that return a new object reference, NULL on failure.
    static func object(
        doing context: @autoclosure () -> String, _ call: (UnsafeMutablePointer<berth_virt_error>) -> OpaquePointer?
    ) throws -> OpaquePointer {
        var err = berth_virt_error()
        guard let pointer = call(&err) else {
            throw LibvirtError(err, doing: context())
        }
        return pointer
    }

    /// A lookup: nil when libvirt says the object does not exist (`notFound`), a thrown error for anything else.
    static func lookup(
        doing context: @autoclosure () -> String, notFound: virErrorNumber,
        _ call: (UnsafeMutablePointer<berth_virt_error>) -> OpaquePointer?
    ) throws -> OpaquePointer? {
        var err = berth_virt_error()
        if let pointer = call(&err) {
            return pointer
        }
        if err.code == Int32(notFound.rawValue) {
            return nil
        }
        throw LibvirtError(err, doing: context())
    }

    /// Copies a string libvirt allocated for the caller, then frees libvirt's copy.
    static func ownedString(
        doing context: @autoclosure () -> String,
        _ call: (UnsafeMutablePointer<berth_virt_error>) -> UnsafeMutablePointer<CChar>?
    ) throws -> String {
        var err = berth_virt_error()
        guard let cString = call(&err) else {
            throw LibvirtError(err, doing: context())
        }
        defer { free(cString) }
        return String(cString: cString)
    }

    /// Copies a string that belongs to a libvirt object (a name); libvirt frees it with the object. These are
    /// read from the local object without a call to libvirtd, so they fail only for an invalid object, which
    /// the owners never hold; "" stands in rather than making every name access throw.
    static func borrowedString(_ call: (UnsafeMutablePointer<berth_virt_error>) -> UnsafePointer<CChar>?) -> String {
        var err = berth_virt_error()
        return call(&err).map { String(cString: $0) } ?? ""
    }
}

extension LibvirtError {
    /// Whether libvirt reported this `virErrorNumber`.
    func hasCode(_ number: virErrorNumber) -> Bool {
        code == Int32(number.rawValue)
    }
}
