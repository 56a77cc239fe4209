import ChatBatchCore

extension RunMachine {
    /// What the metrics file says: now, or at the end when `ended` holds the concluded summary (its exit code, the
    /// lines left pending). `job` is the `chatbatch_job` label; `startTime` the wall clock when the run started.
    func metrics(job: String, startTime: Double, ended: (summary: RunSummary, at: Double)? = nil) -> MetricsSnapshot {
        let s = ended?.summary ?? summary
        var m = MetricsSnapshot(job: job)
        m.prompts = [
            ("answered", s.done), ("failed", s.failed), ("invalid", s.invalid), ("answered_before", s.alreadyDone),
            ("failed_before", s.alreadyFailed), ("in_flight", scheduler.inflight),
            ("not_sent_changed", s.changed + s.otherEndpoint)
        ]
        m.linesRead = s.inputLines
        if let ended { m.prompts.append(("left_pending", ended.summary.leftPending)) }
        m.providers = scheduler.lanes.map { lane in
            var p = MetricsSnapshot.Provider(name: lane.name)
            p.statusCounts = lane.statusCounts
            p.noAnswer = lane.noAnswer
            p.promptTokens = lane.promptTokens
            p.completionTokens = lane.completionTokens
            p.cost = lane.cost
            p.priceKnown = lane.settings.pricesKnown
            p.inflight = lane.inflight
            p.limit = lane.limiter.limit
            p.pauses = lane.rateLimits
            p.latency = lane.latency
            return p
        }
        // A concluded summary already counts the resends after a crash among the possibly billed twice.
        m.possiblyBilledTwice = ended == nil ? s.possiblyBilledTwice + s.resentAfterCrash : s.possiblyBilledTwice
        m.cacheHits = s.cacheHits
        m.paused = paused && ended == nil
        m.controlsApplied = controlsApplied
        m.startTime = startTime
        if let ended {
            m.endTime = ended.at
            m.exitCode = ended.summary.exit.rawValue
        }
        return m
    }
}
