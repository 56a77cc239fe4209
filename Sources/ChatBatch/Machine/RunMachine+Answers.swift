import ChatBatchCore

/// What the run does with each answer `AnswerPolicy` has read: the accounting, the checkpoint, the cache, the
/// endpoint's health, and stopping.
extension RunMachine {
    /// What one answer (or transport failure) changes, and what the run does about it.
    mutating func apply(_ answer: Answer, _ now: Moment) -> [RunAction] {
        var out: [RunAction] = []
        let job = answer.job
        let response = answer.response
        let lane = job.route
        let route = config.routes[lane]
        scheduler.returned(job, answeredAt: now.uptime)
        let r = job.request
        let heard = scheduler.lanes[lane].exchanged(response)
        if response.status > 0 { summary.statusCounts[response.status, default: 0] += 1 }
        if let ended = heard.endedOutage {
            let url = AnswerPolicy.hostAndPort(route.endpoint.url)
            let down = Double(now.uptime &- ended.since) / 1e9
            out.append(.log(RunMessages.answersAgain(host: url, after: down)))
        }
        if heard.firstAnswer { out.append(.record(.endpointAnswered(route: lane))) }
        let warmingUp = job.probe && !scheduler.lanes[lane].warmedUp && Double(now.uptime &- started) / 1e9 < 120
        let context = AnswerPolicy.Context(
            config: config, route: route, retry: retry, warmingUp: warmingUp, warmupRetries: summary.warmupRetries,
            now: now.wall)
        var effect = AnswerPolicy.effect(
            of: response, for: job, startedAt: answer.startedAt, context: context, random: &random)
        effect.attempt.route = job.route
        effect.attempt.inflight = job.sentInflight
        effect.attempt.window = job.sentWindow
        if let usage = effect.usage {
            if usage.estimated {
                if summary.usageEstimated == 0 {
                    out.append(.log(RunMessages.usageEstimated))
                }
                summary.usageEstimated += 1
            }
            scheduler.succeeded(
                job, promptTokens: usage.promptTokens, completionTokens: usage.completionTokens, cost: usage.cost,
                now: now.uptime)
            summary.promptTokens += usage.promptTokens
            summary.completionTokens += usage.completionTokens
            summary.cost += usage.cost
            // An answer came: failures held back so far are the lines' own.
            for held in scheduler.lanes[lane].firstFailures.release(settle: true) {
                out += finishFailed(held.record, held.attempt)
            }
        }
        // A send that may have been billed and is not the prompt's answer (a reset, a cut stream, a cancel).
        if effect.attempt.ambiguous { summary.possiblyBilledTwice += 1 }
        let hint = response.status > 0 ? RateLimitHint(headers: response.headers) : nil
        if effect.rateLimited {
            let limitedFor = scheduler.rateLimited(job, wait: effect.serverWait, hint: hint, now: now.uptime)
            if limitedFor > config.retry.outageBudget {
                out += stopLane(
                    lane,
                    .waitTooLong(
                        RunMessages.keyOnlyRateLimited(
                            at: Self.at(route, config), for: limitedFor, budget: config.retry.outageBudget)), now)
            }
        } else if response.status > 0 {
            scheduler.answered(job, hint: hint, now: now.uptime)
        }
        let back = (customID: r.customID, line: r.line, bodyHash: r.bodyHash, model: r.model)
        func requeue(_ attempt: AttemptRecord?, note: String?) -> RunAction {
            .record(
                .requeue(
                    customID: back.customID, line: back.line, bodyHash: back.bodyHash, model: back.model,
                    attempt: attempt, note: note))
        }
        switch effect.outcome {
        case .withheld:
            uncount(job)
            out.append(requeue(nil, note: nil))
        case .cancelled:
            out.append(requeue(effect.attempt, note: "cancelled at shutdown"))
        case .done(var record, let answer):
            record.route = job.route
            record.provider = config.routes.count > 1 ? route.name : nil
            scheduler.lanes[lane].settled(done: true)
            summary.done += 1
            if record.repaired { summary.repaired += 1 }
            out.append(.record(.finish(record, attempt: effect.attempt)))
            if config.cache.path != nil, config.cache.mode.writes, let key = r.cacheKey, let usage = effect.usage {
                out.append(
                    .store(
                        (
                            key, r.model,
                            CachedAnswer(
                                body: answer, requestID: record.requestID, promptTokens: usage.promptTokens,
                                completionTokens: usage.completionTokens)
                        )))
            }
        case .askAgain(let again, _, let note):
            summary.retries += 1
            summary.invalidRetries += 1
            out.append(requeue(effect.attempt, note: note))
            scheduler.retryNow(again)
        case .retry(let after, let pauseKey, _, let warming):
            if warming { summary.warmupRetries += 1 }
            summary.retries += 1
            out.append(requeue(effect.attempt, note: nil))
            let at = now.uptime &+ Clock.nanoseconds(after)
            var again = job
            if effect.rateLimited { again.rateLimitedAttempts += 1 }  // "not now": not one of the line's attempts
            scheduler.retry(again, at: at, pauseUntil: pauseKey ? at : nil)
            if pauseKey { out += announcePause(after, now) }
        case .unreachable(let reason):
            out += unreachable(job, reason, effect.attempt, now)
        case .failed(var record):
            record.route = response.status > 0 ? job.route : nil
            record.provider = config.routes.count > 1 && response.status > 0 ? route.name : nil
            if let signature = effect.failureSignature, scheduler.lanes[lane].firstFailures.holding {
                if scheduler.lanes[lane].firstFailures.hold(record, effect.attempt, signature: signature) {
                    let held = scheduler.lanes[lane].firstFailures.release()
                    for h in held { out += self.requeue(h.record, h.attempt, note: h.record.errorMessage) }
                    out += stopLane(
                        lane,
                        .systematic(
                            RunMessages.systematic(
                                at: Self.at(route, config), signature: signature, message: record.errorMessage ?? "")),
                        now)
                }
            } else {
                if effect.failureSignature != nil {
                    for held in scheduler.lanes[lane].firstFailures.release(settle: true) {
                        out += finishFailed(held.record, held.attempt)
                    }
                }
                out += finishFailed(record, effect.attempt)
                scheduler.lanes[lane].settled(done: false)
            }
        case .refuseModel(let refusal, var record):
            record.route = job.route
            let (kept, isNew) = scheduler.refuse(model: refusal.model, refusal, route: lane)
            let everywhere = scheduler.lanes.allSatisfy { $0.stopped != nil || $0.refusedModels[refusal.model] != nil }
            if isNew {
                out.append(.record(.refuseModel(kept, route: lane)))
                out.append(
                    .log(
                        RunMessages.modelRefused(
                            kept, at: Self.at(route, config), provider: route.name, everywhere: everywhere)))
            }
            if everywhere {
                out += finishFailed(record, effect.attempt)
            } else {
                out.append(requeue(effect.attempt, note: record.errorMessage))
                scheduler.retryNow(job)
            }
        case .wrongRoute(let reason, var record):
            if scheduler.lanes[lane].health.proven && scheduler.lanes[lane].firstFailures.settled {
                record.route = job.route
                out += finishFailed(record, effect.attempt)
            } else {
                out.append(requeue(effect.attempt, note: reason))
                scheduler.retryNow(job)
                out += stopLane(
                    lane,
                    .unreachable(
                        RunMessages.wrongRoute(
                            url: route.endpoint.shownURL, reason: reason, at: Self.at(route, config))), now)
            }
        case .stopRun(let reason, let note):
            out.append(requeue(effect.attempt, note: note))
            scheduler.retryNow(job)
            out += stopLane(lane, .keyRefused(config.routes.count > 1 ? "\(route.name): \(reason)" : reason), now)
        case .stopUnsent(let reason):
            uncount(job)
            out.append(requeue(nil, note: nil))
            scheduler.retryNow(job)
            out += stopLane(lane, .certificateRefused(reason), now)
        }
        if let outcome = effect.probeOutcome {
            for held in scheduler.settleModelProbe(job, outcome) {
                if case .refused(let refusal) = outcome { out += refuseUnsent(held, refusal) }
            }
        }
        return out
    }

    /// Nothing reached the server: not one of the line's attempts. Before the endpoint ever answered this stops
    /// the run with the cause; after, it is an outage: pause, probe with one request, stop once it outlasts its budget.
    private mutating func unreachable(_ job: ScheduledJob, _ reason: String, _ attempt: AttemptRecord, _ now: Moment)
        -> [RunAction]
    {
        var out: [RunAction] = []
        uncount(job)
        var again = job
        again.attempt -= 1
        let r = job.request
        let lane = job.route
        out.append(
            .record(
                .requeue(
                    customID: r.customID, line: r.line, bodyHash: r.bodyHash, model: r.model, attempt: attempt,
                    note: nil)))
        let url = config.routes[lane].endpoint.shownURL
        guard scheduler.lanes[lane].health.proven else {
            again.probe = false
            scheduler.retryNow(again)
            out += stopLane(
                lane,
                .unreachable(
                    RunMessages.neverReached(
                        url: url, reason: reason, possiblyBilled: summary.possiblyBilledTwice,
                        hint: Self.hint(reason, url: url))), now)
            return out
        }
        let (wait, isNew) = scheduler.lanes[lane].health.unreachable(
            reason, now: now.uptime, budget: config.retry.outageBudget, base: config.retry.baseDelay)
        guard let wait else {
            again.probe = false
            scheduler.retryNow(again)
            out += stopLane(
                lane,
                .unreachable(RunMessages.outageTooLong(url: url, budget: config.retry.outageBudget, reason: reason)),
                now)
            return out
        }
        if isNew {
            out.append(
                .log(
                    RunMessages.outageStarted(
                        host: AnswerPolicy.hostAndPort(url), reason: reason, budget: config.retry.outageBudget,
                        severalProviders: config.routes.count > 1)))
        }
        scheduler.holdForProbe(route: lane)
        let at = now.uptime &+ Clock.nanoseconds(wait)
        if config.routes.count > 1 {
            // Its line goes to the others now; the probe later is whatever line this provider takes next.
            again.probe = false
            scheduler.retryNow(again)
            scheduler.pause(route: lane, until: at)
        } else {
            scheduler.retry(again, at: at, pauseUntil: at)
        }
        return out
    }

    /// " at NAME" when the run has several providers.
    static func at(_ route: RouteSettings, _ config: RunConfiguration) -> String {
        config.routes.count > 1 ? " at \(route.name)" : ""
    }

    /// A 429's pause: said when longer than the backoff cap, the run stopped when longer than `--max-wait`.
    private mutating func announcePause(_ seconds: Double, _ now: Moment) -> [RunAction] {
        var out: [RunAction] = []
        if seconds > config.retry.maxWait {
            out += halt(
                .waitTooLong(RunMessages.waitTooLong(seconds: seconds, maxWait: config.retry.maxWait)), now)
        } else if seconds > config.retry.maxDelay && seconds > announcedPause {
            announcedPause = seconds
            out.append(.log(RunMessages.pause(seconds: seconds, resumesAt: Self.clockTime(now.wall + seconds))))
        }
        return out
    }

    /// What to check, from libcurl's message.
    static func hint(_ reason: String, url: String) -> String {
        let m = reason.lowercased()
        if m.contains("wrong version number") || m.contains("packet length too long") {
            return "Is it plain http (the URL says https)?"
        }
        if m.contains("connection refused") || m.contains("couldn't connect") || m.contains("failed to connect") {
            return "Is the server running, and is the port right?"
        }
        if m.contains("resolve") { return "Is the host name right?" }
        if m.contains("timed out") || m.contains("timeout") {
            return "Is the host reachable from here (a firewall, a proxy)?"
        }
        if m.contains("ssl") || m.contains("tls") { return "Is it https on this port?" }
        return "Is the base URL right?"
    }

    mutating func finishFailed(_ record: FinishedRecord, _ attempt: AttemptRecord?) -> [RunAction] {
        summary.failed += 1
        summary.failuresByCode[record.errorCode ?? "unknown", default: 0] += 1
        return [.record(.finish(record, attempt: attempt))]
    }

    /// A line for a refused model: not sent, written to the errors file with the refusal's code and message.
    mutating func refuseUnsent(_ job: ScheduledJob, _ refusal: ModelRefusal) -> [RunAction] {
        summary.blocked += 1
        return finishFailed(AnswerPolicy.refusedUnsentRecord(job, refusal, input: config.files.input), nil)
    }

    /// A line the response cache answers: written like an answer, marked cached, nothing sent or billed.
    /// The stored answer goes through the same checks and output as a live one (a streamed request's answer is
    /// kept reassembled), so its line is byte for byte the line the paid answer got.
    mutating func answerFromCache(_ request: PreparedRequest, _ answer: CachedAnswer, _ now: Moment) -> [RunAction] {
        var out: [RunAction] = []
        var record: FinishedRecord
        if !config.files.dropReasoning && !answer.body.containsLineBreak {
            // It passed its checks for this very body (the key covers response_format) and is one line: its bytes
            // are spliced into the output line as they are, as for a live answer.
            let r = request
            record = FinishedRecord(
                customID: r.customID, line: r.line, bodyHash: r.bodyHash, model: r.model, state: .done, statusCode: 200,
                requestID: answer.requestID, latencyMs: 0, attempts: 0,
                output: OutputLines.result(
                    customID: r.customID, status: 200, requestID: answer.requestID, rawBody: answer.body,
                    parsed: .null),
                kind: .results)
        } else {
            var plain = request
            plain.stream = false
            let response = HTTPResponse(
                status: 200, headers: answer.requestID.map { [ProviderKind.requestIDHeaders[0]: $0] } ?? [:],
                body: answer.body,
                failure: nil,
                firstByteSeconds: 0, totalSeconds: 0)
            let context = AnswerPolicy.Context(
                config: config, route: config.routes[0], retry: retry, warmingUp: false, warmupRetries: 0, now: now.wall
            )
            let effect = AnswerPolicy.effect(
                of: response, for: ScheduledJob(request: plain), startedAt: 0, context: context, random: &random)
            guard case .done(let checked, _) = effect.outcome else {
                scheduler.enqueue([request])  // a stored answer that no longer passes its checks: ask the provider
                return out
            }
            record = checked
            record.promptTokens = 0
            record.completionTokens = 0
            record.cost = 0
        }
        record.cached = true
        record.savedTokens = answer.promptTokens + answer.completionTokens
        record.savedCost = config.routes[0].prices.cost(
            prompt: answer.promptTokens, completion: answer.completionTokens, endpoint: request.endpoint)
        summary.done += 1
        summary.cacheHits += 1
        summary.tokensSaved += record.savedTokens
        summary.costSaved += record.savedCost
        out.append(.record(.finish(record, attempt: nil)))
        return out
    }

    /// `95 s`, `12 min`, `3.0 h`.
    static func duration(_ s: Double) -> String {
        if s < 120 { return "\(Int(s.rounded())) s" }
        if s < 7200 { return "\(Int((s / 60).rounded())) min" }
        return "\(Double(Int(s / 360)) / 10) h"
    }

    /// `HH:MM:SS` of a wall-clock time, in UTC.
    static func clockTime(_ wall: Double) -> String {
        let t = Int(wall) % 86_400
        func two(_ n: Int) -> String { n < 10 ? "0\(n)" : "\(n)" }
        return "\(two(t / 3600)):\(two(t % 3600 / 60)):\(two(t % 60))"
    }
}
