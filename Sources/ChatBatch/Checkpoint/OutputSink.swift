import ChatBatchCore

/// Where an output file stands, as the checkpoint records it in the same transaction as the lines it covers.
struct OutputPosition: Sendable, Equatable {
    var kind: OutputKind
    var path: String
    var format: String
    /// Bytes written, and the sequence number of the last line written.
    var bytes: Int
    var seq: Int
}

/// A finished row as the output files need it.
struct StoredLine: Sendable {
    /// The canonical (batch-shaped) output line, without its newline.
    var output: String
    var seq: Int
    /// What the flat output adds.
    var facts: LineFacts
}

/// Where committed lines go: the output files. The checkpoint writer calls it on its own queue only,
/// after each commit, so data flows one way: checkpoint → output.
protocol OutputSink: AnyObject {
    /// Brings the files in line with the checkpoint before a run appends to them.
    func reconcile(with store: CheckpointStore, log: (String) -> Void) throws
    /// Appends lines just committed, in commit order.
    func append(_ lines: [(seq: Int, record: FinishedRecord)]) throws
    /// Positions that changed since they were last recorded (the writer records them in its commit).
    func positionsToRecord() -> [OutputPosition]
    /// The positions were committed.
    func markRecorded(_ positions: [OutputPosition])
    /// Rewrites every file from the checkpoint alone.
    func rebuildAll(from store: CheckpointStore) throws
    /// Flushes the files to disk.
    func sync()
    /// Names the files that were changed under the run (emptied, truncated, deleted or replaced): what they hold is
    /// no longer what the run wrote, so they must be rebuilt from the checkpoint.
    func damagedFiles() -> [String]
}

/// Named reads and writes for the output files' side of the checkpoint.
extension CheckpointStore {
    private static func prefix(_ kind: OutputKind) -> String { "output.\(kind.name)." }

    /// What the checkpoint records about an output file, or nil if nothing was ever written to it.
    func outputPosition(_ kind: OutputKind) throws(ChatBatchError) -> OutputPosition? {
        let p = Self.prefix(kind)
        guard let path = try meta(p + "path") else { return nil }
        return OutputPosition(
            kind: kind, path: path, format: try meta(p + "format") ?? "", bytes: Int(try meta(p + "bytes") ?? "") ?? 0,
            seq: Int(try meta(p + "seq") ?? "") ?? 0)
    }

    func recordOutputPosition(_ position: OutputPosition) throws(ChatBatchError) {
        let p = Self.prefix(position.kind)
        try setMeta(p + "path", position.path)
        try setMeta(p + "format", position.format)
        try setMeta(p + "bytes", String(position.bytes))
        try setMeta(p + "seq", String(position.seq))
    }

    /// True when a forced resend replaced answers whose old lines may still be in the files.
    func outputNeedsRebuild() throws(ChatBatchError) -> Bool { try meta("output.needs_rebuild") == "1" }

    func setOutputNeedsRebuild(_ needed: Bool) throws(ChatBatchError) {
        try setMeta("output.needs_rebuild", needed ? "1" : "0")
    }

    /// The finished rows of one output file committed after `seq`, in commit order (or input order).
    func storedLines(_ kind: OutputKind, after seq: Int = 0, inputOrder: Bool = false) throws(ChatBatchError)
        -> [StoredLine]
    {
        let orderBy = inputOrder ? "line, out_seq" : "out_seq"
        // Columns an older schema lacks read as their default.
        let v3 = version >= 3
        let cached = version >= 2 ? "cached" : "0 AS cached"
        let estimated = v3 ? "usage_estimated" : "0 AS usage_estimated"
        let repaired = v3 ? "repaired" : "0 AS repaired"
        let provider = version >= 4 ? "provider" : "NULL AS provider"
        return try db.rows(
            """
            SELECT output, attempts, latency_ms, cost, out_seq, ttft_ms, \(cached), \(estimated), \(repaired),
                \(provider)
            FROM requests WHERE out_kind=:kind AND out_seq>:after ORDER BY \(orderBy)
            """,
            ["kind": .int(kind.rawValue), "after": .int(seq)]
        ).map { row in
            StoredLine(
                output: row["output"].text ?? "{}", seq: row["out_seq"].int ?? 0,
                facts: LineFacts(
                    attempts: row["attempts"].int ?? 0, latencyMs: row["latency_ms"].double,
                    cost: row["cost"].double ?? 0, ttftMs: row["ttft_ms"].double, cached: row["cached"].int == 1,
                    usageEstimated: row["usage_estimated"].int == 1, repaired: row["repaired"].int == 1,
                    provider: row["provider"].text))
        }
    }
}
