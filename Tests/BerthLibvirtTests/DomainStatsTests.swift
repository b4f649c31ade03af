import CLibvirt
import Foundation
import Testing

@testable import BerthLibvirt

/// Bulk domain stats on the test driver, which answers `virConnectGetAllDomainStats` with the `state.*` group
/// only: CPU time and memory then come from the per-domain `virDomainGetInfo` fallback.
struct DomainStatsTests {
    @Test func runningBerthDomainsGetStateCPUAndMemory() async throws {
        let host = try await IsolatedTestDriver.host()
        let running = newUUID()
        let stopped = newUUID()
        for uuid in [running, stopped] {
            _ = try await host.withConnection { try $0.defineDomain(xml: testDomainXML(uuid: uuid)).uuidString }
        }
        _ = try await host.withConnection { connection in
            try connection.defineDomain(
                xml: testDomainXML(uuid: newUUID()).replacingOccurrences(
                    of: "<name>berth-", with: "<name>other-")
            )
            .create()
        }
        _ = try await host.defineAndStart(xml: testDomainXML(uuid: running))

        let records = try await host.allDomainStats(prefix: "berth-")
        // The defined-but-stopped Berth domain and the running non-Berth one are both left out.
        #expect(records.map(\.uuid) == [running])
        let record = try #require(records.first)
        #expect(record.name == "berth-\(running)")
        #expect(record["state.state"] == Double(VIR_DOMAIN_RUNNING.rawValue))
        #expect((record["cpu.time"] ?? 0) > 0)
        #expect(record["balloon.current"] == 65536)
        #expect(record["balloon.maximum"] == 65536)

        // The fallback fills only the groups asked for.
        let stateOnly = try await host.withConnection { try $0.allDomainStats(.state) }
        #expect(stateOnly.allSatisfy { $0.values["cpu.time"] == nil && $0.values["balloon.current"] == nil })

        let all = try await host.withConnection { try $0.allDomainStats(activeOnly: false) }
        #expect(Set(all.map(\.uuid)).isSuperset(of: [running, stopped]))
        #expect(all.count == 3)
    }

    /// Definitions are what the poller reads Berth's metadata from; a uuid with no domain is left out.
    @Test func definitionsAreReadForExistingDomains() async throws {
        let host = try await IsolatedTestDriver.host()
        let uuid = newUUID()
        _ = try await host.defineAndStart(xml: testDomainXML(uuid: uuid))
        let bare = newUUID()
        let bareXML = testDomainXML(uuid: bare).replacingOccurrences(
            of: #"<metadata>[\s\S]*</metadata>"#, with: "", options: .regularExpression)
        _ = try await host.defineAndStart(xml: bareXML)

        let definitions = try await host.domainXML(uuids: [uuid, bare, newUUID()])
        #expect(Set(definitions.keys) == [uuid, bare])
        // With its namespace, which virDomainGetMetadata would have dropped.
        #expect(definitions[uuid]?.contains(berthNamespace) == true)
        #expect(definitions[uuid]?.contains("img-42") == true)
        #expect(definitions[bare]?.contains("img-42") == false)
    }

    @Test func anEmptyHostHasNoRecords() async throws {
        let host = try await IsolatedTestDriver.host()
        #expect(try await host.allDomainStats(prefix: "berth-").isEmpty)
    }

    /// Every numeric typed-parameter type becomes a Double; strings are skipped.
    @Test func typedParametersAreCopiedOut() {
        var params = [virTypedParameter](repeating: virTypedParameter(), count: 8)
        func set(
            _ index: Int, _ field: String, _ type: virTypedParameterType, _ fill: (inout virTypedParameter) -> Void
        ) {
            withUnsafeMutableBytes(of: &params[index].field) { bytes in
                bytes.copyBytes(from: Array(field.utf8))
            }
            params[index].type = Int32(type.rawValue)
            fill(&params[index])
        }
        set(0, "a.int", VIR_TYPED_PARAM_INT) { $0.value.i = -3 }
        set(1, "a.uint", VIR_TYPED_PARAM_UINT) { $0.value.ui = 7 }
        set(2, "a.llong", VIR_TYPED_PARAM_LLONG) { $0.value.l = -9_000_000_000 }
        set(3, "block.0.rd.bytes", VIR_TYPED_PARAM_ULLONG) { $0.value.ul = 1 << 40 }
        set(4, "a.double", VIR_TYPED_PARAM_DOUBLE) { $0.value.d = 0.5 }
        set(5, "a.bool", VIR_TYPED_PARAM_BOOLEAN) { $0.value.b = 1 }
        set(6, "block.0.name", VIR_TYPED_PARAM_STRING) { _ in }
        // A field that fills the whole buffer, with no terminator of its own.
        let long = String(repeating: "x", count: Int(VIR_TYPED_PARAM_FIELD_LENGTH))
        set(7, long, VIR_TYPED_PARAM_INT) { $0.value.i = 1 }
        let values = params.withUnsafeMutableBufferPointer {
            LibvirtConnection.numbers($0.baseAddress, count: $0.count)
        }
        #expect(
            values == [
                "a.int": -3, "a.uint": 7, "a.llong": -9_000_000_000, "block.0.rd.bytes": Double(1 << 40),
                "a.double": 0.5, "a.bool": 1, long: 1,
            ])
    }
}
