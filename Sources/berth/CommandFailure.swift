import ArgumentParser
import BerthCatalog
import BerthCore
import BerthRPC
import Foundation

/// The exit statuses every command shares, listed in `berth --help` and docs/cli.md. 64 is sysexits'
/// EX_USAGE, which ArgumentParser gives its own usage errors.
enum ExitStatus {
    /// The operation failed: a remote failure, a refusal by the catalog, a failed boot or deploy.
    static let failure: Int32 = 1
    /// No answer within `--timeout`.
    static let timeout: Int32 = 2
    /// No broker within the timeout, or the request could not be delivered.
    static let unreachable: Int32 = 3
    /// The command line is wrong: an unknown option, a value that cannot be right.
    static let usage: Int32 = 64

    static let summary = """
        Exit status: 0 success, 1 the operation failed, 2 timeout, 3 broker unreachable or request not delivered, \
        64 usage error.
        """
}

/// A failure after the command line parsed: one line, `berth: error: <Class>: <message>`, and an exit
/// status, never the usage (that is for usage errors, which ArgumentParser reports before `run`).
struct CommandFailure: Error {
    let className: String
    let message: String
    let status: Int32

    init(_ className: String, _ message: String, status: Int32 = ExitStatus.failure) {
        self.className = className
        self.message = message
        self.status = status
    }

    /// The class a caught error is reported under, the one the RPC API gives it where it has one; nil for
    /// ArgumentParser's own errors (a help request from a command that has only subcommands, a usage error)
    /// and an `ExitCode` (the command has said why already), which ArgumentParser handles.
    init?(reporting error: any Error) {
        guard !(error is ExitCode),
            error is CommandFailure || error is ValidationError || Berth.exitCode(for: error) == .failure
        else {
            return nil
        }
        self.init(error)
    }

    init(_ error: any Error) {
        switch error {
        case let failure as CommandFailure:
            self = failure
        case let error as ValidationError:
            self.init("InvalidArgument", error.message, status: ExitStatus.usage)
        case let error as CatalogError:
            // The RPC API reports an unusable catalog as the operation's failure (BuildFailed for a boot);
            // a catalog command has no such operation, so it says what failed.
            let label =
                switch error.kind {
                case .unauthorized: "Unauthorized"
                case .catalogUnavailable: "CatalogUnavailable"
                default: error.rpcClassName
                }
            self.init(label, error.message)
        case let error as BerthError:
            self.init(error.className, error.message)
        case let error as RPCCallError:
            switch error {
            case .remote(let failure): self.init(failure.className, failure.message)
            case .timeout: self.init("Timeout", error.description, status: ExitStatus.timeout)
            case .notDelivered(let reason): self.init("NotDelivered", reason, status: ExitStatus.unreachable)
            }
        default:
            self.init(String(describing: type(of: error)), "\(error)")
        }
    }

    /// No broker connection by the command's deadline, or one refused for good (a bad login).
    static func brokerUnreachable(_ error: any Error) -> CommandFailure {
        CommandFailure(
            "BrokerUnreachable", "\(error); is RabbitMQ running, and is --transport-url right?",
            status: ExitStatus.unreachable)
    }

    /// A usage error as ArgumentParser words it, usage included, under the same prefix as every other error.
    /// Help and version requests (and anything else ArgumentParser reports) stay as ArgumentParser prints them,
    /// except a version request anywhere but `berth --version` alone (`misplacedVersion`).
    static func exitForUsage(_ error: any Error, arguments: [String]) -> Never {
        let text = Berth.fullMessage(for: error)
        if Berth.exitCode(for: error) == .success, text == BerthVersion.string, arguments != ["--version"] {
            misplacedVersion.exit()
        }
        guard Berth.exitCode(for: error) == .validationFailure, text.hasPrefix("Error: ") else {
            Berth.exit(withError: error)
        }
        FileHandle.standardError.write(Data("berth: error: InvalidArgument: \(text.dropFirst(7))\n".utf8))
        Foundation.exit(ExitStatus.usage)
    }

    /// ArgumentParser prints the root's version, exits 0 and runs nothing whenever `--version` is left over: a
    /// subcommand that failed to parse (`berth call --version 2`, no method), or one that has no such option
    /// (`berth images list --version`). Whoever typed that meant something else, usually `call`'s API version.
    static let misplacedVersion = CommandFailure(
        "InvalidArgument",
        "--version goes alone (berth --version prints Berth's version); the RPC API version of a call is --api-version",
        status: ExitStatus.usage)

    /// Writes the line and exits with the status.
    func exit() -> Never {
        FileHandle.standardError.write(Data("berth: error: \(className): \(message)\n".utf8))
        Foundation.exit(status)
    }
}
