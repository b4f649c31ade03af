/// Why a TLS connection to the broker was refused on the client's side. None of these is cured by
/// retrying, so a worker that meets one at start stops and says what to change.
public enum TLSFailure: Sendable, Equatable {
    /// The CA bundle named by `cacert=` is missing, unreadable or not PEM.
    case unreadableCABundle
    /// The client certificate or key (`ssl_cert_file=`, `ssl_key_file=`) is missing, unreadable, not PEM or
    /// not a pair.
    case unreadableClientCertificate
    /// The broker's certificate chain does not lead to a CA in the bundle.
    case untrustedCertificate
    /// The certificate verifies but is not for the URL's host.
    case hostNameMismatch
}

extension AMQPError {
    /// The operator's view of a TLS failure: which broker, which file, what to change.
    public static func tls(_ failure: TLSFailure, url: AMQPURL) -> AMQPError {
        let broker = "\(url.host):\(url.port)"
        switch failure {
        case .unreadableCABundle:
            return AMQPError(
                .tls,
                "cannot load the CA bundle '\(url.caCertificatePath ?? "")' named by cacert= in the transport URL: it is missing, unreadable or not PEM"
            )
        case .unreadableClientCertificate:
            return AMQPError(
                .tls,
                "cannot load the client certificate '\(url.clientCertificatePath ?? "")' with its key '\(url.clientKeyPath ?? "")' (ssl_cert_file, ssl_key_file): one is missing, unreadable or not PEM, or the key is not the certificate's"
            )
        case .untrustedCertificate:
            guard let ca = url.caCertificatePath else {
                return AMQPError(
                    .tls,
                    "the TLS certificate of the broker at \(broker) cannot be verified: the transport URL names no CA bundle and librabbitmq does not read the system's; add cacert=/path/to/ca.pem (cacert=/etc/ssl/certs/ca-certificates.crt for a publicly signed broker)"
                )
            }
            return AMQPError(
                .tls,
                "the TLS certificate of the broker at \(broker) is not signed by a CA in '\(ca)' (cacert= in the transport URL); point cacert= at the CA that signed the broker's certificate"
            )
        case .hostNameMismatch:
            return AMQPError(
                .tls,
                "the TLS certificate of the broker at \(broker) is not for host '\(url.host)'; use a host name the certificate lists as a DNS subjectAltName in the transport URL (IP-address subjectAltNames are not matched)"
            )
        }
    }
}
