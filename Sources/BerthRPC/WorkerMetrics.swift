import Metrics

/// The worker's own figures, reported through swift-metrics: labels and dimensions in one place, so the names
/// `/metrics` shows (and docs/metrics.md lists) cannot drift apart between the places that report them.
/// Without a backend (no `--metrics-listen`) every call is a no-op.
package enum WorkerMetrics {
    /// A request the worker ran: `outcome` is `success`, `timeout`, `cancelled` or the failure's class name
    /// (a fixed set in Berth's code, never text from the bus). `method` is one the dispatcher routed, so both
    /// labels have few values.
    static func requestFinished(method: String, outcome: String, duration: Duration) {
        let dimensions = [("method", method), ("outcome", outcome)]
        Counter(label: "berth_requests_total", dimensions: dimensions).increment()
        Metrics.Timer(label: requestDuration, dimensions: [("method", method)]).recordNanoseconds(
            Int64(duration / .nanoseconds(1)))
    }

    package static let requestDuration = "berth_request_duration_seconds"

    /// A message republished to the dead-letter exchange.
    static func deadLettered() {
        Counter(label: "berth_dead_letters_total").increment()
    }

    /// Read when `/metrics` is scraped: requests in hand and events waiting for the broker.
    static func record(inFlight: Int, outboxDepth: Int) {
        Gauge(label: "berth_requests_in_flight").record(inFlight)
        Gauge(label: "berth_outbox_depth").record(outboxDepth)
    }
}
