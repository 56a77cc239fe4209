/// Everything the fake gateway can be told to do: who may call it, how fast it answers, and how it fails.
public struct FakeGatewayConfiguration: Sendable {
    /// Where it listens; port 0 picks a free port.
    public var host = "127.0.0.1"
    public var port = 0
    /// Event-loop threads serving connections.
    public var threads = 1

    /// Keys that are accepted and scoped to every model.
    public var apiKeys: [String] = ["sk-fake"]
    /// Accept any key, or none, as a local model server started without a key does (`apiKeys` is then not checked).
    public var anyKey = false
    /// Keys that are valid but not scoped to the models (answered with 403 permission_error).
    public var unscopedKeys: [String] = []
    /// Models in the catalog; any other model is 404 model_not_found.
    public var models: [String] = ["openai/gpt-oss-120b", "gpt_oss_120b"]
    /// Answer an unknown model as LiteLLM does (400 "Invalid model name passed in model=…") instead of a 404.
    public var unknownModelAs400 = false
    /// The TIR project id this gateway serves on its `/project/p-{id}/...` route.
    public var projectID = "1234"
    /// Largest `max_tokens` accepted (the seed's max output).
    public var maxOutputTokens = 4096
    /// Name of the reasoning field in answers: `reasoning` (the seed) or `reasoning_content` (older vLLM).
    public var reasoningField = "reasoning"

    /// Fixed latency before an answer, plus up to `jitterMilliseconds` more, plus this much per completion token.
    public var latencyMilliseconds = 0.0
    public var jitterMilliseconds = 0.0
    public var perTokenMicroseconds = 0.0
    /// Pad plain answers to about this many tokens (reasoning and content), for realistic answer sizes.
    public var answerTokens: Int? = nil
    /// Delay between streamed chunks.
    public var streamChunkDelayMilliseconds = 0.0

    /// Failure rates, each a probability per request in [0, 1].
    public var fail429Rate = 0.0
    public var fail500Rate = 0.0
    public var fail503Rate = 0.0
    /// Close the connection after reading the request (the request is billed, no answer is sent).
    public var resetRate = 0.0
    /// Never answer; the connection stays open until the client gives up (billed).
    public var stallRate = 0.0
    /// The Retry-After value, in seconds, sent with 429s; nil sends none.
    public var retryAfterSeconds: Int? = 1
    /// Sent as the Retry-After header of every 429 instead of `retryAfterSeconds`, as it is (`inf`, `1.5`, an HTTP
    /// date).
    public var retryAfterText: String? = nil
    /// A 401 quotes the key it was given in its message, as some servers do.
    public var echoKeyInErrors = false
    /// Answers carry no `usage` (and streams no usage chunk), as some servers do.
    public var omitUsage = false
    /// Every request is 503 for this many seconds after the gateway was idle `idleSeconds` or more.
    public var coldStartSeconds = 0.0
    public var idleSeconds = 60.0
    /// More than this many requests in flight for one key → 429 with Retry-After.
    public var maxInflightPerKey: Int? = nil
    /// Tokens per second allowed per key (prompt + completion); past it → 429 with Retry-After.
    public var tokensPerSecondPerKey: Double? = nil
    /// Requests per minute allowed per key: a bucket refilling continuously, holding `rateBucketSeconds` of them;
    /// past it → 429 whose Retry-After is the real wait (rounded up to whole seconds).
    public var requestsPerMinutePerKey: Double? = nil
    public var rateBucketSeconds = 60.0
    /// Send `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` on every answer, as OpenAI and LiteLLM do.
    public var rateLimitHeaders = false

    /// Scripted answers per client request id (the `X-Client-Request-Id` header), attempt by attempt.
    public var script: [String: [ScriptedAction]] = [:]
    /// Seed for the failure dice, so a failure mix is repeatable.
    public var randomSeed: UInt64 = 42
    /// Where the ledger is also appended as JSONL (standalone use); nil keeps it in memory only.
    public var ledgerPath: String? = nil
    /// Keep every ledger entry in memory for `ledger.snapshot()` (tests); the standalone command keeps only a count.
    public var ledgerInMemory = true

    public init() {}
}

/// What the gateway does with one scripted attempt.
public enum ScriptedAction: String, Sendable, CaseIterable {
    case ok
    case rateLimited = "429"
    case serverError = "500"
    case unavailable = "503"
    case badRequest = "400"
    case reset
    case stall
    /// A 200 whose content is cut-off JSON.
    case badJSON = "badjson"
    /// A 200 whose content is valid JSON that does not satisfy the requested schema (`{}`).
    case mismatch
    case requestTimeout = "408"
    case overloaded = "529"
    /// A 200 chat.completion with an empty `choices`.
    case noChoices = "nochoices"
    /// A 200 whose body is `{"error": …}`.
    case errorIn200 = "error200"
    /// A stream that carries an `error` event, then `[DONE]` (a 200 with an error body when not streamed).
    case errorInStream = "sseerror"
    /// A stream with one `data:` event cut short (not JSON), going on to its end and `[DONE]`.
    case brokenEvent = "brokenevent"
    /// A plain chat.completion JSON even when the request asked to stream (a server ignoring `stream`).
    case plainJSON = "plainjson"
    /// A 200 whose body is an HTML page.
    case html
    /// The answer encoded with `Content-Encoding: gzip`.
    case gzip
    /// Content holding bytes that are not UTF-8.
    case badUTF8 = "badutf8"
    /// Content holding an unpaired surrogate escape (`\ud800`).
    case loneSurrogate = "surrogate"
    /// An answer without `usage`.
    case noUsage = "nousage"

    /// Parses a script such as `a=429,429,ok;b=reset` (custom id, then one action per attempt).
    public static func parseScript(_ text: String) throws(FakeGatewayError) -> [String: [ScriptedAction]] {
        var script: [String: [ScriptedAction]] = [:]
        for entry in text.split(separator: ";") where !entry.trimmingCharacters(in: .whitespaces).isEmpty {
            let parts = entry.split(separator: "=", maxSplits: 1)
            guard parts.count == 2 else {
                throw FakeGatewayError(
                    code: "bad_script", message: "script entry '\(entry)' is not ID=ACTION,ACTION,...")
            }
            var actions: [ScriptedAction] = []
            for word in parts[1].split(separator: ",") {
                let name = word.trimmingCharacters(in: .whitespaces)
                guard let action = ScriptedAction(rawValue: name) else {
                    let known = ScriptedAction.allCases.map(\.rawValue).joined(separator: ", ")
                    throw FakeGatewayError(
                        code: "bad_script", message: "unknown action '\(name)' in script (known: \(known))")
                }
                actions.append(action)
            }
            script[parts[0].trimmingCharacters(in: .whitespaces)] = actions
        }
        return script
    }
}

/// A fake-gateway failure to start or a bad setting, with a stable code.
public struct FakeGatewayError: Error, Sendable, CustomStringConvertible {
    public let code: String
    public let message: String
    public var description: String { message }
}

#if canImport(Foundation)
    import Foundation
#endif
