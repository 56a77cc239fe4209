import ChatBatchCore

/// How every request of a run is sent: the URL, the headers (the key among them), timeouts, trust and proxy, and
/// the redactor that takes the key back out of whatever comes back.
struct RequestCall: Sendable {
    /// The chat URL; the other endpoints' URLs are derived from it (`APIEndpoint.url(chatURL:)`).
    let url: String
    private let urls: [APIEndpoint: String]
    let headers: [String]
    let connectTimeout: Double
    let timeout: Double
    let maxResponseBytes: Int
    let connection: ConnectionOptions
    let redactor: Redactor
    /// The model's name at this provider, written into each body that names another (nil: bodies go as built).
    let model: String?

    /// `authorization` is the provider's header line for the key (nil: no key); `extra` the job's own headers,
    /// already checked to be one line each.
    init(
        url: String, authorization: String?, key: String?, extra: [String: String], connectTimeout: Double,
        timeout: Double,
        maxResponseBytes: Int = EndpointSettings.defaultMaxResponseBytes, connection: ConnectionOptions,
        model: String? = nil,
        redactor: Redactor? = nil
    ) {
        var h = [
            "Content-Type: application/json", "Accept: application/json, text/event-stream",
            "User-Agent: chatbatch/\(ChatBatchVersion.current)"
        ]
        if let authorization { h.append(authorization) }
        for (name, value) in extra.sorted(by: { $0.key < $1.key }) { h.append("\(name): \(value)") }
        self.url = url
        urls = Dictionary(uniqueKeysWithValues: APIEndpoint.allCases.map { ($0, $0.url(chatURL: url)) })
        headers = h
        self.connectTimeout = connectTimeout
        self.timeout = timeout
        self.maxResponseBytes = maxResponseBytes
        self.connection = connection
        self.redactor = redactor ?? Redactor(secrets: [key].compactMap { $0 })
        self.model = model
    }

    /// The HTTP request for one prompt: its body, and its custom_id as `X-Client-Request-Id` (a custom_id with a
    /// control character never gets this far: the request builder refuses the line).
    func request(for prepared: PreparedRequest) -> HTTPRequest {
        var body = prepared.body
        if let model, model != prepared.model, prepared.endpoint.generates, var json = try? JSON.parse(body) {
            // Another provider's name for the same model: the logical body (what the checkpoint and cache key on)
            // stays as it is; the copy sent here names the model as this provider does.
            json["model"] = .string(model)
            body = []
            json.write(to: &body)
        }
        var r = HTTPRequest(
            url: urls[prepared.endpoint] ?? url, headers: headers + ["X-Client-Request-Id: \(prepared.customID)"],
            body: body,
            connectTimeout: connectTimeout, timeout: timeout)
        r.connection = connection
        r.maxResponseBytes = maxResponseBytes
        return r
    }
}
