/// A setting's value, typed by its option's `Kind`.
public enum ConfigValue: Sendable, Equatable {
    case string(String)
    case integer(Int)
    case number(Double)
    case boolean(Bool)
    case list([String])
}

/// Where a setting's value came from, in the order a later one wins: default, file, environment, command line.
public enum ConfigSource: Sendable, Equatable, CustomStringConvertible {
    case defaultValue
    case file(path: String, line: Int)
    case environment(String)
    case commandLine(String)

    public var description: String {
        switch self {
        case .defaultValue: "default"
        case .file(let path, let line): "\(path):\(line)"
        case .environment(let name): "environment \(name)"
        case .commandLine(let flag): "--\(flag)"
        }
    }

    /// Higher wins: the command line over the environment over the files over the default.
    var rank: Int {
        switch self {
        case .defaultValue: 0
        case .file: 1
        case .environment: 2
        case .commandLine: 3
        }
    }
}

/// The settings of `berth worker`: oslo.config-style files (later ones win), then `BERTH_*` environment
/// variables, then the command line, over the defaults. swift-argument-parser only says what the command line
/// holds, so the layers are merged here, once, by one rule; every value is checked the same way whatever its
/// source, and an error names that source (file and line, variable or flag), the option and what it expects.
///
/// Pure: the caller reads the files and the environment and hands over their text.
public struct WorkerConfiguration: Sendable {
    public struct Setting: Sendable, Equatable {
        public var value: ConfigValue
        public var source: ConfigSource
    }

    /// Options with a value (a default, or set somewhere); the others are unset.
    public private(set) var settings: [WorkerOption: Setting] = [:]

    /// `files`: parsed configuration files in the order given (later wins). `environment`: the process
    /// environment (only `BERTH_*` names of options are read; an empty one counts as unset). `commandLine`:
    /// the options given as flags, as text (a repeatable flag's values as a list).
    public init(
        files: [INIFile] = [], environment: [String: String] = [:], commandLine: [WorkerOption: CommandLineValue] = [:]
    ) throws(ConfigError) {
        for option in WorkerOption.allCases {
            if let value = option.descriptor.defaultValue {
                settings[option] = Setting(value: value, source: .defaultValue)
            }
        }
        for file in files {
            for section in file.sections
            where !WorkerOption.sections.contains(where: { Self.sameSection($0, section.name) }) {
                throw ConfigError(
                    at: file.path, line: section.line,
                    "unknown section [\(section.name)]; Berth reads \(WorkerOption.sections.map { "[\($0)]" }.joined(separator: ", "))"
                )
            }
            for assignment in file.assignments {
                let source = ConfigSource.file(path: file.path, line: assignment.line)
                guard let option = WorkerOption.named(section: assignment.section, name: assignment.key) else {
                    throw ConfigError(
                        at: file.path, line: assignment.line,
                        "unknown option '\(assignment.key)' in [\(assignment.section)]\(Self.suggestion(for: assignment.key))"
                    )
                }
                let text = try Self.substituting(assignment.value, option: option, source: source)
                settings[option] = Setting(value: try Self.parse(text, option: option, source: source), source: source)
            }
        }
        for option in WorkerOption.allCases {
            let name = option.environmentVariable
            guard let text = environment[name], !text.isEmpty else { continue }
            let source = ConfigSource.environment(name)
            settings[option] = Setting(value: try Self.parse(text, option: option, source: source), source: source)
        }
        for (option, given) in commandLine {
            let source = ConfigSource.commandLine(option.flag)
            let value: ConfigValue
            switch given {
            case .text(let text): value = try Self.parse(text, option: option, source: source)
            case .list(let items):
                for item in items { try Self.check(item, option: option, source: source) }
                value = .list(items)
            case .boolean(let flag): value = .boolean(flag)
            }
            settings[option] = Setting(value: value, source: source)
        }
    }

    /// A command-line value: flags' text is parsed as a file's would be; a repeatable flag gives its list.
    public enum CommandLineValue: Sendable, Equatable {
        case text(String)
        case list([String])
        case boolean(Bool)
    }

    // MARK: Typed access (the table's kinds guarantee the cases)

    public subscript(option: WorkerOption) -> Setting? { settings[option] }

    public func string(_ option: WorkerOption) -> String? {
        switch settings[option]?.value {
        case .string(let text): text
        default: nil
        }
    }

    public func integer(_ option: WorkerOption) -> Int {
        guard case .integer(let value) = settings[option]?.value else {
            preconditionFailure("\(option) is not an integer")
        }
        return value
    }

    public func number(_ option: WorkerOption) -> Double {
        guard case .number(let value) = settings[option]?.value else {
            preconditionFailure("\(option) is not a number")
        }
        return value
    }

    public func boolean(_ option: WorkerOption) -> Bool {
        guard case .boolean(let value) = settings[option]?.value else {
            preconditionFailure("\(option) is not a boolean")
        }
        return value
    }

    public func list(_ option: WorkerOption) -> [String] {
        guard case .list(let value) = settings[option]?.value else { preconditionFailure("\(option) is not a list") }
        return value
    }

    /// The transport URL text and where it came from: `transport_url` or the file `transport_url_file` names,
    /// whichever comes from the higher source (the URL itself on a tie), else oslo's default broker.
    public var transportURLSource: TransportURLSource {
        let url = settings[.transportURL]
        let file = settings[.transportURLFile]
        switch (url, string(.transportURL), file, string(.transportURLFile)) {
        case (let url?, let text?, let file?, let path?):
            return file.source.rank > url.source.rank ? .file(path) : .text(text)
        case (_, let text?, _, _): return .text(text)
        case (_, _, _, let path?): return .file(path)
        default: return .text("rabbit://guest:guest@127.0.0.1:5672/")
        }
    }

    public enum TransportURLSource: Sendable, Equatable {
        case text(String)
        case file(String)
    }

    /// "what it is: value (source)" for a message about a value a later check refused (a node that does not
    /// parse, a URL with a bad escape).
    public func origin(of option: WorkerOption) -> String {
        let source = settings[option]?.source ?? .defaultValue
        switch source {
        case .file: return "\(source): [\(option.section)] \(option.name)"
        case .environment(let name): return name
        case .commandLine(let flag): return "--\(flag)"
        case .defaultValue: return "the default of [\(option.section)] \(option.name)"
        }
    }

    // MARK: Display

    /// One line per option for `--print-config`: the value as a file would hold it (secrets masked) and its
    /// source. Unset options show as nil.
    public var display: [(option: WorkerOption, value: String?, source: ConfigSource)] {
        WorkerOption.allCases.map { option in
            guard let setting = settings[option] else { return (option, nil, .defaultValue) }
            if case .string(let value) = setting.value, option.descriptor.secret {
                return (option, Self.maskingPasswords(value), setting.source)
            }
            return (option, Self.fileText(setting.value), setting.source)
        }
    }

    /// A value as a configuration file writes it.
    public static func fileText(_ value: ConfigValue) -> String {
        switch value {
        case .string(let text): text
        case .integer(let number): String(number)
        case .number(let number): formatted(number)
        case .boolean(let flag): flag ? "true" : "false"
        case .list(let items): items.joined(separator: ",")
        }
    }

    /// A URL list with each host's password replaced by `***`: `rabbit://u:***@h1,u:***@h2/vhost`.
    public static func maskingPasswords(_ text: String) -> String {
        guard let scheme = text.firstRange(of: "://") else { return "***" }
        let rest = text[scheme.upperBound...]
        let pathStart = rest.firstIndex(where: { $0 == "/" || $0 == "?" }) ?? rest.endIndex
        let hosts = rest[..<pathStart].split(separator: ",", omittingEmptySubsequences: false).map { host -> String in
            guard let at = host.lastIndex(of: "@") else { return String(host) }
            let userInfo = host[..<at]
            guard let colon = userInfo.firstIndex(of: ":") else { return String(host) }
            return "\(userInfo[..<colon]):***\(host[at...])"
        }
        return "\(text[..<scheme.upperBound])\(hosts.joined(separator: ","))\(rest[pathStart...])"
    }

    static func formatted(_ value: Double) -> String {
        value == value.rounded() && abs(value) < 1e15 ? String(Int(value)) : String(value)
    }

    // MARK: Parsing, the same for every source

    static func parse(_ text: String, option: WorkerOption, source: ConfigSource) throws(ConfigError) -> ConfigValue {
        let value: ConfigValue
        switch option.kind {
        case .string:
            value = .string(text)
        case .integer(let range):
            guard let number = Int(text.trimmingSpaces), range.contains(number) else {
                throw invalid(
                    text, option, source, expected: "a whole number from \(range.lowerBound) to \(range.upperBound)")
            }
            value = .integer(number)
        case .number(let range, let zeroMeans):
            guard let number = Double(text.trimmingSpaces), number.isFinite,
                range.contains(number) || (zeroMeans != nil && number == 0)
            else {
                let zero = zeroMeans.map { "0 (\($0)) or " } ?? ""
                throw invalid(
                    text, option, source,
                    expected:
                        "\(zero)a number of seconds from \(formatted(range.lowerBound)) to \(formatted(range.upperBound))"
                )
            }
            value = .number(number)
        case .boolean:
            // oslo.config's Boolean type, case-insensitively.
            switch text.trimmingSpaces.lowercased() {
            case "true", "1", "on", "yes": value = .boolean(true)
            case "false", "0", "off", "no": value = .boolean(false)
            default: throw invalid(text, option, source, expected: "true or false (also yes/no, on/off, 1/0)")
            }
        case .choice(let choices):
            guard choices.contains(text) else {
                throw invalid(text, option, source, expected: "one of \(choices.joined(separator: ", "))")
            }
            value = .string(text)
        case .list:
            // oslo.config's List type: comma-separated, each item trimmed; an empty value is an empty list.
            let items =
                text.trimmingSpaces.isEmpty
                ? [] : text.split(separator: ",", omittingEmptySubsequences: false).map { String($0).trimmingSpaces }
            for item in items { try check(item, option: option, source: source) }
            return .list(items)
        }
        if case .string = value { try check(text, option: option, source: source) }
        return value
    }

    /// The rules of string options and list items.
    static func check(_ text: String, option: WorkerOption, source: ConfigSource) throws(ConfigError) {
        let rule: WorkerOption.StringRule
        switch option.kind {
        case .string(let stringRule): rule = stringRule
        case .list: rule = .nonEmpty
        default: return
        }
        switch rule {
        case .nonEmpty:
            guard !text.isEmpty else { throw invalid(text, option, source, expected: "a value that is not empty") }
        case .hostName:
            guard HostNameRule.isValid(text) else {
                throw invalid(text, option, source, expected: HostNameRule.expectation)
            }
        case .queueName:
            guard !text.isEmpty, text.utf8.count <= 255, !text.hasPrefix("amq."),
                text.allSatisfy({ !$0.isWhitespace && !$0.isNewline })
            else {
                throw invalid(text, option, source, expected: "1-255 bytes, no spaces, not starting with 'amq.'")
            }
        }
    }

    static func invalid(_ text: String, _ option: WorkerOption, _ source: ConfigSource, expected: String) -> ConfigError
    {
        let shown = option.descriptor.secret ? "(not shown)" : "'\(ConfigText.printable(text))'"
        let name: String
        switch source {
        case .file(let path, let line):
            return ConfigError(
                at: path, line: line, "[\(option.section)] \(option.name) = \(shown): expected \(expected)")
        case .environment(let variable): name = variable
        case .commandLine(let flag): name = "--\(flag)"
        case .defaultValue: name = "the default of \(option.name)"
        }
        return ConfigError("\(name) \(shown): expected \(expected)")
    }

    /// oslo.config substitutes `$name` and `${name}` with other options' values; Berth does not, so such a
    /// value would mean something else to each. `$$` is oslo's literal `$`.
    static func substituting(_ text: String, option: WorkerOption, source: ConfigSource) throws(ConfigError) -> String {
        guard text.contains("$") else { return text }
        var result = ""
        var index = text.startIndex
        while index < text.endIndex {
            let character = text[index]
            let next = text.index(after: index)
            if character == "$" {
                guard next < text.endIndex, text[next] == "$" else {
                    throw invalid(
                        option.descriptor.secret ? "" : text, option, source,
                        expected: "no $ substitution (Berth does not expand oslo's $name; write a literal $ as $$)")
                }
                result.append("$")
                index = text.index(after: next)
            } else {
                result.append(character)
                index = next
            }
        }
        return result
    }

    static func sameSection(_ known: String, _ given: String) -> Bool {
        known == "DEFAULT" ? given == known : known == given.lowercased()
    }

    static func suggestion(for key: String) -> String {
        let matches = WorkerOption.allCases.filter { $0.name == key }
        guard let match = matches.first else { return "" }
        return "; it belongs in [\(match.section)]"
    }
}

/// Host names become queue names and routing keys: only what both take unescaped.
public enum HostNameRule {
    public static let expectation = "1-128 characters of letters, digits, '.', '-', '_', ':'"

    public static func isValid(_ name: String) -> Bool {
        !name.isEmpty && name.count <= 128
            && name.unicodeScalars.allSatisfy {
                $0.isASCII
                    && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || ".-_:".unicodeScalars.contains($0))
            }
    }
}

/// Text from a file or the environment, made safe to print in a message.
enum ConfigText {
    static func printable(_ text: String) -> String {
        let cleaned = String(
            text.unicodeScalars.prefix(64).map { $0.value >= 0x20 && $0.value != 0x7f ? Character($0) : "?" })
        return text.unicodeScalars.count > 64 ? cleaned + "..." : cleaned
    }
}

extension String {
    fileprivate var trimmingSpaces: String {
        var slice = Substring(self)
        while let first = slice.first, first.isWhitespace { slice = slice.dropFirst() }
        while let last = slice.last, last.isWhitespace { slice = slice.dropLast() }
        return String(slice)
    }
}
