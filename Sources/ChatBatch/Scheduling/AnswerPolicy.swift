import ChatBatchCore
import Foundation

/// Tokens and dollars one answer was billed for.
struct Usage: Sendable, Equatable {
    var promptTokens: Int
    var completionTokens: Int
    var cost: Double
    /// The server sent no usage: these are chatbatch's estimate.
    var estimated = false
}

/// What one transport result means for its prompt, decided by `AnswerPolicy` and carried out by the run.
struct AnswerEffect: Sendable {
    /// What becomes of the prompt.
    enum Outcome: Sendable {
        /// Never handed to the transport (its claim was refused): back to pending, not an attempt.
        case withheld
        /// Stopped by us at shutdown: it may have been on the wire, so its resend counts as possibly billed twice.
        case cancelled
        /// Answered: the record holds the output line; `answer` is the body as one line of JSON (for the cache).
        case done(FinishedRecord, answer: [UInt8])
        /// A structured answer that did not parse or fit its schema, asked again (`--retry-invalid`).
        case askAgain(ScheduledJob, code: String, note: String)
        /// Retryable: send again after `after` seconds; a 429 pauses the whole key (`pauseKey`).
        case retry(after: Double, pauseKey: Bool, ambiguous: Bool, warming: Bool)
        /// Nothing reached the server (refused connection, name lookup, TLS handshake): the endpoint is down or
        /// wrong. Not an attempt of the line's; `reason` says what happened.
        case unreachable(reason: String)
        /// Finished without an answer: the record holds the errors-file line.
        case failed(FinishedRecord)
        /// 403/404 naming the model: the model is refused for this key; this line goes to the errors file.
        case refuseModel(ModelRefusal, FinishedRecord)
        /// 404/405 that does not name the model: the URL is wrong. The record is the line's failure, should the
        /// endpoint be one that answered before.
        case wrongRoute(reason: String, FinishedRecord)
        /// 401 (or an authentication error by its body): every other request would fail the same way; the run
        /// stops, this line stays pending.
        case stopRun(reason: String, note: String)
        /// The server's TLS certificate was refused before anything was sent: the run stops, nothing counts as sent.
        case stopUnsent(reason: String)
    }

    var outcome: Outcome
    /// The audit row for this attempt.
    var attempt: AttemptRecord
    /// Set when the server answered 2xx with a JSON body: the money is spent, whatever the outcome.
    var usage: Usage?
    /// The status and error code when the answer was a failure the line cannot recover from by itself (for the
    /// run's "every first answer fails the same way" check).
    var failureSignature: String? = nil
    /// A 429: the key pauses, and what it means for its limits is learnt (`Scheduler.rateLimited`).
    var rateLimited = false
    /// The wait a 429 asked for (`retry-after-ms`, `Retry-After`), nil when it said none.
    var serverWait: Double? = nil

    /// What the answer says about the job's model, when the job was the model's first request.
    var probeOutcome: ModelProbeOutcome? {
        switch outcome {
        case .done, .askAgain, .failed: return .answered
        case .refuseModel(let refusal, _): return .refused(refusal)
        case .withheld, .cancelled, .stopRun, .stopUnsent, .unreachable, .wrongRoute: return .unknown
        case .retry: return nil  // still probing
        }
    }
}

/// Turns a transport result into an effect, following the seed's error table: no I/O, no clock of its own.
enum AnswerPolicy {
    /// What the policy needs to know besides the answer.
    struct Context: Sendable {
        var config: RunConfiguration
        /// The provider that answered: its prices, its request-id header, its key's variable.
        var route: RouteSettings
        var retry: RetryPolicy
        /// The job is the warm-up probe, still within its patience for a cold backend (its 503s do not use up
        /// its attempts).
        var warmingUp: Bool
        /// Warm-up retries so far (its backoff doubles with them).
        var warmupRetries: Int
        /// The wall clock when the answer is read, in seconds since 1970 (a Retry-After date is counted from it).
        var now: Double
    }

    static func effect(
        of response: HTTPResponse, for job: ScheduledJob, startedAt: Double, context c: Context,
        random: inout some RandomNumberGenerator
    ) -> AnswerEffect {
        let r = job.request
        var requestID = AnswerReading.requestID(
            headers: response.headers, body: nil, profileHeaders: c.route.endpoint.profile.requestIDHeaders)
        var attempt = AttemptRecord(
            customID: r.customID, attempt: job.attempt, startedAt: startedAt,
            status: response.status > 0 ? response.status : nil,
            latencyMs: response.totalSeconds * 1000, requestID: requestID, error: response.failure?.description,
            ambiguous: false)
        var rateLimited = false
        let asked = RetryPolicy.askedWait(response.headers, now: c.now)
        func effect(_ outcome: AnswerEffect.Outcome, usage: Usage? = nil, signature: String? = nil) -> AnswerEffect {
            AnswerEffect(
                outcome: outcome, attempt: attempt, usage: usage, failureSignature: signature, rateLimited: rateLimited,
                serverWait: rateLimited ? asked : nil)
        }
        if let failure = response.failure, failure.kind == .withheld { return effect(.withheld) }
        if let failure = response.failure, failure.kind == .cancelled {
            attempt.ambiguous = true
            return effect(.cancelled)
        }
        var verdict = c.retry.verdict(
            for: response, attempt: job.attempt, asked: asked, endpoint: r.endpoint, random: &random)
        var reading: AnswerReading? = nil
        if verdict == .success {
            let read = AnswerReading(
                status: response.status, headers: response.headers, bytes: response.body, askedToStream: r.stream,
                endpoint: r.endpoint)
            reading = read
            requestID = AnswerReading.requestID(
                headers: response.headers, body: read.body, profileHeaders: c.route.endpoint.profile.requestIDHeaders)
            attempt.requestID = requestID
            if let problem = read.problem {
                // Not an answer, though the server may have billed it: asked again, counted as possibly billed twice.
                verdict = .retry(after: c.retry.backoff(job.attempt, &random), pauseAll: false, ambiguous: true)
                attempt.error = problem.message
            }
        }
        switch verdict {
        case .success:
            guard let read = reading, let body = read.body else { fatalError("a successful reading has a body") }
            return answered(
                body, read, response: response, job: job, requestID: requestID, attempt: &attempt, context: c,
                random: &random)
        case .retry(var after, let pauseAll, let ambiguous):
            attempt.ambiguous = ambiguous
            rateLimited = pauseAll
            let warming = c.warmingUp && response.status == 503  // only a cold backend's 503 earns patience
            if warming {
                after = max(after, min(8, c.config.retry.baseDelay * pow(2, Double(min(30, c.warmupRetries)))))
            }
            // A 429 is "not now": it uses none of the line's attempts (waiting is bounded by --max-wait and the
            // outage budget instead).
            if job.attempt - job.rateLimitedAttempts >= c.config.retry.maxAttempts && !warming && !pauseAll {
                let problem = reading?.problem
                let code = problem?.code ?? (response.failure != nil ? "transport_error" : errorCode(response))
                let message =
                    problem?.message ?? response.failure?.description
                    ?? ServerError(status: response.status, body: response.body).message
                return effect(
                    .failed(
                        failedRecord(
                            job, code: code, message: "gave up after \(job.attempt) attempts; last: \(message)",
                            response: response, requestID: requestID)))
            }
            return effect(.retry(after: after, pauseKey: pauseAll, ambiguous: ambiguous, warming: warming))
        case .unreachable:
            return effect(.unreachable(reason: response.failure?.message ?? "no connection"))
        case .fail where response.failure?.kind == .tooLarge:
            attempt.ambiguous = true  // the server had it: possibly billed, and not asked again
            let message = response.failure?.message ?? "the answer is too large"
            return effect(
                .failed(
                    failedRecord(
                        job, code: "response_too_large", message: message, response: response, requestID: requestID)),
                signature: "response_too_large")
        case .fail:
            let server = ServerError(status: response.status, body: response.body)
            let code = errorCode(response)
            return effect(
                .failed(
                    failedRecord(job, code: code, message: server.message, response: response, requestID: requestID)),
                signature: "HTTP \(response.status) \(code)")
        case .wrongRoute:
            let server = ServerError(status: response.status, body: response.body)
            let record = failedRecord(
                job, code: errorCode(response), message: server.message, response: response, requestID: requestID)
            return effect(
                .wrongRoute(reason: "HTTP \(response.status) \(server.message)", record),
                signature: "HTTP \(response.status) \(errorCode(response))")
        case .stopRun where response.failure?.kind == .proxyRefused:
            return effect(
                .stopUnsent(
                    reason:
                        "\(response.failure?.message ?? "the proxy refused the tunnel"); nothing reached the API. Check the proxy (--proxy, HTTPS_PROXY) and its rules, then run the same command again"
                ))
        case .stopRun where response.failure?.kind == .tlsRefused:
            return effect(
                .stopUnsent(
                    reason:
                        "\(hostAndPort(c.route.endpoint.url)): the server's TLS certificate was refused (\(response.failure?.message ?? "")); nothing was sent. If the gateway uses a private CA, pass --ca-cert PATH (job key ca_cert) or set SSL_CERT_FILE or CURL_CA_BUNDLE, then run the same command again"
                ))
        case .stopRun:
            let server = ServerError(status: response.status, body: response.body)
            return effect(
                .stopRun(
                    reason:
                        "the API key was refused (HTTP \(response.status): \(server.message)); check \(c.route.endpoint.apiKeyEnv) or --api-key-file, then run the same command again",
                    note: server.message))
        case .blockModel:
            let server = ServerError(status: response.status, body: response.body)
            let model = r.model ?? "(none)"
            let refusal = ModelRefusal(
                model: r.refusalKey ?? model, status: response.status, code: errorCode(response),
                message: server.message)
            let what =
                r.endpoint == .chat
                ? "model '\(model)' refused"
                : "\(r.endpoint.rawValue) (model '\(model)') refused by this provider (HTTP \(response.status))"
            let record = failedRecord(
                job, code: refusal.code,
                message: "\(c.config.files.input):\(r.line): \(what): \(server.message)",
                response: response,
                requestID: requestID)
            return effect(.refuseModel(refusal, record))
        }
    }

    /// A 2xx chat completion: checked against what the request asked for, then done, asked again or failed.
    private static func answered(
        _ body: JSON, _ read: AnswerReading, response: HTTPResponse, job: ScheduledJob, requestID: String?,
        attempt: inout AttemptRecord,
        context c: Context, random: inout some RandomNumberGenerator
    ) -> AnswerEffect {
        let r = job.request
        let tokens = AnswerReading.usage(body, promptEstimate: r.promptTokens, endpoint: r.endpoint)
        let usage = Usage(
            promptTokens: tokens.prompt, completionTokens: tokens.completion,
            cost: c.route.prices.cost(prompt: tokens.prompt, completion: tokens.completion, endpoint: r.endpoint),
            estimated: tokens.estimated
        )
        // Everything this prompt was billed for, earlier invalid answers included.
        var paid = job
        paid.paidPrompt += usage.promptTokens
        paid.paidCompletion += usage.completionTokens
        paid.paidCost += usage.cost
        paid.usageEstimated = paid.usageEstimated || usage.estimated
        let ttft = r.stream ? response.firstByteSeconds * 1000 : nil
        let kept = c.config.files.dropReasoning ? r.endpoint.droppingReasoning(body) : body
        if let problem = AnswerCheck.problem(responseFormat: r.responseFormat, body: body, endpoint: r.endpoint) {
            if problem.code != "truncated" && paid.invalidRetries < c.config.retry.retryInvalid {
                paid.invalidRetries += 1
                attempt.error = problem.code
                return AnswerEffect(
                    outcome: .askAgain(paid, code: problem.code, note: problem.message), attempt: attempt, usage: usage)
            }
            var record = failedRecord(
                paid, code: problem.code, message: problem.message, response: response, requestID: requestID,
                body: kept, ttftMs: ttft)
            record.repaired = read.repaired
            return AnswerEffect(outcome: .failed(record), attempt: attempt, usage: usage)
        }
        // The server's bytes go into the output line as they are when they are one clean line of JSON; a streamed,
        // trimmed or repaired answer is written from the parsed body.
        let verbatim = !read.wasStreamed && !c.config.files.dropReasoning && !read.repaired
        let output =
            verbatim
            ? OutputLines.result(
                customID: r.customID, status: response.status, requestID: requestID, rawBody: response.body,
                parsed: body)
            : OutputLines.result(customID: r.customID, status: response.status, requestID: requestID, body: kept)
                .serialized()
        let oneLine = verbatim && !response.body.containsLineBreak
        let answer = oneLine ? response.body : Array(body.serialized().utf8)
        var record = FinishedRecord(
            customID: r.customID, line: r.line, bodyHash: r.bodyHash, model: r.model, state: .done,
            statusCode: response.status,
            requestID: requestID, promptTokens: paid.paidPrompt, completionTokens: paid.paidCompletion,
            cost: paid.paidCost,
            latencyMs: response.totalSeconds * 1000, ttftMs: ttft, attempts: job.attempt, output: output, kind: .results
        )
        record.usageEstimated = paid.usageEstimated
        record.repaired = read.repaired
        return AnswerEffect(outcome: .done(record, answer: answer), attempt: attempt, usage: usage)
    }

    /// `host:port` of a URL, for messages.
    static func hostAndPort(_ url: String) -> String {
        URLComponents(string: url).map { "\($0.host ?? "?")\($0.port.map { ":\($0)" } ?? "")" } ?? url
    }

    /// The error code of an answer: the server's `error.code` when it names something, else its `error.type`,
    /// else `http_STATUS`.
    static func errorCode(_ response: HTTPResponse) -> String {
        ServerError(status: response.status, body: response.body).identifier
    }

    /// The errors-file record of a prompt that finished without an answer; the server's body is kept (its start,
    /// as text, when it is not JSON).
    static func failedRecord(
        _ job: ScheduledJob, code: String, message: String, response: HTTPResponse, requestID: String?,
        body: JSON? = nil, ttftMs: Double? = nil
    ) -> FinishedRecord {
        let r = job.request
        let kept = body ?? (response.status > 0 ? AnswerReading.kept(response.body) : nil)
        let output = OutputLines.error(
            customID: r.customID, code: code, message: message, status: response.status > 0 ? response.status : nil,
            requestID: requestID, body: kept)
        var record = FinishedRecord(
            customID: r.customID, line: r.line, bodyHash: r.bodyHash, model: r.model, state: .failed,
            statusCode: response.status > 0 ? response.status : nil, requestID: requestID,
            promptTokens: job.paidPrompt, completionTokens: job.paidCompletion, cost: job.paidCost, errorCode: code,
            errorMessage: message,
            latencyMs: response.totalSeconds * 1000, ttftMs: ttftMs, attempts: job.attempt, output: output.serialized(),
            kind: .errors)
        record.usageEstimated = job.usageEstimated
        return record
    }

    /// The errors-file record of a line not sent because its model was refused.
    static func refusedUnsentRecord(_ job: ScheduledJob, _ refusal: ModelRefusal, input: String) -> FinishedRecord {
        let r = job.request
        let message =
            "\(input):\(r.line): not sent: \(refusal.subject) was refused (HTTP \(refusal.status) \(refusal.code): \(refusal.message))"
        let output = OutputLines.error(customID: r.customID, code: refusal.code, message: message)
        return FinishedRecord(
            customID: r.customID, line: r.line, bodyHash: r.bodyHash, model: r.model, state: .failed,
            errorCode: refusal.code,
            errorMessage: message, output: output.serialized(), kind: .errors)
    }
}
