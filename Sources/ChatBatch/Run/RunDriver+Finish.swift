import ChatBatchCore
import Dispatch
import Foundation

/// Progress, signals, stopping, and the end of a run.
extension RunDriver {
    // MARK: progress

    func snapshot(_ s: inout RunState) -> ProgressSnapshot {
        let sum = s.summary
        let finished = sum.done + sum.failed + sum.invalid + sum.alreadyDone + sum.alreadyFailed + sum.changed
        let now = Self.uptime()
        s.recentFinishes.append((now, sum.attempts))
        s.recentFinishes.removeAll { now - $0.0 > 10_000_000_000 }
        var rate = 0.0
        if let first = s.recentFinishes.first, now > first.0 {
            rate = Double(sum.attempts - first.1) / (Double(now - first.0) / 1e9)
        }
        return ProgressSnapshot(
            finished: finished, total: s.progressTotal, inflight: s.scheduler.inflight, limit: s.scheduler.limiter.limit,
            requestsPerSecond: rate, tokens: sum.totalTokens, cost: sum.cost, retries: sum.retries, failures: sum.failed + sum.invalid,
            elapsed: Double(now - started) / 1e9)
    }

    func scheduleProgress(_ interval: Double) {
        queue.asyncAfter(deadline: .now() + interval) {
            guard let progress = self.progress else { return }
            let snapshot = self.withState { s in s.ended ? nil : self.snapshot(&s) }
            guard let snapshot else { return }
            progress.sink(snapshot, false)
            self.scheduleProgress(interval)
        }
    }

    // MARK: stopping and finishing

    func stopRun(_ reason: Stop, _ s: inout RunState) {
        if s.stop == nil {
            s.stop = reason
            switch reason {
            case .auth(let m), .budget(let m): log("chatbatch: stopping: \(m)")
            case .interrupted:
                log("chatbatch: stopping: letting \(s.scheduler.inflight) requests in flight finish (up to \(Int(config.grace)) s); interrupt again to stop at once")
            case .failed(let m):
                log("chatbatch: stopping: \(m)" + (s.scheduler.inflight > 0 ? " (the \(s.scheduler.inflight) requests in flight cannot be recorded: they are cancelled, and the next run sends them again and counts them as possibly billed twice)" : ""))
            case .outputFailed(let m):
                log("chatbatch: stopping: \(m)" + (s.scheduler.inflight > 0 ? " (the \(s.scheduler.inflight) requests in flight finish into the checkpoint)" : ""))
            }
            if case .interrupted = reason {
                queue.asyncAfter(deadline: .now() + config.grace) { self.transport.cancelAll() }
            } else if case .failed = reason {
                transport.cancelAll()
            }
        }
        checkFinished(&s)
    }

    func installSignalHandlers() {
        signalSources.withLock { sources in
            for sig in [SIGINT, SIGTERM] {
                signal(sig, SIG_IGN)
                let source = DispatchSource.makeSignalSource(signal: sig, queue: queue)
                source.setEventHandler { [self] in
                    withState { s in
                        if s.stop == nil {
                            stopRun(.interrupted, &s)
                        } else {
                            log("chatbatch: stopping now")
                            abortNow.store(true, ordering: .relaxed)
                            transport.cancelAll()
                        }
                    }
                }
                source.resume()
                sources.append(source)
            }
        }
    }

    /// Ends the run once nothing is in flight and either the work is done or a stop was asked for.
    func checkFinished(_ s: inout RunState) {
        guard !s.ended, s.scheduler.inflight == 0 else { return }
        if s.stop == nil {
            guard s.inputDone, s.scheduler.isDrained else { return }
        }
        s.ended = true
        signalSources.withLock { sources in for source in sources { source.cancel() } }
        // On the input queue (idle by then), so that closing the feed cannot race a read.
        inputQueue.async { self.finish() }
    }

    /// Commits what is left, brings the output files up to date, records the run's end and gives up the checkpoint.
    /// Runs on the input queue.
    func finish() {
        transport.shutdown()
        var s = queue.sync { withState { $0 } }
        s.summary.wallSeconds = Double(Self.uptime() - started) / 1e9
        s.summary.possiblyBilledTwice += s.summary.resentAfterCrash
        s.summary.blockedModels = s.scheduler.refusedModels.mapValues { "HTTP \($0.status) \($0.code): \($0.message)" }
        s.summary.concurrencyLimit = s.scheduler.limiter.limit
        s.summary.lowestConcurrency = s.scheduler.limiter.lowest
        feed.withLock { $0.close() }
        cacheWriter?.close()
        let complete = s.stop == nil && s.summary.changed == 0 && s.inputDone
        let summary = writer.endRun(log: log, fingerprint: complete ? fingerprint : nil, known: finishedInput) { ending in
            var summary = s.summary
            summary.leftPending = ending.pending
            summary.checkpointCost = ending.spent ?? summary.cost
            if let writeFailure = ending.writeFailure, s.stop == nil { s.stop = .failed("\(writeFailure)") }
            switch s.stop {
            case .auth(let m), .budget(let m): summary.exit = .stoppedEarly; summary.stopReason = m
            case .interrupted: summary.exit = .interrupted; summary.stopReason = "interrupted; run the same command again to resume"
            case .failed(let m), .outputFailed(let m): summary.exit = .interrupted; summary.stopReason = m
            case nil:
                if summary.changed > 0 {
                    summary.exit = .usageOrInput
                    summary.stopReason = "\(summary.changed) lines changed since they were answered; pass --force to send them again"
                } else if summary.failed + summary.invalid + summary.alreadyFailed > 0 {
                    summary.exit = .doneWithFailures
                } else {
                    summary.exit = .allDone
                }
            }
            return (summary, summary.exit.rawValue, summary.json)
        }
        s.summary = summary
        queue.sync { withState { $0.summary = summary } }
        progress?.sink(snapshot(&s), true)
        finished.signal()
    }
}
