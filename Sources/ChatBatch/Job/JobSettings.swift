import ChatBatchCore
import Foundation

/// Everything a job can set, as the job file and the flags give it. Every field is optional: a job file fills
/// some, flags override any, and `resolve()` supplies the defaults, checks the values and groups them.
public struct JobSettings: Sendable {
    public var input: String?
    /// What messages call the input when its path is not what the user gave (`-`: "standard input").
    public var inputLabel: String?
    public var output: String?
    public var errors: String?
    public var checkpoint: String?
    public var format: OutputFormat?
    public var provider: ProviderKind?
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
    /// The most bytes one answer may have (decoded); default 16 MiB.
    public var maxResponseBytes: Int?
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
    public var exitZeroWhenDone: Bool?
    public var force: Bool?
    public var retryFailed: Bool?
    public var stream: Bool?
    public var summaryJSON: String?
    /// A Prometheus text file (node_exporter's textfile collector) rewritten every `metricsInterval` seconds and at the
    /// end.
    public var metricsFile: String?
    public var metricsInterval: Double?
    /// What the metrics call the job (the `chatbatch_job` label), and its name in a store: the job file's name, else
    /// the input's.
    public var jobName: String?
    /// A PostgreSQL store (`postgres://…` or libpq keywords) that holds the job for any number of workers, in place of
    /// the checkpoint file.
    public var store: String?
    /// How long a worker's claim on a line holds without renewal (seconds): a worker that dies loses its lines after
    /// this long.
    public var leaseSeconds: Double?
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
    /// Take only the lines of shard `index` of `count` (0-based): those whose custom_id's FNV-1a 64 hash mod `count` is
    /// `index`.
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
    /// What to do with lines another endpoint answered.
    public var otherEndpointAnswers: OtherEndpointAnswers?
    /// The run goes to the built-in fake gateway (`--fake-gateway`); not a job key.
    public var fakeGateway: Bool?
    /// A provider's label, in an entry of `providers`.
    public var name: String?
    /// Several providers of the job's model, each an entry of provider settings (`providers:` in the job).
    public var providers: [JobSettings]?
    /// How several providers share the lines.
    public var route: RouteMode?

    public init() {}

    /// This job with every field `other` sets taken from `other`.
    public func overridden(by other: JobSettings) -> JobSettings {
        var out = self
        for take in Self.fields { take(&out, other) }
        return out
    }

    /// Every field, each as "take it from `other` when set": the job keys' (`JobKey.all`) and the flags' own.
    static let fields = JobKey.all.flatMap(\.takes) + flagOnly

    /// The settings only a flag (or the command itself) gives: no job key reads them.
    static let flagOnly: [@Sendable (inout JobSettings, JobSettings) -> Void] = [
        JobKey.take(\.force), JobKey.take(\.retryFailed), JobKey.take(\.shard), JobKey.take(\.fakeGateway),
        JobKey.take(\.name), JobKey.take(\.inputLabel)
    ]

    /// Supplies defaults, resolves the providers and endpoints, and checks the values.
    public func resolve() throws(ChatBatchError) -> RunConfiguration {
        guard let input else {
            throw ChatBatchError(.missingInput, "no input: give a JSONL file or a job file with `input:`")
        }
        var output = self.output ?? Self.defaultOutput(for: input)
        if let shard, self.output == nil {
            output =
                String(output.dropLast(".results.jsonl".count))
                + ".shard-\(shard.index)-of-\(shard.count).results.jsonl"
        }
        try checkNumbers()
        // A device or a pipe has no folder beside it for the errors file and the checkpoint (no
        // /dev/full.errors.jsonl).
        var st = stat()
        if stat(output, &st) == 0, (st.st_mode & S_IFMT) != S_IFREG, (st.st_mode & S_IFMT) != S_IFDIR,
            errors == nil || checkpoint == nil
        {
            throw ChatBatchError(
                .outputClash,
                "\(output) is a device or a pipe: there is no folder beside it for the errors file and the checkpoint; give --errors and --checkpoint too (job keys errors and checkpoint)"
            )
        }
        let maxAttempts = self.maxAttempts ?? 6
        guard maxAttempts >= 1 else { throw ChatBatchError(.badMaxAttempts, "max_attempts must be at least 1") }
        if let c = maxCost, c < 0 { throw ChatBatchError(.badMaxCost, "max_cost must not be negative") }
        for (name, v) in [("max_wait", maxWait), ("outage_budget", outageBudget), ("metrics_interval", metricsInterval)]
        {
            if let v, !(v > 0) { throw ChatBatchError(.badTimeout, "\(name) must be more than 0 seconds") }
        }
        if template?.isEmpty == true {
            throw ChatBatchError(.badTemplate, "template is empty")
        }
        // A partial would load another template (a file, for some renderers) and renders empty here: refused, as is a
        // change of delimiters that could hide one.
        if let template, template.contains("{{>") || template.contains("{{<") || template.contains("{{=") {
            throw ChatBatchError(
                .badTemplate,
                "the template uses a partial ({{> name}}) or changes its delimiters ({{= =}}); chatbatch renders one template with the record's fields only"
            )
        }
        let routes = try (providers ?? [JobSettings()]).enumerated().map { i, entry throws(ChatBatchError) in
            try route(entry, index: i, single: providers == nil)
        }
        guard !routes.isEmpty else { throw ChatBatchError(.badJob, "`providers` lists no provider") }
        // A budget needs a price: without one every request would look free and max_cost would never stop the run.
        if maxCost != nil || routes.contains(where: { $0.maxCost != nil }),
            let unpriced = routes.first(where: { !$0.pricesKnown })
        {
            throw ChatBatchError(
                .badMaxCost,
                "max_cost cannot hold: \(unpriced.name) publishes no prices, so its cost is unknown; give prices: {input: USD, output: USD} per million tokens in the job (or --price-input and --price-output)"
            )
        }
        let names = routes.map(\.name)
        if Set(names).count != names.count {
            throw ChatBatchError(.badJob, "provider names must differ: \(names.joined(separator: ", "))")
        }
        let first = routes[0]
        return RunConfiguration(
            files: FileSettings(
                input: input, inputLabel: inputLabel ?? input, output: output,
                errors: errors ?? Self.defaultErrors(for: output), checkpoint: checkpoint ?? output + ".checkpoint",
                format: format ?? .batch, summaryJSON: summaryJSON, dropReasoning: dropReasoning ?? false,
                overwrite: overwrite ?? false,
                metricsFile: metricsFile, metricsInterval: metricsInterval ?? 10,
                jobName: jobName ?? Self.stem(of: input), store: store, leaseSeconds: leaseSeconds ?? 60),
            routes: routes, routing: route ?? .fill,
            retry: RetrySettings(
                maxAttempts: maxAttempts, baseDelay: retryBaseDelay ?? 0.5, maxDelay: retryMaxDelay ?? 60,
                retryInvalid: max(0, retryInvalid ?? 0),
                maxWait: maxWait ?? 300, outageBudget: outageBudget ?? 600, grace: grace ?? 30),
            limits: LimitSettings(adaptive: adaptiveConcurrency ?? true, warmup: warmup ?? true, maxCost: maxCost),
            shape: RequestShape(
                model: providers == nil ? model : (model ?? first.model),
                defaultModel: first.endpoint.profile.defaultModel,
                requestDefaults: request ?? JSONObject(), system: system, template: template, idField: idField ?? "id",
                stream: stream ?? false,
                modelLimits: limits ?? first.endpoint.profile.limits, shard: shard),
            cache: CacheSettings(path: cache, mode: cacheMode ?? .readWrite),
            choices: RunChoices(
                strict: strict ?? false, force: force ?? false, retryFailed: retryFailed ?? false,
                otherEndpointAnswers: otherEndpointAnswers ?? .ask,
                exitZeroWhenDone: exitZeroWhenDone ?? false))
    }

    /// Every number a user gives, checked in one place before anything is opened, claimed or sent: finite, and in a
    /// range that makes sense (a timeout of a millisecond, a NaN price or an infinite wait is refused, naming the job
    /// key and its flag).
    func checkNumbers() throws(ChatBatchError) {
        let entries = [(self, "")] + (providers ?? []).enumerated().map { ($1, "providers[\($0)].") }
        for (s, scope) in entries {
            // (job key, its flag, value, least, most, code)
            let checks: [(String, String, Double?, Double, Double, ChatBatchError.Code)] = [
                ("timeout", "--timeout", s.timeout, 0.5, 86_400, .badTimeout),
                ("connect_timeout", "--connect-timeout", s.connectTimeout, 0.1, 3_600, .badTimeout),
                ("retry_base_delay", "--retry-base-delay", s.retryBaseDelay, 0, 3_600, .badTimeout),
                ("retry_max_delay", "--retry-max-delay", s.retryMaxDelay, 0, 86_400, .badTimeout),
                ("grace", "--grace", s.grace, 0, 86_400, .badTimeout),
                ("max_wait", "--max-wait", s.maxWait, 0.001, 604_800, .badTimeout),
                ("outage_budget", "--outage-budget", s.outageBudget, 0.001, 604_800, .badTimeout),
                ("metrics_interval", "--metrics-interval", s.metricsInterval, 0.001, 86_400, .badTimeout),
                ("lease_seconds", "--lease-seconds", s.leaseSeconds, 1, 3_600, .badTimeout),
                ("max_cost", "--max-cost", s.maxCost, 0, 1e9, .badMaxCost),
                ("requests_per_minute", "--rpm", s.requestsPerMinute, 0.001, 1e9, .badRate),
                ("tokens_per_minute", "--tpm", s.tokensPerMinute, 0.001, 1e12, .badRate),
                ("prices.input", "--price-input", s.prices?.inputPerMillion, 0, 1e6, .badMaxCost),
                ("prices.output", "--price-output", s.prices?.outputPerMillion, 0, 1e6, .badMaxCost),
                (
                    "max_response_bytes", "--max-response-bytes", s.maxResponseBytes.map(Double.init), 1024,
                    Double(1 << 32), .badTimeout
                )
            ]
            for (key, flag, value, least, most, code) in checks {
                guard let v = value else { continue }
                guard v.isFinite, v >= least, v <= most else {
                    throw ChatBatchError(
                        code,
                        "\(scope)\(key) (\(flag)) must be a number from \(Self.plain(least)) to \(Self.plain(most)), not \(v)"
                    )
                }
            }
        }
    }

    /// 0.5 → "0.5", 86400 → "86400", 1e9 → "1000000000".
    static func plain(_ v: Double) -> String { v == v.rounded() && abs(v) < 1e15 ? String(Int(v)) : String(v) }

    /// One provider: an entry of `providers` (with the job's connection manners as defaults), or the job itself.
    private func route(_ entry: JobSettings, index: Int, single: Bool) throws(ChatBatchError) -> RouteSettings {
        let s = single ? self : entry
        let at = single ? "" : "providers[\(index)]: "
        guard let kind = s.provider ?? (single ? .default : nil) else {
            throw ChatBatchError(.badJob, "\(at)needs `provider` (\(ProviderKind.choices))")
        }
        let profile = kind.profile
        let concurrency = s.concurrency ?? concurrency ?? 64
        guard concurrency >= 1 && concurrency <= 10_000 else {
            throw ChatBatchError(.badConcurrency, "\(at)concurrency must be from 1 to 10000, not \(concurrency)")
        }
        let timeout = s.timeout ?? timeout ?? 300
        guard timeout > 0 else { throw ChatBatchError(.badTimeout, "\(at)timeout must be more than 0 seconds") }
        for (name, v) in [("requests_per_minute", s.requestsPerMinute), ("tokens_per_minute", s.tokensPerMinute)] {
            if let v, v <= 0 { throw ChatBatchError(.badRate, "\(at)\(name) must be more than 0") }
        }
        if let c = s.maxCost, c < 0, !single {
            throw ChatBatchError(.badMaxCost, "\(at)max_cost must not be negative")
        }
        let headers = (single ? nil : headers ?? [:])?.merging(s.headers ?? [:]) { $1 } ?? s.headers ?? [:]
        for (name, value) in headers { try Self.checkHeader(name: name, value: value) }
        let model = single ? s.model : (s.model ?? profile.defaultModel ?? model)
        let endpoint = EndpointSettings(
            provider: kind, url: try profile.endpoint(baseURL: s.baseURL, projectID: s.projectID, model: model),
            apiKeyEnv: s.apiKeyEnv ?? profile.keyVariable, apiKeyFile: s.apiKeyFile, headers: headers, timeout: timeout,
            connectTimeout: s.connectTimeout ?? connectTimeout ?? 10,
            maxResponseBytes: s.maxResponseBytes ?? maxResponseBytes ?? EndpointSettings.defaultMaxResponseBytes,
            caCert: s.caCert ?? caCert, proxy: s.proxy ?? proxy,
            allowHTTP: s.allowHTTP ?? allowHTTP ?? false, fake: fakeGateway ?? false)
        return RouteSettings(
            name: s.name ?? (single ? kind.rawValue : "\(kind.rawValue)-\(index + 1)"), endpoint: endpoint,
            model: single ? nil : model,
            concurrency: concurrency, requestsPerMinute: s.requestsPerMinute, tokensPerMinute: s.tokensPerMinute,
            maxCost: single ? nil : s.maxCost, prices: s.prices ?? profile.prices,
            pricesKnown: s.prices != nil || profile.publishesPrices)
    }

    /// A header name must be an HTTP token and its value one line: libcurl writes them to the wire as they are.
    static func checkHeader(name: String, value: String) throws(ChatBatchError) {
        // The key has its own sources, kept out of `ps`, the job file and the logs, and scrubbed from every answer.
        if name.lowercased() == "authorization" || name.lowercased() == "proxy-authorization" {
            throw ChatBatchError(
                .badHeader,
                "the \(name) header is not given with --header or headers:; put the key in an environment variable (--api-key-env NAME) or a file (--api-key-file PATH), and chatbatch sends it as the provider wants it"
            )
        }
        let token = Set("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ".unicodeScalars)
        guard !name.isEmpty, name.unicodeScalars.allSatisfy({ token.contains($0) }) else {
            throw ChatBatchError(
                .badHeader,
                "header name '\(name.debugDescription.dropFirst().dropLast())' is not a valid HTTP header name (letters, digits and !#$%&'*+-.^_`|~ only)"
            )
        }
        if value.unicodeScalars.contains(where: { ($0.value < 0x20 && $0 != "\t") || $0.value == 0x7F }) {
            throw ChatBatchError(
                .badHeader,
                "header \(name): its value holds a line break or control character; a header value must be one line")
        }
    }

    /// `prompts.jsonl` → `prompts.results.jsonl`.
    static func defaultOutput(for input: String) -> String {
        let base = input.hasSuffix(".jsonl") ? String(input.dropLast(6)) : input
        return base + ".results.jsonl"
    }

    /// `jobs/nightly.yaml` → `nightly`: a file's name without folder or extension.
    static func stem(of path: String) -> String {
        let name = (path as NSString).lastPathComponent
        let dot = name.lastIndex(of: ".").map { name[..<$0] } ?? Substring(name)
        return dot.isEmpty ? name : String(dot)
    }

    /// `results.jsonl` → `results.errors.jsonl`.
    static func defaultErrors(for output: String) -> String {
        let base = output.hasSuffix(".jsonl") ? String(output.dropLast(6)) : output
        return base + ".errors.jsonl"
    }
}
