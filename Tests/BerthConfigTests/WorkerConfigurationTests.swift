import BerthConfig
import Testing

@Suite struct WorkerConfigurationTests {
    func file(_ text: String, path: String = "berth.conf") throws -> INIFile {
        try INIFile(path: path, text: text)
    }

    @Test func defaultsWithoutAnySource() throws {
        let configuration = try WorkerConfiguration()
        #expect(configuration.integer(.concurrency) == 8)
        #expect(configuration.string(.controlExchange) == "berth")
        #expect(configuration.list(.notificationTopics) == ["notifications"])
        #expect(configuration.string(.host) == nil)
        #expect(configuration[.concurrency]?.source == .defaultValue)
        #expect(configuration.transportURLSource == .text("rabbit://guest:guest@127.0.0.1:5672/"))
    }

    @Test func commandLineBeatsEnvironmentBeatsFileBeatsDefault() throws {
        let files = [try file("[berth]\nconcurrency = 2\ngrace_period = 5\nmax_attempts = 7\n")]
        let environment = ["BERTH_CONCURRENCY": "3", "BERTH_GRACE_PERIOD": "6", "BERTH_BIN": "/ignored"]
        let configuration = try WorkerConfiguration(
            files: files, environment: environment, commandLine: [.concurrency: .text("4")])
        #expect(configuration.integer(.concurrency) == 4)
        #expect(configuration[.concurrency]?.source == .commandLine("concurrency"))
        #expect(configuration.number(.gracePeriod) == 6)
        #expect(configuration[.gracePeriod]?.source == .environment("BERTH_GRACE_PERIOD"))
        #expect(configuration.integer(.maxAttempts) == 7)
        #expect(configuration[.maxAttempts]?.source == .file(path: "berth.conf", line: 4))
        #expect(configuration.integer(.maxHandOffs) == 16)
    }

    @Test func laterFilesAndLaterLinesWin() throws {
        let configuration = try WorkerConfiguration(files: [
            try file("[berth]\nconcurrency = 2\nconcurrency = 5\ntopic = a\n", path: "one.conf"),
            try file("[berth]\ntopic = b\n", path: "two.conf"),
        ])
        #expect(configuration.integer(.concurrency) == 5)
        #expect(configuration.string(.topic) == "b")
        #expect(configuration[.topic]?.source == .file(path: "two.conf", line: 2))
    }

    @Test func anEmptyEnvironmentVariableIsUnset() throws {
        let configuration = try WorkerConfiguration(
            files: [try file("[DEFAULT]\nhost = from-file\n")], environment: ["BERTH_HOST": ""])
        #expect(configuration.string(.host) == "from-file")
    }

    @Test(arguments: [
        ("true", true), ("TRUE", true), ("Yes", true), ("on", true), ("1", true),
        ("false", false), ("No", false), ("OFF", false), ("0", false),
    ])
    func booleansAsOsloReadsThem(text: String, expected: Bool) throws {
        let configuration = try WorkerConfiguration(files: [try file("[oslo_messaging_rabbit]\nssl = \(text)\n")])
        #expect(configuration.boolean(.ssl) == expected)
    }

    @Test func listsAreCommaSeparatedAndTrimmed() throws {
        let configuration = try WorkerConfiguration(files: [
            try file("[oslo_messaging_notifications]\ntopics = a, b ,c\n[baremetal]\nnodes =\n")
        ])
        #expect(configuration.list(.notificationTopics) == ["a", "b", "c"])
        #expect(configuration.list(.nodes) == [])
        let flags = try WorkerConfiguration(commandLine: [.nodes: .list(["n1=/dev/sdb", "n2=/dev/sdc:4096"])])
        #expect(flags.list(.nodes) == ["n1=/dev/sdb", "n2=/dev/sdc:4096"])
    }

    @Test func sectionsOtherThanDefaultIgnoreCase() throws {
        let configuration = try WorkerConfiguration(files: [try file("[LibVirt]\nvirt_type = kvm\n")])
        #expect(configuration.string(.virtType) == "kvm")
        #expect(throws: ConfigError.self) { try WorkerConfiguration(files: [try file("[default]\nhost = a\n")]) }
    }

    @Test(arguments: [
        (
            "[nova]\nhost = a\n",
            "berth.conf:1: unknown section [nova]; Berth reads [DEFAULT], [oslo_messaging_rabbit], "
                + "[oslo_messaging_notifications], [libvirt], [berth], [glance], [baremetal]"
        ),
        ("[berth]\n\nconcurency = 4\n", "berth.conf:3: unknown option 'concurency' in [berth]"),
        (
            "[DEFAULT]\nconcurrency = 4\n",
            "berth.conf:2: unknown option 'concurrency' in [DEFAULT]; it belongs in [berth]"
        ),
        (
            "[berth]\nconcurrency = 0\n",
            "berth.conf:2: [berth] concurrency = '0': expected a whole number from 1 to 256"
        ),
        (
            "[berth]\nconcurrency = four\n",
            "berth.conf:2: [berth] concurrency = 'four': expected a whole number from 1 to 256"
        ),
        (
            "[oslo_messaging_rabbit]\nssl = maybe\n",
            "berth.conf:2: [oslo_messaging_rabbit] ssl = 'maybe': expected true or false (also yes/no, on/off, 1/0)"
        ),
        ("[libvirt]\nvirt_type = xen\n", "berth.conf:2: [libvirt] virt_type = 'xen': expected one of kvm, qemu, test"),
        (
            "[berth]\nmetrics_interval = 0.01\n",
            "berth.conf:2: [berth] metrics_interval = '0.01': expected 0 (no poller) or a number of seconds from 0.1 to 3600"
        ),
        (
            "[DEFAULT]\nhost = a b\n",
            "berth.conf:2: [DEFAULT] host = 'a b': expected 1-128 characters of letters, digits, '.', '-', '_', ':'"
        ),
        (
            "[berth]\ndead_letter_queue = amq.x\n",
            "berth.conf:2: [berth] dead_letter_queue = 'amq.x': expected 1-255 bytes, no spaces, not starting with 'amq.'"
        ),
        (
            "[DEFAULT]\ntransport_url = rabbit://u:pa$word@h/\n",
            "berth.conf:2: [DEFAULT] transport_url = (not shown): expected no $ substitution (Berth does not expand "
                + "oslo's $name; write a literal $ as $$)"
        ),
        (
            "[oslo_messaging_notifications]\ntopics = a,,b\n",
            "berth.conf:2: [oslo_messaging_notifications] topics = '': expected a value that is not empty"
        ),
    ])
    func badFilesNameFileLineOptionAndWhatIsExpected(text: String, message: String) {
        #expect(throws: ConfigError(message)) { try WorkerConfiguration(files: [try file(text)]) }
    }

    @Test func badEnvironmentAndFlagsNameThemToo() {
        #expect(throws: ConfigError("BERTH_MAX_ATTEMPTS '0': expected a whole number from 1 to 100")) {
            try WorkerConfiguration(environment: ["BERTH_MAX_ATTEMPTS": "0"])
        }
        #expect(throws: ConfigError("--log-format 'xml': expected one of text, json")) {
            try WorkerConfiguration(commandLine: [.logFormat: .text("xml")])
        }
    }

    @Test func doubledDollarIsALiteralDollar() throws {
        let configuration = try WorkerConfiguration(files: [
            try file("[DEFAULT]\ntransport_url = rabbit://u:pa$$word@h/\n")
        ])
        #expect(configuration.string(.transportURL) == "rabbit://u:pa$word@h/")
    }

    @Test func theTransportURLFromTheHigherSourceWins() throws {
        let both = try WorkerConfiguration(
            files: [try file("[DEFAULT]\ntransport_url = rabbit://a/\n")],
            commandLine: [.transportURLFile: .text("/etc/berth/url")])
        #expect(both.transportURLSource == .file("/etc/berth/url"))
        let tie = try WorkerConfiguration(
            environment: ["BERTH_TRANSPORT_URL": "rabbit://b/", "BERTH_TRANSPORT_URL_FILE": "/x"])
        #expect(tie.transportURLSource == .text("rabbit://b/"))
        let fileOnly = try WorkerConfiguration(files: [try file("[berth]\ntransport_url_file = /y\n")])
        #expect(fileOnly.transportURLSource == .file("/y"))
    }

    @Test func displayMasksPasswordsAndSaysWhereEachValueCameFrom() throws {
        let configuration = try WorkerConfiguration(
            files: [try file("[DEFAULT]\ntransport_url = rabbit://u:secret@h1:5672,v:other@h2/vh?ssl=1\n")],
            commandLine: [.gracePeriod: .text("2.5")])
        let lines = Dictionary(uniqueKeysWithValues: configuration.display.map { ($0.option, ($0.value, $0.source)) })
        #expect(lines[.transportURL]?.0 == "rabbit://u:***@h1:5672,v:***@h2/vh?ssl=1")
        #expect(lines[.transportURL]?.1 == .file(path: "berth.conf", line: 2))
        #expect(lines[.gracePeriod]?.0 == "2.5")
        #expect(lines[.concurrency]?.0 == "8")
        #expect(lines[.host]?.0 == nil)
        #expect(!configuration.display.contains { $0.value?.contains("secret") == true })
    }

    @Test func everyOptionHasOneFileNameAndOneFlag() {
        let names = WorkerOption.allCases.map { "\($0.section).\($0.name)" }
        let flags = WorkerOption.allCases.map(\.flag)
        #expect(Set(names).count == names.count)
        #expect(Set(flags).count == flags.count)
        #expect(WorkerOption.allCases.allSatisfy { WorkerOption.sections.contains($0.section) })
        #expect(WorkerOption.libvirtURI.environmentVariable == "BERTH_LIBVIRT_URI")
        #expect(WorkerOption.transportURL.environmentVariable == "BERTH_TRANSPORT_URL")
    }

    @Test func anOriginNamesTheSourceForLaterChecks() throws {
        let configuration = try WorkerConfiguration(files: [try file("[baremetal]\nnodes = n1=relative\n")])
        #expect(configuration.origin(of: .nodes) == "berth.conf:2: [baremetal] nodes")
        #expect(configuration.origin(of: .concurrency) == "the default of [berth] concurrency")
    }
}
