/// How every request of a run is sent: the URL, the headers (the key among them), timeouts, trust and proxy, and
/// the redactor that takes the key back out of whatever comes back.
struct RequestCall: Sendable {
    let url: String
    let headers: [String]
    let connectTimeout: Double
    let timeout: Double
    let connection: ConnectionOptions
    let redactor: Redactor

    /// `authorization` is the provider's header line for the key (nil: no key); `extra` the job's own headers,
    /// already checked to be one line each.
    init(
        url: String, authorization: String?, key: String?, extra: [String: String], connectTimeout: Double, timeout: Double,
        connection: ConnectionOptions
    ) {
        var h = ["Content-Type: application/json", "Accept: application/json, text/event-stream", "User-Agent: chatbatch/\(ChatBatchVersion.current)"]
        if let authorization { h.append(authorization) }
        for (name, value) in extra.sorted(by: { $0.key < $1.key }) { h.append("\(name): \(value)") }
        self.url = url
        headers = h
        self.connectTimeout = connectTimeout
        self.timeout = timeout
        self.connection = connection
        redactor = Redactor(secrets: [key].compactMap { $0 })
    }

    /// The HTTP request for one prompt: its body, and its custom_id as `X-Client-Request-Id` (a custom_id with a
    /// control character never gets this far: the request builder refuses the line).
    func request(for prepared: PreparedRequest) -> HTTPRequest {
        var r = HTTPRequest(
            url: url, headers: headers + ["X-Client-Request-Id: \(prepared.customID)"], body: prepared.body,
            connectTimeout: connectTimeout, timeout: timeout)
        r.connection = connection
        return r
    }
}
