import Foundation
import Testing

@testable import BerthRPC

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

    @Test func aSettledRequestIsRememberedAcrossARestartAndAForgottenOneIsNot() {
        let path = directory()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let ledger = AttemptLedger(directory: path)
        #expect(ledger.begin("answered") == 1)
        #expect(ledger.begin("handed-on") == 1)
        #expect(ledger.count("answered") == 1)
        ledger.finish("answered")
        ledger.forget("handed-on")
        #expect(ledger.isSettled("answered"))
        #expect(ledger.count("answered") == 0)
        // The worker died between settling and the broker taking the ack.
        let restarted = AttemptLedger(directory: path)
        #expect(restarted.isSettled("answered"))
        #expect(!restarted.isSettled("handed-on"))
        #expect(restarted.count("handed-on") == 0)
    }

    @Test func onlyTheNewestSettledRequestsAreKept() {
        var settled = SettledSet()
        for index in 0..<50 { settled.insert("r\(index)", limit: 8) }
        #expect(settled.contains("r49"))
        #expect(settled.contains("r42"))
        #expect(!settled.contains("r0"))
        #expect(settled.names.count <= 10)
        let again = settled.insert("r49", limit: 8)
        #expect(!again)
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

    @Test func theLogHoldsDigestsNeverTheKey() throws {
        let path = directory()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let ledger = AttemptLedger(directory: path)
        _ = ledger.begin("../../etc/passwd")
        #expect(try FileManager.default.contentsOfDirectory(atPath: path) == [AttemptLedger.logName])
        let log = try String(contentsOfFile: path + "/" + AttemptLedger.logName, encoding: .utf8)
        #expect(!log.contains("passwd"))
        let names = log.split(separator: "\n").map { $0.split(separator: " ")[0] }
        #expect(names.count == 1)
        #expect(names.allSatisfy { $0.count == 64 && $0.allSatisfy(\.isHexDigit) })
    }

    @Test func aCutShortLastLineIsIgnored() throws {
        let path = directory()
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect(AttemptLedger(directory: path).begin("m") == 1)
        // The worker died in the middle of an append.
        let handle = try #require(FileHandle(forWritingAtPath: path + "/" + AttemptLedger.logName))
        handle.seekToEndOfFile()
        handle.write(Data((AttemptLedger.fileName("m") + " 7").utf8))
        handle.closeFile()
        #expect(AttemptLedger(directory: path).begin("m") == 2)
    }

    @Test func countsLeftAsOneFilePerRequestAreKept() throws {
        let path = directory()
        defer { try? FileManager.default.removeItem(atPath: path) }
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        try Data("2\n".utf8).write(to: URL(fileURLWithPath: path + "/" + AttemptLedger.fileName("old")))
        let ledger = AttemptLedger(directory: path)
        #expect(try FileManager.default.contentsOfDirectory(atPath: path) == [AttemptLedger.logName])
        #expect(ledger.begin("old") == 3)
    }

    @Test func theLogIsRewrittenWhenLong() throws {
        let path = directory()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let ledger = AttemptLedger(directory: path)
        _ = ledger.begin("open")
        // Each request appends two lines of 66 bytes: well past the compaction size.
        for index in 0..<(AttemptLedger.compactionBytes / 100) {
            _ = ledger.begin("r\(index)")
            ledger.finish("r\(index)")
        }
        let size = try #require(
            try FileManager.default.attributesOfItem(atPath: path + "/" + AttemptLedger.logName)[.size] as? Int)
        #expect(size < AttemptLedger.compactionBytes)
        #expect(AttemptLedger(directory: path).begin("open") == 2)
        #expect(AttemptLedger(directory: path).begin("r1") == 1)
    }

    @Test func withoutADirectoryCountsLiveInMemory() {
        let ledger = AttemptLedger(directory: nil)
        #expect(ledger.begin("m") == 1)
        #expect(ledger.begin("m") == 2)
        ledger.finish("m")
        #expect(ledger.begin("m") == 1)
    }
}
