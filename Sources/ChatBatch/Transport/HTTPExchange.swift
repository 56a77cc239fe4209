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

    init(url: String, headers: [String], body: [UInt8], connectTimeout: Double = 10, timeout: Double = 300) {
        self.url = url
        self.headers = headers
        self.body = body
        self.connectTimeout = connectTimeout
        self.timeout = timeout
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
    }
    var kind: Kind
    /// libcurl's error code and message.
    var curlCode: Int
    var message: String
    var description: String { "\(message) (curl \(curlCode))" }
}
