import BerthDiskImage

/// What a partition table Berth accepted must be, whatever bytes it came from, since the deploy writes the
/// config drive on its word: every partition inside the disk, no two overlapping, logical partitions inside
/// their extended partition, and a config partition that is found lies clear of the others.
enum TableProperties {
    private struct Span {
        var number: Int
        var first: UInt64
        var last: UInt64
    }

    static func check(_ table: PartitionTable, found: ConfigPartition? = nil) {
        let (spans, diskSectors) = dataSpans(table)
        for (index, span) in spans.enumerated() {
            guard span.first <= span.last, span.last < diskSectors else {
                fuzzViolation(
                    "partition \(span.number) (\(span.first)...\(span.last)) lies outside the disk's \(diskSectors) "
                        + "sectors")
            }
            for other in spans[..<index] where other.first <= span.last && span.first <= other.last {
                fuzzViolation("partitions \(other.number) and \(span.number) overlap")
            }
        }
        if case .mbr(let mbr) = table, let extended = mbr.partitions.first(where: { $0.isExtended && !$0.isLogical }) {
            for logical in mbr.partitions where logical.isLogical {
                guard logical.firstLBA > extended.firstLBA, logical.lastLBA <= extended.lastLBA else {
                    fuzzViolation(
                        "logical partition \(logical.number) lies outside extended partition \(extended.number)")
                }
            }
        }
        guard let found else { return }
        let (first, count) = (found.firstLBA, found.sectorCount)
        guard count > 0, first.addingReportingOverflow(count).partialValue <= diskSectors,
            !first.addingReportingOverflow(count).overflow
        else {
            fuzzViolation("the config partition \(first)+\(count) lies outside the disk's \(diskSectors) sectors")
        }
        for span in spans where span.number != found.number && span.first < first + count && first <= span.last {
            fuzzViolation("the config partition \(found.number) overlaps partition \(span.number)")
        }
    }

    /// The partitions that hold data (not MBR extended containers), and the disk's size in sectors.
    private static func dataSpans(_ table: PartitionTable) -> ([Span], UInt64) {
        switch table {
        case .none:
            return ([], 0)
        case .gpt(let gpt):
            return (
                gpt.partitions.map { Span(number: $0.number, first: $0.firstLBA, last: $0.lastLBA) }, gpt.diskSectors
            )
        case .mbr(let mbr):
            let data = mbr.partitions.filter { !$0.isExtended }
            return (data.map { Span(number: $0.number, first: $0.firstLBA, last: $0.lastLBA) }, mbr.diskSectors)
        }
    }
}
