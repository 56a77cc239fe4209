import ChatBatchCore

/// How a run ends: its exit code and the one headline that says what happened to the prompts.
extension RunMachine {
    /// The run's summary once the executor has wound it down: `ending` is what the checkpoint says is left,
    /// `unread` the lines of the input a stopped run never read (nil when it could not tell).
    func conclude(_ ending: CheckpointWriter.RunEnding, unread: Int?, now: Moment) -> RunSummary {
        var s = summary
        s.wallSeconds = Double(now.uptime &- started) / 1e9
        s.possiblyBilledTwice += s.resentAfterCrash
        s.blockedModels = scheduler.refusedEverywhere.mapValues { "HTTP \($0.status) \($0.code): \($0.message)" }
        s.concurrencyLimit = scheduler.limit
        s.shard = config.shape.shard.map { "\($0.index)/\($0.count)" }
        s.priceKnown = config.pricesKnown
        s.lowestConcurrency = scheduler.lowest
        if config.routes.count > 1 {
            s.providers = scheduler.lanes.map { lane in
                ProviderSummary(
                    name: lane.name, sent: lane.sent, done: lane.done, failed: lane.failed,
                    rateLimited: lane.rateLimits, tokens: lane.tokens,
                    cost: lane.cost, latencyP50: ending.latencies[lane.route]?.p50,
                    latencyP99: ending.latencies[lane.route]?.p99,
                    window: lane.limiter.limit, stopped: lane.stopped, priceKnown: lane.settings.pricesKnown)
            }
        }
        // Pending: the checkpoint's pending rows, the lines read but never claimed (no row yet), and the lines a
        // stopped run never read.
        s.leftPending = ending.pending + scheduler.unrecorded + (unread ?? 0)
        s.leftPendingIsAtLeast = unread == nil && !inputDone
        s.checkpointCost = ending.spent ?? s.cost
        var stop = self.stop
        if let failure = ending.writeFailure, stop == nil { stop = .checkpointFailed(failure.message) }
        if let stop {
            s.exit = stop.exit
            s.stopReason = stop.message
        } else if s.changed > 0 || s.otherEndpoint > 0 || (inputDone && s.leftPending > 0) {
            s.exit = .usageOrInput
            var reasons: [String] = []
            if s.changed > 0 {
                reasons.append("\(s.changed) lines changed since they were answered; pass --force to send them again")
            }
            if s.otherEndpoint > 0 {
                reasons.append(
                    "\(s.otherEndpoint) lines were answered by another endpoint; pass --other-endpoint-answers keep to keep those answers, or resend to send them again to \(config.endpoint.shownURL)"
                )
            }
            // The input was read through and still lines are pending: they are not in this input (it was replaced).
            if inputDone && s.leftPending > 0 {
                reasons.append(
                    "\(s.leftPending) lines the checkpoint holds as pending are not in the input (was it replaced?); they were not sent. Run the input they came from again, or give this input its own --output"
                )
            }
            s.stopReason = reasons.joined(separator: "; ")
        } else if s.failed + s.invalid + s.alreadyFailed > 0 {
            s.exit = config.choices.exitZeroWhenDone ? .allDone : .doneWithFailures
        } else {
            s.exit = .allDone
        }
        s.headline = headline(s, stop)
        return s
    }

    /// One line per outcome, saying what happened to the prompts (not the exit code's generic meaning).
    func headline(_ s: RunSummary, _ stop: RunStop?) -> String {
        let total = s.inputLines
        let answered = s.done + s.alreadyDone
        let pending =
            s.leftPending > 0
            ? "\(s.leftPendingIsAtLeast ? "at least " : "")\(s.leftPending) left pending" : "none left pending"
        switch stop {
        case .keyRefused: return "stopped: the API key was refused; \(pending), nothing lost (resumable)"
        case .certificateRefused:
            return "stopped before sending: the server's TLS certificate was refused; \(pending) (resumable)"
        case .budget:
            return "stopped at the budget: \(answered) answered, \(pending) (resumable with a larger --max-cost)"
        case .waitTooLong:
            return "stopped: the key asked to wait longer than --max-wait; \(answered) answered, \(pending) (resumable)"
        case .unreachable:
            return
                "stopped: the endpoint cannot be reached or the URL is wrong; \(answered) answered, \(pending) (resumable)"
        case .systematic:
            return "stopped: every first answer failed the same way; \(pending) (resumable once the cause is fixed)"
        case .interrupted: return "interrupted: \(answered) answered, \(pending); run the same command again to resume"
        case .checkpointFailed:
            return
                "stopped: the checkpoint could not be written (disk full?); \(answered) answered, \(pending) (resumable)"
        case .outputFailed:
            return
                "stopped: an output file could not be written (disk full?); every answer is in the checkpoint, \(pending) (resumable)"
        case .inputFailed:
            return "stopped: the input could not be read on; \(answered) answered, \(pending) (resumable)"
        case .drained:
            return "drained (chatbatch control): \(answered) answered, \(pending); run the same command again to resume"
        case nil:
            let orphans = inputDone && s.leftPending > 0 ? "\(s.leftPending) pending lines are not in the input" : nil
            if s.changed > 0 || s.otherEndpoint > 0 {
                return "done, but \(s.changed + s.otherEndpoint) lines were not sent"
                    + (orphans.map { " and \($0)" } ?? "") + ": see below"
            }
            if let orphans { return "done with the input, but \(orphans): see below" }
            // The same words as the summary's detail line: failed (answered with an error), invalid, already failed.
            let notAnswered = [(s.failed, "failed"), (s.invalid, "invalid"), (s.alreadyFailed, "already failed")]
                .filter { $0.0 > 0 }.map { "\($0.0) \($0.1)" }
            if !notAnswered.isEmpty {
                return
                    "done: \(answered) of \(total) lines answered, \(notAnswered.joined(separator: ", ")) (see the errors file)"
            }
            if s.inputUnchanged || s.sentNothingNew { return "nothing to do: all \(total) lines were done before" }
            return "all \(total) lines done"
        }
    }
}
