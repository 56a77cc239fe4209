import ChatBatchCore
import Foundation

/// The controls given to a job (`chatbatch control`): each is a row, written by the command, applied by the run that
/// holds the checkpoint (which records when, and what came of it), and shown by `status`, `report` and the HTML page.
extension CheckpointStore {
    /// What version 5 adds: the `controls` table.
    static let v5Additions = """
        CREATE TABLE IF NOT EXISTS controls(
            id INTEGER PRIMARY KEY,
            given_at REAL NOT NULL,
            host TEXT NOT NULL,
            pid INTEGER NOT NULL,
            action TEXT NOT NULL,
            provider TEXT,
            next_run INTEGER NOT NULL DEFAULT 0,
            applied_at REAL,
            run_id INTEGER,
            outcome TEXT);
        """

    /// What became of a control: applied (or refused) by a run, or expired unapplied.
    public struct ControlOutcome: Sendable {
        public var appliedAt: Double?
        public var runID: Int?
        /// `applied: …`, `refused: …` or `expired: …`; nil while no run has taken it.
        public var text: String?
        public var refused: Bool { text?.hasPrefix("refused") == true || text?.hasPrefix("expired") == true }
    }

    /// Records a control for the run that holds the checkpoint (or, with `nextRun`, for the next run); returns its id.
    func recordControl(_ action: ControlAction, provider: String?, nextRun: Bool) throws(ChatBatchError) -> Int {
        let host = Self.hostName
        let row = try db.prepare(
            """
            INSERT INTO controls(given_at, host, pid, action, provider, next_run)
            VALUES(:given_at, :host, :pid, :action, :provider, :next_run) RETURNING id
            """
        ).row([
            "given_at": .double(Date().timeIntervalSince1970), "host": .text(host), "pid": .int(Int(getpid())),
            "action": .text(action.text), "provider": .optional(provider), "next_run": .int(nextRun ? 1 : 0)
        ])
        return row?["id"].int ?? db.lastInsertedRow
    }

    /// This machine's name, as `gethostname` gives it (no lookup).
    static var hostName: String {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count - 1) == 0 else { return "unknown" }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Controls no run has taken yet, after the id `after`, oldest first. A static function on a connection: the run
    /// reads them on a connection of its own (a second `CheckpointStore` would open, and on closing drop, a file
    /// descriptor of the checkpoint, and with it the writer's POSIX locks).
    static func pendingControls(in db: SQLiteDatabase, after: Int) throws(ChatBatchError) -> [ControlRequest] {
        try db.rows(
            """
            SELECT id, given_at, host, pid, action, provider FROM controls
            WHERE id > :after AND applied_at IS NULL ORDER BY id
            """, ["after": .int(after)]
        ).compactMap { row in
            guard let action = row["action"].text.flatMap(ControlAction.init(recorded:)) else { return nil }
            return ControlRequest(
                id: row["id"].int ?? 0, action: action, provider: row["provider"].text, host: row["host"].text ?? "",
                pid: row["pid"].int ?? 0, at: row["given_at"].double ?? 0)
        }
    }

    /// Controls given to a run that ended before taking them (not kept for the next run): they are marked expired,
    /// so that a run started later never applies what was meant for another.
    func expireStaleControls() throws(ChatBatchError) {
        guard version >= 5 else { return }
        try db.rows(
            """
            UPDATE controls SET applied_at=:now,
                outcome='expired: the run it was given to ended before taking it; nothing changed'
            WHERE applied_at IS NULL AND next_run=0
            """, ["now": .double(Date().timeIntervalSince1970)])
    }

    /// Marks a control as taken by run `runID` at `at`, with what came of it.
    func settleControl(id: Int, runID: Int, outcome: String, at: Double) throws(ChatBatchError) {
        try db.rows(
            "UPDATE controls SET applied_at=:at, run_id=:run_id, outcome=:outcome WHERE id=:id",
            ["at": .double(at), "run_id": .int(runID), "outcome": .text(outcome), "id": .int(id)])
    }

    /// What became of control `id` so far.
    func controlOutcome(id: Int) throws(ChatBatchError) -> ControlOutcome {
        let row = try db.rows("SELECT applied_at, run_id, outcome FROM controls WHERE id=:id", ["id": .int(id)]).first
        return ControlOutcome(
            appliedAt: row?["applied_at"].double, runID: row?["run_id"].int, text: row?["outcome"].text)
    }

    /// The last `limit` controls, oldest first, as `status --json` and the HTML page show them.
    func controls(limit: Int = 20) throws(ChatBatchError) -> [JSON] {
        guard version >= 5 else { return [] }
        return try db.rows(
            """
            SELECT * FROM (SELECT id, given_at, host, pid, action, provider, next_run, applied_at, run_id, outcome
                FROM controls ORDER BY id DESC LIMIT :limit) ORDER BY id
            """, ["limit": .int(limit)]
        ).map { row in
            [
                "id": .int(row["id"].int ?? 0), "given_at": .double(row["given_at"].double ?? 0),
                "host": .string(row["host"].text ?? ""), "pid": .int(row["pid"].int ?? 0),
                "action": .string(row["action"].text ?? ""), "provider": row["provider"].text.map(JSON.string) ?? .null,
                "next_run": .bool(row["next_run"].int == 1),
                "applied_at": row["applied_at"].double.map(JSON.double) ?? .null,
                "run_id": row["run_id"].int.map(JSON.int) ?? .null,
                "outcome": row["outcome"].text.map(JSON.string) ?? .null
            ]
        }
    }
}
