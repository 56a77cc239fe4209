import ArgumentParser
import FakeGateway
import Foundation

/// `chatbatch fake-gateway`: the fake gateway as a standalone server.
struct FakeGatewayCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fake-gateway",
        abstract: "Serve a local fake of the Tera gateway and E2E TIR (failures included) until stopped.",
        discussion: """
            Prints its base URL (http://127.0.0.1:PORT/v1) as its first line. Routes: POST /v1/chat/completions, POST /project/p-{id}/genai/gpt_oss_120b/v1/chat/completions?project_id={id}, POST /v1/embeddings, POST /v1/completions, POST /v1/responses, GET /v1/models, and GET /fake/stats (requests in flight and ledger entries, for harnesses; not in the ledger).

            SIGTERM or SIGINT stops it: the listener closes, requests in flight get up to 1 s to be answered (the rest are dropped and recorded as billed), the --ledger file is flushed, and it exits 0. A second signal exits at once (128 + the signal).

            Failure rates are probabilities per request (0.05 = 5%). A script fixes what given custom_ids (sent as X-Client-Request-Id) get, attempt by attempt: --script 'a=429,429,ok;b=reset'. Actions: \(ScriptedAction.allCases.map(\.rawValue).joined(separator: ", ")).
            """)

    @Option(help: "Port to listen on; 0 picks a free one.") var port = 0
    @Option(help: "Address to listen on.") var host = "127.0.0.1"
    @Option(help: "Event-loop threads.") var threads = 1
    @Option(
        name: .customLong("api-key"),
        help: "An accepted API key (repeatable); others get 401. Default: any key, or none.") var apiKeys: [String] = []
    @Option(name: .customLong("unscoped-key"), help: "A valid key not scoped to the models: answered 403 (repeatable).")
    var unscopedKeys: [String] = []
    @Option(
        name: .customLong("model"),
        help: "A model in the catalog (repeatable). Default: openai/gpt-oss-120b and gpt_oss_120b.")
    var models: [String] = []
    @Option(name: .customLong("project-id"), help: "The TIR project id served.") var projectID = "1234"
    @Option(help: "Largest max_tokens accepted.") var maxOutputTokens = 4096
    @Option(help: "Reasoning field name: reasoning or reasoning_content.") var reasoningField = "reasoning"
    @Option(help: "Fixed latency before each answer, in ms.") var latencyMs = 0.0
    @Option(help: "Extra random latency up to this many ms.") var jitterMs = 0.0
    @Option(help: "Extra latency per completion token, in µs.") var perTokenUs = 0.0
    @Option(help: "Delay between streamed chunks, in ms.") var streamDelayMs = 0.0
    @Option(help: "Pad plain answers to about this many tokens (reasoning and content).") var answerTokens: Int?
    @Option(name: .customLong("fail-429"), help: "Rate of 429 rate_limit_error answers.") var fail429 = 0.0
    @Option(name: .customLong("fail-500"), help: "Rate of 500 server_error answers.") var fail500 = 0.0
    @Option(name: .customLong("fail-503"), help: "Rate of 503 service_unavailable answers.") var fail503 = 0.0
    @Option(help: "Rate of connections closed after the request was read (billed, no answer).") var reset = 0.0
    @Option(help: "Rate of requests never answered (billed).") var stall = 0.0
    @Option(help: "Retry-After seconds sent with 429s; -1 sends none.") var retryAfter = 1
    @Option(help: "Send this text as the Retry-After of every 429 instead (inf, 1.5, an HTTP date).")
    var retryAfterText: String?
    @Flag(help: "A 401 quotes the key it was given in its message.") var echoKey = false
    @Flag(help: "Answers carry no usage.") var omitUsage = false
    @Option(help: "Seconds of 503s after an idle spell (cold start).") var coldStart = 0.0
    @Option(help: "Idle seconds after which the backend is cold again.") var idleAfter = 60.0
    @Option(help: "Per-key limit of requests in flight; more get 429.") var maxInflight: Int?
    @Option(help: "Per-key tokens per second; more get 429.") var tokensPerSecond: Double?
    @Option(help: "Per-key requests per minute (a bucket refilling continuously); more get 429 with the real wait.")
    var requestsPerMinute: Double?
    @Option(help: "Seconds of --requests-per-minute the bucket holds (its burst).") var rateBucketSeconds = 60.0
    @Flag(help: "Send x-ratelimit-{limit,remaining,reset}-{requests,tokens} headers on every answer.")
    var rateLimitHeaders = false
    @Option(help: "Scripted answers: 'ID=ACTION,ACTION;ID2=...'.") var script: String?
    @Option(help: "Seed for the failure dice.") var seed: UInt64 = 42
    @Option(help: "Append every request received to this JSONL file.") var ledger: String?

    func run() throws {
        var c = FakeGatewayConfiguration()
        c.host = host
        c.port = port
        c.threads = threads
        // Without --api-key it takes any key or none, as llama-server or vLLM started without one do; with it, only
        // the keys given (or --unscoped-key) are accepted, and others are answered 401.
        if apiKeys.isEmpty && unscopedKeys.isEmpty { c.anyKey = true } else if !apiKeys.isEmpty { c.apiKeys = apiKeys }
        c.unscopedKeys = unscopedKeys
        if !models.isEmpty { c.models = models }
        c.projectID = projectID
        c.maxOutputTokens = maxOutputTokens
        c.reasoningField = reasoningField
        c.latencyMilliseconds = latencyMs
        c.jitterMilliseconds = jitterMs
        c.perTokenMicroseconds = perTokenUs
        c.streamChunkDelayMilliseconds = streamDelayMs
        c.answerTokens = answerTokens
        c.fail429Rate = fail429
        c.fail500Rate = fail500
        c.fail503Rate = fail503
        c.resetRate = reset
        c.stallRate = stall
        c.retryAfterSeconds = retryAfter < 0 ? nil : retryAfter
        c.retryAfterText = retryAfterText
        c.echoKeyInErrors = echoKey
        c.omitUsage = omitUsage
        c.coldStartSeconds = coldStart
        c.idleSeconds = idleAfter
        c.maxInflightPerKey = maxInflight
        c.tokensPerSecondPerKey = tokensPerSecond
        c.requestsPerMinutePerKey = requestsPerMinute
        c.rateBucketSeconds = rateBucketSeconds
        c.rateLimitHeaders = rateLimitHeaders
        if let script { c.script = try ScriptedAction.parseScript(script) }
        c.randomSeed = seed
        c.ledgerPath = ledger
        c.ledgerInMemory = false  // standalone, the ledger is the JSONL file
        // Block the stop signals before NIO starts its threads (they inherit the mask), so that only
        // `sigwait` below receives them: a signal can then never land on a thread that ignores it.
        var stopSignals = sigset_t()
        sigemptyset(&stopSignals)
        sigaddset(&stopSignals, SIGINT)
        sigaddset(&stopSignals, SIGTERM)
        pthread_sigmask(SIG_BLOCK, &stopSignals, nil)
        let gateway = try FakeGateway(c)
        print(gateway.baseURL)
        fflush(nil)
        Stream.write(
            c.anyKey
                ? "fake-gateway: any API key is accepted, or none (--api-key KEY accepts only KEY)\n"
                : "fake-gateway: accepting the keys given with --api-key; any other is answered 401\n")
        var received: Int32 = 0
        sigwait(&stopSignals, &received)
        Stream.write(
            "fake-gateway: stopping: no new connections, up to 1 s for answers in flight; signal again to exit at once\n"
        )
        let mask = stopSignals
        let second = Thread {
            var waitFor = mask
            var again: Int32 = 0
            sigwait(&waitFor, &again)
            _exit(128 + again)
        }
        second.start()
        gateway.stop(grace: 1)
        Foundation.exit(0)
    }
}
