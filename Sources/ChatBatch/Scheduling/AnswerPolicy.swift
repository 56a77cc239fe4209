import ChatBatchCore
import Foundation

/// Tokens and dollars one answer was billed for.
struct Usage: Sendable, Equatable {
    var promptTokens: Int
    var completionTokens: Int
    var cost: Double
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
        /// Finished without an answer: the record holds the errors-file line.
        case failed(FinishedRecord)
        /// 403/404: the model is refused for this key; this line goes to the errors file.
        case refuseModel(ModelRefusal, FinishedRecord)
        /// 401: every other request would fail the same way; the run stops, this line stays pending.
        case stopRun(reason: String, note: String)
        /// The server's TLS certificate was refused before anything was sent: the run stops, nothing counts as sent.
        case stopUnsent(reason: String)
    }

    var outcome: Outcome
    /// The audit row for this attempt.
    var attempt: AttemptRecord
    /// Set when the server answered 2xx with a JSON body: the money is spent, whatever the outcome.
    var usage: Usage?

    /// What the answer says about the job's model, when the job was the model's first request.
    var probeOutcome: ModelProbeOutcome? {
        switch outcome {
        case .done, .askAgain, .failed: return .answered
        case .refuseModel(let refusal, _): return .refused(refusal)
        case .withheld, .cancelled, .stopRun, .stopUnsent: return .unknown
        case .retry: return nil  // still probing
        }
    }
}

/// Turns a transport result into an effect, following the seed's error table: no I/O, no clock of its own.
enum AnswerPolicy {
    /// What the policy needs to know besides the answer.
    struct Context: Sendable {
        var config: RunConfiguration
        var retry: RetryPolicy
        /// The job is the warm-up probe, still within its patience for a cold backend (its 503s and failed
        /// connects do not use up its attempts).
        var warmingUp: Bool
        /// Warm-up retries so far (its backoff doubles with them).
        var warmupRetries: Int
    }

    static func effect(
        of response: HTTPResponse, for job: ScheduledJob, startedAt: Double, context c: Context, random: inout some RandomNumberGenerator
    ) -> AnswerEffect {
        let r = job.request
        let requestID = response.headers["x-tera-request-id"] ?? response.headers["x-request-id"]
        var attempt = AttemptRecord(
            customID: r.customID, attempt: job.attempt, startedAt: startedAt, status: response.status > 0 ? response.status : nil,
            latencyMs: response.totalSeconds * 1000, requestID: requestID, error: response.failure?.description, ambiguous: false)
        func effect(_ outcome: AnswerEffect.Outcome, usage: Usage? = nil) -> AnswerEffect {
            AnswerEffect(outcome: outcome, attempt: attempt, usage: usage)
        }
        if let failure = response.failure, failure.kind == .withheld { return effect(.withheld) }
        if let failure = response.failure, failure.kind == .cancelled {
            attempt.ambiguous = true
            return effect(.cancelled)
        }
        var verdict = c.retry.verdict(for: response, attempt: job.attempt, random: &random)
        var parsed: JSON? = nil
        if verdict == .success {
            if r.stream {
                let assembled = StreamAssembler.assemble(response.body)
                if assembled.complete { parsed = assembled.body } else {
                    verdict = .retry(after: c.retry.backoff(job.attempt, &random), pauseAll: false, ambiguous: true)
                    attempt.error = "stream cut off before [DONE]"
                }
            } else {
                parsed = try? JSON.parse(response.body)
                if parsed?.objectValue == nil { parsed = nil }
            }
        }
        switch verdict {
        case .success:
            guard let body = parsed else {
                return effect(.failed(failedRecord(
                    job, code: "bad_response", message: "HTTP \(response.status) with a body that is not a JSON object", response: response)))
            }
            let prompt = body["usage"]?["prompt_tokens"]?.intValue ?? 0
            let completion = body["usage"]?["completion_tokens"]?.intValue ?? 0
            let usage = Usage(promptTokens: prompt, completionTokens: completion, cost: c.config.prices.cost(prompt: prompt, completion: completion))
            // Everything this prompt was billed for, earlier invalid answers included.
            var paid = job
            paid.paidPrompt += prompt
            paid.paidCompletion += completion
            paid.paidCost += usage.cost
            let ttft = r.stream ? response.firstByteSeconds * 1000 : nil
            let kept = c.config.dropReasoning ? AnswerCheck.droppingReasoning(body) : body
            if let format = r.responseFormat, let problem = AnswerCheck.problem(request: ["response_format": format], body: body) {
                if problem.code != "truncated" && paid.invalidRetries < c.config.retryInvalid {
                    paid.invalidRetries += 1
                    attempt.error = problem.code
                    return effect(.askAgain(paid, code: problem.code, note: problem.message), usage: usage)
                }
                return effect(.failed(failedRecord(
                    paid, code: problem.code, message: problem.message, response: response, body: kept, ttftMs: ttft)), usage: usage)
            }
            let output = r.stream || c.config.dropReasoning
                ? OutputLines.result(customID: r.customID, status: response.status, requestID: requestID, body: kept).serialized()
                : OutputLines.result(customID: r.customID, status: response.status, requestID: requestID, rawBody: response.body, parsed: body)
            let oneLine = !r.stream && !response.body.contains(0x0A) && !response.body.contains(0x0D)
            let answer = oneLine ? response.body : Array(body.serialized().utf8)
            return effect(.done(FinishedRecord(
                customID: r.customID, line: r.line, bodyHash: r.bodyHash, model: r.model, state: .done, statusCode: response.status,
                requestID: requestID, promptTokens: paid.paidPrompt, completionTokens: paid.paidCompletion, cost: paid.paidCost,
                latencyMs: response.totalSeconds * 1000, ttftMs: ttft, attempts: job.attempt, output: output, kind: .results), answer: answer),
                usage: usage)
        case .retry(var after, let pauseAll, let ambiguous):
            attempt.ambiguous = ambiguous
            let warming = c.warmingUp && (response.status >= 500 || response.failure?.kind == .notSent)
            if warming { after = max(after, min(8, c.config.retryBaseDelay * pow(2, Double(c.warmupRetries)))) }
            if job.attempt >= c.config.maxAttempts && !warming {
                let code = response.failure != nil ? "transport_error" : errorCode(response)
                let message = response.failure?.description ?? ServerError(status: response.status, body: response.body).message
                return effect(.failed(failedRecord(job, code: code, message: "gave up after \(job.attempt) attempts; last: \(message)", response: response)))
            }
            return effect(.retry(after: after, pauseKey: pauseAll, ambiguous: ambiguous, warming: warming))
        case .fail:
            let server = ServerError(status: response.status, body: response.body)
            return effect(.failed(failedRecord(job, code: errorCode(response), message: server.message, response: response)))
        case .stopRun where response.failure?.kind == .tlsRefused:
            let host = URLComponents(string: c.config.endpoint).map { "\($0.host ?? "?")\($0.port.map { ":\($0)" } ?? "")" } ?? c.config.endpoint
            return effect(.stopUnsent(reason: "\(host): the server's TLS certificate was refused (\(response.failure?.message ?? "")); nothing was sent. If the gateway uses a private CA, pass --ca-cert PATH (job key ca_cert) or set SSL_CERT_FILE or CURL_CA_BUNDLE, then run the same command again"))
        case .stopRun:
            let server = ServerError(status: response.status, body: response.body)
            return effect(.stopRun(
                reason: "the API key was refused (HTTP 401: \(server.message)); check \(c.config.apiKeyEnv) or --api-key-file, then run the same command again",
                note: server.message))
        case .blockModel:
            let server = ServerError(status: response.status, body: response.body)
            let model = r.model ?? "(none)"
            let refusal = ModelRefusal(model: model, status: response.status, code: errorCode(response), message: server.message)
            let record = failedRecord(
                job, code: refusal.code, message: "\(c.config.input):\(r.line): model '\(model)' refused: \(server.message)", response: response)
            return effect(.refuseModel(refusal, record))
        }
    }

    /// The error code of an answer: the server's `error.type`, else its `error.code`, else `http_STATUS`.
    static func errorCode(_ response: HTTPResponse) -> String {
        let server = ServerError(status: response.status, body: response.body)
        return server.type ?? server.code ?? "http_\(response.status)"
    }

    /// The errors-file record of a prompt that finished without an answer.
    static func failedRecord(
        _ job: ScheduledJob, code: String, message: String, response: HTTPResponse, body: JSON? = nil, ttftMs: Double? = nil
    ) -> FinishedRecord {
        let r = job.request
        let requestID = response.headers["x-tera-request-id"] ?? response.headers["x-request-id"]
        let kept = body ?? (response.status > 0 ? (try? JSON.parse(response.body)) : nil)
        let output = OutputLines.error(
            customID: r.customID, code: code, message: message, status: response.status > 0 ? response.status : nil,
            requestID: requestID, body: kept)
        return FinishedRecord(
            customID: r.customID, line: r.line, bodyHash: r.bodyHash, model: r.model, state: .failed,
            statusCode: response.status > 0 ? response.status : nil, requestID: requestID,
            promptTokens: job.paidPrompt, completionTokens: job.paidCompletion, cost: job.paidCost, errorCode: code, errorMessage: message,
            latencyMs: response.totalSeconds * 1000, ttftMs: ttftMs, attempts: job.attempt, output: output.serialized(), kind: .errors)
    }

    /// The errors-file record of a line not sent because its model was refused.
    static func refusedUnsentRecord(_ job: ScheduledJob, _ refusal: ModelRefusal, input: String) -> FinishedRecord {
        let r = job.request
        let message = "\(input):\(r.line): not sent: model '\(refusal.model)' was refused (HTTP \(refusal.status) \(refusal.code): \(refusal.message))"
        let output = OutputLines.error(customID: r.customID, code: refusal.code, message: message)
        return FinishedRecord(
            customID: r.customID, line: r.line, bodyHash: r.bodyHash, model: r.model, state: .failed, errorCode: refusal.code,
            errorMessage: message, output: output.serialized(), kind: .errors)
    }
}
