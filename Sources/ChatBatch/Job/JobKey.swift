import ChatBatchCore

/// One key of a job file, described once: its name, the setting it fills, how its value is read (with the messages
/// that name the file and the key), and whether an entry of `providers:` may set it. `JobFile` reads a job with the
/// table `JobKey.all`, and `JobSettings.overridden(by:)` takes a flag's value over the job's with the same table
/// (plus `JobSettings.flagOnly`, the settings only a flag gives).
struct JobKey: Sendable {
    typealias Path<T> = any WritableKeyPath<JobSettings, T?> & Sendable

    let name: String
    /// An entry of `providers:` may set it (what a provider has of its own).
    let perProvider: Bool
    let read: @Sendable (JobFile.Reader, inout JobSettings) throws(ChatBatchError) -> Void
    /// For each setting it fills: take the value from the second settings when they set it.
    let takes: [@Sendable (inout JobSettings, JobSettings) -> Void]

    /// Takes `path`'s value from `other` when `other` sets it.
    static func take<T>(_ path: Path<T>) -> @Sendable (inout JobSettings, JobSettings) -> Void {
        { out, other in if let v = other[keyPath: path] { out[keyPath: path] = v } }
    }

    /// A key read with `reader`'s method `get`, into `path`.
    static func key<T>(
        _ name: String, _ path: Path<T>, perProvider: Bool = false,
        _ get: @escaping @Sendable (JobFile.Reader, String) throws(ChatBatchError) -> T?
    ) -> JobKey {
        JobKey(
            name: name, perProvider: perProvider,
            read: { r, s throws(ChatBatchError) in s[keyPath: path] = try get(r, name) },
            takes: [take(path)])
    }

    static func path(_ name: String, _ p: Path<String>, perProvider: Bool = false) -> JobKey {
        key(name, p, perProvider: perProvider) { r, k throws(ChatBatchError) in try r.path(k) }
    }
    static func string(_ name: String, _ p: Path<String>, perProvider: Bool = false) -> JobKey {
        key(name, p, perProvider: perProvider) { r, k throws(ChatBatchError) in try r.string(k) }
    }
    static func number(_ name: String, _ p: Path<Double>, perProvider: Bool = false) -> JobKey {
        key(name, p, perProvider: perProvider) { r, k throws(ChatBatchError) in try r.number(k) }
    }
    static func integer(_ name: String, _ p: Path<Int>, perProvider: Bool = false) -> JobKey {
        key(name, p, perProvider: perProvider) { r, k throws(ChatBatchError) in try r.integer(k) }
    }
    static func flag(_ name: String, _ p: Path<Bool>, perProvider: Bool = false) -> JobKey {
        key(name, p, perProvider: perProvider) { r, k throws(ChatBatchError) in try r.flag(k) }
    }
    static func choice<T: NamedChoice>(_ name: String, _ p: Path<T>, perProvider: Bool = false) -> JobKey {
        key(name, p, perProvider: perProvider) { r, k throws(ChatBatchError) in try r.choice(k) }
    }

    /// Every job key, in the order a job is read.
    static let all: [JobKey] = [
        .path("input", \.input), .path("output", \.output), .path("errors", \.errors),
        .path("checkpoint", \.checkpoint), .choice("format", \.format), .string("store", \.store),
        .number("lease_seconds", \.leaseSeconds),
        key("job_name", \.jobName) { r, k throws(ChatBatchError) in
            try r.string(k)?.replacingOccurrences(of: "{date}", with: r.date)
        },
        .choice("provider", \.provider, perProvider: true), .string("base_url", \.baseURL, perProvider: true),
        .string("model", \.model, perProvider: true), .string("project_id", \.projectID, perProvider: true),
        .string("api_key_env", \.apiKeyEnv, perProvider: true), .path("api_key_file", \.apiKeyFile, perProvider: true),
        key("headers", \.headers, perProvider: true) { r, k throws(ChatBatchError) in try r.headers(k) },
        .integer("concurrency", \.concurrency, perProvider: true), .integer("max_attempts", \.maxAttempts),
        .number("timeout", \.timeout, perProvider: true),
        .number("connect_timeout", \.connectTimeout, perProvider: true),
        .integer("max_response_bytes", \.maxResponseBytes, perProvider: true), .number("grace", \.grace),
        JobKey(
            name: "retry", perProvider: false, read: { r, s throws(ChatBatchError) in try r.retry(&s) },
            takes: [take(\.retryBaseDelay), take(\.retryMaxDelay)]),  // max_attempts has its own key
        key("request", \.request) { r, k throws(ChatBatchError) in try r.object(k, "a mapping of request body fields")
        },
        .string("system", \.system), .string("template", \.template), .string("id_field", \.idField),
        key("prices", \.prices, perProvider: true) { r, k throws(ChatBatchError) in try r.prices(k) },
        key("limits", \.limits) { r, k throws(ChatBatchError) in try r.limits(k) },
        .flag("strict", \.strict), .flag("exit_zero_when_done", \.exitZeroWhenDone), .flag("stream", \.stream),
        .path("summary_json", \.summaryJSON), .path("metrics_file", \.metricsFile),
        .number("metrics_interval", \.metricsInterval), .integer("retry_invalid", \.retryInvalid),
        .flag("drop_reasoning", \.dropReasoning), .number("max_cost", \.maxCost, perProvider: true),
        .number("requests_per_minute", \.requestsPerMinute, perProvider: true),
        .number("tokens_per_minute", \.tokensPerMinute, perProvider: true),
        .flag("adaptive_concurrency", \.adaptiveConcurrency), .flag("warmup", \.warmup), .path("cache", \.cache),
        .choice("cache_mode", \.cacheMode), .path("ca_cert", \.caCert, perProvider: true),
        .string("proxy", \.proxy, perProvider: true), .flag("allow_http", \.allowHTTP, perProvider: true),
        .flag("overwrite", \.overwrite), .number("max_wait", \.maxWait), .number("outage_budget", \.outageBudget),
        .choice("other_endpoint_answers", \.otherEndpointAnswers), .choice("route", \.route),
        key("providers", \.providers) { r, k throws(ChatBatchError) in try r.providers(k) }
    ]
}
