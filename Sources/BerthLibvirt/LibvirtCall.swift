import CLibvirt

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// How Berth calls libvirt, shared by the connection, domain, pool and volume owners: the thread's error state
/// cleared, the call, and on failure the error libvirt recorded for it turned into a thrown `LibvirtError`.
///
/// libvirt keeps its last error per thread. The clearing, the call and the reading happen in one synchronous
/// stretch of Swift with no suspension point in between, so they run on one thread with nothing else calling
/// libvirt there; in the worker that thread is `LibvirtThread`, where `LibvirtHost` runs every libvirt call.
enum LibvirtCall {
    /// The core: `call` returns nil for a failure, and the error is read before anything else touches libvirt.
    static func run<T>(doing context: @autoclosure () -> String, _ call: () -> T?) throws(LibvirtError) -> T {
        _ = LibvirtSetUp.once
        virResetLastError()
        guard let result = call() else {
            throw LibvirtError.last(doing: context())
        }
        return result
    }

    /// For calls that return a negative number on failure; returns the (non-negative) result.
    @discardableResult
    static func check(doing context: @autoclosure () -> String, _ call: () -> Int32) throws(LibvirtError) -> Int32 {
        try run(doing: context()) {
            let rc = call()
            return rc < 0 ? nil : rc
        }
    }

    /// For calls that answer a yes/no question with 1 or 0.
    static func flag(doing context: @autoclosure () -> String, _ call: () -> Int32) throws(LibvirtError) -> Bool {
        try check(doing: context(), call) == 1
    }

    /// A lookup: nil when libvirt says the object does not exist (`notFound`), a thrown error for anything else.
    static func lookup(
        doing context: @autoclosure () -> String, notFound: virErrorNumber, _ call: () -> OpaquePointer?
    ) throws(LibvirtError) -> OpaquePointer? {
        do throws(LibvirtError) {
            return try run(doing: context(), call)
        } catch {
            guard error.hasCode(notFound) else { throw error }
            return nil
        }
    }

    /// Copies a string libvirt allocated for the caller, then frees libvirt's copy.
    static func ownedString(
        doing context: @autoclosure () -> String, _ call: () -> UnsafeMutablePointer<CChar>?
    ) throws(LibvirtError) -> String {
        let cString = try run(doing: context(), call)
        defer { free(cString) }
        return String(cString: cString)
    }

    /// Copies a string that belongs to a libvirt object (a name); libvirt frees it with the object. These are
    /// read from the local object without a call to libvirtd, so they fail only for an invalid object, which
    /// the owners never hold; "" stands in rather than making every name access throw.
    static func borrowedString(_ call: () -> UnsafePointer<CChar>?) -> String {
        call().map { String(cString: $0) } ?? ""
    }

    /// Releases a reference an owner held. A failed free means an invalid reference, which the owners never
    /// hold; there is nothing to report, and the error is cleared so it cannot be mistaken for a later call's.
    static func release(_ call: () -> Int32) {
        _ = try? check(doing: "", call)
    }
}

/// libvirt's process-wide setup, done once before the first call.
private enum LibvirtSetUp {
    static let once: Void = {
        // virInitialize must run before libvirt is used from more than one thread.
        virInitialize()
        // libvirt's default handler prints every error to stderr; Berth reports them itself.
        virSetErrorFunc(nil) { _, _ in }
    }()
}

extension LibvirtError {
    /// Whether libvirt reported this `virErrorNumber`.
    func hasCode(_ number: virErrorNumber) -> Bool {
        code == Int32(number.rawValue)
    }

    /// The error libvirt recorded on this thread for the call that just failed, which it then forgets.
    static func last(doing context: String) -> LibvirtError {
        defer { virResetLastError() }
        guard let last = virGetLastError()?.pointee else {
            let text = "libvirt reported a failure without an error message"
            return LibvirtError(code: 0, domain: 0, message: "\(context): \(text)", libvirtMessage: text)
        }
        let text =
            last.message.map {
                String(decoding: UnsafeRawBufferPointer(start: $0, count: strnlen($0, maxMessageBytes)), as: UTF8.self)
            } ?? ""
        return LibvirtError(code: last.code, domain: last.domain, message: "\(context): \(text)", libvirtMessage: text)
    }

    /// libvirt's messages can quote what it was given (a path, a piece of XML); this much of one is kept, enough
    /// to act on.
    static let maxMessageBytes = 1023
}
