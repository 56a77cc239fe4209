/// The providers chatbatch knows by name; each has one profile type that holds all of its facts.
public enum ProviderKind: String, NamedChoice, Codable {
    case tera
    case tir
    case openAICompatible = "openai-compatible"

    /// This provider's facts.
    public var profile: any ProviderProfile {
        switch self {
        case .tera: return TeraProfile()
        case .tir: return TIRProfile()
        case .openAICompatible: return OpenAICompatibleProfile()
        }
    }

    /// The provider a job uses when it names none.
    public static let `default` = ProviderKind.tera
}

/// Everything chatbatch knows about one provider: the URL shape, the auth header, the request-id header, its
/// model's name there, where the key comes from, prices and limits. Adding a provider is adding a profile.
public protocol ProviderProfile: Sendable {
    var kind: ProviderKind { get }
    /// The base URL when the job gives none (nil: the job must give one).
    var defaultBaseURL: String? { get }
    /// The model for lines that name none (and, for TIR, the model in the URL).
    var defaultModel: String? { get }
    /// The environment variable the key is read from by default.
    var keyVariable: String { get }
    /// A key is required (an openai-compatible server may need none).
    var requiresKey: Bool { get }
    /// Prices in USD per million tokens (0 where the provider publishes none: set `prices` in the job).
    var prices: Prices { get }
    /// The provider's page gives prices (a run without `prices:` shows its cost as unknown, never as $0, otherwise).
    var publishesPrices: Bool { get }
    var limits: ModelLimits { get }
    /// The response header carrying the provider's id for a request, if it has its own.
    var requestIDHeader: String? { get }
    /// The chat-completions URL for a base URL (already without trailing slashes), project id and model.
    func chatURL(base: String, projectID: String?, model: String?) throws(ChatBatchError) -> String
}

extension ProviderProfile {
    public var requestIDHeader: String? { nil }

    /// The header that carries the key.
    public func authorization(_ key: String) -> String { "Authorization: Bearer \(key)" }

    /// The chat-completions URL: a base that already ends in `/chat/completions` (or holds one) is used as it is.
    public func endpoint(baseURL: String?, projectID: String?, model: String?) throws(ChatBatchError) -> String {
        guard var base = baseURL ?? defaultBaseURL else {
            throw ChatBatchError(
                .missingBaseURL,
                "provider \(kind.rawValue) needs a base URL: set base_url in the job or pass --base-url")
        }
        try EndpointURL.check(base, what: "the base URL")
        // The path is joined before any query the base URL carries.
        var query = ""
        if let q = base.firstIndex(of: "?") {
            query = String(base[q...])
            base = String(base[..<q])
        }
        while base.hasSuffix("/") { base.removeLast() }
        if base.contains("/chat/completions") { return base + query }
        let url = try chatURL(base: base, projectID: projectID, model: model)
        guard !query.isEmpty else { return url }
        return url.contains("?") ? url + "&" + query.dropFirst() : url + query
    }
}

/// The Tera gateway: `https://api.tera.gw/v1`, Bearer `sk-tera-…`, `X-Tera-Request-ID`, $0.09 in / $0.36 out.
public struct TeraProfile: ProviderProfile {
    public var kind: ProviderKind { .tera }
    public var defaultBaseURL: String? { "https://api.tera.gw/v1" }
    public var defaultModel: String? { "openai/gpt-oss-120b" }
    public var keyVariable: String { "TERA_API_KEY" }
    public var requiresKey: Bool { true }
    public var prices: Prices { Prices(inputPerMillion: 0.09, outputPerMillion: 0.36) }
    public var limits: ModelLimits { .gptOSS120b }
    public var requestIDHeader: String? { "x-tera-request-id" }
    public func chatURL(base: String, projectID: String?, model: String?) -> String { base + "/chat/completions" }
}

/// E2E Networks TIR: `/project/p-{id}/genai/{model}/v1/chat/completions?project_id={id}`, model `gpt_oss_120b`.
/// Its page lists no prices: cost shows as "price unknown", and `max_cost` is refused, until the job sets `prices`.
public struct TIRProfile: ProviderProfile {
    public var kind: ProviderKind { .tir }
    public var defaultBaseURL: String? { "https://infer.e2enetworks.net" }
    public var defaultModel: String? { "gpt_oss_120b" }
    public var keyVariable: String { "TIR_API_KEY" }
    public var requiresKey: Bool { true }
    public var prices: Prices { Prices(inputPerMillion: 0, outputPerMillion: 0) }
    public var limits: ModelLimits { .gptOSS120b }

    public func chatURL(base: String, projectID: String?, model: String?) throws(ChatBatchError) -> String {
        guard let id = projectID, !id.isEmpty else {
            throw ChatBatchError(
                .missingProjectID, "provider tir needs a project id: set project_id in the job or pass --project-id")
        }
        guard id.allSatisfy({ $0.isNumber }) else {
            throw ChatBatchError(.badProjectID, "project id '\(id)' must be a number (the p-{id} in your TIR URL)")
        }
        let slug = model ?? defaultModel!
        guard slug.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" || $0 == "-" || $0 == "." }) else {
            throw ChatBatchError(
                .badProjectID, "TIR model '\(slug)' cannot be part of a URL path (letters, digits, _ - . only)")
        }
        return "\(base)/project/p-\(id)/genai/\(slug)/v1/chat/completions?project_id=\(id)"
    }
}

/// Any OpenAI-compatible server (vLLM, llama.cpp, LiteLLM, OpenAI): the job gives the base URL; a key is optional.
public struct OpenAICompatibleProfile: ProviderProfile {
    public var kind: ProviderKind { .openAICompatible }
    public var defaultBaseURL: String? { nil }
    public var defaultModel: String? { nil }
    public var keyVariable: String { "OPENAI_API_KEY" }
    public var requiresKey: Bool { false }
    public var prices: Prices { Prices(inputPerMillion: 0, outputPerMillion: 0) }
    public var limits: ModelLimits { .gptOSS120b }
    public func chatURL(base: String, projectID: String?, model: String?) -> String { base + "/chat/completions" }
}

extension ProviderProfile {
    public var publishesPrices: Bool { prices.inputPerMillion > 0 || prices.outputPerMillion > 0 }
}
