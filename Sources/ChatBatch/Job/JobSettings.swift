import ChatBatchCore
import Foundation

/// Everything a job can set. Every field is optional: a job file fills some, flags override any,
/// and `resolve()` supplies the defaults and checks the result.
public struct JobSettings: Sendable {
    public var input: String?
    public var output: String?
    public var errors: String?
    public var checkpoint: String?
    public var format: OutputFormat?
    public var provider: Provider.Kind?
    public var baseURL: String?
    public var model: String?
    public var projectID: String?
    public var apiKeyEnv: String?
    public var apiKeyFile: String?
    public var headers: [String: String]?
    public var concurrency: Int?
    public var maxAttempts: Int?
    public var timeout: Double?
    public var connectTimeout: Double?
    public var retryBaseDelay: Double?
    public var retryMaxDelay: Double?
    public var grace: Double?
    /// Request defaults merged into every body (a line's own values win).
    public var request: JSONObject?
    public var system: String?
    public var template: String?
    public var idField: String?
    public var prices: Prices?
    public var limits: ModelLimits?
    public var strict: Bool?
    public var force: Bool?
    public var retryFailed: Bool?
    public var stream: Bool?
    public var summaryJSON: String?
    /// Stop sending before the total spent on this checkpoint could pass this many US dollars.
    public var maxCost: Double?
    public var requestsPerMinute: Double?
    public var tokensPerMinute: Double?
    public var adaptiveConcurrency: Bool?
    public var warmup: Bool?
    /// Ask again this many times when a structured answer does not parse or does not fit its schema.
    public var retryInvalid: Int?
    public var dropReasoning: Bool?
    /// A response cache shared across runs (a SQLite file), and how it is used.
    public var cache: String?
    public var cacheMode: CacheMode?
    /// A CA bundle added to the system's, for a private gateway; a proxy URL (else `HTTPS_PROXY` is honoured).
    public var caCert: String?
    public var proxy: String?
    /// Take only the lines of shard `index` of `count` (0-based): those whose custom_id's FNV-1a 64 hash mod `count` is `index`.
    public var shard: Shard?
    /// Send the API key over plain http to a host that is not this machine (refused without it).
    public var allowHTTP: Bool?
    /// Replace an existing output file that this checkpoint did not write.
    public var overwrite: Bool?
    /// The longest one pause of the whole key may last (Retry-After) before the run stops, resumable.
    public var maxWait: Double?
    /// How long the endpoint may stay unreachable (refused connections, failed lookups or handshakes) before
    /// the run stops, resumable.
    public var outageBudget: Double?

    public init() {}

    /// This job with every field `other` sets taken from `other`.
    public func overridden(by other: JobSettings) -> JobSettings {
        var out = self
        func take<T>(_ kp: WritableKeyPath<JobSettings, T?>) { if let v = other[keyPath: kp] { out[keyPath: kp] = v } }
        take(\.input); take(\.output); take(\.errors); take(\.checkpoint); take(\.format); take(\.provider)
        take(\.baseURL); take(\.model); take(\.projectID); take(\.apiKeyEnv); take(\.apiKeyFile); take(\.headers)
        take(\.concurrency); take(\.maxAttempts); take(\.timeout); take(\.connectTimeout); take(\.retryBaseDelay)
        take(\.retryMaxDelay); take(\.grace); take(\.request); take(\.system); take(\.template); take(\.idField)
        take(\.prices); take(\.limits); take(\.strict); take(\.force); take(\.retryFailed); take(\.stream); take(\.summaryJSON)
        take(\.maxCost); take(\.requestsPerMinute); take(\.tokensPerMinute); take(\.adaptiveConcurrency); take(\.warmup)
        take(\.retryInvalid); take(\.dropReasoning); take(\.shard); take(\.cache); take(\.cacheMode); take(\.caCert); take(\.proxy)
        take(\.allowHTTP); take(\.overwrite); take(\.maxWait); take(\.outageBudget)
        return out
    }

    /// Supplies defaults, resolves the provider and endpoint, and checks the values.
    public func resolve() throws(ChatBatchError) -> RunConfiguration {
        guard let input else {
            throw ChatBatchError(.missingInput, "no input: give a JSONL file or a job file with `input:`")
        }
        let provider = Provider.named(self.provider ?? .tera)
        var output = self.output ?? Self.defaultOutput(for: input)
        if let shard, self.output == nil {
            output = String(output.dropLast(".results.jsonl".count)) + ".shard-\(shard.index)-of-\(shard.count).results.jsonl"
        }
        let concurrency = self.concurrency ?? 64
        guard concurrency >= 1 && concurrency <= 10_000 else {
            throw ChatBatchError(.badConcurrency, "concurrency must be from 1 to 10000, not \(concurrency)")
        }
        let maxAttempts = self.maxAttempts ?? 6
        guard maxAttempts >= 1 else { throw ChatBatchError(.badMaxAttempts, "max_attempts must be at least 1") }
        let timeout = self.timeout ?? 300
        guard timeout > 0 else { throw ChatBatchError(.badTimeout, "timeout must be more than 0 seconds") }
        if let c = maxCost, c < 0 { throw ChatBatchError(.badMaxCost, "max_cost must not be negative") }
        for (name, v) in [("max_wait", maxWait), ("outage_budget", outageBudget)] {
            if let v, !(v > 0) { throw ChatBatchError(.badTimeout, "\(name) must be more than 0 seconds") }
        }
        for (name, v) in [("requests_per_minute", requestsPerMinute), ("tokens_per_minute", tokensPerMinute)] {
            if let v, v <= 0 { throw ChatBatchError(.badRate, "\(name) must be more than 0") }
        }
        for (name, value) in headers ?? [:] { try Self.checkHeader(name: name, value: value) }
        if template?.isEmpty == true {
            throw ChatBatchError(.badTemplate, "template is empty")
        }
        return RunConfiguration(
            input: input, output: output, errors: errors ?? Self.defaultErrors(for: output),
            checkpoint: checkpoint ?? output + ".checkpoint",
            format: format ?? .batch, provider: provider,
            endpoint: try provider.endpoint(baseURL: baseURL, projectID: projectID),
            model: model, defaultModel: provider.defaultModel,
            apiKeyEnv: apiKeyEnv ?? provider.keyEnvironmentVariable, apiKeyFile: apiKeyFile,
            headers: headers ?? [:], concurrency: concurrency, maxAttempts: maxAttempts, timeout: timeout,
            connectTimeout: connectTimeout ?? 10, retryBaseDelay: retryBaseDelay ?? 0.5, retryMaxDelay: retryMaxDelay ?? 60,
            grace: grace ?? 30, requestDefaults: request ?? JSONObject(), system: system, template: template,
            idField: idField ?? "id", prices: prices ?? provider.prices, limits: limits ?? provider.limits,
            strict: strict ?? false, force: force ?? false, retryFailed: retryFailed ?? false, stream: stream ?? false,
            summaryJSON: summaryJSON, maxCost: maxCost, requestsPerMinute: requestsPerMinute, tokensPerMinute: tokensPerMinute,
            adaptiveConcurrency: adaptiveConcurrency ?? true, warmup: warmup ?? true,
            retryInvalid: max(0, retryInvalid ?? 0), dropReasoning: dropReasoning ?? false, shard: shard,
            cache: cache, cacheMode: cacheMode ?? .readWrite, caCert: caCert, proxy: proxy, allowHTTP: allowHTTP ?? false,
            overwrite: overwrite ?? false, maxWait: maxWait ?? 300, outageBudget: outageBudget ?? 600)
    }

    /// A header name must be an HTTP token and its value one line: libcurl writes them to the wire as they are.
    static func checkHeader(name: String, value: String) throws(ChatBatchError) {
        let token = Set("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ".unicodeScalars)
        guard !name.isEmpty, name.unicodeScalars.allSatisfy({ token.contains($0) }) else {
            throw ChatBatchError(.badHeader, "header name '\(name.debugDescription.dropFirst().dropLast())' is not a valid HTTP header name (letters, digits and !#$%&'*+-.^_`|~ only)")
        }
        if value.unicodeScalars.contains(where: { ($0.value < 0x20 && $0 != "\t") || $0.value == 0x7F }) {
            throw ChatBatchError(.badHeader, "header \(name): its value holds a line break or control character; a header value must be one line")
        }
    }

    /// `prompts.jsonl` → `prompts.results.jsonl`.
    static func defaultOutput(for input: String) -> String {
        let base = input.hasSuffix(".jsonl") ? String(input.dropLast(6)) : input
        return base + ".results.jsonl"
    }

    /// `results.jsonl` → `results.errors.jsonl`.
    static func defaultErrors(for output: String) -> String {
        let base = output.hasSuffix(".jsonl") ? String(output.dropLast(6)) : output
        return base + ".errors.jsonl"
    }
}

/// A job ready to run: every value decided.
public struct RunConfiguration: Sendable {
    public var input: String
    public var output: String
    public var errors: String
    public var checkpoint: String
    public var format: OutputFormat
    public var provider: Provider
    /// The full chat-completions URL requests go to.
    public var endpoint: String
    /// A model set by the job or a flag: it replaces every line's model.
    public var model: String?
    /// The provider's model, used for lines that name none.
    public var defaultModel: String?
    public var apiKeyEnv: String
    public var apiKeyFile: String?
    public var headers: [String: String]
    public var concurrency: Int
    public var maxAttempts: Int
    public var timeout: Double
    public var connectTimeout: Double
    public var retryBaseDelay: Double
    public var retryMaxDelay: Double
    public var grace: Double
    public var requestDefaults: JSONObject
    public var system: String?
    public var template: String?
    public var idField: String
    public var prices: Prices
    public var limits: ModelLimits
    public var strict: Bool
    public var force: Bool
    public var retryFailed: Bool
    public var stream: Bool
    public var summaryJSON: String?
    public var maxCost: Double?
    public var requestsPerMinute: Double?
    public var tokensPerMinute: Double?
    public var adaptiveConcurrency: Bool
    public var warmup: Bool
    public var retryInvalid: Int
    public var dropReasoning: Bool
    public var shard: Shard?
    public var cache: String?
    public var cacheMode: CacheMode
    public var caCert: String?
    public var proxy: String?
    public var allowHTTP: Bool
    public var overwrite: Bool
    public var maxWait: Double
    public var outageBudget: Double

    /// The most a request can answer: its `max_tokens`, or the model's maximum output when it sets none.
    func completionBound(_ maxTokens: Int?) -> Int { maxTokens ?? limits.maxOutputTokens }

    /// The most a request can cost: its estimated prompt, and `completionBound` tokens of answer.
    func worstCost(promptTokens: Int, maxTokens: Int?) -> Double {
        prices.cost(prompt: promptTokens, completion: completionBound(maxTokens))
    }
}

/// How a run uses the response cache (`--cache-mode`).
public enum CacheMode: String, Sendable, CaseIterable {
    /// Answer from the cache when it can; store what is sent and succeeds.
    case readWrite = "read-write"
    /// Answer from the cache when it can; store nothing.
    case readOnly = "read-only"
    /// Send everything, and replace what the cache holds with the new answers.
    case refresh

    /// Lookups happen (not with refresh).
    var reads: Bool { self != .refresh }
    /// New answers are stored.
    var writes: Bool { self != .readOnly }
}

/// One of `count` slices of an input, picked by a stable hash of each line's custom_id.
public struct Shard: Sendable, Equatable {
    public let index: Int
    public let count: Int

    /// Parses `i/n`, with 0 ≤ i < n.
    public init(parsing text: String) throws(ChatBatchError) {
        let parts = text.split(separator: "/")
        guard parts.count == 2, let i = Int(parts[0]), let n = Int(parts[1]), n >= 1, i >= 0, i < n else {
            throw ChatBatchError(.badShard, "--shard takes i/n with 0 <= i < n (for example 0/4), not '\(text)'")
        }
        index = i
        count = n
    }

    /// True when the line with this id belongs to this shard: FNV-1a 64 of the id's UTF-8 bytes, mod `count`.
    public func contains(_ id: String) -> Bool {
        Int(StableHash.of(id) % UInt64(count)) == index
    }
}

/// How results are written: the OpenAI Batch output shape, or one flat object per prompt.
public enum OutputFormat: String, Sendable, CaseIterable {
    case batch
    case flat
}
