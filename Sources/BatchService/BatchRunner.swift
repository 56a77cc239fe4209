import ChatBatch
import ChatBatchCore
import Foundation
import Synchronization

/// Runs the server's batches one at a time, in the order they were created, each through `RunSession` on a
/// checkpoint of its own in the batch's folder: limits, retries, the envelope, the cache and resume are `chatbatch
/// run`'s. A server killed mid-batch resumes it on its next start, and the checkpoint counts what was in flight as
/// possibly billed twice. One at a time: two runs on one key would each learn its limits alone (the fleet's problem),
/// so a second batch waits in `in_progress`, as OpenAI's queue does.
final class BatchRunner: Sendable {
    struct Queue {
        var waiting: [String] = []
        var running: String? = nil
        var stopping = false
        var stopped = false
        /// The running batch reached its `expires_at`: it drains, and ends `expired`.
        var expiring: String? = nil
    }

    private let queue = Mutex(Queue())
    private let wake = DispatchSemaphore(value: 0)
    private let ended = DispatchSemaphore(value: 0)
    /// How long a batch whose run stopped early (provider unreachable, key refused) waits before it is run again.
    static let retryAfter = 30.0

    static func checkpoint(_ folder: BatchFolder, _ id: String) -> String { folder.batchFolder(id) + "/checkpoint" }
    static func output(_ folder: BatchFolder, _ id: String) -> String { folder.batchFolder(id) + "/output.jsonl" }
    static func errors(_ folder: BatchFolder, _ id: String) -> String {
        folder.batchFolder(id) + "/output.errors.jsonl"
    }
    static func input(_ folder: BatchFolder, _ id: String) -> String { folder.batchFolder(id) + "/input.jsonl" }

    func start(_ service: BatchService, resuming: [String]) {
        queue.withLock { $0.waiting = resuming }
        Thread { [self] in loop(service) }.start()
    }

    func enqueue(_ id: String, _ service: BatchService) {
        queue.withLock { $0.waiting.append(id) }
        wake.signal()
    }

    func cancelQueued(_ id: String) { queue.withLock { $0.waiting.removeAll { $0 == id } } }

    /// Asks the run of batch `id` to stop sending (what is in flight finishes); a batch still waiting is settled.
    func cancelRunning(_ id: String, _ service: BatchService) {
        let running = queue.withLock { q -> Bool in
            if q.running == id { return true }
            q.waiting.removeAll { $0 == id }
            return false
        }
        if running {
            drainRun(id, service)
        } else {
            finish(id, service, cancelled: true)
        }
    }

    /// Stops the loop: the batch running now drains (it stays `in_progress`, resumed at the next start).
    func drain(_ service: BatchService) {
        let running = queue.withLock { q -> String? in
            q.stopping = true
            return q.running
        }
        if let running { drainRun(running, service) }
        wake.signal()
        ended.wait()
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

    private func loop(_ service: BatchService) {
        while true {
            let next = queue.withLock { q -> String?? in
                if q.stopping { return .some(nil) }
                guard !q.waiting.isEmpty else { return nil }
                let id = q.waiting.removeFirst()
                q.running = id
                return .some(id)
            }
            switch next {
            case .some(nil):
                queue.withLock { $0.stopped = true }
                ended.signal()
                return
            case .some(let id?):
                run(id, service)
                queue.withLock { $0.running = nil }
            case nil:
                wake.wait()
            }
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
                guard q.running == id else { return false }
                q.expiring = id
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
        let expiring = queue.withLock { q in
            defer { q.expiring = nil }
            return q.expiring == id
        }
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
