import BerthAMQP
import Testing

/// oslo's TLS options, in the URL (`?ssl=1`, `?ssl_ca_file=`...) or from `[oslo_messaging_rabbit]`, become the
/// amqps settings librabbitmq is given.
@Suite struct TransportTLSOptionsTests {
    @Test func sslInTheQueryMeansTLSOnTheTLSPort() throws {
        let url = try AMQPURL.parse("rabbit://u:p@broker.example.org/berth?ssl=1&ssl_ca_file=/etc/ca.pem")
        #expect(url.tls && url.port == 5671 && url.caCertificatePath == "/etc/ca.pem")
        #expect(url.description == "amqps://u:***@broker.example.org:5671/berth")
        let off = try AMQPURL.parse("rabbit://u:p@h:5672/?ssl=false")
        #expect(!off.tls && off.port == 5672)
    }

    @Test func theOsloOptionsFillWhatTheURLDoesNotSay() throws {
        let defaults = AMQPURL.Defaults(
            heartbeat: 30, tls: true, caCertificatePath: "/etc/ca.pem", clientCertificatePath: "/etc/c.pem",
            clientKeyPath: "/etc/k.pem")
        let urls = try AMQPURL.parseList("rabbit://u:p@h1,u:p@h2:5999/", defaults: defaults)
        #expect(urls.map(\.port) == [5671, 5999])
        #expect(urls.allSatisfy { $0.tls && $0.heartbeat == 30 && $0.caCertificatePath == "/etc/ca.pem" })
        #expect(urls.allSatisfy { $0.clientCertificatePath == "/etc/c.pem" && $0.clientKeyPath == "/etc/k.pem" })
        // The URL's own options win.
        let own = try AMQPURL.parse("rabbit://u:p@h/?heartbeat=5&ssl=0&cacert=/x.pem", defaults: defaults)
        #expect(own.heartbeat == 5 && !own.tls && own.port == 5672 && own.caCertificatePath == "/x.pem")
    }

    @Test func aClientCertificateNeedsItsKey() {
        #expect(throws: AMQPError.self) { try AMQPURL.parse("amqps://u:p@h/?ssl_cert_file=/c.pem") }
        #expect(throws: AMQPError.self) { try AMQPURL.parse("rabbit://u:p@h/?ssl=maybe") }
    }

    @Test func anUnreadableClientCertificateIsNamed() {
        var url = AMQPURL(host: "h", tls: true)
        url.clientCertificatePath = "/etc/berth/client.pem"
        url.clientKeyPath = "/etc/berth/client.key"
        let message = AMQPError.tls(.unreadableClientCertificate, url: url).message
        #expect(message.contains("/etc/berth/client.pem") && message.contains("ssl_cert_file"))
    }
}
