import ChatBatchCore

/// Where a prompt stands in the checkpoint.
enum RequestState: String, Sendable {
    /// Not sent, or sent and known not to have been answered (it will be sent by this run or the next).
    case pending
    /// Committed as about to be sent; still so after a crash means "possibly billed".
    case inflight
    /// Answered; its result line is in the checkpoint and in the results file.
    case done
    /// Finished without an answer (invalid line, 400, attempts exhausted); its line is in the errors file.
    case failed
}

/// Which output file a finished prompt's line belongs to.
enum OutputKind: Int, Sendable, CaseIterable {
    case results = 0
    case errors = 1
    var name: String { self == .results ? "results" : "errors" }
}

/// A prompt's outcome as the checkpoint stores it.
struct FinishedRecord: Sendable {
    var customID: String
    var line: Int
    var bodyHash: String
    var model: String?
    var state: RequestState  // done or failed
    var statusCode: Int?
    var requestID: String?
    var promptTokens = 0
    var completionTokens = 0
    var cost = 0.0
    var errorCode: String?
    var errorMessage: String?
    var latencyMs: Double?
    /// Time to the first byte of a streamed answer.
    var ttftMs: Double? = nil
    /// HTTP attempts this run made for it (for the flat output's `attempts`).
    var attempts = 0
    /// The canonical (batch-shaped) output line, without its newline.
    var output: String
    var kind: OutputKind
    /// Answered from the response cache: nothing was sent or billed; `savedTokens`/`savedCost` is what it would have
    /// cost.
    var cached = false
    var savedTokens = 0
    var savedCost = 0.0
    /// The server sent no usage (or only part of it): the tokens and cost are chatbatch's estimate.
    var usageEstimated = false
    /// Text in the answer that could not be decoded (invalid UTF-8, an unpaired surrogate) was replaced with U+FFFD.
    var repaired = false
    /// Which of the run's endpoints answered (nil: none did, e.g. an invalid line or a cache hit).
    var route: Int? = nil
    /// The provider's name, in a run with several (the flat output's `provider`).
    var provider: String? = nil

    /// What the flat output says about it besides the answer.
    var facts: LineFacts {
        LineFacts(
            attempts: attempts, latencyMs: latencyMs, cost: cost, ttftMs: ttftMs, cached: cached,
            usageEstimated: usageEstimated, repaired: repaired,
            provider: provider)
    }
}

/// One HTTP attempt, for the audit table.
struct AttemptRecord: Sendable {
    var customID: String
    var attempt: Int
    var startedAt: Double
    var status: Int?
    var latencyMs: Double
    var requestID: String?
    var error: String?
    var ambiguous: Bool
    /// Which of the run's endpoints it went to (0 with one provider).
    var route = 0
    /// Requests in flight, and the in-flight limit, when it was sent (what the report draws and the limit learns from).
    var inflight: Int? = nil
    var window: Int? = nil
}

/// A model the provider refused for this key (403 `permission_error` or 404 `model_not_found`), kept in the
/// checkpoint so that neither this run nor a resume spends another request on it.
struct ModelRefusal: Sendable, Equatable {
    var model: String
    var status: Int
    /// The answer's error type (or code): `model_not_found`, `permission_error`.
    var code: String
    /// The server's message.
    var message: String

    /// What was refused, as messages name it: `model gpt-x`, or `/v1/embeddings (model e5)` for an endpoint the
    /// provider does not serve (`model` is then `PreparedRequest.refusalKey`).
    var subject: String {
        guard model.hasPrefix("/v1/"), let space = model.firstIndex(of: " ") else { return "model \(model)" }
        return "\(model[..<space]) (model \(model[model.index(after: space)...]))"
    }

    init(model: String, status: Int, code: String, message: String) {
        self.model = model
        self.status = status
        self.code = code
        self.message = message
    }

    init?(json: JSON?) {
        guard let json, let model = json["model"]?.stringValue, let status = json["status"]?.intValue,
            let code = json["code"]?.stringValue, let message = json["message"]?.stringValue
        else { return nil }
        self.init(model: model, status: status, code: code, message: message)
    }

    var json: JSON {
        ["model": .string(model), "status": .int(status), "code": .string(code), "message": .string(message)]
    }
}
