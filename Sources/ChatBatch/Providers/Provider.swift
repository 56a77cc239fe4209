/// Prices in US dollars per million tokens; reasoning tokens are billed as output.
public struct Prices: Sendable, Equatable {
    public var inputPerMillion: Double
    public var outputPerMillion: Double
    public init(inputPerMillion: Double, outputPerMillion: Double) {
        self.inputPerMillion = inputPerMillion
        self.outputPerMillion = outputPerMillion
    }
    public func cost(prompt: Int, completion: Int) -> Double {
        (Double(prompt) * inputPerMillion + Double(completion) * outputPerMillion) / 1_000_000
    }
}

/// A model's limits: the most tokens it writes, and the most it reads and writes together.
public struct ModelLimits: Sendable, Equatable {
    public var maxOutputTokens: Int
    public var contextTokens: Int
    public init(maxOutputTokens: Int, contextTokens: Int) {
        self.maxOutputTokens = maxOutputTokens
        self.contextTokens = contextTokens
    }
}

/// A provider chatbatch knows: where it lives, which model it serves, where the key comes from, what it costs.
public struct Provider: Sendable {
    /// The providers chatbatch knows by name.
    public enum Kind: String, Sendable, CaseIterable {
        case tera
        case tir
        case openAICompatible = "openai-compatible"
    }

    public var kind: Kind
    public var defaultBaseURL: String?
    public var defaultModel: String?
    public var keyEnvironmentVariable: String
    /// A key is required (an openai-compatible server may need none).
    public var requiresKey: Bool
    public var prices: Prices
    public var limits: ModelLimits
    /// The response header carrying the provider's id for a request (quoted in support emails), if it has its own.
    public var requestIDHeader: String? = nil

    public static func named(_ kind: Kind) -> Provider {
        let gptOSS = ModelLimits(maxOutputTokens: 4096, contextTokens: 131_072)
        switch kind {
        case .tera:
            return Provider(kind: .tera, defaultBaseURL: "https://api.tera.gw/v1", defaultModel: "openai/gpt-oss-120b",
                            keyEnvironmentVariable: "TERA_API_KEY", requiresKey: true,
                            prices: Prices(inputPerMillion: 0.09, outputPerMillion: 0.36), limits: gptOSS, requestIDHeader: "x-tera-request-id")
        case .tir:
            // The TIR page lists no prices: cost shows 0 until the job file sets `prices`.
            return Provider(kind: .tir, defaultBaseURL: "https://infer.e2enetworks.net", defaultModel: "gpt_oss_120b",
                            keyEnvironmentVariable: "TIR_API_KEY", requiresKey: true,
                            prices: Prices(inputPerMillion: 0, outputPerMillion: 0), limits: gptOSS)
        case .openAICompatible:
            return Provider(kind: .openAICompatible, defaultBaseURL: nil, defaultModel: nil,
                            keyEnvironmentVariable: "OPENAI_API_KEY", requiresKey: false,
                            prices: Prices(inputPerMillion: 0, outputPerMillion: 0), limits: gptOSS)
        }
    }

    /// The chat-completions URL for a base URL (and, for TIR, a project id).
    ///
    /// A base that already ends in `/chat/completions` (or holds a query) is used as it is.
    public func endpoint(baseURL: String?, projectID: String?) throws(ChatBatchError) -> String {
        guard var base = baseURL ?? defaultBaseURL else {
            throw ChatBatchError(.missingBaseURL, "provider \(kind.rawValue) needs a base URL: set base_url in the job or pass --base-url")
        }
        while base.hasSuffix("/") { base.removeLast() }
        if base.contains("/chat/completions") { return base }
        switch kind {
        case .tir:
            guard let id = projectID, !id.isEmpty else {
                throw ChatBatchError(.missingProjectID, "provider tir needs a project id: set project_id in the job or pass --project-id")
            }
            guard id.allSatisfy({ $0.isNumber }) else {
                throw ChatBatchError(.badProjectID, "project id '\(id)' must be a number (the p-{id} in your TIR URL)")
            }
            return "\(base)/project/p-\(id)/genai/gpt_oss_120b/v1/chat/completions?project_id=\(id)"
        case .tera, .openAICompatible:
            return base + "/chat/completions"
        }
    }
}
