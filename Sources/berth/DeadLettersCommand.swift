import ArgumentParser
import BerthAMQP
import BerthJSON
import BerthRPC
import BerthWire
import Foundation

struct DeadLetters: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dead-letters",
        abstract: "List, show, replay or purge the messages workers dead-lettered (queue berth.dead-letter).",
        discussion: """
            A worker dead-letters a message it cannot use (not JSON, not a valid request, over \
            --max-message-bytes) or one that reached --max-attempts (it crashed the worker or outlived \
            --handler-timeout), with the reason in the x-berth-reason header. Each dead letter is named by the \
            first 12 hex digits of its body's SHA-256 (the ID column).

            Examples:
              berth dead-letters list --reason RetryLimit
              berth dead-letters show 3f2a9c0d51e7
              berth dead-letters replay --method boot_instance --older-than 600 --dry-run
              berth dead-letters purge --all
            """,
        subcommands: [List.self, Show.self, Replay.self, Purge.self])
}

/// Where the dead letters are and which of them a command acts on.
struct DeadLetterOptions: ParsableArguments {
    @Option(help: ArgumentHelp("The workers' --dead-letter-queue.", valueName: "queue"))
    var deadLetterQueue = "berth.dead-letter"

    @Option(help: "A part of the reason (x-berth-reason), any case.")
    var reason: String?

    @Option(help: "The oslo method of the request, e.g. boot_instance.")
    var method: String?

    @Option(help: ArgumentHelp("Dead-lettered more than this many seconds ago.", valueName: "seconds"))
    var olderThan: Double?

    @Option(help: ArgumentHelp("Dead-lettered less than this many seconds ago.", valueName: "seconds"))
    var newerThan: Double?

    @Option(help: "Look at no more than this many dead letters (from the head of the queue).")
    var limit = 10_000

    func validate() throws {
        guard (1...65_535).contains(limit) else { throw ValidationError("--limit must be 1-65535") }
        for (name, value) in [("--older-than", olderThan), ("--newer-than", newerThan)] {
            if let value, !(value >= 0 && value <= 1e9) { throw ValidationError("\(name) must be 0 or more seconds") }
        }
    }

    /// Replay and purge touch every dead letter only when told so with --all.
    func requireSelection(ids: [String], all: Bool) throws {
        if filter(ids: ids).selectsEverything && !all {
            throw ValidationError(
                "name dead letters by ID or filter (--reason, --method, --older-than, --newer-than), or say --all")
        }
    }

    func filter(ids: [String]) -> DeadLetterFilter {
        var filter = DeadLetterFilter()
        filter.ids = Set(ids.map { $0.lowercased() })
        filter.reason = reason
        filter.method = method
        filter.olderThan = olderThan
        filter.newerThan = newerThan
        return filter
    }

    /// Runs one pass over the queue; exit status 3 when the broker or the queue is not there.
    func withPass(_ bus: BrokerOptions, _ label: String, _ body: (DeadLetterQueue) async throws -> Void) async throws {
        let logger = BrokerOptions.logger(label, try bus.settings(), quiet: true)
        let pass: DeadLetterQueue
        do {
            pass = try await DeadLetterQueue(urls: try bus.urls(), queue: deadLetterQueue, limit: limit, logger: logger)
        } catch {
            FileHandle.standardError.write(Data("\(error)\n".utf8))
            throw ExitCode(3)
        }
        do {
            try await body(pass)
        } catch {
            await pass.close()
            throw error
        }
        await pass.close()
    }
}

/// How dead letters are shown: every text from the bus made printable and cut short in the table.
enum DeadLetterView {
    static func json(_ letter: DeadLetter, now: Date, withBody: Bool) -> JSONValue {
        var object: JSONObject = [
            "id": .string(letter.id), "reason": .string(letter.reason),
            "method": letter.method.map(JSONValue.string) ?? .null,
            "namespace": letter.namespace.map(JSONValue.string) ?? .null,
            "host": letter.host.map(JSONValue.string) ?? .null,
            "original_exchange": letter.originalExchange.map(JSONValue.string) ?? .null,
            "original_routing_key": letter.originalRoutingKey.map(JSONValue.string) ?? .null,
            "dead_lettered_at": letter.deadLetteredAt.map { .string(PythonDateTime.format($0)) } ?? .null,
            "age_s": letter.age(now: now).map { .double($0.rounded()) } ?? .null,
            "bytes": .int(Int64(letter.delivery.body.count)),
            "original_bytes": letter.originalBytes.map(JSONValue.int) ?? .null,
            "replayable": .bool(letter.replayRefusal == nil),
        ]
        if let refusal = letter.replayRefusal { object["not_replayable_because"] = .string(refusal) }
        if withBody {
            object["headers"] = .object(
                JSONObject(
                    (letter.delivery.properties.headers ?? []).map { ($0.key, describe($0.value)) }))
            object["message"] =
                letter.message.map(JSONValue.object)
                ?? .string(printable(String(decoding: letter.delivery.body.prefix(4096), as: UTF8.self), limit: 4096))
        }
        return .object(object)
    }

    static func table(_ letters: [DeadLetter], now: Date) -> String {
        let header = ["ID", "AGE", "METHOD", "HOST", "BYTES", "REASON"]
        let rows = letters.map { letter in
            [
                letter.id, letter.age(now: now).map { "\(Int($0))s" } ?? "?",
                printable(letter.method ?? "-", limit: 32), printable(letter.host ?? "-", limit: 32),
                letter.originalBytes.map { "\($0) (excerpt)" } ?? "\(letter.delivery.body.count)",
                printable(letter.reason, limit: 100),
            ]
        }
        let widths = header.indices.map { column in ([header] + rows).map { $0[column].count }.max() ?? 0 }
        return ([header] + rows).map { row in
            zip(row, widths).map { $0.padding(toLength: $1, withPad: " ", startingAt: 0) }.joined(separator: "  ")
                .trimmingCharacters(in: .whitespaces)
        }.joined(separator: "\n") + "\n"
    }

    /// Control characters become '?', and long texts end in '...': a header can hold anything.
    static func printable(_ text: String, limit: Int) -> String {
        let clean = String(
            String.UnicodeScalarView(text.unicodeScalars.map { $0.value < 0x20 || $0.value == 0x7F ? "?" : $0 }))
        return clean.count > limit ? clean.prefix(limit - 3) + "..." : clean
    }

    private static func describe(_ value: AMQPFieldValue) -> JSONValue {
        switch value {
        case .string(let text): .string(text)
        case .int(let number): .int(number)
        case .bool(let flag): .bool(flag)
        case .double(let number): .double(number)
        case .table(let table): .object(JSONObject(table.map { ($0.key, describe($0.value)) }))
        case .array(let values): .array(values.map(describe))
        case .bytes(let bytes): .string("<\(bytes.count) bytes>")
        case .void: .null
        }
    }
}

extension DeadLetters {
    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List dead letters (they stay in the queue).",
            discussion: "Example:\n  berth dead-letters list --method boot_instance --format json")

        @OptionGroup var bus: BrokerOptions
        @OptionGroup var selection: DeadLetterOptions
        @Option(help: "table or json.") var format = "table"

        func validate() throws {
            guard ["table", "json"].contains(format) else { throw ValidationError("--format must be table or json") }
        }

        func run() async throws {
            let now = Date()
            let filter = selection.filter(ids: [])
            var matching: [DeadLetter] = []
            try await selection.withPass(bus, "berth.dead-letters") { pass in
                for await letter in pass.letters() where filter.matches(letter, now: now) { matching.append(letter) }
            }
            if format == "json" {
                print(
                    JSONCodec.serializeString(
                        .array(matching.map { DeadLetterView.json($0, now: now, withBody: false) })))
            } else {
                print(DeadLetterView.table(matching, now: now), terminator: "")
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show one dead letter in full: headers, properties and the decoded message (as JSON).",
            discussion: "Example:\n  berth dead-letters show 3f2a9c0d51e7")

        @OptionGroup var bus: BrokerOptions
        @OptionGroup var selection: DeadLetterOptions
        @Argument(help: "The dead letter's ID (from list).") var id: String

        func run() async throws {
            let now = Date()
            let filter = selection.filter(ids: [id])
            var found: DeadLetter?
            try await selection.withPass(bus, "berth.dead-letters") { pass in
                for await letter in pass.letters() where found == nil && filter.matches(letter, now: now) {
                    found = letter
                }
            }
            guard let found else {
                FileHandle.standardError.write(
                    Data(
                        "no dead letter \(DeadLetterView.printable(id, limit: 64)) in \(selection.deadLetterQueue)\n"
                            .utf8))
                throw ExitCode(1)
            }
            print(JSONCodec.serializeString(DeadLetterView.json(found, now: now, withBody: true)))
        }
    }

    struct Replay: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Send dead letters again to the exchange and routing key they were first sent to.",
            discussion: """
                The copy keeps the original body and properties; the x-berth-* headers are replaced by \
                x-berth-replayed-reason (why it had been dead-lettered). A dead letter that kept only an excerpt \
                (its body was over --max-message-bytes) cannot be replayed: it is refused and stays. Exit status 1 \
                when any was refused or not routed.

                Examples:
                  berth dead-letters replay 3f2a9c0d51e7
                  berth dead-letters replay --reason RetryLimitExceeded --dry-run
                """)

        @OptionGroup var bus: BrokerOptions
        @OptionGroup var selection: DeadLetterOptions
        @Argument(help: "IDs of the dead letters to replay (from list).") var ids: [String] = []
        @Flag(help: "Replay every dead letter (needed when no ID or filter is given).") var all = false
        @Flag(help: "Say what would be replayed, change nothing.") var dryRun = false

        func validate() throws { try selection.requireSelection(ids: ids, all: all) }

        func run() async throws {
            let now = Date()
            let filter = selection.filter(ids: ids)
            var failed = 0
            try await selection.withPass(bus, "berth.dead-letters") { pass in
                for await letter in pass.letters() where filter.matches(letter, now: now) {
                    let target = "\(letter.originalExchange ?? "?")/\(letter.originalRoutingKey ?? "?")"
                    if let refusal = letter.replayRefusal {
                        failed += 1
                        report("refused \(letter.id): \(refusal)", error: true)
                    } else if dryRun {
                        report(
                            "would replay \(letter.id) (\(letter.method ?? "?")) to \(DeadLetterView.printable(target, limit: 300))"
                        )
                    } else {
                        let outcome = try await pass.replay(letter)
                        if outcome == .confirmed {
                            report(
                                "replayed \(letter.id) (\(letter.method ?? "?")) to \(DeadLetterView.printable(target, limit: 300))"
                            )
                        } else {
                            failed += 1
                            report(
                                "not replayed \(letter.id): the broker did not route it to \(DeadLetterView.printable(target, limit: 300)) (\(outcome)); it stays",
                                error: true)
                        }
                    }
                }
            }
            if failed > 0 { throw ExitCode(1) }
        }
    }

    struct Purge: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Delete dead letters.",
            discussion: """
                Examples:
                  berth dead-letters purge 3f2a9c0d51e7
                  berth dead-letters purge --older-than 86400
                  berth dead-letters purge --all
                """)

        @OptionGroup var bus: BrokerOptions
        @OptionGroup var selection: DeadLetterOptions
        @Argument(help: "IDs of the dead letters to delete (from list).") var ids: [String] = []
        @Flag(help: "Delete every dead letter (needed when no ID or filter is given).") var all = false
        @Flag(help: "Say what would be deleted, change nothing.") var dryRun = false

        func validate() throws { try selection.requireSelection(ids: ids, all: all) }

        func run() async throws {
            let now = Date()
            let filter = selection.filter(ids: ids)
            var count = 0
            try await selection.withPass(bus, "berth.dead-letters") { pass in
                for await letter in pass.letters() where filter.matches(letter, now: now) {
                    if !dryRun { pass.remove(letter) }
                    count += 1
                }
            }
            report(dryRun ? "would delete \(count) dead letters" : "deleted \(count) dead letters")
        }
    }
}

private func report(_ line: String, error: Bool = false) {
    if error {
        FileHandle.standardError.write(Data((line + "\n").utf8))
    } else {
        print(line)
    }
}
