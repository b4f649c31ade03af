import BerthAMQP
import Foundation
import Testing

/// Credentials files and TLS failures: what the operator is told, and that the password never is.
@Suite struct TransportSecurityTests {
    private static let url = "amqp://berth:s3cret-pw@127.0.0.1:5672/berth"

    private func temporaryFile(mode: Int, text: String = TransportSecurityTests.url) throws -> String {
        let path = NSTemporaryDirectory() + "berth-url-" + UUID().uuidString
        try text.write(toFile: path, atomically: false, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: mode], ofItemAtPath: path)
        return path
    }

    private func refusal(_ path: String) -> AMQPError? {
        do {
            _ = try TransportURLFile.read(path)
            return nil
        } catch {
            return error
        }
    }

    @Test(arguments: [0o600, 0o400, 0o700])
    func aPrivateFileIsRead(mode: Int) throws {
        let path = try temporaryFile(mode: mode)
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect(try TransportURLFile.read(path) == Self.url)
    }

    @Test(arguments: [0o644, 0o640, 0o604, 0o660, 0o666, 0o610, 0o601])
    func aFileOthersCanReachIsRefused(mode: Int) throws {
        let path = try temporaryFile(mode: mode)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let error = try #require(refusal(path))
        #expect(error.message.contains("has mode 0\(String(mode, radix: 8))"))
        #expect(error.message.contains("chmod 600 \(path)"))
        #expect(!error.message.contains("s3cret-pw"))
    }

    /// Kubernetes mounts secrets as symbolic links: the link's own mode (0777) must not count, its target's does.
    @Test func aSymbolicLinkIsJudgedByItsTarget() throws {
        let target = try temporaryFile(mode: 0o600)
        let link = target + ".link"
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: target)
        defer {
            try? FileManager.default.removeItem(atPath: link)
            try? FileManager.default.removeItem(atPath: target)
        }
        #expect(try TransportURLFile.read(link) == Self.url)
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: target)
        #expect(refusal(link)?.message.contains("has mode 0644") == true)
    }

    @Test func aDirectoryOrAMissingFileIsRefusedWithTheReason() throws {
        let directory = NSTemporaryDirectory() + "berth-url-dir-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: false)
        try FileManager.default.setAttributes([.posixPermissions: 0o700], ofItemAtPath: directory)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        #expect(refusal(directory)?.message.contains("not a regular file") == true)
        #expect(refusal(directory + "/missing")?.message.contains("No such file or directory") == true)
    }

    @Test func modeCheckIsOnTheModeBitsAlone() throws {
        try TransportURLFile.checkPrivate(mode: S_IFREG | 0o600, path: "f")
        try TransportURLFile.checkPrivate(mode: S_IFREG | 0o400, path: "f")
        #expect(throws: AMQPError.self) { try TransportURLFile.checkPrivate(mode: S_IFREG | 0o620, path: "f") }
        #expect(throws: AMQPError.self) { try TransportURLFile.checkPrivate(mode: S_IFIFO | 0o600, path: "f") }
    }

    @Test func tlsFailuresSayWhatToChangeAndAreNotRetried() throws {
        var url = try AMQPURL.parse("amqps://berth:s3cret-pw@rabbit-1.example.org:5671/berth?cacert=/etc/berth/ca.pem")
        let untrusted = AMQPError.tls(.untrustedCertificate, url: url)
        #expect(untrusted.kind == .tls)
        #expect(!untrusted.isTransient)
        #expect(untrusted.message.contains("rabbit-1.example.org:5671"))
        #expect(untrusted.message.contains("not signed by a CA in '/etc/berth/ca.pem'"))
        let mismatch = AMQPError.tls(.hostNameMismatch, url: url)
        #expect(mismatch.message.contains("is not for host 'rabbit-1.example.org'"))
        let unreadable = AMQPError.tls(.unreadableCABundle, url: url)
        #expect(unreadable.message.contains("cannot load the CA bundle '/etc/berth/ca.pem'"))
        url.caCertificatePath = nil
        #expect(AMQPError.tls(.untrustedCertificate, url: url).message.contains("names no CA bundle"))
        for failure in [TLSFailure.untrustedCertificate, .hostNameMismatch, .unreadableCABundle] {
            #expect(!AMQPError.tls(failure, url: url).message.contains("s3cret-pw"))
        }
    }

    @Test func loggedURLsHideThePassword() throws {
        let urls = try AMQPURL.parseList("amqps://berth:s3cret-pw@h1:5671,berth:s3cret-pw@h2:5671/berth?cacert=/ca.pem")
        #expect(urls.map(\.description) == ["amqps://berth:***@h1:5671/berth", "amqps://berth:***@h2:5671/berth"])
        do {
            _ = try AMQPURL.parseList("amqp://berth:s3cret-pw@h1:5672/berth?nope=1")
            Issue.record("an unknown option must be refused")
        } catch {
            #expect(!error.message.contains("s3cret-pw"))
        }
    }

    @Test(arguments: [
        "guest:s3cret-pw@127.0.0.1:5672/",  // no scheme at all
        "amqp:/guest:s3cret-pw@127.0.0.1/",  // one slash short
        "amqp://guest:s3cret-pw",  // no '@': Foundation reads the password as a port
        "amqp://guest:s3cret-pw@",  // no host
        "amqp://guest:s3cr#et-pw@127.0.0.1/",  // an unescaped '#' cuts the URL short
        "amqp://guest:s3cret-pw@h1:5672,guest:s3cret-pw@:5672/",  // the second host of a list is empty
    ])
    func unparsableURLsNeverShowThePassword(text: String) {
        do {
            _ = try AMQPURL.parseList(text)
            Issue.record("'\(text)' must be refused")
        } catch {
            #expect(!error.message.contains("s3cret"), "\(error.message)")
            #expect(!error.message.contains("s3cr"), "\(error.message)")
        }
    }

    @Test func escapesInTheUserAndPasswordAreDecoded() throws {
        let url = try AMQPURL.parse("amqp://gu%41:p%40ss%3Aw%2Fd@h/")
        #expect(url.user == "guA")
        #expect(url.password == "p@ss:w/d")
        let plain = try AMQPURL.parse("amqp://h/")
        #expect(plain.user == "guest" && plain.password == "guest")
    }

    @Test(arguments: [
        ("amqp://gu%zzest:pw@h/", "character 10 (in the user)"),
        ("amqp://guest:pw%4@h/", "character 16 (in the password)"),
        ("amqp://guest:pw%@h/", "character 16 (in the password)"),
    ])
    func aBadEscapeIsAnErrorThatSaysWhere(text: String, position: String) {
        do {
            let url = try AMQPURL.parse(text)
            Issue.record("'\(text)' must be refused, not read as user '\(url.user)'")
        } catch {
            #expect(error.message.contains(position), "\(error.message)")
            #expect(!error.message.contains("pw"), "\(error.message)")
        }
    }

    @Test func anEscapeThatIsNotUTF8IsAnError() {
        // Foundation gives nil for this password, which used to become `guest`.
        do {
            let url = try AMQPURL.parse("amqp://berth:s3cret%ff@h/")
            Issue.record("must be refused, not read as password '\(url.password)'")
        } catch {
            #expect(error.message.contains("password is not UTF-8"), "\(error.message)")
            #expect(!error.message.contains("s3cret"))
        }
    }
}
