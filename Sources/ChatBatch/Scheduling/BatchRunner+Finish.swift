import ChatBatchCore
import Dispatch
import Foundation

/// Progress, signals, stopping, and the end of a run.
extension BatchRunner {
    // MARK: progress

    func snapshot() -> ProgressSnapshot {
        let finished = summary.done + summary.failed + summary.invalid + summary.alreadyDone + summary.alreadyFailed + summary.changed
        let now = DispatchTime.now().uptimeNanoseconds
        recentFinishes.append((now, summary.attempts))
        recentFinishes.removeAll { now - $0.0 > 10_000_000_000 }
        var rate = 0.0
        if let first = recentFinishes.first, now > first.0 {
            rate = Double(summary.attempts - first.1) / (Double(now - first.0) / 1e9)
        }
        return ProgressSnapshot(
            finished: finished, total: progressTotal, inflight: inflight, limit: limiter.limit, requestsPerSecond: rate,
            tokens: summary.totalTokens, cost: summary.cost, retries: summary.retries, failures: summary.failed + summary.invalid,
            elapsed: Double(now - started.uptimeNanoseconds) / 1e9)
    }

    func scheduleProgress(_ interval: Double) {
        queue.asyncAfter(deadline: .now() + interval) {
            guard !self.ended, let progress = self.progress else { return }
            progress.sink(self.snapshot(), false)
            self.scheduleProgress(interval)
        }
    }

    // MARK: stopping and finishing

    func stopRun(_ reason: Stop) {
        if stop == nil {
            stop = reason
            switch reason {
            case .auth(let m), .budget(let m): log("chatbatch: stopping: \(m)")
            case .interrupted: log("chatbatch: stopping: letting \(inflight) requests in flight finish (up to \(Int(config.grace)) s); interrupt again to stop at once")
            case .failed(let m): log("chatbatch: stopping: \(m)")
            }
            if case .interrupted = reason {
                queue.asyncAfter(deadline: .now() + config.grace) { self.transport.cancelAll() }
            } else if case .failed = reason {
                transport.cancelAll()
            }
        }
        checkFinished()
    }

    func installSignalHandlers() {
        for sig in [SIGINT, SIGTERM] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: queue)
            source.setEventHandler { [self] in
                if stop == nil {
                    stopRun(.interrupted)
                } else {
                    log("chatbatch: stopping now")
                    abortNow.store(true, ordering: .relaxed)
                    transport.cancelAll()
                }
            }
            source.resume()
            signalSources.append(source)
        }
    }

    func checkFinished() {
        guard !ended, inflight == 0 else { return }
        if stop == nil {
            guard inputDone, readyHead >= ready.count, retryReady.isEmpty, waitingRetries == 0, heldCount == 0 else { return }
        }
        ended = true
        for s in signalSources { s.cancel() }
        queue.async { self.finish() }
    }

    func finish() {
        writer.drain()
        transport.shutdown()
        let writeFailure = writer.failure
        writer.queue.sync {
            if writeFailure == nil && writer.outputs.needsRebuild {
                do {
                    for kind in OutputKind.allCases { try writer.outputs.rebuild(kind, store: store) }
                    try store.setMeta("output.needs_rebuild", "0")
                    writer.outputs.needsRebuild = false
                } catch {
                    log("chatbatch: could not rebuild the output files (\(error)); the next run or `chatbatch export` will")
                }
            }
            writer.outputs.sync()
        }
        writer.drain()
        summary.wallSeconds = Double(DispatchTime.now().uptimeNanoseconds - started.uptimeNanoseconds) / 1e9
        summary.possiblyBilledTwice += summary.resentAfterCrash
        // The writer's queue owns the checkpoint connection: read it there.
        let (pending, spent) = writer.queue.sync { (((try? store.stateCounts()) ?? [:])[.pending] ?? 0, try? store.totals().cost) }
        summary.leftPending = pending
        summary.checkpointCost = spent ?? summary.cost
        summary.blockedModels = refusedModels.mapValues { "HTTP \($0.status) \($0.code): \($0.message)" }
        summary.concurrencyLimit = limiter.limit
        summary.lowestConcurrency = limiter.lowest
        if let writeFailure, stop == nil { stop = .failed("\(writeFailure)") }
        switch stop {
        case .auth(let m), .budget(let m): summary.exit = .stoppedEarly; summary.stopReason = m
        case .interrupted: summary.exit = .interrupted; summary.stopReason = "interrupted; run the same command again to resume"
        case .failed(let m): summary.exit = .interrupted; summary.stopReason = m
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
        if writeFailure == nil { try? writer.queue.sync { try store.endRun(id: runID, exitCode: summary.exit.rawValue, summary: summary.json) } }
        writer.close()
        store.releaseLock()
        progress?.sink(snapshot(), true)
        finished.signal()
    }
}
