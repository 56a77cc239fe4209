import ChatBatch
import ChatBatchCore
import Foundation
import Synchronization

/// Runs the server's batches, each through `RunSession` on a checkpoint of its own in the batch's folder: limits,
/// retries, the envelope, the cache and resume are `chatbatch run`'s. A server killed mid-batch resumes it on its
/// next start, and the checkpoint counts what was in flight as possibly billed twice.
///
/// Up to `parallel` batches run at once, in the order they were created, and share the job's concurrency equally:
/// a batch that starts or ends gives every other running batch its new share (`chatbatch control … set
/// concurrency`), so a small batch behind a large one is not held for hours, and together they never have more in
/// flight than the job allows. (A job with several providers runs one batch at a time: its concurrency is per
/// provider.) The rest wait in `in_progress`, as OpenAI's queue does.
final class BatchRunner: Sendable {
    struct Queue {
        var waiting: [String] = []
        var running: Set<String> = []
        var stopping = false
        /// Running batches that reached their `expires_at`: they drain, and end `expired`.
        var expiring: Set<String> = []
    }

    private let queue = Mutex(Queue())
    /// Every run's thread is in it until its batch settles: a drain waits on it.
    private let runs = DispatchGroup()
    /// How long a batch whose run stopped early (provider unreachable, key refused) waits before it is run again.
    static let retryAfter = 30.0
    /// The most batches that run at once.
    static let parallel = 4

    static func checkpoint(_ folder: BatchFolder, _ id: String) -> String { folder.batchFolder(id) + "/checkpoint" }
    static func output(_ folder: BatchFolder, _ id: String) -> String { folder.batchFolder(id) + "/output.jsonl" }
    static func errors(_ folder: BatchFolder, _ id: String) -> String {
        folder.batchFolder(id) + "/output.errors.jsonl"
    }
    static func input(_ folder: BatchFolder, _ id: String) -> String { folder.batchFolder(id) + "/input.jsonl" }

    func start(_ service: BatchService, resuming: [String]) {
        queue.withLock { $0.waiting = resuming }
        schedule(service)
    }

    func enqueue(_ id: String, _ service: BatchService) {
        queue.withLock { $0.waiting.append(id) }
        schedule(service)
    }

    /// A batch now `cancelling`: one still waiting is settled at once; a running one is drained (what is in
    /// flight finishes) and its run's thread settles it.
    func cancel(_ id: String, _ service: BatchService) {
        let running = queue.withLock { q -> Bool in
            if q.running.contains(id) { return true }
            q.waiting.removeAll { $0 == id }
            return false
        }
        if running {
            DispatchQueue.global().async { [self] in drainRun(id, service) }
        } else {
            finish(id, service, cancelled: true)
        }
    }

    /// Stops: no batch starts, every running one drains (it stays `in_progress`, resumed at the next start), and
    /// this returns once they have.
    func drain(_ service: BatchService) {
        let running = queue.withLock { q -> Set<String> in
            q.stopping = true
            return q.running
        }
        for id in running { drainRun(id, service) }
        runs.wait()
    }

    /// Gives the run of batch `id` a drain (it stops sending; what is in flight finishes), trying until its run
    /// holds the checkpoint or the batch no longer runs. It never takes the checkpoint itself (a run starting then
    /// would find it held).
    private func drainRun(_ id: String, _ service: BatchService) {
        let checkpoint = Self.checkpoint(service.folder, id)
        while queue.withLock({ $0.running.contains(id) }) {
            if (try? JobControl.give(.drain, provider: nil, checkpoint: checkpoint, nextRun: false, wait: 0)) != nil {
                return
            }
            usleep(50_000)
        }
    }

    /// The concurrency each of `running` batches gets: the job's, divided equally.
    private func share(_ service: BatchService, running: Int) -> Int {
        max(1, (service.settings.job.concurrency ?? 64) / max(1, running))
    }

    /// Starts waiting batches while fewer than `parallel` run, each on a thread of its own, and gives the batches
    /// already running their new share.
    private func schedule(_ service: BatchService) {
        let single = !Self.splitsConcurrency(service)
        let (started, _) = queue.withLock { q -> ([String], [String]) in
            guard !q.stopping else { return ([], []) }
            var started: [String] = []
            var index = 0
            while q.running.count < (single ? 1 : Self.parallel), index < q.waiting.count {
                let id = q.waiting[index]
                // A batch given back while its run ends waits until that run has.
                guard !q.running.contains(id) else {
                    index += 1
                    continue
                }
                q.waiting.remove(at: index)
                q.running.insert(id)
                runs.enter()  // under the lock: a drain that saw it running waits for it
                started.append(id)
            }
            return (started, [])
        }
        for id in started {
            Thread { [self] in
                makeRoom(for: id, service)
                run(id, service)
                let left = queue.withLock { q -> [String] in
                    q.running.remove(id)
                    q.expiring.remove(id)
                    return Array(q.running)
                }
                rebalance(left, service)
                schedule(service)
                runs.leave()
            }.start()
        }
    }

    /// Before batch `id` starts: the batches running give up their share of the concurrency for it, and it waits
    /// (up to a minute) until what they have in flight fits in the rest, so that together they never have more in
    /// flight than the job allows.
    private func makeRoom(for id: String, _ service: BatchService) {
        guard Self.splitsConcurrency(service) else { return }
        let others = queue.withLock { Array($0.running.subtracting([id])) }
        guard !others.isEmpty else { return }
        let total = service.settings.job.concurrency ?? 64
        let each = share(service, running: others.count + 1)
        give(each, to: others, wait: 2, service)
        for _ in 0..<600 {
            let inflight = others.reduce(0) { sum, other in
                let progress = try? CheckpointProgress.read(checkpoint: Self.checkpoint(service.folder, other))
                return sum + (progress?.inflight ?? 0)
            }
            if inflight <= total - each { return }
            usleep(100_000)
        }
    }

    /// Gives each of `running` batches its share of the job's concurrency, after one ended.
    private func rebalance(_ running: [String], _ service: BatchService) {
        guard !running.isEmpty, Self.splitsConcurrency(service) else { return }
        give(share(service, running: queue.withLock { $0.running.count }), to: running, wait: 0, service)
    }

    /// Sets the concurrency of each of `ids` batches' runs to `each`, waiting up to `wait` seconds for each run to
    /// take it (a run not yet holding its checkpoint takes its share when it starts).
    private func give(_ each: Int, to ids: [String], wait: Double, _ service: BatchService) {
        for id in ids {
            _ = try? JobControl.give(
                .set(.concurrency, Double(each)), provider: nil, checkpoint: Self.checkpoint(service.folder, id),
                nextRun: false, wait: wait)
        }
    }

    /// Batches divide the job's concurrency between them; a job with several providers (whose concurrency is per
    /// provider) runs one batch at a time instead.
    static func splitsConcurrency(_ service: BatchService) -> Bool { (service.settings.job.providers ?? []).isEmpty }

    private func run(_ id: String, _ service: BatchService) {
        guard let first = try? service.batch(id) else { return }
        let folder = service.folder
        switch first.status {
        case .validating:
            guard validate(id, service) else { return finish(id, service, cancelled: true, onlyIfCancelling: true) }
        case .finalizing:
            return finish(id, service, cancelled: false)
        case .cancelling:
            return finish(id, service, cancelled: true)
        case .inProgress:
            break
        case .failed, .completed, .expired, .cancelled:
            return
        }
        guard let b = try? service.batch(id), b.status == .inProgress else {
            return finish(id, service, cancelled: true, onlyIfCancelling: true)
        }
        // A drain (SIGTERM) came meanwhile: the batch stays `in_progress` for the next start.
        guard !queue.withLock({ $0.stopping }) else { return }
        if Int(Date().timeIntervalSince1970) > b.expiresAt {
            return finish(id, service, cancelled: false, expired: true)
        }
        var job = service.settings.job
        if Self.splitsConcurrency(service) {
            job.concurrency = share(service, running: queue.withLock { $0.running.count })
        }
        job.input = Self.input(folder, id)
        job.inputLabel = (try? service.file(b.inputFileID))?.filename ?? "input.jsonl"
        job.output = Self.output(folder, id)
        job.checkpoint = Self.checkpoint(folder, id)
        let logPath = folder.batchFolder(id) + "/run.log"
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        let log = FileHandle(forWritingAtPath: logPath)
        defer { try? log?.close() }
        // Its window ends while it runs: it stops sending, and what was done is its output (as OpenAI's expire).
        let left = Double(b.expiresAt) - Date().timeIntervalSince1970
        DispatchQueue.global().asyncAfter(deadline: .now() + max(0, left)) { [self] in
            let expire = queue.withLock { q -> Bool in
                guard q.running.contains(id) else { return false }
                q.expiring.insert(id)
                return true
            }
            if expire { drainRun(id, service) }
        }
        let summary: RunSummary
        do {
            let config = try job.resolve()
            summary = RunSession.execute(config, handleSignals: false) { line in
                try? log?.write(contentsOf: Data((line + "\n").utf8))
            }
        } catch {
            return fail(id, service, code: "run_refused", message: "\(error)")
        }
        let cancelling = (try? service.batch(id))?.status == .cancelling
        let expiring = queue.withLock { q in q.expiring.remove(id) != nil }
        switch summary.exit {
        case .allDone, .doneWithFailures:
            finish(id, service, cancelled: cancelling)
        case .interrupted where cancelling:
            finish(id, service, cancelled: true)
        case .interrupted where expiring:
            finish(id, service, cancelled: false, expired: true)
        case .interrupted:
            if !queue.withLock({ $0.stopping }) { enqueue(id, service) }  // a drain given from outside: carry on
        case .stoppedEarly where cancelling:
            finish(id, service, cancelled: true)
        case .checkpointBusy:
            // Another process holds its checkpoint a moment (a `chatbatch control`, `status`): run it again soon.
            DispatchQueue.global().asyncAfter(deadline: .now() + 1) { [self] in enqueue(id, service) }
        case .stoppedEarly:
            service.settings.log(
                "chatbatch serve: batch \(id) stopped early (\(summary.stopReason ?? "")); run again in "
                    + "\(Int(Self.retryAfter)) s")
            DispatchQueue.global().asyncAfter(deadline: .now() + Self.retryAfter) { [self] in enqueue(id, service) }
        case .usageOrInput:
            fail(id, service, code: "run_refused", message: summary.stopReason ?? "the run was refused")
        }
    }
}
