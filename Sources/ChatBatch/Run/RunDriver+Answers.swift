import ChatBatchCore
import Dispatch
import Foundation

/// Carrying out what `AnswerPolicy` decided: the summary, the scheduler, and the checkpoint.
extension RunDriver {
    func handle(_ job: ScheduledJob, _ response: HTTPResponse, startedAt: Double, _ s: inout RunState) {
        let response = redactor.scrub(response)
        s.scheduler.returned(job)
        let r = job.request
        if response.status > 0 { s.summary.statusCounts[response.status, default: 0] += 1 }
        let warmingUp = job.probe && !s.scheduler.warmedUp && Double(Self.uptime() - started) / 1e9 < 120
        let context = AnswerPolicy.Context(config: config, retry: policy, warmingUp: warmingUp, warmupRetries: s.summary.warmupRetries)
        let effect = AnswerPolicy.effect(of: response, for: job, startedAt: startedAt, context: context, random: &s.random)
        if let usage = effect.usage {
            if usage.estimated {
                if s.summary.usageEstimated == 0 {
                    log("chatbatch: warning: the server sent no usage with some answers; their tokens and cost are estimated (the summary counts them, the flat output marks them usage_estimated, and --max-cost uses the estimate)")
                }
                s.summary.usageEstimated += 1
            }
            s.scheduler.succeeded(job, promptTokens: usage.promptTokens, completionTokens: usage.completionTokens, cost: usage.cost)
            s.summary.promptTokens += usage.promptTokens
            s.summary.completionTokens += usage.completionTokens
            s.summary.cost += usage.cost
        }
        // A send that may have been billed and is not the prompt's answer (a reset, a cut stream, a cancel).
        if effect.attempt.ambiguous { s.summary.possiblyBilledTwice += 1 }
        if response.status == 429 { s.scheduler.rateLimited(job) }
        func requeue(_ attempt: AttemptRecord?, note: String?) {
            writer.submit(.requeue(customID: r.customID, line: r.line, bodyHash: r.bodyHash, model: r.model, attempt: attempt, note: note))
        }
        switch effect.outcome {
        case .withheld:
            unsend(job, &s)
            requeue(nil, note: nil)
        case .cancelled:
            requeue(effect.attempt, note: "cancelled at shutdown")
        case .done(let record, let answer):
            s.summary.done += 1
            if record.repaired { s.summary.repaired += 1 }
            writer.submit(.finish(record, attempt: effect.attempt))
            if let cacheWriter, let key = r.cacheKey, let usage = effect.usage {
                cacheWriter.submit((key, r.model, CachedAnswer(
                    body: answer, requestID: record.requestID, promptTokens: usage.promptTokens, completionTokens: usage.completionTokens)))
            }
        case .askAgain(let again, _, let note):
            s.summary.retries += 1
            s.summary.invalidRetries += 1
            requeue(effect.attempt, note: note)
            s.scheduler.retryNow(again)
        case .retry(let after, let pauseKey, _, let warming):
            if warming { s.summary.warmupRetries += 1 }
            s.summary.retries += 1
            requeue(effect.attempt, note: nil)
            let at = Self.uptime() &+ Clock.nanoseconds(after)
            s.scheduler.retry(job, at: at, pauseUntil: pauseKey ? at : nil)
            if pauseKey && after > config.maxWait {
                stopRun(.auth(String(format: "the key asked to wait %@ before sending again (Retry-After), more than --max-wait %@; run the same command again later to carry on", Self.seconds(after), Self.seconds(config.maxWait))), &s)
            } else if pauseKey && after > config.retryMaxDelay && after > s.announcedPause {
                s.announcedPause = after
                let resume = Date().addingTimeInterval(after)
                log("chatbatch: the key asked to wait \(Self.seconds(after)) (Retry-After on a 429): sending resumes at \(Self.clockTime(resume))")
            }
        case .unreachable:
            // Nothing reached the server: not one of the line's attempts.
            var again = job
            again.attempt -= 1
            s.summary.attempts -= 1
            requeue(effect.attempt, note: nil)
            s.scheduler.retry(again, at: Self.uptime() &+ Clock.nanoseconds(policy.backoff(job.attempt, &s.random)))
        case .wrongRoute(_, let record):
            finishFailed(record, effect.attempt, &s)
        case .failed(let record):
            finishFailed(record, effect.attempt, &s)
        case .refuseModel(let refusal, let record):
            let (kept, isNew) = s.scheduler.refuse(model: refusal.model, refusal)
            if isNew {
                writer.submit(.refuseModel(kept))
                log("chatbatch: model \(kept.model) refused (HTTP \(kept.status) \(kept.code): \(kept.message)); its other lines are not sent and go to the errors file (run again with --retry-failed once the key may use it)")
            }
            finishFailed(record, effect.attempt, &s)
        case .stopRun(let reason, let note):
            requeue(effect.attempt, note: note)
            stopRun(.auth(reason), &s)
        case .stopUnsent(let reason):
            unsend(job, &s)
            requeue(nil, note: nil)
            stopRun(.auth(reason), &s)
        }
        if let outcome = effect.probeOutcome {
            for held in s.scheduler.settleModelProbe(job, outcome) {
                if case .refused(let refusal) = outcome { refuseUnsent(held, refusal, &s) }
            }
        }
    }

    /// `95 s`, `12 min`, `3.0 h`.
    static func seconds(_ s: Double) -> String {
        s < 120 ? String(format: "%.0f s", s) : s < 7200 ? String(format: "%.0f min", s / 60) : String(format: "%.1f h", s / 3600)
    }

    static func clockTime(_ date: Date) -> String {
        let f = DateFormatter()
        f.dateFormat = "HH:mm:ss"
        return f.string(from: date)
    }

    /// Takes back what `pump` counted when it let `job` go: it never left (withheld, or refused before sending).
    func unsend(_ job: ScheduledJob, _ s: inout RunState) {
        s.summary.attempts -= 1
        guard job.attempt == 1 else { return }
        s.summary.sent -= 1
        if config.cache != nil && config.cacheMode.reads { s.summary.cacheMisses -= 1 }
    }

    /// A line the response cache answers: written like an answer, marked cached, nothing sent or billed.
    /// The stored answer goes through the same checks and output as a live one (a streamed request's answer is
    /// kept reassembled), so its line is byte for byte the line the paid answer got.
    func answerFromCache(_ request: PreparedRequest, _ answer: CachedAnswer, _ s: inout RunState) {
        var record: FinishedRecord
        if !config.dropReasoning && !answer.body.contains(0x0A) && !answer.body.contains(0x0D) {
            // It passed its checks for this very body (the key covers response_format) and is one line: its bytes
            // are spliced into the output line as they are, as for a live answer.
            let r = request
            record = FinishedRecord(
                customID: r.customID, line: r.line, bodyHash: r.bodyHash, model: r.model, state: .done, statusCode: 200,
                requestID: answer.requestID, latencyMs: 0, attempts: 0,
                output: OutputLines.result(customID: r.customID, status: 200, requestID: answer.requestID, rawBody: answer.body, parsed: .null),
                kind: .results)
        } else {
            var plain = request
            plain.stream = false
            let response = HTTPResponse(
                status: 200, headers: answer.requestID.map { ["x-tera-request-id": $0] } ?? [:], body: answer.body, failure: nil,
                firstByteSeconds: 0, totalSeconds: 0)
            let context = AnswerPolicy.Context(config: config, retry: policy, warmingUp: false, warmupRetries: 0)
            let effect = AnswerPolicy.effect(of: response, for: ScheduledJob(request: plain), startedAt: 0, context: context, random: &s.random)
            guard case .done(let checked, _) = effect.outcome else {
                s.scheduler.enqueue([request])  // a stored answer that no longer passes its checks: ask the provider
                return
            }
            record = checked
            record.promptTokens = 0
            record.completionTokens = 0
            record.cost = 0
        }
        record.cached = true
        record.savedTokens = answer.promptTokens + answer.completionTokens
        record.savedCost = config.prices.cost(prompt: answer.promptTokens, completion: answer.completionTokens)
        s.summary.done += 1
        s.summary.cacheHits += 1
        s.summary.tokensSaved += record.savedTokens
        s.summary.costSaved += record.savedCost
        writer.submit(.finish(record, attempt: nil))
    }

    func finishFailed(_ record: FinishedRecord, _ attempt: AttemptRecord?, _ s: inout RunState) {
        s.summary.failed += 1
        s.summary.failuresByCode[record.errorCode ?? "unknown", default: 0] += 1
        writer.submit(.finish(record, attempt: attempt))
    }

    /// A line for a refused model: not sent, written to the errors file with the refusal's code and message.
    func refuseUnsent(_ job: ScheduledJob, _ refusal: ModelRefusal, _ s: inout RunState) {
        s.summary.blocked += 1
        finishFailed(AnswerPolicy.refusedUnsentRecord(job, refusal, input: config.input), nil, &s)
    }
}
