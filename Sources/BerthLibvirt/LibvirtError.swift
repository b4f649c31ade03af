import CLibvirt

/// A failed libvirt call: libvirt's own error number and domain, plus a message that says what Berth was doing
/// and what the operator can do about it.
public struct LibvirtError: Error, Sendable, Equatable, CustomStringConvertible {
    /// libvirt's `virErrorNumber` (0 when libvirt failed without recording an error).
    public var code: Int32
    /// libvirt's `virErrorDomain`: which part of libvirt failed.
    public var domain: Int32
    /// What went wrong and what to do, for logs and RPC failure replies.
    public var message: String
    /// libvirt's text alone, for callers that build their own message.
    public var libvirtMessage: String

    public init(code: Int32, domain: Int32, message: String, libvirtMessage: String) {
        self.code = code
        self.domain = domain
        self.message = message
        self.libvirtMessage = libvirtMessage
    }

    public var description: String { message }

    /// libvirt could not reach or authenticate to the hypervisor, as opposed to refusing one request.
    public var isConnectionFailure: Bool {
        [VIR_ERR_NO_CONNECT, VIR_ERR_INVALID_CONN, VIR_ERR_SYSTEM_ERROR, VIR_ERR_RPC]
            .contains { Int32($0.rawValue) == code }
    }

    /// The same failure with advice for the operator appended.
    func adding(hint: String) -> LibvirtError {
        LibvirtError(code: code, domain: domain, message: "\(message); \(hint)", libvirtMessage: libvirtMessage)
    }

    static func closed(uri: String, doing context: String) -> LibvirtError {
        let text = "the connection was closed"
        return LibvirtError(
            code: Int32(VIR_ERR_INVALID_CONN.rawValue), domain: Int32(VIR_FROM_NONE.rawValue),
            message: "\(context): \(text) (\(uri))", libvirtMessage: text)
    }

    /// The advice that fits why `virConnectOpen` failed; the wrong advice costs an operator more than none.
    var openHint: String {
        let refused = [VIR_ERR_AUTH_FAILED, VIR_ERR_AUTH_UNAVAILABLE, VIR_ERR_AUTH_CANCELLED, VIR_ERR_OPERATION_DENIED]
        if refused.contains(where: hasCode) {
            return "run the worker as root or as a member of the libvirt group"
        }
        if libvirtMessage.contains("no connection driver available") {
            return "check the URI (for example qemu:///system, or test:///default for tests)"
        }
        return "is libvirtd running? (libvirtd -d)"
    }
}
