import ChatBatchCore

/// A read-only view of the checkpoint for the input reader, on its own connection (WAL lets it read alongside the
/// writer).
final class CheckpointReader {
    let db: SQLiteDatabase
    private var statement: SQLiteStatement?

    /// `version` is the checkpoint's schema version (an older one is read as it is, without the columns it lacks).
    init(path: String, version: Int = CheckpointStore.schemaVersion) throws(ChatBatchError) {
        db = try SQLiteDatabase(path: path, readOnly: true)
        statement = try db.prepare(
            """
            SELECT state, body_hash, crash_resend, \(version >= 3 ? "endpoint_id" : "NULL AS endpoint_id")
            FROM requests WHERE custom_id=:custom_id
            """)
    }

    /// Closes the connection: the run is over.
    func close() {
        statement = nil
        db.close()
    }

    /// Runs `body` inside one read transaction, so its lookups share one snapshot and a warm page cache
    /// (outside one, every lookup after a write by the run starts cold).
    func batch<T>(_ body: () throws -> T) throws -> T {
        try db.inReadTransaction(body)
    }

    /// The output line recorded for a finished prompt.
    func output(_ customID: String) throws(ChatBatchError) -> String? {
        try db.query("SELECT output FROM requests WHERE custom_id=? AND out_seq IS NOT NULL", [.text(customID)]).first?
            .first?.text
    }

    func prior(_ customID: String) throws(ChatBatchError) -> PriorState? {
        guard let lookup = statement else { return nil }
        guard let row = try lookup.row(["custom_id": .text(customID)]) else { return nil }
        return PriorState(
            state: RequestState(rawValue: row["state"].text ?? "") ?? .pending, bodyHash: row["body_hash"].text ?? "",
            crashResend: row["crash_resend"].int == 1, endpointID: row["endpoint_id"].int)
    }
}
