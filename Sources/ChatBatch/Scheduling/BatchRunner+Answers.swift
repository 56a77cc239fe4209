import ChatBatchCore
import Dispatch
import Foundation

/// What the runner does with each answer: keep it, retry it, fail it, or stop the run.
extension BatchRunner {
    // MARK: answers

    func handle(_ job: Job, _ response: HTTPResponse, startedAt: Double) {
        inflight -= 1
        budget.inflightWorst -= job.worst
        let r = job.request
        let latencyMs = response.totalSeconds * 1000
        let requestID = response.headers["x-tera-request-id"] ?? response.headers["x-request-id"]
        if response.status > 0 { summary.statusCounts[response.status, default: 0] += 1 }
        var attempt = AttemptRecord(
            customID: r.customID, attempt: job.attempt, startedAt: startedAt, status: response.status > 0 ? response.status : nil,
            latencyMs: latencyMs, requestID: requestID, error: response.failure?.description, ambiguous: false)
        if job.probe { probeInFlight = false }  // unless it is retried below, the next request becomes the probe
        if let failure = response.failure, failure.kind == .withheld {
            modelProbeSettled(job, .unknown)
            summary.attempts -= 1
            if job.attempt == 1 { summary.sent -= 1 }
            writer.submit(.requeue(customID: r.customID, line: r.line, bodyHash: r.bodyHash, model: r.model, attempt: nil, note: nil))
            return
        }
        if let failure = response.failure, failure.kind == .cancelled {
            // Stopped by us: it may have been on the wire, so a resend counts as possibly billed twice.
            attempt.ambiguous = true
            summary.possiblyBilledTwice += 1
            modelProbeSettled(job, .unknown)
            writer.submit(.requeue(customID: r.customID, line: r.line, bodyHash: r.bodyHash, model: r.model, attempt: attempt, note: "cancelled at shutdown"))
            return
        }
        var verdict = policy.verdict(for: response, attempt: job.attempt, random: &random)
        var parsed: JSON? = nil
        if verdict == .success {
            if r.stream {
                let assembled = StreamAssembler.assemble(response.body)
                if assembled.complete { parsed = assembled.body } else {
                    verdict = .retry(after: policy.backoff(job.attempt, &random), pauseAll: false, ambiguous: true)
                    attempt.error = "stream cut off before [DONE]"
                }
            } else {
                parsed = try? JSON.parse(response.body)
                if parsed?.objectValue == nil { parsed = nil }
            }
        }
        switch verdict {
        case .success:
            modelProbeSettled(job, .answered)
            guard let body = parsed else {
                finishFailed(job, attempt, code: "bad_response", message: "HTTP \(response.status) with a body that is not a JSON object", response: response)
                return
            }
            let usage = body["usage"]
            let prompt = usage?["prompt_tokens"]?.intValue ?? 0
            let completion = usage?["completion_tokens"]?.intValue ?? 0
            let cost = config.prices.cost(prompt: prompt, completion: completion)
            budget.spent += cost
            limiter.succeeded()
            if job.probe { warmedUp = true }
            if prompt + completion > 0 {
                tokenBucket?.adjust(job.estimate - Double(prompt + completion))
                let raw = Double(r.promptTokens + config.completionBound(r.maxTokens))
                tokenRatio = 0.9 * tokenRatio + 0.1 * min(1, Double(prompt + completion) / max(1, raw))
            }
            summary.promptTokens += prompt
            summary.completionTokens += completion
            summary.cost += cost
            // Everything this prompt was billed for, earlier invalid answers included.
            var paid = job
            paid.paidPrompt += prompt
            paid.paidCompletion += completion
            paid.paidCost += cost
            let ttft = r.stream ? response.firstByteSeconds * 1000 : nil
            let kept = config.dropReasoning ? AnswerCheck.droppingReasoning(body) : body
            if let format = r.responseFormat, let problem = AnswerCheck.problem(request: ["response_format": format], body: body) {
                if problem.code != "truncated" && paid.invalidRetries < config.retryInvalid {
                    paid.invalidRetries += 1
                    summary.retries += 1
                    summary.invalidRetries += 1
                    attempt.error = problem.code
                    writer.submit(.requeue(customID: r.customID, line: r.line, bodyHash: r.bodyHash, model: r.model, attempt: attempt, note: problem.message))
                    retryReady.append(paid)
                    return
                }
                finishFailed(paid, attempt, code: problem.code, message: problem.message, response: response, body: kept, ttftMs: ttft)
                return
            }
            summary.done += 1
            let output = r.stream || config.dropReasoning
                ? OutputLines.result(customID: r.customID, status: response.status, requestID: requestID, body: kept).serialized()
                : OutputLines.result(customID: r.customID, status: response.status, requestID: requestID, rawBody: response.body, parsed: body)
            writer.submit(.finish(FinishedRecord(
                customID: r.customID, line: r.line, bodyHash: r.bodyHash, model: r.model, state: .done, statusCode: response.status,
                requestID: requestID, promptTokens: paid.paidPrompt, completionTokens: paid.paidCompletion, cost: paid.paidCost,
                latencyMs: latencyMs, ttftMs: ttft, attempts: job.attempt, output: output, kind: .results), attempt: attempt))
        case .retry(var after, let pauseAll, let ambiguous):
            attempt.ambiguous = ambiguous
            if ambiguous { summary.possiblyBilledTwice += 1 }
            if response.status == 429 { limiter.rateLimited(sentEpoch: job.sentEpoch) }
            // The warm-up probe waits out a cold backend: 503s and failed connects do not use up its attempts.
            let warming = job.probe && !warmedUp && (response.status >= 500 || response.failure?.kind == .notSent)
                && Double(DispatchTime.now().uptimeNanoseconds - started.uptimeNanoseconds) / 1e9 < 120
            if warming {
                summary.warmupRetries += 1
                after = max(after, min(8, config.retryBaseDelay * pow(2, Double(summary.warmupRetries - 1))))
            }
            if job.attempt >= config.maxAttempts && !warming {
                modelProbeSettled(job, .answered)
                let code = response.failure != nil ? "transport_error" : Self.errorCode(response)
                let message = response.failure?.description ?? ServerError(status: response.status, body: response.body).message
                finishFailed(job, attempt, code: code, message: "gave up after \(job.attempt) attempts; last: \(message)", response: response)
                return
            }
            summary.retries += 1
            if job.probe && !warmedUp { probeWaiting = true }  // only this retry may go out until it succeeds
            writer.submit(.requeue(customID: r.customID, line: r.line, bodyHash: r.bodyHash, model: r.model, attempt: attempt, note: nil))
            let deadline = DispatchTime.now() + after
            if pauseAll && deadline > pausedUntil { pausedUntil = deadline }
            waitingRetries += 1
            let again = job
            queue.asyncAfter(deadline: deadline) {
                self.waitingRetries -= 1
                if self.stop == nil { self.retryReady.append(again) }
                self.pump()
            }
        case .fail:
            modelProbeSettled(job, .answered)
            let server = ServerError(status: response.status, body: response.body)
            finishFailed(job, attempt, code: Self.errorCode(response), message: server.message, response: response)
        case .stopRun:
            modelProbeSettled(job, .unknown)
            let server = ServerError(status: response.status, body: response.body)
            writer.submit(.requeue(customID: r.customID, line: r.line, bodyHash: r.bodyHash, model: r.model, attempt: attempt, note: server.message))
            stopRun(.auth("the API key was refused (HTTP 401: \(server.message)); check \(config.apiKeyEnv) or --api-key-file, then run the same command again"))
        case .blockModel:
            let server = ServerError(status: response.status, body: response.body)
            let model = r.model ?? "(none)"
            let refusal = refusedModels[model] ?? ModelRefusal(model: model, status: response.status, code: Self.errorCode(response), message: server.message)
            if refusedModels[model] == nil {
                refusedModels[model] = refusal
                writer.submit(.refuseModel(refusal))
                log("chatbatch: model \(model) refused (HTTP \(response.status) \(refusal.code): \(server.message)); its other lines are not sent and go to the errors file (run again with --retry-failed once the key may use it)")
            }
            finishFailed(job, attempt, code: refusal.code, message: "\(config.input):\(r.line): model '\(model)' refused: \(server.message)", response: response)
            modelProbeSettled(job, .refused(refusal))
        }
    }

    /// What the first request for a model learnt about it.
    enum ModelProbeOutcome {
        /// Answered (not refused): the model is usable; its held lines go out.
        case answered
        /// Refused (403/404): its held lines go to the errors file unsent.
        case refused(ModelRefusal)
        /// Not known (withheld, cancelled, 401): its held lines go back to the queue; the next one probes.
        case unknown
    }

    /// Settles a model's first request: releases, or refuses, the lines of that model held behind it.
    func modelProbeSettled(_ job: Job, _ outcome: ModelProbeOutcome) {
        guard job.modelProbe, let model = job.request.model else { return }
        probingModels.remove(model)
        let held = heldForModel.removeValue(forKey: model) ?? []
        heldCount -= held.count
        switch outcome {
        case .answered:
            provenModels.insert(model)
            retryReady.append(contentsOf: held)
        case .refused(let refusal):
            for j in held { refuseUnsent(j, refusal) }
        case .unknown:
            retryReady.append(contentsOf: held)
        }
    }

    /// A line for a refused model: not sent, written to the errors file with the refusal's code and message.
    func refuseUnsent(_ job: Job, _ refusal: ModelRefusal) {
        let r = job.request
        summary.blocked += 1
        summary.failed += 1
        summary.failuresByCode[refusal.code, default: 0] += 1
        let message = "\(config.input):\(r.line): not sent: model '\(refusal.model)' was refused (HTTP \(refusal.status) \(refusal.code): \(refusal.message))"
        let output = OutputLines.error(customID: r.customID, code: refusal.code, message: message)
        writer.submit(.finish(FinishedRecord(
            customID: r.customID, line: r.line, bodyHash: r.bodyHash, model: r.model, state: .failed, errorCode: refusal.code,
            errorMessage: message, output: output.serialized(), kind: .errors), attempt: nil))
    }

    static func errorCode(_ response: HTTPResponse) -> String {
        let server = ServerError(status: response.status, body: response.body)
        return server.type ?? server.code ?? "http_\(response.status)"
    }

    func finishFailed(
        _ job: Job, _ attempt: AttemptRecord, code: String, message: String, response: HTTPResponse, body: JSON? = nil, ttftMs: Double? = nil
    ) {
        let r = job.request
        summary.failed += 1
        summary.failuresByCode[code, default: 0] += 1
        let requestID = response.headers["x-tera-request-id"] ?? response.headers["x-request-id"]
        let kept = body ?? (response.status > 0 ? (try? JSON.parse(response.body)) : nil)
        let output = OutputLines.error(
            customID: r.customID, code: code, message: message, status: response.status > 0 ? response.status : nil,
            requestID: requestID, body: kept)
        writer.submit(.finish(FinishedRecord(
            customID: r.customID, line: r.line, bodyHash: r.bodyHash, model: r.model, state: .failed,
            statusCode: response.status > 0 ? response.status : nil, requestID: requestID,
            promptTokens: job.paidPrompt, completionTokens: job.paidCompletion, cost: job.paidCost, errorCode: code, errorMessage: message,
            latencyMs: response.totalSeconds * 1000, ttftMs: ttftMs, attempts: job.attempt, output: output.serialized(), kind: .errors), attempt: attempt))
    }
}
