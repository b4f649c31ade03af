import Synchronization

/// The token sent to Glance as `X-Auth-Token`, replaceable while the catalog is in use: a token file is
/// refreshed by whoever issues tokens, and the worker reads it again on SIGHUP. A request takes the token
/// current when it starts; one already under way keeps the one it was sent with.
public final class GlanceToken: Sendable {
    private let value: Mutex<String?>

    public init(_ token: String?) {
        value = Mutex(token)
    }

    public var current: String? { value.withLock { $0 } }

    public func replace(with token: String?) {
        value.withLock { $0 = token }
    }
}
