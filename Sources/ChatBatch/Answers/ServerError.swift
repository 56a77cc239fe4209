import ChatBatchCore

/// The server's error, read from `{"error":{"message","type","code"}}`; `code` may be a string (OpenAI) or an
/// integer (vLLM, llama.cpp), and LiteLLM sends `"type": "None"`.
struct ServerError {
    var message: String
    var type: String?
    var code: String?
    /// The status the answer came with.
    var status: Int

    init(status: Int, body: [UInt8]) {
        self.status = status
        let json = try? JSON.parse(body)
        let error = json?["error"]
        message =
            error?["message"]?.stringValue ?? error?.stringValue ?? json?["message"]?.stringValue ?? json?["detail"]?
            .stringValue
            ?? (body.isEmpty ? "HTTP \(status) with an empty body" : "HTTP \(status): " + Self.excerpt(body, 300))
        type = error?["type"]?.stringValue ?? json?["type"]?.stringValue
        code = error?["code"]?.stringValue ?? error?["code"]?.intValue.map(String.init)
    }

    /// The start of a body as text (invalid UTF-8 replaced), for messages.
    static func excerpt(_ body: [UInt8], _ limit: Int) -> String {
        String(decoding: body.prefix(limit), as: UTF8.self) + (body.count > limit ? "…" : "")
    }

    /// A word that identifies an error, not a placeholder (LiteLLM sends "None") or a bare number.
    static func meaningful(_ word: String?) -> String? {
        guard let w = word?.trimmingCharacters(in: .whitespaces), !w.isEmpty,
            !["none", "null", "nil", "error"].contains(w.lowercased()),
            Int(w) == nil
        else { return nil }
        return w
    }

    /// The error's code for outputs and summaries: `error.code` when it names something, else a meaningful
    /// `error.type`, else `http_<status>`.
    var identifier: String { Self.meaningful(code) ?? Self.meaningful(type) ?? "http_\(status)" }

    private var words: [String] { [code, type].compactMap { $0?.lowercased() } }

    /// The key was refused, whatever the status (some proxies answer 400 or 403 for a bad key).
    var isAuthentication: Bool {
        words.contains {
            [
                "authentication_error", "invalid_api_key", "invalid_authentication", "authenticationerror",
                "unauthorized", "incorrect_api_key"
            ].contains($0)
        }
    }

    /// The key is not allowed this model (403 `permission_error`).
    var isPermission: Bool {
        words.contains { $0 == "permission_error" || $0 == "permissiondeniederror" || $0 == "model_not_permitted" }
    }

    /// The answer is about the model (404 `model_not_found`, or vLLM's "The model `x` does not exist").
    var namesModel: Bool {
        if words.contains(where: { $0.contains("model_not_found") }) { return true }
        let m = message.lowercased()
        // LiteLLM answers an unknown model with a 400: "Invalid model name passed in model=…".
        return m.contains("model")
            && (m.contains("does not exist") || m.contains("not found") || m.contains("invalid model name"))
    }
}
