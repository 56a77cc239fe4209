/// Any OpenAI-compatible server (vLLM, llama.cpp, LiteLLM, OpenAI): the job gives the base URL; a key is optional.
public struct OpenAICompatibleProfile: ProviderProfile {
    public var kind: ProviderKind { .openAICompatible }
    public var defaultBaseURL: String? { nil }
    public var defaultModel: String? { nil }
    public var keyVariable: String { "OPENAI_API_KEY" }
    public var requiresKey: Bool { false }
    public var prices: Prices { Prices(inputPerMillion: 0, outputPerMillion: 0) }
    public var limits: ModelLimits { .gptOSS120b }
    /// OpenAI's own header, and LiteLLM's.
    public var requestIDHeaders: [String] { ["x-request-id", "x-litellm-call-id"] }
    public func chatURL(base: String, projectID: String?, model: String?) -> String { base + "/chat/completions" }
}
