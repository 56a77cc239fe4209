import ChatBatchCore
import Foundation

/// A job ready to run: every value decided, grouped by what it is about.
public struct RunConfiguration: Sendable {
    public var files: FileSettings
    /// The providers the run sends to: one for a plain job, several with `providers:` in the job.
    public var routes: [RouteSettings]
    public var routing: RouteMode
    public var retry: RetrySettings
    public var limits: LimitSettings
    /// What decides which lines are sent and what their bodies are: the input fingerprint is derived from it.
    public var shape: RequestShape
    public var cache: CacheSettings
    public var choices: RunChoices

    /// The first (or only) provider.
    public var endpoint: EndpointSettings { routes[0].endpoint }

    /// Every provider's prices are known: costs, `max_cost` and the cost series mean something.
    public var pricesKnown: Bool { routes.allSatisfy(\.pricesKnown) }

    /// Every provider has an embeddings price (else `/v1/embeddings` lines are counted at $0, and said so).
    public var embeddingsPriced: Bool { routes.allSatisfy { $0.prices.embeddingsPerMillion != nil } }

    /// Requests in flight at most, over every provider.
    public var concurrency: Int { routes.reduce(0) { $0 + $1.concurrency } }

    /// The most a request can answer: its `max_tokens`, or the model's maximum output when it sets none.
    func completionBound(_ maxTokens: Int?) -> Int { maxTokens ?? shape.modelLimits.maxOutputTokens }

    /// The most a request can cost at a provider's prices: its estimated prompt, and `completionBound` tokens of
    /// answer.
    func worstCost(promptTokens: Int, maxTokens: Int?, prices: Prices, endpoint: APIEndpoint = .chat) -> Double {
        prices.cost(prompt: promptTokens, completion: completionBound(maxTokens), endpoint: endpoint)
    }
}

/// One provider of a run: where it is, its name for the model, and its own limits and prices.
public struct RouteSettings: Sendable {
    /// The label outputs, status, reports and logs use (the provider's kind for a plain job).
    public var name: String
    public var endpoint: EndpointSettings
    /// The model's name at this provider; nil: the line's own (or the job's).
    public var model: String?
    public var concurrency: Int
    public var requestsPerMinute: Double?
    public var tokensPerMinute: Double?
    /// This provider's share of the spend (the job's `max_cost` caps the total).
    public var maxCost: Double?
    public var prices: Prices
    /// The prices are known (given in the job, or published by the provider); otherwise costs are not shown as $0.
    public var pricesKnown: Bool
}

/// The files a run reads and writes.
public struct FileSettings: Sendable {
    public var input: String
    /// The input as messages name it (`standard input` for `-`, whose lines are kept in a file beside the outputs).
    public var inputLabel: String
    public var output: String
    public var errors: String
    public var checkpoint: String
    public var format: OutputFormat
    public var summaryJSON: String?
    /// Leave reasoning out of the output files.
    public var dropReasoning: Bool
    /// Replace existing output files this checkpoint did not write.
    public var overwrite: Bool
    /// The Prometheus text file, and how often it is rewritten (seconds).
    public var metricsFile: String?
    public var metricsInterval: Double
    /// The `chatbatch_job` label of the metrics, and the job's name in a store: the job file's name, else the
    /// input's, without extension (or `--job-name`).
    public var jobName: String
    /// The PostgreSQL store holding the job for every worker (nil: the checkpoint file alone).
    public var store: String?
    /// How long a claim on a line holds without renewal, in a store (seconds).
    public var leaseSeconds: Double
}

/// Where requests go and how: the provider, the URL, the key's source, headers, timeouts, trust and proxy.
public struct EndpointSettings: Sendable {
    public var provider: ProviderKind
    /// The full chat-completions URL requests go to.
    public var url: String
    public var apiKeyEnv: String
    public var apiKeyFile: String?
    public var headers: [String: String]
    public var timeout: Double
    public var connectTimeout: Double
    /// The most bytes one answer may have once decoded (`max_response_bytes`): past it, `response_too_large`.
    public var maxResponseBytes: Int
    /// 16 MiB: a real answer of 4,096 output tokens is well under 1 MB.
    public static let defaultMaxResponseBytes = 16 << 20
    public var caCert: String?
    public var proxy: String?
    /// The key may travel over plain http to a host that is not this machine.
    public var allowHTTP: Bool
    /// The built-in fake gateway (`--fake-gateway`): its answers never stand for a real endpoint's.
    public var fake: Bool

    public var profile: any ProviderProfile { provider.profile }

    /// What the URL and the proxy carry that is secret (a password, a key in the query): scrubbed like the key.
    public var urlSecrets: [String] { EndpointURL.secrets(in: url) + (proxy.map(EndpointURL.secrets(in:)) ?? []) }

    /// The URL as it may be shown and stored (credentials masked).
    public var shownURL: String { EndpointURL.shown(url) }

    /// What names this endpoint in a checkpoint: provider and URL (the fake gateway is one endpoint whatever its port).
    public var identity: String {
        var url = EndpointURL.shown(self.url)
        if let q = url.firstIndex(of: "?"), provider != .tir { url = String(url[..<q]) }
        if fake {
            // Its port changes from run to run: the path (and provider) name the route on it.
            let path = URLComponents(string: url)?.path ?? ""
            return "fake-gateway " + provider.rawValue + " " + path
        }
        return provider.rawValue + " " + url.lowercased()
    }
}

/// When to try again, and for how long.
public struct RetrySettings: Sendable {
    public var maxAttempts: Int
    /// Backoff: full jitter, `baseDelay · 2^(n-1)`, at most `maxDelay`.
    public var baseDelay: Double
    public var maxDelay: Double
    /// Ask again this many times when a structured answer does not parse or fit its schema.
    public var retryInvalid: Int
    /// The longest one pause of the whole key (Retry-After) may last before the run stops, resumable.
    public var maxWait: Double
    /// How long the endpoint may stay unreachable before the run stops, resumable.
    public var outageBudget: Double
    /// Seconds requests in flight may finish after SIGINT/SIGTERM.
    public var grace: Double
}

/// How the in-flight limits behave, and the total spend.
public struct LimitSettings: Sendable {
    public var adaptive: Bool
    public var warmup: Bool
    /// Stop sending before the total spent on this checkpoint could pass this many US dollars.
    public var maxCost: Double?
}

/// Everything that decides which lines are sent and what their bodies are. It is `Codable` so that the input
/// fingerprint hashes all of it: a setting added here is in the fingerprint without anyone remembering to.
public struct RequestShape: Sendable, Codable {
    /// A model set by the job or a flag: it replaces every line's model.
    public var model: String?
    /// The provider's model, used for lines that name none.
    public var defaultModel: String?
    /// Request defaults merged into every body (a line's own values win).
    public var requestDefaults: JSONObject
    public var system: String?
    public var template: String?
    public var idField: String
    public var stream: Bool
    public var modelLimits: ModelLimits
    public var shard: Shard?
}

/// The response cache, and how it is used.
public struct CacheSettings: Sendable {
    public var path: String?
    public var mode: CacheMode
}

/// What the user decided about lines a checkpoint already knows.
public struct RunChoices: Sendable {
    /// Refuse the run before sending if any line is invalid.
    public var strict: Bool
    /// Send lines answered before whose body changed.
    public var force: Bool
    /// Send lines that failed before (and forget refused models).
    public var retryFailed: Bool
    /// What to do with lines another endpoint answered.
    public var otherEndpointAnswers: OtherEndpointAnswers
    /// Exit 0 once every line has ended, even when some failed (they stay in the errors file, the summary and the
    /// metrics): for schedulers that run again a container or task that exits non-zero.
    public var exitZeroWhenDone = false
}
