import ArgumentParser
import ChatBatch
import ChatBatchCore
import FakeGateway
import Foundation

/// `chatbatch run`: maps flags onto job settings and hands them to the library.
struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Send every prompt of a JSONL file (or job file) once, checkpointed, and write the results.",
        usage: """
            chatbatch run SOURCE [options]    (SOURCE: a job file, a JSONL file or -)
              Flags override the job file. Run the same command again to resume.

            EXIT CODES:
            \(RunExit.helpTable(width: 72))
            """)

    @OptionGroup var job: JobOptions
    @Flag(help: "Run against a fake gateway started in-process on loopback (no key, no network, no cost).")
    var fakeGateway = false
    @Option(parsing: .unconditional, help: "With --fake-gateway: its latency in ms (0 to 600000).") var fakeLatencyMs =
        20.0
    @Flag(help: "No progress output.") var quiet = false
    @Option(help: "Write messages and progress to this file, one line an event (the summary goes to stderr as well).")
    var logFile: String?
    @Option(
        help:
            "Log lines as text (time chatbatch level: message) or json (one object a line: time, level, program, message)."
    )
    var logFormat: LogFormat = .text
    @Option(
        parsing: .unconditional,
        help: "Seconds between progress reports (default: 0.25 redrawn on a terminal, 30 as log lines otherwise).")
    var progressInterval: Double?

    func validate() throws {
        guard fakeLatencyMs.isFinite, (0...600_000).contains(fakeLatencyMs) else {
            throw ValidationError("--fake-latency-ms must be a number from 0 to 600000, not \(fakeLatencyMs)")
        }
        if let p = progressInterval, !(p.isFinite && p > 0 && p <= 86_400) {
            throw ValidationError("--progress-interval must be a number of seconds from more than 0 to 86400, not \(p)")
        }
    }

    func run() throws {
        var settings = try job.jobSettings()
        var gateway: FakeGateway? = nil
        var keyOverride: String? = nil
        if fakeGateway {
            var c = FakeGatewayConfiguration()
            c.latencyMilliseconds = fakeLatencyMs
            // It serves whatever model the job names, so that any job can be tried for free.
            c.models += ([settings.model] + (settings.providers ?? []).map(\.model)).compactMap { $0 }.filter {
                !c.models.contains($0)
            }
            c.projectID = settings.projectID ?? settings.providers?.compactMap(\.projectID).first ?? "1234"
            settings.projectID = c.projectID
            let g = try FakeGateway(c)
            settings.baseURL = settings.provider == .tir ? g.rootURL : g.baseURL
            // Every provider of the job goes to the one fake gateway, each on its own route.
            settings.providers = settings.providers?.map { entry in
                var e = entry
                e.baseURL = e.provider == .tir ? g.rootURL : g.baseURL
                if e.provider == .tir { e.projectID = c.projectID }
                e.apiKeyFile = nil
                return e
            }
            settings.fakeGateway = true
            keyOverride = c.apiKeys[0]
            gateway = g

        }
        let config = try settings.resolve()
        try SideFiles.check(config, logFile: logFile)
        let output = try RunOutput(quiet: quiet, logFile: logFile, format: logFormat)
        if let gateway, !quiet { output.message("chatbatch: fake gateway on \(gateway.baseURL)") }
        let summary = RunSession.execute(
            config, apiKeyOverride: keyOverride, progress: output.progress(interval: progressInterval)
        ) { message in
            output.message(message)
        }
        gateway?.shutdown()
        output.summary(summary.text, logFile: logFile, format: logFormat, exit: summary.exit)
        throw ExitCode(summary.exit.rawValue)
    }
}

/// The flags `run` and `validate` share: the job, and every setting that can override it.
struct JobOptions: ParsableArguments {
    @Argument(
        help:
            "A job file (.yaml), or a JSONL file (or -, standard input) of Batch API, messages, prompt or record lines."
    )
    var source: String
    @OptionGroup(title: "Files") var file: FileOptions
    @OptionGroup(title: "Provider") var provider: ProviderOptions
    @OptionGroup(title: "Requests") var requests: RequestOptions
    @OptionGroup(title: "Concurrency, retries and waiting") var pacing: PacingOptions
    @OptionGroup(title: "Spending and earlier answers") var choice: ChoiceOptions

    /// The job file (if SOURCE is one) overridden by the flags.
    func jobSettings() throws -> JobSettings {
        var settings = JobSettings()
        if source.hasSuffix(".yaml") || source.hasSuffix(".yml") {
            settings = try JobFile.load(path: source, date: file.date)
        } else if source == "-" {
            guard let output = file.output else {
                throw ValidationError(
                    "reading the input from standard input (-) needs --output: it names the run's files")
            }
            settings.input = try StandardInput.spool(to: output + ".input.jsonl")
            settings.inputLabel = "standard input"
        } else {
            settings.input = source
        }
        var flags = JobSettings()
        flags.output = file.output
        flags.errors = file.errors
        flags.checkpoint = file.checkpoint
        flags.provider = provider.provider
        flags.format = file.format
        flags.otherEndpointAnswers = choice.otherEndpointAnswers
        flags.baseURL = provider.baseURL
        flags.model = provider.model
        flags.projectID = provider.projectID
        flags.apiKeyEnv = provider.apiKeyEnv
        flags.apiKeyFile = provider.apiKeyFile
        if !provider.headers.isEmpty {
            var h: [String: String] = [:]
            for line in provider.headers {
                guard let colon = line.firstIndex(of: ":") else {
                    throw ValidationError("--header takes 'Name: value', not '\(line)'")
                }
                h[String(line[..<colon])] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            }
            flags.headers = (settings.headers ?? [:]).merging(h) { $1 }
        }
        flags.concurrency = pacing.concurrency
        flags.maxAttempts = pacing.maxAttempts
        flags.timeout = pacing.timeout
        flags.connectTimeout = pacing.connectTimeout
        flags.maxResponseBytes = pacing.maxResponseBytes
        flags.grace = pacing.grace
        flags.system = requests.system
        if !requests.requestDefaults.isEmpty {
            var request = settings.request ?? JSONObject()
            for pair in requests.requestDefaults {
                guard let eq = pair.firstIndex(of: "=") else {
                    throw ValidationError("--set takes KEY=JSON, not '\(pair)'")
                }
                let text = String(pair[pair.index(after: eq)...])
                request[String(pair[..<eq])] = (try? JSON.parse(text)) ?? .string(text)  // a bare word is a string
            }
            flags.request = request
        }
        if provider.priceInput != nil || provider.priceOutput != nil {
            let base = settings.prices ?? (settings.provider ?? .default).profile.prices
            flags.prices = Prices(
                inputPerMillion: provider.priceInput ?? base.inputPerMillion,
                outputPerMillion: provider.priceOutput ?? base.outputPerMillion)
        }
        if provider.maxOutputTokens != nil || provider.contextTokens != nil {
            let base = settings.limits ?? (settings.provider ?? .default).profile.limits
            flags.limits = ModelLimits(
                maxOutputTokens: provider.maxOutputTokens ?? base.maxOutputTokens,
                contextTokens: provider.contextTokens ?? base.contextTokens)
        }
        flags.retryBaseDelay = pacing.retryBaseDelay
        flags.retryMaxDelay = pacing.retryMaxDelay
        flags.template = requests.template
        flags.idField = requests.idField
        flags.summaryJSON = file.summaryJSON
        flags.metricsFile = file.metricsFile
        flags.metricsInterval = file.metricsInterval
        flags.shard = try file.shard.map { try Shard(parsing: $0) }
        if choice.strict { flags.strict = true }
        if choice.exitZeroWhenDone { flags.exitZeroWhenDone = true }
        if choice.force { flags.force = true }
        if choice.retryFailed { flags.retryFailed = true }
        if requests.stream { flags.stream = true }
        flags.maxCost = choice.maxCost
        flags.requestsPerMinute = pacing.requestsPerMinute
        flags.tokensPerMinute = pacing.tokensPerMinute
        if pacing.noAdaptive { flags.adaptiveConcurrency = false }
        if pacing.noWarmup { flags.warmup = false }
        flags.retryInvalid = requests.retryInvalid
        if file.dropReasoning { flags.dropReasoning = true }
        if provider.allowHttp { flags.allowHTTP = true }
        if file.overwrite { flags.overwrite = true }
        flags.maxWait = pacing.maxWait
        flags.outageBudget = pacing.outageBudget
        flags.cache = choice.cache
        flags.caCert = provider.caCert
        flags.proxy = provider.proxy
        flags.cacheMode = choice.cacheMode
        settings = settings.overridden(by: flags)

        return settings
    }
}

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
    @Option(parsing: .unconditional, help: "The model's maximum output tokens (pre-flight check).") var maxOutputTokens:
        Int?
    @Option(parsing: .unconditional, help: "The model's context in tokens (pre-flight check).") var contextTokens: Int?
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
}
