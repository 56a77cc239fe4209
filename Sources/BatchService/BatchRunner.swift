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

    func cancelQueued(_ id: String) { queue.withLock { $0.waiting.removeAll { $0 == id } } }

    /// Asks the run of batch `id` to stop sending (what is in flight finishes); a batch still waiting is settled.
    func cancelRunning(_ id: String, _ service: BatchService) {
        let running = queue.withLock { q -> Bool in
            if q.running.contains(id) { return true }
            q.waiting.removeAll { $0 == id }
            return false
        }
        if running {
            drainRun(id, service)
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

    private func drainRun(_ id: String, _ service: BatchService) {
        let checkpoint = Self.checkpoint(service.folder, id)
        // The run reads controls four times a second; until its checkpoint exists it has not started sending.
        for _ in 0..<200 {
            if (try? JobControl.give(.drain, provider: nil, checkpoint: checkpoint, nextRun: true, wait: 0)) != nil {
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
        let single = !(service.settings.job.providers ?? []).isEmpty
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
                started.append(id)
            }
            return (started, [])
        }
        for id in started {
            runs.enter()
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
        guard (service.settings.job.providers ?? []).isEmpty else { return }
        let others = queue.withLock { Array($0.running.subtracting([id])) }
        guard !others.isEmpty else { return }
        let total = service.settings.job.concurrency ?? 64
        let each = share(service, running: others.count + 1)
        for other in others {
            _ = try? JobControl.give(
                .set(.concurrency, Double(each)), provider: nil, checkpoint: Self.checkpoint(service.folder, other),
                nextRun: false, wait: 2)
        }
        for _ in 0..<600 {
            let inflight = others.reduce(0) { sum, other in
                sum
                    + ((try? CheckpointProgress.read(checkpoint: Self.checkpoint(service.folder, other)))?.inflight ?? 0)
            }
            if inflight <= total - each { return }
            usleep(100_000)
        }
    }

    /// Gives each of `running` batches its share of the job's concurrency (a run not yet holding its checkpoint
    /// takes its share when it starts).
    private func rebalance(_ running: [String], _ service: BatchService) {
        guard !running.isEmpty, (service.settings.job.providers ?? []).isEmpty else { return }
        let each = Double(share(service, running: queue.withLock { $0.running.count }))
        for id in running {
            _ = try? JobControl.give(
                .set(.concurrency, each), provider: nil, checkpoint: Self.checkpoint(service.folder, id),
                nextRun: false, wait: 0)
        }
    }

    private func run(_ id: String, _ service: BatchService) {
        guard var b = try? service.batch(id) else { return }
        let folder = service.folder
        switch b.status {
        case .validating:
            guard validate(&b, service) else { return }
        case .finalizing:
            return finish(id, service, cancelled: false)
        case .cancelling:
            return finish(id, service, cancelled: true)
        case .inProgress:
            break
        case .failed, .completed, .expired, .cancelled:
            return
        }
        if Int(Date().timeIntervalSince1970) > b.expiresAt {
            return finish(id, service, cancelled: false, expired: true)
        }
        var job = service.settings.job
        if (job.providers ?? []).isEmpty {
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
            return fail(&b, service, code: "run_refused", message: "\(error)")
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
        case .stoppedEarly:
            service.settings.log(
                "chatbatch serve: batch \(id) stopped early (\(summary.stopReason ?? "")); run again in "
                    + "\(Int(Self.retryAfter)) s")
            DispatchQueue.global().asyncAfter(deadline: .now() + Self.retryAfter) { [self] in enqueue(id, service) }
        case .usageOrInput, .checkpointBusy:
            fail(&b, service, code: "run_refused", message: summary.stopReason ?? "the run was refused")
        }
    }

    /// `validating`: every line must name the batch's endpoint; then the input is linked into the batch's folder
    /// (deleting the file later does not take it from the batch) and the batch is `in_progress`.
    private func validate(_ b: inout BatchRecord, _ service: BatchService) -> Bool {
        let source = service.folder.filePath(b.inputFileID)
        var problems: [LineProblem] = []
        let endpoint = b.endpoint
        let named = (try? service.file(b.inputFileID))?.urls
        do {
            // The upload noted the urls its lines name: when the batch's endpoint is the only one, no line is read.
            if named != [endpoint] {
                try JSONLines.forEach(source) { number, bytes in
                    guard problems.count < 100, let url = (try? JSON.parse(bytes))?["url"]?.stringValue, url != endpoint
                    else { return }
                    problems.append(
                        LineProblem(
                            code: "mismatched_endpoint",
                            message: "line \(number) names \(url); every line of this batch must name \(endpoint)",
                            line: number))
                }
            }
        } catch {
            fail(&b, service, code: "file_missing", message: "the input file \(b.inputFileID) cannot be read")
            return false
        }
        if !problems.isEmpty {
            b.errors = problems
            fail(&b, service, code: nil, message: nil)
            return false
        }
        let input = Self.input(service.folder, b.id)
        try? FileManager.default.createDirectory(
            atPath: service.folder.batchFolder(b.id), withIntermediateDirectories: true)
        if !FileManager.default.fileExists(atPath: input) {
            if link(source, input) != 0 { try? FileManager.default.copyItem(atPath: source, toPath: input) }
        }
        b.status = .inProgress
        b.inProgressAt = BatchService.now()
        service.update(b)
        return true
    }

    private func fail(_ b: inout BatchRecord, _ service: BatchService, code: String?, message: String?) {
        if let code, let message { b.errors = (b.errors ?? []) + [LineProblem(code: code, message: message)] }
        b.status = .failed
        b.failedAt = BatchService.now()
        service.update(b)
    }

    /// `finalizing`, then `completed` (or `cancelled`, `expired`): the output and errors files become file objects
    /// (each only when it holds a line), and the counts are the checkpoint's.
    func finish(_ id: String, _ service: BatchService, cancelled: Bool, expired: Bool = false) {
        guard var b = try? service.batch(id) else { return }
        let folder = service.folder
        if !cancelled && !expired {
            b.status = .finalizing
            b.finalizingAt = BatchService.now()
            service.update(b)
        }
        if let p = try? CheckpointProgress.read(checkpoint: Self.checkpoint(folder, id)) {
            b.completed = p.done
            b.failed = p.failed
            b.inputTokens = p.promptTokens
            b.outputTokens = p.completionTokens
        }
        for (path, isOutput) in [(Self.output(folder, id), true), (Self.errors(folder, id), false)] {
            let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
            guard size > 0 else { continue }
            let file = FileRecord(
                id: "file-" + id.dropFirst(6) + (isOutput ? "out" : "err"), bytes: size, createdAt: BatchService.now(),
                filename: "\(id)_\(isOutput ? "output" : "error").jsonl", purpose: "batch_output", path: path)
            try? service.register(file)
            if isOutput { b.outputFileID = file.id } else { b.errorFileID = file.id }
        }
        let now = BatchService.now()
        if expired {
            b.status = .expired
            b.expiredAt = now
        } else if cancelled {
            b.status = .cancelled
            b.cancelledAt = now
        } else {
            b.status = .completed
            b.completedAt = now
        }
        service.update(b)
    }
}
