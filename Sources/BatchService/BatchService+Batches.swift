import ChatBatch
import ChatBatchCore
import Foundation

/// The Batch API: create (with `Idempotency-Key`), retrieve, list, cancel.
extension BatchService {
    static let completionWindow = "24h"
    /// How long a create without `Idempotency-Key` that repeats an earlier one is taken as its retry, in seconds.
    static let retryWindow = 600

    func createBatch(_ r: ServiceRequest) throws -> ServiceResponse {
        guard let body = (try? JSON.parse(r.body))?.objectValue else {
            throw APIError(400, "The body must be a JSON object.")
        }
        let key = r.headers["idempotency-key"].flatMap { $0.isEmpty ? nil : $0 }
        if let key, let earlier = state.withLock({ s in s.batches.values.first { $0.idempotencyKey == key } }) {
            guard body["input_file_id"]?.stringValue == earlier.inputFileID,
                body["endpoint"]?.stringValue == earlier.endpoint
            else {
                throw APIError(
                    409, "Idempotency-Key '\(key)' was used for batch \(earlier.id) of another file or endpoint.",
                    code: "idempotency_key_reused")
            }
            return .json(earlier.json(counts: counts(earlier)))
        }
        guard let input = body["input_file_id"]?.stringValue else {
            throw APIError(400, "Missing required parameter: 'input_file_id'.", param: "input_file_id")
        }
        let file = try file(input)
        guard file.purpose == "batch" else {
            throw APIError(400, "File \(input) has purpose '\(file.purpose)', not 'batch'.", param: "input_file_id")
        }
        let endpoints = APIEndpoint.allCases.map(\.rawValue)
        guard let endpoint = body["endpoint"]?.stringValue, endpoints.contains(endpoint) else {
            throw APIError(
                400, "'endpoint' must be one of \(endpoints.joined(separator: ", ")).", param: "endpoint")
        }
        guard body["completion_window"]?.stringValue == Self.completionWindow else {
            throw APIError(400, "'completion_window' must be '24h'.", param: "completion_window")
        }
        var metadata: [String: String]? = nil
        if let m = body["metadata"], !m.isNull {
            guard let object = m.objectValue, object.count <= 16,
                object.allSatisfy({ $0.key.count <= 64 && ($0.value.stringValue?.count ?? 513) <= 512 })
            else {
                throw APIError(
                    400, "'metadata' holds at most 16 string values (keys up to 64 characters, values up to 512).",
                    param: "metadata")
            }
            metadata = Dictionary(uniqueKeysWithValues: object.map { ($0.key, $0.value.stringValue ?? "") })
        }
        let now = Self.now()
        let batch = BatchRecord(
            id: BatchFolder.newID("batch_"), endpoint: endpoint, inputFileID: input,
            completionWindow: Self.completionWindow, status: .validating, createdAt: now, expiresAt: now + 86_400,
            metadata: metadata, idempotencyKey: key, total: file.lines ?? 0)
        // Two creates with one key at once: the first to be recorded wins, and the second gets it. Without a key, a
        // create that repeats one made in the last `retryWindow` seconds (same file, endpoint and metadata, not
        // failed or cancelled) is taken as its retry: SDKs resend a create that timed out without a key of their own.
        let kept: BatchRecord = state.withLock { s in
            if let key, let earlier = s.batches.values.first(where: { $0.idempotencyKey == key }) { return earlier }
            if key == nil,
                let earlier = s.batches.values.filter({
                    $0.idempotencyKey == nil && $0.inputFileID == input && $0.endpoint == endpoint
                        && $0.metadata == metadata && $0.createdAt >= now - Self.retryWindow
                        && ![.failed, .cancelled, .cancelling, .expired].contains($0.status)
                }).max(by: { $0.createdAt < $1.createdAt })
            {
                return earlier
            }
            keep(batch, in: &s)
            return batch
        }
        if kept.id == batch.id { runner.enqueue(batch.id, self) }
        return .json(kept.json(counts: counts(kept)))
    }

    func listBatches(_ r: ServiceRequest) -> ServiceResponse {
        var batches = state.withLock { Array($0.batches.values) }.sorted {
            ($0.createdAt, $0.id) > ($1.createdAt, $1.id)
        }
        if let after = r.query["after"], let i = batches.firstIndex(where: { $0.id == after }) {
            batches = Array(batches[(i + 1)...])
        }
        let limit = min(100, max(1, Int(r.query["limit"] ?? "") ?? 20))
        let page = Array(batches.prefix(limit))
        return .json([
            "object": "list", "data": .array(page.map { $0.json(counts: counts($0)) }),
            "first_id": page.first.map { .string($0.id) } ?? .null,
            "last_id": page.last.map { .string($0.id) } ?? .null,
            "has_more": .bool(batches.count > limit)
        ])
    }

    func batchJSON(_ id: String) throws -> JSON {
        let b = try batch(id)
        return b.json(counts: counts(b))
    }

    /// Cancels: a batch not yet running is cancelled at once; a running one stops sending, lets what is in flight
    /// finish, and its output file holds what was done.
    func cancel(_ id: String) throws -> ServiceResponse {
        let now = Self.now()
        var refused: BatchStatus?
        guard
            let (b, changed) = transition(
                id,
                { b in
                    switch b.status {
                    case .validating, .inProgress:
                        // The runner settles it: at once when it has not started, after a drain when it runs.
                        b.status = .cancelling
                        b.cancellingAt = now
                        return true
                    case .cancelling, .cancelled:
                        return false
                    case .failed, .finalizing, .completed, .expired:
                        refused = b.status
                        return false
                    }
                })
        else { throw APIError.notFound("batch", id) }
        if let refused { throw APIError(409, "Batch \(id) is \(refused.rawValue) and cannot be cancelled.") }
        if changed { runner.cancel(id, self) }
        return .json(b.json(counts: counts(b)))
    }

    /// Lines answered and failed and tokens of `b`: from its checkpoint while it runs, else as recorded when it
    /// settled.
    func counts(_ b: BatchRecord) -> CheckpointProgress {
        let live = b.status == .inProgress || b.status == .cancelling || b.status == .finalizing
        let checkpoint = BatchRunner.checkpoint(folder, b.id)
        if live, FileManager.default.fileExists(atPath: checkpoint),
            let p = try? CheckpointProgress.read(checkpoint: checkpoint)
        {
            return p
        }
        return CheckpointProgress(
            done: b.completed, failed: b.failed, promptTokens: b.inputTokens, completionTokens: b.outputTokens)
    }
}
