import ChatBatchCore
import Dispatch

/// What a run does as one worker of a job in a PostgreSQL store (`--store`), beyond a run on a checkpoint file.
extension RunDriver {
    /// Carries out what recording a group of turns in the store decided, on the run queue: the requests leave, and
    /// the machine hears of lost lines, the job's spend, or a store that cannot be written (nothing then leaves).
    func storeRecorded(_ record: StoreRecord) {
        queue.async { [self] in
            if !record.sends.isEmpty { send(record.sends) }
            if !record.lost.isEmpty { turn(.leaseLost(record.lost)) }
            if opened.config.limits.maxCost != nil, let spent = record.spent { turn(.jobSpent(spent)) }
            if let failure = record.failure {
                turn(.notSent(record.notSent))
                turn(.writeFailed(failure.message, outputOnly: false))
            }
        }
    }

    /// Every half second, on the store queue: tells the store of this worker's keys and hands the machine what
    /// the other workers made known (a pause, a share of the key's level), until the run finishes.
    func shareKeys(_ worker: StoreWorker) {
        worker.storeQueue.asyncAfter(deadline: .now() + 0.5) { [self] in
            guard !worker.stopped.withLock({ $0 }) else { return }
            let (lanes, finished) = room.withLock { r in
                (
                    r.machine.scheduler.lanes.map {
                        LaneLook(
                            pausedUntil: $0.pausedUntil, inflight: $0.inflight, window: $0.limiter.limit,
                            serving: $0.serving)
                    }, r.machine.finished
                )
            }
            guard !finished else { return }
            let news = worker.shareKeys(lanes, now: DispatchTime.now().uptimeNanoseconds)
            if !news.isEmpty { deliver(.sharedKey(news)) }
            // A job-wide budget: what every worker spent, also when this one has had no answer for a while.
            if opened.config.limits.maxCost != nil, let spent = try? worker.renewals.jobRow().double("spent") {
                deliver(.jobSpent(spent))
            }
            shareKeys(worker)
        }
    }

    /// This worker leaves the job: its unsent claims go back, and when every line of the job is settled, the job's
    /// output files are written from the store (by each worker that finds it so: the files are whole either way).
    func finishInStore(_ worker: StoreWorker, exitCode: Int32, summary: JSON) {
        let complete = worker.stop()
        try? worker.runSide.recordEnd(exitCode: Int(exitCode), summary: summary.serialized())
        if complete {
            do {
                let n = try StoreExport.write(worker.runSide, results: worker.results, errors: worker.errors)
                log(
                    "chatbatch: job '\(worker.name)' is complete in the store: wrote \(n.results) results to "
                        + "\(worker.results) and \(n.errors) errors to \(worker.errors)")
            } catch {
                log(
                    "chatbatch: job '\(worker.name)' is complete, but its outputs could not be written (\(error)); "
                        + "`chatbatch export \(worker.address) --job-name \(worker.name)` writes them")
            }
        } else if let open = worker.openLines, open > 0 {
            log(
                "chatbatch: job '\(worker.name)' has \(open) lines still open in the store (held by other workers, or "
                    + "given back); run a worker again to finish them")
        }
        worker.removeFolder()
    }

}
