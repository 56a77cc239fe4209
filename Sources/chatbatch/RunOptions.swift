import ArgumentParser
import ChatBatch
import ChatBatchCore
import Foundation

/// The flags `run` and `validate` share: files.
struct FileOptions: ParsableArguments {
    @Option(help: "Results file (default: INPUT.results.jsonl).") var output: String?
    @Option(help: "Errors file (default: results file with .errors.jsonl).") var errors: String?
    @Option(help: "Checkpoint file (default: results file + .checkpoint).") var checkpoint: String?
    @Option(help: "Output format (batch: the OpenAI Batch output shape).") var format: OutputFormat?
    @Option(help: "Write the run summary as JSON to this file.") var summaryJSON: String?
    @Option(
        help:
            "Write Prometheus metrics (text format, for node_exporter's textfile collector) to this file, replaced atomically."
    )
    var metricsFile: String?
    @Option(
        parsing: .unconditional,
        help: "Seconds between rewrites of --metrics-file (default 10; it is also written at the end).")
    var metricsInterval: Double?
    @Option(help: "What {date} in the job file's paths becomes (default: today, YYYY-MM-DD).") var date: String?
    @Option(help: "Take only shard i of n (0-based): lines whose custom_id's FNV-1a 64 hash mod n is i.") var shard:
        String?
    @Flag(help: "Replace existing output files that this checkpoint did not write (refused otherwise).") var overwrite =
        false
    @Flag(help: "Leave reasoning out of the output files.") var dropReasoning = false
    @Option(
        help:
            "A PostgreSQL store (postgres://USER@HOST/DB, password in PGPASSWORD or ~/.pgpass) holding the job for any number of workers on any machines, in place of the checkpoint file."
    )
    var store: String?
    @Option(help: "The job's name in the store, status and metrics (default: the job file's name, else the input's).")
    var jobName: String?
    @Option(
        parsing: .unconditional,
        help:
            "With --store: seconds a worker's claim on a line holds unrenewed; a dead worker's lines return after it (default 60)."
    )
    var leaseSeconds: Double?

    /// These flags' values, over the job's.
    func fill(_ flags: inout JobSettings) throws {
        flags.output = output
        flags.errors = errors
        flags.checkpoint = checkpoint
        flags.format = format
        flags.summaryJSON = summaryJSON
        flags.metricsFile = metricsFile
        flags.metricsInterval = metricsInterval
        flags.shard = try shard.map { try Shard(parsing: $0) }
        flags.store = store
        flags.jobName = jobName
        flags.leaseSeconds = leaseSeconds
        if dropReasoning { flags.dropReasoning = true }
        if overwrite { flags.overwrite = true }
    }
}

/// The flags `run` and `validate` share: provider.
struct ProviderOptions: ParsableArguments {
    @Option(help: "Provider.") var provider: ProviderKind?
    @Option(help: "Base URL (or a full chat-completions URL).") var baseURL: String?
    @Option(help: "Model; replaces the model of every line.") var model: String?
    @Option(help: "TIR project id.") var projectID: String?
    @Option(help: "Environment variable holding the API key.") var apiKeyEnv: String?
    @Option(help: "File holding the API key.") var apiKeyFile: String?
    @Option(name: .customLong("header"), help: "Extra request header 'Name: value' (repeatable).") var headers:
        [String] = []
    @Option(
        help:
            "A CA bundle (PEM) trusted besides the system's, for a gateway with a private CA. SSL_CERT_FILE and CURL_CA_BUNDLE are honoured too."
    )
    var caCert: String?
    @Option(help: "Proxy URL (http://host:port); without it HTTPS_PROXY, https_proxy and NO_PROXY are honoured.")
    var proxy: String?
    @Flag(help: "Allow sending the API key over plain http to a host that is not this machine (refused otherwise).")
    var allowHttp = false
    @Option(parsing: .unconditional, help: "Input price, USD per million tokens.") var priceInput: Double?
    @Option(parsing: .unconditional, help: "Output price, USD per million tokens (reasoning is output).")
    var priceOutput: Double?
    @Option(parsing: .unconditional, help: "Embeddings price, USD per million input tokens (unknown: counted as $0).")
    var priceEmbeddings: Double?
    @Option(parsing: .unconditional, help: "The model's maximum output tokens (pre-flight check).") var maxOutputTokens:
        Int?
    @Option(parsing: .unconditional, help: "The model's context in tokens (pre-flight check).") var contextTokens: Int?

    /// These flags' values, over `job`'s (a header, a price or a limit given alone keeps the job's others).
    func fill(_ flags: inout JobSettings, over job: JobSettings) throws {
        flags.provider = provider
        flags.baseURL = baseURL
        flags.model = model
        flags.projectID = projectID
        flags.apiKeyEnv = apiKeyEnv
        flags.apiKeyFile = apiKeyFile
        flags.caCert = caCert
        flags.proxy = proxy
        if allowHttp { flags.allowHTTP = true }
        if !headers.isEmpty {
            var h: [String: String] = [:]
            for line in headers {
                guard let colon = line.firstIndex(of: ":") else {
                    throw ValidationError("--header takes 'Name: value', not '\(line)'")
                }
                h[String(line[..<colon])] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            }
            flags.headers = (job.headers ?? [:]).merging(h) { $1 }
        }
        if priceInput != nil || priceOutput != nil || priceEmbeddings != nil {
            let base = job.prices ?? (job.provider ?? .default).profile.prices
            flags.prices = Prices(
                inputPerMillion: priceInput ?? base.inputPerMillion,
                outputPerMillion: priceOutput ?? base.outputPerMillion,
                embeddingsPerMillion: priceEmbeddings ?? base.embeddingsPerMillion)
        }
        if maxOutputTokens != nil || contextTokens != nil {
            let base = job.limits ?? (job.provider ?? .default).profile.limits
            flags.limits = ModelLimits(
                maxOutputTokens: maxOutputTokens ?? base.maxOutputTokens,
                contextTokens: contextTokens ?? base.contextTokens)
        }
    }
}

/// The flags `run` and `validate` share: requests.
struct RequestOptions: ParsableArguments {
    @Option(
        name: .customLong("set"),
        help:
            "A request default, KEY=JSON (repeatable), e.g. --set max_tokens=512 --set 'response_format={\"type\":\"json_object\"}'."
    )
    var requestDefaults: [String] = []
    @Option(help: "System prompt added to lines that have none.") var system: String?
    @Option(help: "Mustache template that turns record lines into the user message.") var template: String?
    @Option(help: "Record field holding the id (with --template).") var idField: String?
    @Flag(help: "Stream every request (stream: true) and reassemble the answers.") var stream = false
    @Option(
        help:
            "Ask again up to N times when a structured answer is not valid JSON or does not fit its schema (extra spend)."
    )
    var retryInvalid: Int?

    /// These flags' values, over `job`'s (a `--set` default joins the job's `request:` defaults).
    func fill(_ flags: inout JobSettings, over job: JobSettings) throws {
        flags.system = system
        flags.template = template
        flags.idField = idField
        flags.retryInvalid = retryInvalid
        if stream { flags.stream = true }
        if !requestDefaults.isEmpty {
            var request = job.request ?? JSONObject()
            for pair in requestDefaults {
                guard let eq = pair.firstIndex(of: "=") else {
                    throw ValidationError("--set takes KEY=JSON, not '\(pair)'")
                }
                let text = String(pair[pair.index(after: eq)...])
                request[String(pair[..<eq])] = (try? JSON.parse(text)) ?? .string(text)  // a bare word is a string
            }
            flags.request = request
        }
    }
}

/// The flags `run` and `validate` share: concurrency, retries and waiting.
struct PacingOptions: ParsableArguments {
    @Option(parsing: .unconditional, help: "Requests in flight at most.") var concurrency: Int?
    @Flag(help: "Keep the in-flight limit fixed instead of learning the key's level from its 429s.") var noAdaptive =
        false
    @Flag(help: "Fan out at once instead of waiting for a first request to succeed.") var noWarmup = false
    @Option(name: .customLong("rpm"), parsing: .unconditional, help: "Client-side limit: requests per minute.")
    var requestsPerMinute: Double?
    @Option(
        name: .customLong("tpm"), parsing: .unconditional,
        help: "Client-side limit: tokens per minute (estimated, corrected from usage).") var tokensPerMinute: Double?
    @Option(parsing: .unconditional, help: "HTTP attempts per prompt at most.") var maxAttempts: Int?
    @Option(parsing: .unconditional, help: "Backoff base in seconds (full jitter, doubling per attempt).")
    var retryBaseDelay: Double?
    @Option(parsing: .unconditional, help: "Backoff cap in seconds.") var retryMaxDelay: Double?
    @Option(parsing: .unconditional, help: "Seconds allowed for one request.") var timeout: Double?
    @Option(parsing: .unconditional, help: "Seconds allowed to connect.") var connectTimeout: Double?
    @Option(
        parsing: .unconditional,
        help:
            "The most bytes one answer may have, decoded (default 16777216); past it the line fails as response_too_large."
    )
    var maxResponseBytes: Int?
    @Option(parsing: .unconditional, help: "Seconds in-flight requests may finish after SIGINT/SIGTERM/SIGHUP.")
    var grace: Double?
    @Option(
        parsing: .unconditional,
        help: "Seconds one pause of the whole key (Retry-After) may last before the run stops, resumable (default 300)."
    )
    var maxWait: Double?
    @Option(
        parsing: .unconditional,
        help:
            "Seconds the endpoint may stay unreachable (refused connections, failed lookups) before the run stops, resumable (default 600)."
    )
    var outageBudget: Double?

    /// These flags' values, over the job's.
    func fill(_ flags: inout JobSettings) {
        flags.concurrency = concurrency
        flags.maxAttempts = maxAttempts
        flags.timeout = timeout
        flags.connectTimeout = connectTimeout
        flags.maxResponseBytes = maxResponseBytes
        flags.grace = grace
        flags.retryBaseDelay = retryBaseDelay
        flags.retryMaxDelay = retryMaxDelay
        flags.requestsPerMinute = requestsPerMinute
        flags.tokensPerMinute = tokensPerMinute
        flags.maxWait = maxWait
        flags.outageBudget = outageBudget
        if noAdaptive { flags.adaptiveConcurrency = false }
        if noWarmup { flags.warmup = false }
    }
}

/// The flags `run` and `validate` share: spending and earlier answers.
struct ChoiceOptions: ParsableArguments {
    @Option(
        parsing: .unconditional,
        help: "Stop sending before the total spent on this checkpoint could pass this many USD.") var maxCost: Double?
    @Option(
        help:
            "A response cache (SQLite file, shared by runs and shards): a request answered before, in any run, is answered from it without being sent."
    )
    var cache: String?
    @Option(
        help:
            "How the cache is used (default read-write; read-only stores nothing, refresh sends everything and replaces what is stored)."
    )
    var cacheMode: CacheMode?
    @Option(
        help:
            "Lines another endpoint answered (default ask: not sent, exit 2; keep takes them; resend sends them again). A fake gateway's answers are always sent again to a real endpoint."
    )
    var otherEndpointAnswers: OtherEndpointAnswers?
    @Flag(help: "Refuse the whole run, before sending anything, if any line is invalid.") var strict = false
    @Flag(help: "Send again lines answered before whose request body changed, replacing their answers.") var force =
        false
    @Flag(help: "Send again lines that failed in an earlier run, those of a refused model (403/404) included.")
    var retryFailed = false
    @Flag(
        help:
            "Exit 0 once every line has ended, even if some failed (they stay in the errors file and the summary): for schedulers that rerun what exits non-zero."
    )
    var exitZeroWhenDone = false

    /// These flags' values, over the job's.
    func fill(_ flags: inout JobSettings) {
        flags.maxCost = maxCost
        flags.cache = cache
        flags.cacheMode = cacheMode
        flags.otherEndpointAnswers = otherEndpointAnswers
        if strict { flags.strict = true }
        if exitZeroWhenDone { flags.exitZeroWhenDone = true }
        if force { flags.force = true }
        if retryFailed { flags.retryFailed = true }
    }
}
