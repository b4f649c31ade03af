import BerthAMQP

/// A boot this worker's host cannot run, handed to the rest of the pool through the shared topic queue
/// (DESIGN §9, "host mismatch in a pool").
///
/// A worker whose host refuses a topic-addressed `boot_instance` with `HostIncompatible` does not answer the
/// caller: it republishes the request to the topic with its host name and reason added to these headers, and
/// acks its copy, so another worker of the pool gets a turn. A worker that already refused the request passes
/// it on without running it again, after a short pause that lets the others take it. When the request has
/// been passed on `limit` times, the worker that holds it answers `HostIncompatible` naming every host that
/// refused and why. A request addressed to one host (`compute.<host>`) is never handed on: its caller chose
/// the host.
public struct HostHandOff: Sendable, Equatable {
    public static let refusedByHeader = "x-berth-refused-by"
    public static let countHeader = "x-berth-handoffs"
    public static let reasonsHeader = "x-berth-refusals"
    /// Bytes of refusal reasons carried along; the rest are cut.
    static let maxReasonBytes = 4096

    public private(set) var refusedBy: [String] = []
    public private(set) var count = 0
    public private(set) var reasons: [String] = []

    public init() {}

    /// What the earlier workers wrote on the message.
    public init(headers: AMQPTable?) {
        for (key, value) in headers ?? [] {
            switch (key, value) {
            case (Self.refusedByHeader, .string(let text)):
                refusedBy = text.split(separator: ",").map(String.init)
            case (Self.countHeader, .int(let number)):
                count = Int(clamping: max(0, number))
            case (Self.reasonsHeader, .string(let text)):
                reasons = text.components(separatedBy: "\n").filter { !$0.isEmpty }
            default:
                break
            }
        }
    }

    /// True for a message another worker passed on: its `_unique_id` was seen before on purpose.
    public var isHandedOn: Bool { count > 0 }

    public func wasRefused(by host: String) -> Bool { refusedBy.contains(host) }

    /// Adds this host's refusal (once per host) and counts one more pass.
    public mutating func record(host: String, reason: String) {
        count += 1
        guard !refusedBy.contains(host) else { return }
        refusedBy.append(host)
        let line = "\(host): \(reason)".replacingOccurrences(of: "\n", with: " ")
        if reasons.joined(separator: "\n").utf8.count + line.utf8.count < Self.maxReasonBytes {
            reasons.append(line)
        }
    }

    /// The message's headers with this hand-off's in place of any earlier ones.
    public func headers(replacing original: AMQPTable?) -> AMQPTable {
        let ours: Set = [Self.refusedByHeader, Self.countHeader, Self.reasonsHeader]
        var headers = (original ?? []).filter { !ours.contains($0.key) }
        headers.append((key: Self.refusedByHeader, value: .string(refusedBy.joined(separator: ","))))
        headers.append((key: Self.countHeader, value: .int(Int64(count))))
        headers.append((key: Self.reasonsHeader, value: .string(reasons.joined(separator: "\n"))))
        return headers
    }

    /// The caller's answer once the pool is out of options.
    public var finalMessage: String {
        "no worker of the pool can run this boot (it was offered \(count) times, refused by "
            + "\(refusedBy.count) host\(refusedBy.count == 1 ? "" : "s")): \(reasons.joined(separator: "; "))"
    }

    /// How long a worker that already refused the request waits before passing it on again.
    public var pause: Duration { .milliseconds(min(2000, 250 * count)) }
}
