import BerthConfig
import Testing

@Suite struct INIFileTests {
    @Test func readsWhatOsloConfigReads() throws {
        let text = """
            # a comment
            ; another
            [DEFAULT]
            transport_url = rabbit://u:p@h:5672/
            host: compute-1
            [oslo_messaging_notifications]
            topics = notifications,
              audit
            next = "quoted value"
            tail = 'x' # not a comment
            colon_then_equals: a=b
            equals_then_colon = a:b
            empty =
            """
        let file = try INIFile(path: "berth.conf", text: text)
        let pairs = file.assignments.map { "\($0.section).\($0.key)=\($0.value)@\($0.line)" }
        #expect(
            pairs == [
                "DEFAULT.transport_url=rabbit://u:p@h:5672/@4", "DEFAULT.host=compute-1@5",
                "oslo_messaging_notifications.topics=notifications,\naudit@7",
                "oslo_messaging_notifications.next=quoted value@9",
                "oslo_messaging_notifications.tail='x' # not a comment@10",
                "oslo_messaging_notifications.colon_then_equals=a=b@11",
                "oslo_messaging_notifications.equals_then_colon=a:b@12",
                "oslo_messaging_notifications.empty=@13",
            ])
    }

    @Test func crlfLinesAndABlankLineEndAContinuation() throws {
        let file = try INIFile(path: "f", text: "[berth]\r\nconcurrency = 4\r\n\r\n  \r\nlog_level = debug\r\n")
        #expect(file.assignments.map(\.value) == ["4", "debug"])
        #expect(file.assignments.map(\.line) == [2, 5])
    }

    @Test(arguments: [
        ("[berth\n", "f:1: a section header must end with ]"),
        ("[]\n", "f:1: the section name is empty"),
        ("[berth]\nconcurrency\n", "f:2: expected 'name = value' (no '=' or ':' on the line)"),
        ("[berth]\n = 4\n", "f:2: a continuation line (it starts with a space) follows no option"),
        ("[berth]\n= 4\n", "f:2: the option name before '=' is empty"),
        ("concurrency = 4\n", "f:1: option 'concurrency' comes before any [section]"),
        ("  x\n", "f:1: a continuation line (it starts with a space) follows no option"),
    ])
    func malformedLinesNameTheLine(text: String, message: String) {
        #expect(throws: ConfigError(message)) { try INIFile(path: "f", text: text) }
    }
}
