import ChatBatch
import ChatBatchCore

/// A file the server holds: an uploaded input (`purpose: batch`) or a batch's output or errors
/// (`batch_output`), with what the Files API says of it.
struct FileRecord: Codable, Sendable {
    var id: String
    var bytes: Int
    var createdAt: Int
    var filename: String
    var purpose: String
    /// Request lines, for an input file.
    var lines: Int?
    /// The distinct `url`s its lines name, for an input file (a batch whose endpoint is the only one skips a scan).
    var urls: [String]? = nil
    /// Where its bytes are, when not in the files folder (a batch's output and errors stay in the batch's folder).
    var path: String? = nil

    var json: JSON {
        [
            "id": .string(id), "object": "file", "bytes": .int(bytes), "created_at": .int(createdAt),
            "filename": .string(filename), "purpose": .string(purpose), "status": "processed",
            "expires_at": nil, "status_details": nil
        ]
    }
}

/// The states of a batch, OpenAI's names.
enum BatchStatus: String, Codable, Sendable {
    case validating, failed
    case inProgress = "in_progress"
    case finalizing, completed, expired, cancelling, cancelled

    /// A state the batch leaves by itself (a server started again takes such batches up where they stood).
    var isActive: Bool { [.validating, .inProgress, .finalizing, .cancelling].contains(self) }
}

/// One line's problem in a file that failed validation (`errors.data` of a failed batch).
struct LineProblem: Codable, Sendable {
    var code: String
    var message: String
    var line: Int?
}

/// A batch: what was asked (input file, endpoint, window, metadata), where it stands, and its counts.
struct BatchRecord: Codable, Sendable {
    var id: String
    var endpoint: String
    var inputFileID: String
    var completionWindow: String
    var status: BatchStatus
    var createdAt: Int
    var expiresAt: Int
    var inProgressAt: Int? = nil
    var finalizingAt: Int? = nil
    var completedAt: Int? = nil
    var failedAt: Int? = nil
    var expiredAt: Int? = nil
    var cancellingAt: Int? = nil
    var cancelledAt: Int? = nil
    var outputFileID: String? = nil
    var errorFileID: String? = nil
    var errors: [LineProblem]? = nil
    var metadata: [String: String]? = nil
    /// The client's `Idempotency-Key`: a second create with it gets this batch.
    var idempotencyKey: String? = nil
    var total = 0
    var completed = 0
    var failed = 0
    var inputTokens = 0
    var outputTokens = 0

    /// The batch in OpenAI's shape, with its lines and tokens `counts` (`BatchService.counts`).
    func json(counts: CheckpointProgress) -> JSON {
        func time(_ t: Int?) -> JSON { t.map(JSON.int) ?? .null }
        var out: JSON = [
            "id": .string(id), "object": "batch", "endpoint": .string(endpoint), "errors": nil,
            "input_file_id": .string(inputFileID), "completion_window": .string(completionWindow),
            "status": .string(status.rawValue), "output_file_id": outputFileID.map(JSON.string) ?? .null,
            "error_file_id": errorFileID.map(JSON.string) ?? .null, "created_at": .int(createdAt),
            "in_progress_at": time(inProgressAt), "expires_at": .int(expiresAt), "finalizing_at": time(finalizingAt),
            "completed_at": time(completedAt), "failed_at": time(failedAt), "expired_at": time(expiredAt),
            "cancelling_at": time(cancellingAt), "cancelled_at": time(cancelledAt),
            "request_counts": ["total": .int(total), "completed": .int(counts.done), "failed": .int(counts.failed)],
            "usage": [
                "input_tokens": .int(counts.promptTokens), "output_tokens": .int(counts.completionTokens),
                "total_tokens": .int(counts.promptTokens + counts.completionTokens),
                "input_tokens_details": ["cached_tokens": 0], "output_tokens_details": ["reasoning_tokens": 0]
            ],
            "metadata": metadata.map { m in .object(JSONObject(m.sorted { $0.key < $1.key }.map { ($0, .string($1)) }))
            }
                ?? .null
        ]
        if let errors {
            out["errors"] = [
                "object": "list",
                "data": .array(
                    errors.map { e in
                        [
                            "code": .string(e.code), "message": .string(e.message), "param": nil,
                            "line": e.line.map(JSON.int) ?? .null
                        ]
                    })
            ]
        }
        return out
    }
}
