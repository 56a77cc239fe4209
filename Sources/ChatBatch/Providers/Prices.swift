/// Prices in US dollars per million tokens; reasoning tokens are billed as output. Embeddings have a price of their
/// own (input tokens only), unknown until a profile or the job gives it.
public struct Prices: Sendable, Equatable, Codable {
    public var inputPerMillion: Double
    public var outputPerMillion: Double
    /// USD per million input tokens of `/v1/embeddings` (nil: unknown; such lines are counted at $0 and said so).
    public var embeddingsPerMillion: Double?
    public init(inputPerMillion: Double, outputPerMillion: Double, embeddingsPerMillion: Double? = nil) {
        self.inputPerMillion = inputPerMillion
        self.outputPerMillion = outputPerMillion
        self.embeddingsPerMillion = embeddingsPerMillion
    }
    public func cost(prompt: Int, completion: Int) -> Double {
        (Double(prompt) * inputPerMillion + Double(completion) * outputPerMillion) / 1_000_000
    }
}

/// A model's limits: the most tokens it writes, and the most it reads and writes together.
public struct ModelLimits: Sendable, Equatable, Codable {
    public var maxOutputTokens: Int
    public var contextTokens: Int
    public init(maxOutputTokens: Int, contextTokens: Int) {
        self.maxOutputTokens = maxOutputTokens
        self.contextTokens = contextTokens
    }

    /// gpt-oss-120b, as both providers' pages give it.
    static let gptOSS120b = ModelLimits(maxOutputTokens: 4096, contextTokens: 131_072)
}
