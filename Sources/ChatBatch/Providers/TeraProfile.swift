/// The Tera gateway: `https://api.tera.gw/v1`, Bearer `sk-tera-…`, `X-Tera-Request-ID`, $0.09 in / $0.36 out.
public struct TeraProfile: ProviderProfile {
    public var kind: ProviderKind { .tera }
    public var defaultBaseURL: String? { "https://api.tera.gw/v1" }
    public var defaultModel: String? { "openai/gpt-oss-120b" }
    public var keyVariable: String { "TERA_API_KEY" }
    public var requiresKey: Bool { true }
    public var prices: Prices { Prices(inputPerMillion: 0.09, outputPerMillion: 0.36) }
    public var limits: ModelLimits { .gptOSS120b }
    public var requestIDHeaders: [String] { ["x-tera-request-id"] }
    public func chatURL(base: String, projectID: String?, model: String?) -> String { base + "/chat/completions" }
}
