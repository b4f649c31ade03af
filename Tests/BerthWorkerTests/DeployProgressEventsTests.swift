import BerthJSON
import BerthWire
import Foundation
import Logging
import Synchronization
import Testing

@testable import BerthRPC
@testable import BerthWorker

/// Records what a method emits, in the order the sink receives it; each emit yields first, as a real publish
/// suspends, so anything that could overtake does.
final class RecordingEventSink: EventSink {
    let events = Mutex<[(type: String, payload: JSONObject)]>([])

    func emit(_ eventType: String, payload: JSONObject, error: Bool) async {
        await Task.yield()
        events.withLock { $0.append((eventType, payload)) }
    }
}

@Suite("Bare-metal deploy progress events")
struct DeployProgressEventsTests {
    static func call(_ sink: RecordingEventSink) -> RPCCall {
        RPCCall(
            request: RPCRequest(method: "boot_instance", context: ["request_id": "req-1"]), host: "h1",
            logger: Logger(label: "test"), events: sink)
    }

    @Test("Progress events go out in report order, one per 5 %, all before finish() returns")
    func progressOrder() async {
        let sink = RecordingEventSink()
        let progress = DeployProgressEvents(uuid: "u", imageID: "img", call: Self.call(sink))
        let report = progress.report
        let total: UInt64 = 1000
        // From another thread, as the deploy thread reports.
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            DispatchQueue.global().async {
                for step in stride(from: UInt64(0), through: total, by: 7) { report(step, total) }
                report(total, total)
                done.resume()
            }
        }
        await progress.finish()
        let events = sink.events.withLock { $0 }
        let percents = events.map { $0.payload["progress"]?.intValue ?? -1 }
        #expect(events.allSatisfy { $0.type == "baremetal.deploy.progress" })
        #expect(percents == percents.sorted() && Set(percents).count == percents.count, "\(percents)")
        #expect(percents.count == 21 && percents.last == 100, "\(percents)")
        #expect(events.allSatisfy { $0.payload["request_id"] == "req-1" && $0.payload["state"] == "deploying" })
    }

    @Test("finish() with nothing reported returns at once")
    func finishEmpty() async {
        let sink = RecordingEventSink()
        let progress = DeployProgressEvents(uuid: "u", imageID: "img", call: Self.call(sink))
        await progress.finish()
        #expect(sink.events.withLock { $0.isEmpty })
    }
}
