import ChatBatch
import ChatBatchCore
import Foundation

/// How a batch changes state around its run: each change made on the batch as it stands at that moment
/// (`BatchService.transition`), so that a cancel given meanwhile is never written over.
extension BatchRunner {
    /// `validating`: every line must name the batch's endpoint; then the input is linked into the batch's folder
    /// (deleting the file later does not take it from the batch) and the batch is `in_progress`. False when it
    /// failed, or was cancelled meanwhile.
    func validate(_ id: String, _ service: BatchService) -> Bool {
        guard let b = try? service.batch(id) else { return false }
        let source = service.folder.filePath(b.inputFileID)
        var problems: [LineProblem] = []
        let endpoint = b.endpoint
        let named = (try? service.file(b.inputFileID))?.urls
        do {
            // The upload noted the urls its lines name: when the batch's endpoint is the only one, no line is read.
            if named != [endpoint] {
                let reader = try LineReader(path: source)
                while let line = try reader.next(), problems.count < 100 {
                    guard let url = (try? JSON.parse(line.bytes))?["url"]?.stringValue, url != endpoint else {
                        continue
                    }
                    problems.append(
                        LineProblem(
                            code: "mismatched_endpoint",
                            message: "line \(line.number) names \(url); every line of this batch must name \(endpoint)",
                            line: line.number))
                }
            }
        } catch {
            fail(id, service, code: "file_missing", message: "the input file \(b.inputFileID) cannot be read")
            return false
        }
        if !problems.isEmpty {
            fail(id, service, problems: problems)
            return false
        }
        let input = Self.input(service.folder, id)
        try? FileManager.default.createDirectory(
            atPath: service.folder.batchFolder(id), withIntermediateDirectories: true)
        if !FileManager.default.fileExists(atPath: input) {
            if link(source, input) != 0 { try? FileManager.default.copyItem(atPath: source, toPath: input) }
        }
        let now = BatchService.now()
        return service.transition(id) { b in
            guard b.status == .validating else { return false }
            b.status = .inProgress
            b.inProgressAt = now
            return true
        }?.changed ?? false
    }

    /// `failed`, with why (unless a cancel came first).
    func fail(
        _ id: String, _ service: BatchService, code: String? = nil, message: String? = nil, problems: [LineProblem] = []
    ) {
        let now = BatchService.now()
        service.transition(id) { b in
            guard b.status == .validating || b.status == .inProgress else { return false }
            b.errors = (b.errors ?? []) + problems
            if let code, let message { b.errors?.append(LineProblem(code: code, message: message)) }
            b.status = .failed
            b.failedAt = now
            return true
        }
    }

    /// `finalizing`, then `completed` (or `cancelled` when it was cancelled, `expired`): the output and errors files
    /// become file objects (each only when it holds a line), and the counts are the checkpoint's. With
    /// `onlyIfCancelling`, nothing happens unless the batch is being cancelled.
    func finish(
        _ id: String, _ service: BatchService, cancelled: Bool, expired: Bool = false, onlyIfCancelling: Bool = false
    ) {
        guard let b = try? service.batch(id) else { return }
        if onlyIfCancelling && b.status != .cancelling { return }
        let folder = service.folder
        let stopping = cancelled || expired || b.status == .cancelling
        if !stopping {
            let now = BatchService.now()
            service.transition(id) { b in
                guard b.status == .inProgress else { return false }
                b.status = .finalizing
                b.finalizingAt = now
                return true
            }
        }
        let progress = try? CheckpointProgress.read(checkpoint: Self.checkpoint(folder, id))
        var outputs: [(id: String, isOutput: Bool)] = []
        for (path, isOutput) in [(Self.output(folder, id), true), (Self.errors(folder, id), false)] {
            let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
            guard size > 0 else { continue }
            let file = FileRecord(
                id: "file-" + id.dropFirst(6) + (isOutput ? "out" : "err"), bytes: size, createdAt: BatchService.now(),
                filename: "\(id)_\(isOutput ? "output" : "error").jsonl", purpose: "batch_output", path: path)
            try? service.register(file)
            outputs.append((file.id, isOutput))
        }
        let now = BatchService.now()
        service.transition(id) { b in
            guard [.inProgress, .finalizing, .cancelling, .validating].contains(b.status) else { return false }
            if let p = progress {
                b.completed = p.done
                b.failed = p.failed
                b.inputTokens = p.promptTokens
                b.outputTokens = p.completionTokens
            }
            for o in outputs { if o.isOutput { b.outputFileID = o.id } else { b.errorFileID = o.id } }
            if expired {
                b.status = .expired
                b.expiredAt = now
            } else if cancelled || b.status == .cancelling {
                b.status = .cancelled
                b.cancelledAt = now
            } else {
                b.status = .completed
                b.completedAt = now
            }
            return true
        }
    }
}
