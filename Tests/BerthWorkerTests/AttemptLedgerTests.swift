import Foundation
import Testing

@testable import BerthWorker

@Suite struct AttemptLedgerTests {
    private func directory() -> String {
        let path = NSTemporaryDirectory() + "berth-attempts-" + UUID().uuidString
        return path
    }

    @Test func countsSurviveANewLedgerOnTheSameDirectory() {
        let path = directory()
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect(AttemptLedger(directory: path).begin("m1") == 1)
        // The worker died; its replacement reads the count back.
        let restarted = AttemptLedger(directory: path)
        #expect(restarted.begin("m1") == 2)
        #expect(restarted.begin("m2") == 1)
        restarted.finish("m1")
        #expect(AttemptLedger(directory: path).begin("m1") == 1)
    }

    @Test func aHandBackDoesNotCount() {
        let path = directory()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let ledger = AttemptLedger(directory: path)
        #expect(ledger.begin("m") == 1)
        ledger.handBack("m")
        #expect(ledger.begin("m") == 1)
        #expect(ledger.begin("m") == 2)
        ledger.handBack("m")
        #expect(AttemptLedger(directory: path).begin("m") == 2)
    }

    @Test func fileNamesAreDigestsNeverTheKey() throws {
        let path = directory()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let ledger = AttemptLedger(directory: path)
        _ = ledger.begin("../../etc/passwd")
        let names = try FileManager.default.contentsOfDirectory(atPath: path)
        #expect(names.count == 1)
        #expect(names.allSatisfy { $0.count == 64 && $0.allSatisfy(\.isHexDigit) })
    }

    @Test func withoutADirectoryCountsLiveInMemory() {
        let ledger = AttemptLedger(directory: nil)
        #expect(ledger.begin("m") == 1)
        #expect(ledger.begin("m") == 2)
        ledger.finish("m")
        #expect(ledger.begin("m") == 1)
    }
}
