/// An INI file read exactly as oslo.config's `iniparser` reads it, so a file written for an OpenStack service
/// means the same to Berth:
/// - `[section]` lines; `#` and `;` start a comment line (not an inline comment: `a = b # c` is the value `b # c`);
/// - `key = value` or `key: value`, split at whichever of `=` and `:` comes first; key and value are trimmed,
///   and one pair of matching quotes around the value is removed;
/// - a line starting with a space or a tab continues the previous value (joined with a newline); a blank line
///   ends it.
///
/// Pure: it takes the text and the name to report; reading the file is the caller's job.
public struct INIFile: Sendable, Equatable {
    public struct Assignment: Sendable, Equatable {
        public var section: String
        public var key: String
        public var value: String
        /// Where the assignment starts (1-based), for messages.
        public var line: Int
    }

    /// A `[name]` header, kept so that an unknown section is reported at its own line, even when empty.
    public struct Section: Sendable, Equatable {
        public var name: String
        public var line: Int
    }

    public var path: String
    public var sections: [Section]
    public var assignments: [Assignment]

    public init(path: String, text: String) throws(ConfigError) {
        self.path = path
        assignments = []
        sections = []
        var section: String?
        var pending: Assignment?
        var number = 0
        // Python reads text files with universal newlines: \n, \r\n and \r all end a line.
        for raw in text.split(
            omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" || $0 == "\r" })
        {
            number += 1
            let line = Self.trimmingTrailing(raw)
            if line.isEmpty {
                if let done = pending { assignments.append(done) }
                pending = nil
                continue
            }
            if line.first == " " || line.first == "\t" {
                guard pending != nil else {
                    throw ConfigError(
                        at: path, line: number, "a continuation line (it starts with a space) follows no option")
                }
                pending?.value += "\n" + line.drop(while: { $0 == " " || $0 == "\t" })
                continue
            }
            if let done = pending { assignments.append(done) }
            pending = nil
            if line.first == "[" {
                guard line.last == "]" else {
                    throw ConfigError(at: path, line: number, "a section header must end with ]")
                }
                guard line.count > 2 else { throw ConfigError(at: path, line: number, "the section name is empty") }
                let name = String(line.dropFirst().dropLast())
                section = name
                sections.append(Section(name: name, line: number))
            } else if line.first == "#" || line.first == ";" {
                continue
            } else {
                let (key, value) = try Self.split(line, path: path, line: number)
                guard let section else {
                    throw ConfigError(at: path, line: number, "option '\(key)' comes before any [section]")
                }
                pending = Assignment(section: section, key: key, value: value, line: number)
            }
        }
        if let done = pending { assignments.append(done) }
    }

    private static func split(_ line: Substring, path: String, line number: Int) throws(ConfigError) -> (String, String)
    {
        let colon = line.firstIndex(of: ":")
        let equals = line.firstIndex(of: "=")
        let separator: Substring.Index
        switch (colon, equals) {
        case (nil, nil):
            throw ConfigError(at: path, line: number, "expected 'name = value' (no '=' or ':' on the line)")
        case (let colon?, let equals?): separator = min(colon, equals)
        case (let colon?, nil): separator = colon
        case (nil, let equals?): separator = equals
        }
        let key = trimmed(line[..<separator])
        guard !key.isEmpty else { throw ConfigError(at: path, line: number, "the option name before '=' is empty") }
        var value = trimmed(line[line.index(after: separator)...])
        if value.count >= 2, let first = value.first, first == "\"" || first == "'", value.last == first {
            value = value.dropFirst().dropLast()
        }
        return (String(key), String(value))
    }

    private static func trimmed(_ text: Substring) -> Substring {
        trimmingTrailing(text.drop(while: \.isWhitespace))
    }

    private static func trimmingTrailing(_ text: Substring) -> Substring {
        var end = text.endIndex
        while end > text.startIndex, text[text.index(before: end)].isWhitespace { end = text.index(before: end) }
        return text[..<end]
    }
}

/// A configuration that cannot be used: where (file and line, variable or flag) and what to write instead.
public struct ConfigError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String

    public init(_ message: String) {
        self.message = message
    }

    init(at path: String, line: Int, _ problem: String) {
        message = "\(path):\(line): \(problem)"
    }

    public var description: String { message }
}
