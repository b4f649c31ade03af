import BerthWire
import Testing

@Suite struct OsloIDsTests {
    @Test func uuid4HexIsWhatPythonsUuid4HexWrites() {
        let ids = (0..<200).map { _ in OsloIDs.uuid4Hex() }
        for id in ids {
            #expect(id.utf8.count == 32)
            #expect(id.utf8.allSatisfy { (0x30...0x39).contains($0) || (0x61...0x66).contains($0) })
            // Version 4, RFC 4122 variant: the 13th digit is 4, the 17th one of 8, 9, a, b.
            #expect(Array(id)[12] == "4")
            #expect("89ab".contains(Array(id)[16]))
        }
        #expect(Set(ids).count == ids.count)
    }

    @Test func uuid4AndReplyQueueNames() {
        #expect(OsloIDs.uuid4().count == 36)
        let name = OsloIDs.replyQueueName()
        #expect(name.hasPrefix("reply_") && name.count == 38)
    }
}
