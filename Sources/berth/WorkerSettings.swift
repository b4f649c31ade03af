import ArgumentParser
import BerthCatalog
import BerthConfig
import BerthJSON
import Foundation
import Logging

extension ArgumentHelp {
    /// An option's help from `WorkerOption`, with where else it can be set and its default.
    init(_ option: WorkerOption, valueName: String? = nil) {
        var text = option.help
        if let value = option.descriptor.defaultValue, case let shown = WorkerConfiguration.fileText(value),
            !shown.isEmpty
        {
            text += " Default: \(shown)."
        }
        text += " File: [\(option.section)] \(option.name); environment: \(option.environmentVariable)."
        if option.descriptor.reloadable { text += " Read again on SIGHUP." }
        self.init(stringLiteral: text)
        self.valueName = valueName
    }
}

/// Where the worker's settings come from: the files and directories named on the command line, the
/// process environment and the command line itself. Loaded at start and again on SIGHUP.
struct ConfigurationSources: Sendable {
    var files: [String]
    var directories: [String]
    var commandLine: [WorkerOption: WorkerConfiguration.CommandLineValue]

    /// Larger than any configuration file; a bigger one is the wrong file.
    static let maximumFileBytes = 1 << 20

    func load() throws(ConfigError) -> WorkerConfiguration {
        var parsed: [INIFile] = []
        // As oslo.config: the files in the order given, then each directory's *.conf in name order.
        for path in files { parsed.append(try Self.read(path, from: "--config-file")) }
        for directory in directories {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue,
                let names = try? FileManager.default.contentsOfDirectory(atPath: directory)
            else {
                throw ConfigError("--config-dir \(directory): not a readable directory")
            }
            for name in names.sorted() where name.hasSuffix(".conf") && !name.hasPrefix(".") {
                parsed.append(try Self.read("\(directory)/\(name)", from: "--config-dir"))
            }
        }
        return try WorkerConfiguration(
            files: parsed, environment: ProcessInfo.processInfo.environment, commandLine: commandLine)
    }

    private static func read(_ path: String, from flag: String) throws(ConfigError) -> INIFile {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw ConfigError("\(flag) \(path): cannot open it: \(String(cString: strerror(errno)))")
        }
        defer { try? handle.close() }
        let data: Data
        do {
            data = try handle.read(upToCount: maximumFileBytes + 1) ?? Data()
        } catch {
            throw ConfigError("\(flag) \(path): cannot read it: \(error.localizedDescription)")
        }
        guard data.count <= maximumFileBytes else {
            throw ConfigError("\(flag) \(path): larger than \(maximumFileBytes) bytes; not a configuration file")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw ConfigError("\(flag) \(path): not UTF-8 text")
        }
        let file = try INIFile(path: path, text: text)
        // A transport URL carries the broker password: a file holding one must not be readable by everyone
        // (root:berth 0640, as nova.conf is root:nova 0640).
        var status = stat()
        if file.assignments.contains(where: { $0.section == "DEFAULT" && $0.key == WorkerOption.transportURL.name }),
            fstat(handle.fileDescriptor, &status) == 0, status.st_mode & 0o007 != 0
        {
            throw ConfigError(
                "\(flag) \(path): it sets transport_url (with the broker password) but others can read it; "
                    + "chmod o-rwx \(path) (e.g. root:berth 0640)")
        }
        return file
    }
}

/// `berth worker --print-config`: the settings as a file would hold them, each with its source (text, itself
/// a valid configuration file), as JSON for scripts and tests, or as a sample file with every option's help
/// and default, as oslo-config-generator writes one (deploy/berth.conf.sample is this output).
struct ConfigurationPrinter {
    enum Format: String, ExpressibleByArgument, CaseIterable {
        case text, json, sample
    }

    var format: Format

    func print(_ settings: WorkerConfiguration) {
        switch format {
        case .text:
            for section in WorkerOption.sections {
                Swift.print("[\(section)]")
                for line in settings.display where line.option.section == section {
                    if let value = line.value {
                        Swift.print("# \(line.source)\n\(line.option.name) = \(value)")
                    } else {
                        Swift.print("# not set\n#\(line.option.name) =")
                    }
                }
                Swift.print()
            }
        case .sample:
            Swift.print(Self.sample, terminator: "")
        case .json:
            var sections = JSONObject()
            for line in settings.display {
                var entry: JSONObject = ["source": .string("\(line.source)")]
                entry["value"] = line.value.map { _ in Self.json(settings, line.option) } ?? .null
                var section = sections[line.option.section]?.objectValue ?? JSONObject()
                section[line.option.name] = .object(entry)
                sections[line.option.section] = .object(section)
            }
            Swift.print(JSONCodec.serializeString(.object(sections)))
        }
    }

    /// Every option, commented out at its default, with its help, environment variable, flag and whether
    /// SIGHUP reads it again.
    static var sample: String {
        var text = """
            # berth.conf: the settings of `berth worker --config-file`, read as oslo.config reads an INI file.
            # Generated by `berth worker --print-config --print-format sample`; every option is shown at its
            # default, commented out. Precedence: command line, then BERTH_* environment, then these files (a
            # later --config-file or --config-dir file wins), then the default. docs/operations.md explains them.

            """
        for section in WorkerOption.sections {
            text += "\n[\(section)]\n"
            for option in WorkerOption.allCases where option.section == section {
                text += "\n"
                for line in wrapped(option.help, width: 100) { text += "# \(line)\n" }
                let restart = option.descriptor.reloadable ? "read again on SIGHUP" : "takes effect at start"
                text += "# Environment: \(option.environmentVariable); flag: --\(option.flag); \(restart).\n"
                let value = option.descriptor.defaultValue.map(WorkerConfiguration.fileText) ?? ""
                text += value.isEmpty ? "#\(option.name) =\n" : "#\(option.name) = \(value)\n"
            }
        }
        return text
    }

    private static func wrapped(_ text: String, width: Int) -> [String] {
        var lines: [String] = []
        var line = ""
        for word in text.split(separator: " ") {
            if !line.isEmpty, line.count + 1 + word.count > width {
                lines.append(line)
                line = ""
            }
            line += line.isEmpty ? String(word) : " " + word
        }
        if !line.isEmpty { lines.append(line) }
        return lines
    }

    /// The typed value; a secret as `--print-config` shows it, masked.
    private static func json(_ settings: WorkerConfiguration, _ option: WorkerOption) -> JSONValue {
        switch settings[option]?.value {
        case .string(let text)?:
            return .string(option.descriptor.secret ? WorkerConfiguration.maskingPasswords(text) : text)
        case .integer(let value)?: return .int(Int64(value))
        case .number(let value)?: return .double(value)
        case .boolean(let value)?: return .bool(value)
        case .list(let items)?: return .array(items.map { .string($0) })
        case nil: return .null
        }
    }
}

/// What SIGHUP does: reads the configuration files (and the environment and flags the worker was started
/// with) again, applies what can change while the worker runs — the log level and format, the Glance token
/// file and its token — and names the changed options that wait for a restart. A file that no longer
/// parses changes nothing: the worker keeps its settings and says why. The requests in hand are not
/// touched.
final class WorkerReload: Sendable {
    let sources: ConfigurationSources
    /// The settings the worker started with: the ones a reload cannot change stay these until a restart.
    let started: WorkerConfiguration
    let glanceToken: GlanceToken
    let logger: Logger

    init(sources: ConfigurationSources, running: WorkerConfiguration, glanceToken: GlanceToken, logger: Logger) {
        self.sources = sources
        self.started = running
        self.glanceToken = glanceToken
        self.logger = logger
    }

    func reload() {
        let next: WorkerConfiguration
        do {
            next = try sources.load()
        } catch {
            logger.error(
                "SIGHUP: configuration not reloaded; the worker keeps its settings",
                metadata: ["error": "\(error.message)"])
            return
        }
        if let format = next.string(.logFormat).flatMap(BerthLogHandler.Format.init(rawValue:)) {
            LogSettings.shared.format = format
        }
        if let level = next.string(.logLevel).flatMap(Logger.Level.init(rawValue:)) {
            LogSettings.shared.level = level
        }
        do {
            glanceToken.replace(with: try CatalogSettings(next).glanceToken())
        } catch {
            logger.error(
                "SIGHUP: the Glance token was not reloaded; the worker keeps the one it has",
                metadata: ["error": "\(error)"])
        }
        let waiting = WorkerOption.allCases.filter { option in
            !option.descriptor.reloadable && next[option]?.value != started[option]?.value
        }
        if !waiting.isEmpty {
            logger.warning(
                "SIGHUP: changed options take effect at the next start",
                metadata: ["options": "\(waiting.map { "[\($0.section)] \($0.name)" }.joined(separator: ", "))"])
        }
        logger.notice(
            "SIGHUP: configuration reloaded",
            metadata: [
                "log_level": "\(LogSettings.shared.level)", "log_format": "\(LogSettings.shared.format)",
                "glance_token_file": "\(next.string(.glanceTokenFile) ?? "-")",
            ])
    }
}
