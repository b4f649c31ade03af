import BerthCore
import BerthDigest
import Foundation
import Testing

#if canImport(FoundationXML)
    import FoundationXML
#endif

@Suite("XML writer and domain XML")
struct DomainXMLTests {
    @Test(arguments: [
        ("a & b", "a &amp; b"), ("<x>", "&lt;x&gt;"), ("say \"hi\" 'there'", "say &quot;hi&quot; &apos;there&apos;"),
        ("]]>", "]]&gt;"), ("a\u{0}b\u{8}c", "a\u{FFFD}b\u{FFFD}c"), ("cr\r", "cr&#13;"), ("\u{FFFE}", "\u{FFFD}"),
        ("line\nfeed", "line\nfeed"),
    ])
    func textEscaping(input: String, expected: String) {
        #expect(XMLWriter.escapeText(input) == expected)
    }

    @Test(arguments: [("tab\tnl\ncr\r", "tab&#9;nl&#10;cr&#13;"), ("a'b\"c", "a&apos;b&quot;c")])
    func attributeEscaping(input: String, expected: String) {
        #expect(XMLWriter.escapeAttribute(input) == expected)
    }

    @Test func writerNestsAndSelfCloses() {
        var writer = XMLWriter()
        writer.element("a", [("x", "1"), ("skipped", nil)]) { a in
            a.element("b", text: "t<")
            a.element("c")
        }
        #expect(writer.result == "<a x='1'>\n  <b>t&lt;</b>\n  <c/>\n</a>\n")
    }

    static var schemaToolsInstalled: Bool {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        let hasXMLLint = path.split(separator: ":").contains {
            FileManager.default.isExecutableFile(atPath: "\($0)/xmllint")
        }
        return hasXMLLint && FileManager.default.isExecutableFile(atPath: "/usr/bin/virt-xml-validate")
    }

    static let hostile = "evil <name> & 'quotes' \"double\" ]]> </berth:name><berth:image_id>other"

    static func spec(
        name: String = "web-1", boot: DomainSpec.Boot = .disk, clock: DomainSpec.Clock = .utc,
        osType: VMMode = .hvm, disks: [DiskSpec]? = nil, network: DomainSpec.Network = .none,
        requestID: String? = "req-1"
    ) -> DomainSpec {
        DomainSpec(
            uuid: sampleUUID, vcpus: 2, memoryMB: 1024, domainType: .qemu, osType: osType, architecture: "x86_64",
            machineType: "q35", boot: boot,
            disks: disks ?? [
                DiskSpec(source: .volume(pool: "berth", name: "\(sampleUUID).qcow2"), format: .qcow2, bus: .virtio)
            ],
            network: network, clock: clock, consoleLogPath: "/var/log/berth/\(sampleUUID).log",
            metadata: DomainMetadata(
                instanceName: name, imageID: "img-1", flavor: sampleFlavor, requestID: requestID,
                projectID: "proj", bootVariant: "variant 2 (kvm/hvm/x86_64)"))
    }

    /// The XML the worker writes: the spec with its fingerprint set, as the compute service sets it.
    static func stored(_ spec: DomainSpec) -> String {
        var spec = spec
        spec.metadata.fingerprint = SHA256Digest.fingerprint(spec.canonicalText)
        return DomainXML.render(spec)
    }

    /// Parses with XMLParser; true when well-formed.
    static func isWellFormed(_ xml: String) -> Bool {
        XMLParser(data: Data(xml.utf8)).parse()
    }

    @Test func rendersDiskBootDomain() throws {
        let spec = Self.spec()
        try spec.validate()
        let xml = DomainXML.render(spec)
        #expect(Self.isWellFormed(xml))
        for fragment in [
            "<domain type='qemu'>", "<name>berth-\(sampleUUID)</name>", "<uuid>\(sampleUUID)</uuid>",
            "<memory unit='MiB'>1024</memory>", "<vcpu placement='static'>2</vcpu>",
            "<type arch='x86_64' machine='q35'>hvm</type>", "<boot dev='hd'/>", "<clock offset='utc'/>",
            "<disk type='volume' device='disk'>", "<driver name='qemu' type='qcow2'/>",
            "<source pool='berth' volume='\(sampleUUID).qcow2'/>", "<target dev='vda' bus='virtio'/>",
            "<serial type='file'>", "<source path='/var/log/berth/\(sampleUUID).log'/>",
            "<berth:instance xmlns:berth='https://berth.example/xmlns/instance/1.0'>",
            "<berth:flavor name='m1.small' vcpus='1' memory_mb='512' root_gb='1'/>",
        ] {
            #expect(xml.contains(fragment), "missing \(fragment) in\n\(xml)")
        }
        #expect(!xml.contains("<interface"))
    }

    @Test func rendersDirectKernelBootTimezoneAndNetwork() throws {
        let spec = Self.spec(
            boot: .kernel(kernelPath: "/var/lib/berth/k", initrdPath: "/var/lib/berth/r", cmdline: "root=/dev/vda ro"),
            clock: .timezone(try Timezone(validating: "Europe/Paris")),
            network: .network(name: "default", model: .e1000))
        try spec.validate()
        let xml = DomainXML.render(spec)
        #expect(Self.isWellFormed(xml))
        for fragment in [
            "<kernel>/var/lib/berth/k</kernel>", "<initrd>/var/lib/berth/r</initrd>",
            "<cmdline>root=/dev/vda ro</cmdline>",
            "<clock offset='timezone' timezone='Europe/Paris'/>", "<source network='default'/>",
            "<model type='e1000'/>",
            "<berth:kernel_cmdline>root=/dev/vda ro</berth:kernel_cmdline>",
        ] {
            #expect(xml.contains(fragment), "missing \(fragment) in\n\(xml)")
        }
        #expect(!xml.contains("<boot dev"))
        #expect(try DomainMetadata.parse(xml: xml)?.kernelCmdline == "root=/dev/vda ro")
    }

    @Test func xenPVConsoleAndNoBIOSBoot() {
        let xml = DomainXML.render(
            Self.spec(osType: .xen, disks: [DiskSpec(source: .file(path: "/d"), format: .raw, bus: .xen)]))
        #expect(xml.contains("<target type='xen' port='0'/>"))
        #expect(!xml.contains("<serial"))
        #expect(!xml.contains("<boot dev"))
        #expect(!xml.contains("<features>"))
        #expect(xml.contains("<target dev='xvda' bus='xen'/>"))
        #expect(xml.contains("<bootloader>pygrub</bootloader>"))
        #expect(xml.contains("<type arch='x86_64'>xen</type>"))
    }

    @Test func diskTargetsFollowBusAndOrder() {
        let disks = [
            DiskSpec(source: .file(path: "/a"), format: .qcow2, bus: .virtio),
            DiskSpec(source: .block(path: "/dev/sdz"), format: .raw, bus: .scsi),
            DiskSpec(source: .file(path: "/c"), format: .raw, bus: .virtio),
            DiskSpec(source: .file(path: "/config.iso"), format: .raw, bus: .sata, device: .cdrom),
            DiskSpec(source: .file(path: "/e"), format: .raw, bus: .ide),
        ]
        let spec = Self.spec(disks: disks)
        #expect(spec.diskTargets == ["vda", "sda", "vdb", "sdb", "hda"])
        let xml = DomainXML.render(spec)
        #expect(xml.contains("<source dev='/dev/sdz'/>"))
        #expect(xml.contains("<disk type='file' device='cdrom'>"))
        #expect(xml.contains("<readonly/>"))
        let many = Self.spec(disks: Array(repeating: disks[0], count: 28))
        #expect(many.diskTargets.suffix(3) == ["vdz", "vdaa", "vdab"])
    }

    @Test(arguments: [hostile, "a]]>b", "<![CDATA[x]]>", "&amp; &#x3c; &lt;", "'\"", "ünïcødé 名前 🚀"])
    func metadataRoundTripsThroughXMLParser(value: String) throws {
        var spec = Self.spec(name: value)
        spec.metadata.projectID = nil
        spec.metadata.requestID = value
        spec.metadata.bootVariant = value
        spec.metadata.volumeID = value
        spec.metadata.fingerprint = "sha256:0123abcd"
        try spec.validate()
        let xml = DomainXML.render(spec)
        #expect(Self.isWellFormed(xml))
        let parsed = try #require(try DomainMetadata.parse(xml: xml))
        #expect(parsed == spec.metadata)
        #expect(parsed.projectID == nil)
    }

    @Test func metadataParsesWithAnotherPrefixAndStandalone() throws {
        let xml = """
            <domain type='test'><name>x</name><metadata>
            <other:thing xmlns:other='urn:other'><other:name>not ours</other:name></other:thing>
            <b:instance xmlns:b="https://berth.example/xmlns/instance/1.0"><b:name>vm &amp; co</b:name>
            <b:image_id>img-9</b:image_id><b:flavor name="tiny" vcpus="1" memory_mb="64" root_gb="0"/>
            <b:future><b:name>nested is ignored</b:name></b:future>
            </b:instance></metadata></domain>
            """
        let parsed = try #require(try DomainMetadata.parse(xml: xml))
        #expect(parsed.instanceName == "vm & co")
        #expect(parsed.imageID == "img-9")
        #expect(parsed.flavor == Flavor(name: "tiny", vcpus: 1, memoryMB: 64, rootGB: 0))
        #expect(parsed.requestID == nil)

        let standalone =
            #"<instance xmlns="https://berth.example/xmlns/instance/1.0"><name>n</name>"#
            + #"<image_id>i</image_id><flavor name="f" vcpus="2" memory_mb="128" root_gb="1"/></instance>"#
        #expect(try DomainMetadata.parse(xml: standalone)?.flavor.vcpus == 2)
    }

    @Test func foreignDomainHasNoMetadataAndBrokenXMLIsAnError() throws {
        #expect(try DomainMetadata.parse(xml: "<domain><name>other</name></domain>") == nil)
        let broken = error { () throws(BerthError) in try DomainMetadata.parse(xml: "<domain><name>") }
        #expect(broken?.kind == .buildFailed)
        let incomplete = #"<instance xmlns="https://berth.example/xmlns/instance/1.0"><name>n</name></instance>"#
        let missing = error { () throws(BerthError) in try DomainMetadata.parse(xml: incomplete) }
        #expect(missing?.message.contains("<image_id>") == true)
    }

    @Test func configDriveIsAReadOnlyDiskRecordedInTheMetadata() throws {
        var spec = Self.spec()
        spec.disks.append(
            DiskSpec(source: .volume(pool: "berth", name: "\(sampleUUID)-config.vfat"), format: .raw, bus: .virtio,
                readOnly: true))
        spec.metadata.configDrive = "vfat"
        let xml = DomainXML.render(spec)
        #expect(xml.contains("volume='\(sampleUUID)-config.vfat'"))
        #expect(xml.contains("<readonly/>"))
        #expect(spec.diskTargets == ["vda", "vdb"])
        let parsed = try #require(try DomainMetadata.parse(xml: xml))
        #expect(parsed.configDrive == "vfat")
        #expect(try #require(try DomainMetadata.parse(xml: DomainXML.render(Self.spec()))).configDrive == nil)
        // Booting the same uuid with and without a drive is a clash, not a repeat.
        #expect(spec.canonicalText != Self.spec().canonicalText)
        #expect(parsed.differences(from: try #require(try DomainMetadata.parse(xml: DomainXML.render(Self.spec()))))
            .contains(#"config_drive: "vfat" vs none"#))
    }

    @Test func canonicalTextIgnoresRequestIDButNotSpec() throws {
        let base = Self.spec().canonicalText
        #expect(base == Self.spec(requestID: "req-2").canonicalText)
        #expect(base != Self.spec(clock: .timezone(try Timezone(validating: "Asia/Tokyo"))).canonicalText)
        #expect(base != Self.spec(name: "web-2").canonicalText)
        #expect(base != Self.spec(network: .user(model: .virtio)).canonicalText)
    }

    @Test func differencesExplainAClash() throws {
        let first = try #require(try DomainMetadata.parse(xml: Self.stored(Self.spec())))
        let retry = try #require(try DomainMetadata.parse(xml: Self.stored(Self.spec(requestID: "req-9"))))
        #expect(first.differences(from: retry).isEmpty)
        let otherClock = try #require(
            try DomainMetadata.parse(
                xml: Self.stored(Self.spec(clock: .timezone(try Timezone(validating: "Asia/Tokyo"))))))
        #expect(
            first.differences(from: otherClock) == [
                "domain settings (disk bus, NIC model, machine type or timezone) differ"
            ])
        var renamed = first
        renamed.instanceName = "web-2"
        #expect(first.differences(from: renamed) == [#"name: "web-1" vs "web-2""#])
        let error = BerthError.instanceExists(sampleUUID, differences: first.differences(from: renamed))
        #expect(error.className == "InstanceExists")
        #expect(error.message.contains("delete it first"))
    }

    @Test(arguments: [
        ("name\u{1}", "instance name"), ("ok", ""),
    ])
    func validateRefusesControlCharactersInMetadata(name: String, messageContains: String) {
        let failure = error { () throws(BerthError) in try Self.spec(name: name).validate() }
        if messageContains.isEmpty {
            #expect(failure == nil)
        } else {
            #expect(failure?.kind == .invalidRequest)
            #expect(failure?.message.contains(messageContains) == true)
        }
    }

    @Test func validateRefusesBadHostValues() {
        let emptyPool = Self.spec(disks: [DiskSpec(source: .volume(pool: "", name: "v"), format: .qcow2, bus: .virtio)])
        #expect(error { () throws(BerthError) in try emptyPool.validate() }?.kind == .buildFailed)
        var badCmdline = Self.spec(boot: .kernel(kernelPath: "/k", initrdPath: nil, cmdline: "a\nb"))
        #expect(error { () throws(BerthError) in try badCmdline.validate() }?.kind == .invalidImage)
        badCmdline.vcpus = 0
        #expect(error { () throws(BerthError) in try badCmdline.validate() }?.kind == .invalidRequest)
    }

    /// libvirt's own schema check, when the tool is installed: proves the XML is a domain libvirt accepts, not just
    /// well-formed XML.
    @Test(
        .enabled(
            if: schemaToolsInstalled, "virt-xml-validate (libvirt-clients) or xmllint (libxml2-utils) is not installed")
    )
    func libvirtSchemaAcceptsRenderedDomains() throws {
        let specs = [
            Self.spec(name: Self.hostile),
            Self.spec(
                boot: .kernel(kernelPath: "/k", initrdPath: nil, cmdline: "root=/dev/vda"),
                clock: .timezone(try Timezone(validating: "Europe/Paris")), network: .user(model: .virtio)),
            Self.spec(osType: .xen, disks: [DiskSpec(source: .block(path: "/dev/vg/x"), format: .raw, bus: .xen)]),
            Self.spec(disks: [
                DiskSpec(source: .file(path: "/a.qcow2"), format: .qcow2, bus: .sata),
                DiskSpec(source: .file(path: "/c.iso"), format: .raw, bus: .ide, device: .cdrom),
            ]),
        ]
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("berth-core-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        for (index, spec) in specs.enumerated() {
            let file = directory.appendingPathComponent("domain\(index).xml")
            try DomainXML.render(spec).write(to: file, atomically: true, encoding: .utf8)
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/virt-xml-validate")
            process.arguments = [file.path, "domain"]
            let output = Pipe()
            process.standardOutput = output
            process.standardError = output
            try process.run()
            let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            #expect(process.terminationStatus == 0, "domain \(index): \(text)")
        }
    }
}
