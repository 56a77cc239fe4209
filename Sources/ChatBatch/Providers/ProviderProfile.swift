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

    /// Every profile's request-id headers, in the order of the cases: an answer's id is read from the first one
    /// present (after the run's own profile's), so an id survives a gateway in front of another provider. The
    /// transport keeps these response headers and skips the others.
    public static let requestIDHeaders: [String] = {
        var names: [String] = []
        for kind in allCases {
            for name in kind.profile.requestIDHeaders where !names.contains(name) { names.append(name) }
        }
        return names
    }()
}

/// Everything chatbatch knows about one provider: the URL shape, the auth header, the response headers it reads
/// (the request id), its model's name there, where the key comes from, prices and limits. One file per profile;
/// adding a provider is adding a profile file and its case in `ProviderKind`.
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
    /// The response headers carrying the provider's id for a request, its own first (none: the common ones).
    var requestIDHeaders: [String] { get }
    /// The chat-completions URL for a base URL (already without trailing slashes), project id and model.
    func chatURL(base: String, projectID: String?, model: String?) throws(ChatBatchError) -> String
}

extension ProviderProfile {
    public var requestIDHeaders: [String] { [] }

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

extension ProviderProfile {
    public var publishesPrices: Bool { prices.inputPerMillion > 0 || prices.outputPerMillion > 0 }
}
