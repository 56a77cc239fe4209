/// One HTTP request to send: a POST with a body, or a GET.
struct HTTPRequest: Sendable {
    var url: String
    /// `POST` (the default) or `GET`.
    var method = "POST"
    /// Header lines, `Name: value`.
    var headers: [String]
    var body: [UInt8]
    /// Seconds allowed to connect, and for the whole exchange.
    var connectTimeout: Double
    var timeout: Double
    /// Trust and proxy for the connection.
    var connection = ConnectionOptions()
    /// The most bytes an answer may have once decoded (gzip included); past it the transfer stops as `tooLarge`.
    var maxResponseBytes = EndpointSettings.defaultMaxResponseBytes

    init(url: String, headers: [String], body: [UInt8], connectTimeout: Double = 10, timeout: Double = 300) {
        self.url = url
        self.headers = headers
        self.body = body
        self.connectTimeout = connectTimeout
        self.timeout = timeout
    }
}

/// Where a run's TLS trust and proxy come from, decided once for every request.
struct ConnectionOptions: Sendable, Equatable {
    /// A CA bundle (`CURLOPT_CAINFO`) and a directory of hashed CA certificates (`CURLOPT_CAPATH`).
    var caInfo: String? = nil
    var caPath: String? = nil
    /// An explicit proxy URL; without one libcurl follows `HTTPS_PROXY`/`https_proxy`/`NO_PROXY`.
    var proxy: String? = nil

    /// `--ca-cert` adds a bundle to the system's CAs (kept through their hashed directory); without it,
    /// `CURL_CA_BUNDLE`, then `SSL_CERT_FILE` and `SSL_CERT_DIR`, are honoured as the curl tool does.
    static func resolve(caCert: String?, proxy: String?, environment: [String: String]) -> ConnectionOptions {
        let environment = environment.filter { !$0.value.isEmpty }  // an empty variable counts as unset
        var o = ConnectionOptions(proxy: proxy)
        if let caCert {
            o.caInfo = caCert
            o.caPath = environment["SSL_CERT_DIR"] ?? "/etc/ssl/certs"
        } else {
            o.caInfo = environment["CURL_CA_BUNDLE"] ?? environment["SSL_CERT_FILE"]
            o.caPath = environment["SSL_CERT_DIR"]
        }
        return o
    }
}

/// What came back: a status with headers and body, or a transport failure.
struct HTTPResponse: Sendable {
    /// HTTP status, or 0 when no response arrived.
    var status: Int
    /// Response headers, names in lower case (the last value wins).
    var headers: [String: String]
    var body: [UInt8]
    var failure: TransportFailure?
    /// Seconds from start to the first response byte, and to the end.
    var firstByteSeconds: Double
    var totalSeconds: Double
}

/// A request that got no complete HTTP answer, and whether it may have reached the server.
struct TransportFailure: Error, Sendable, CustomStringConvertible {
    /// Whether the request may have reached the server.
    enum Kind: String, Sendable {
        /// Nothing was sent (name lookup or connect failed): safe to send again.
        case notSent = "not_sent"
        /// The request was (at least partly) sent, then the connection broke or timed out: it may have been billed.
        case sentNoAnswer = "sent_no_answer"
        /// Stopped by chatbatch (shutdown) while it may have been on the wire.
        case cancelled
        /// Never handed to libcurl: the run was stopping, or the checkpoint could not record the send.
        case withheld
        /// The server's TLS certificate was refused before the request went out: nothing was sent, and every
        /// other request would be refused the same way.
        case tlsRefused = "tls_refused"
        /// The answer passed the size cap (`max_response_bytes`): the server had the request, so it may be billed;
        /// never asked again (another answer that size would be read and thrown away again).
        case tooLarge = "too_large"
        /// The proxy refused to open a tunnel (its answer to CONNECT was not 2xx): nothing reached the API, and every
        /// other request would be refused the same way.
        case proxyRefused = "proxy_refused"
    }
    var kind: Kind
    /// libcurl's error code and message.
    var curlCode: Int
    var message: String
    var description: String { "\(message) (curl \(curlCode))" }
}
