import ArgumentParser
import BerthJSON
import Foundation

/// How a command prints records: `-f/--format` and `-c/--column`, as the openstack CLI spells them. Any
/// command that prints records takes these options (`@OptionGroup var output: OutputOptions`) and prints
/// through `show` (one record) or `list` (several).
///
/// The default is a table on a terminal and JSON, one object per line, anywhere else: what a person reads
/// and what a script parses, without either having to ask.
struct OutputOptions: ParsableArguments {
    @Option(
        name: [.customShort("f"), .long],
        help: ArgumentHelp(
            "table (the default on a terminal), json (one object per line; the default when the output is a pipe or a file), yaml (a mapping, or a list of them) or value (the values alone).",
            valueName: "format"))
    var format: OutputFormat?

    @Option(
        name: [.customShort("c"), .customLong("column")],
        help: ArgumentHelp("Print only this field (repeatable), in the order given.", valueName: "field"))
    var columns: [String] = []

    var chosenFormat: OutputFormat { format ?? (isatty(STDOUT_FILENO) != 0 ? .table : .json) }

    /// One record: a Field/Value table, one JSON object, a YAML mapping, or its values one per line.
    func show(_ record: JSONObject) throws {
        let fields = try select(from: record.keys, available: record.keys)
        let picked = columns.isEmpty ? record : Self.pick(fields, from: record)
        switch chosenFormat {
        case .json:
            print(JSONCodec.serializeString(.object(picked)))
        case .yaml:
            print(YAMLWriter.document(.object(picked)), terminator: "")
        case .value:
            for field in fields { print(Self.text(record[field])) }
        case .table:
            print(TextTable(header: ["Field", "Value"], rows: fields.map { [$0, Self.text(record[$0])] }).rendered)
        }
    }

    /// Several records: a table with `defaultColumns` (unless `-c` chooses), JSON lines or a YAML list with
    /// every field, or each record's values on a line of their own.
    func list(_ records: [JSONObject], defaultColumns: [String]) throws {
        var available: [String] = []
        for record in records { for key in record.keys where !available.contains(key) { available.append(key) } }
        let fields = try select(from: chosenFormat.isTabular ? defaultColumns : available, available: available)
        let picked = columns.isEmpty ? records : records.map { Self.pick(fields, from: $0) }
        switch chosenFormat {
        case .json:
            for record in picked { print(JSONCodec.serializeString(.object(record))) }
        case .yaml:
            print(YAMLWriter.document(.array(picked.map(JSONValue.object))), terminator: "")
        case .value:
            for record in records { print(fields.map { Self.text(record[$0]) }.joined(separator: " ")) }
        case .table:
            print(TextTable(header: fields, rows: records.map { record in fields.map { Self.text(record[$0]) } }).rendered)
        }
    }

    /// The fields `-c` asks for, each checked against what the records have; `defaults` without `-c`.
    /// A field nothing has is a usage error naming what there is (an empty list has nothing to check).
    private func select(from defaults: [String], available: [String]) throws -> [String] {
        guard !columns.isEmpty else { return defaults }
        if !available.isEmpty {
            for column in columns where !available.contains(column) {
                throw ValidationError(
                    "-c/--column \(column.debugDescription) is not a field here; fields: \(available.joined(separator: ", "))")
            }
        }
        return columns
    }

    private static func pick(_ fields: [String], from record: JSONObject) -> JSONObject {
        JSONObject(fields.map { ($0, record[$0] ?? .null) })
    }

    /// A cell or a value line: strings as they are, null and missing fields empty, anything else as compact
    /// JSON; always one line of printable text.
    static func text(_ value: JSONValue?) -> String {
        switch value {
        case nil, .null?: ""
        case .string(let text)?: printable(text)
        case let other?: printable(JSONCodec.serializeString(other))
        }
    }

    /// Line breaks as `\n`, other control characters as `\u{…}`: a record stays one line, and a name from the
    /// catalog (Glance's are anyone's) cannot move the cursor or recolour the terminal.
    static func printable(_ text: String) -> String {
        var shown = ""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\n": shown += "\\n"
            case "\r": shown += "\\r"
            case "\t": shown += "\\t"
            case _ where scalar.properties.generalCategory == .control:
                shown += "\\u{\(String(scalar.value, radix: 16))}"
            default: shown.unicodeScalars.append(scalar)
            }
        }
        return shown
    }
}

enum OutputFormat: String, ExpressibleByArgument, CaseIterable {
    case table, json, yaml, value

    /// Whether the format shows a list's default columns only (a line per record has room for no more); the
    /// data formats carry every field.
    var isTabular: Bool { self == .table || self == .value }
}

/// A table with ASCII borders, as the openstack CLI draws it, of cells that are single lines of printable
/// text (`OutputOptions.text`).
struct TextTable {
    let header: [String]
    let rows: [[String]]

    var rendered: String {
        let cleanHeader = header.map(OutputOptions.printable)
        let widths = cleanHeader.indices.map { column in
            rows.reduce(cleanHeader[column].count) { max($0, $1[column].count) }
        }
        let rule = "+" + widths.map { String(repeating: "-", count: $0 + 2) }.joined(separator: "+") + "+"
        func line(_ cells: [String]) -> String {
            "| " + zip(cells, widths).map { $0 + String(repeating: " ", count: $1 - $0.count) }.joined(separator: " | ")
                + " |"
        }
        return ([rule, line(cleanHeader), rule] + rows.map(line) + [rule]).joined(separator: "\n")
    }
}
