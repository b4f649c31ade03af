/// What an RPC server exposes under one (namespace, version) target.
public struct RPCEndpoint: Sendable, Hashable {
    public var namespace: String?
    public var version: RPCVersion
    public var methods: Set<String>

    public init(namespace: String? = nil, version: RPCVersion = .oneZero, methods: Set<String>) {
        self.namespace = namespace
        self.version = version
        self.methods = methods
    }
}

/// The outcome of routing a request.
public enum RPCRoute: Sendable, Hashable {
    /// Call this method (on the first endpoint that matches; see `RPCDispatcher.endpoint(for:)`).
    case dispatch(String)
    /// Reply with this failure (if the request is a call).
    case fail(RPCFailure)
}

/// oslo's `RPCDispatcher.dispatch` selection rules, without the call.
public struct RPCDispatcher: Sendable, Hashable {
    public var endpoints: [RPCEndpoint]

    public init(endpoints: [RPCEndpoint]) {
        self.endpoints = endpoints
    }

    /// An endpoint is a candidate when its namespace equals the request's and its version accepts the
    /// request's. The first candidate that has the method wins. Candidates but no method: `NoSuchMethod`.
    /// No candidate: `UnsupportedVersion`, also when only the namespace differs (oslo reports it that way).
    /// Names starting with "_" are never dispatched (oslo's default access policy).
    public func route(_ request: RPCRequest) -> RPCRoute {
        if endpoint(for: request) != nil {
            return .dispatch(request.method)
        }
        if endpoints.contains(where: { isCandidate($0, for: request) }) {
            return .fail(.noSuchMethod(request.method))
        }
        return .fail(.unsupportedVersion(request.version, method: request.method))
    }

    /// The endpoint that serves `request`, when `route` says `.dispatch`.
    public func endpoint(for request: RPCRequest) -> RPCEndpoint? {
        guard !request.method.hasPrefix("_") else { return nil }
        return endpoints.first { isCandidate($0, for: request) && $0.methods.contains(request.method) }
    }

    private func isCandidate(_ endpoint: RPCEndpoint, for request: RPCRequest) -> Bool {
        endpoint.namespace == request.namespace && endpoint.version.accepts(request.version)
    }
}
