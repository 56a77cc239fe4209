import CSQLite
import ChatBatchCore
import Foundation
import Synchronization

/// The SQLite checkpoint of one run: a row per custom_id, a row per HTTP attempt, a row per run.
///
/// Opening it checks that it is a chatbatch checkpoint of a known schema and takes an exclusive lock,
/// so two runs on one checkpoint never overlap.
final class CheckpointStore: @unchecked Sendable {
    // @unchecked Sendable: `db` is used only on the writer's serial queue once the run starts;
    // before that, only by the thread that opened the store.
    /// 2 added `cached`, `saved_tokens` and `saved_cost` (the response cache); 3 added estimated usage, repaired
    /// text, the endpoints that answered, and the in-flight timeline (`v3Additions`). An older checkpoint is
    /// upgraded in place when a run or an export opens it, and read as it is by `status`, `report` and `validate`.
    static let schemaVersion = 3

    /// What version 3 adds to a version 2 checkpoint (and a new checkpoint has from the start).
    static let v3Additions = """
        ALTER TABLE requests ADD COLUMN usage_estimated INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE requests ADD COLUMN repaired INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE requests ADD COLUMN endpoint_id INTEGER;
        ALTER TABLE attempts ADD COLUMN endpoint_id INTEGER;
        ALTER TABLE attempts ADD COLUMN inflight INTEGER;
        ALTER TABLE attempts ADD COLUMN window INTEGER;
        CREATE TABLE endpoints(
            id INTEGER PRIMARY KEY,
            identity TEXT NOT NULL UNIQUE,
            label TEXT NOT NULL,
            provider TEXT NOT NULL,
            url TEXT NOT NULL,
            fake INTEGER NOT NULL DEFAULT 0,
            first_success_at REAL);
        CREATE TABLE samples(
            run_id INTEGER NOT NULL,
            t REAL NOT NULL,
            endpoint_id INTEGER,
            inflight INTEGER NOT NULL,
            window INTEGER NOT NULL,
            paused INTEGER NOT NULL DEFAULT 0);
        """
    static let applicationID: Int32 = 0x4342_4348  // "CBCH"

    let db: SQLiteDatabase
    let path: String
    private let lockFD: Mutex<Int32>
    /// The schema version as the file holds it: older than `schemaVersion` only when read without upgrading
    /// (`status`, `report`, `validate`), and then queries leave out what it lacks.
    private(set) var version = CheckpointStore.schemaVersion

    /// Opens (creating if needed) the checkpoint at `path`, owner-only, locked for this process.
    init(path: String, create: Bool = true, lock: Bool = true) throws(ChatBatchError) {
        self.path = path
        let fm = FileManager.default
        var isDir: ObjCBool = false
        let exists = fm.fileExists(atPath: path, isDirectory: &isDir)
        if isDir.boolValue {
            throw ChatBatchError(.notAFile, "checkpoint \(path) is a directory")
        }
        if exists {
            try Self.checkHeader(path)
        } else if !create {
            throw ChatBatchError(.missingCheckpoint, "no checkpoint at \(path)")
        }
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw ChatBatchError(.openFailed, "cannot open checkpoint \(path): \(String(cString: strerror(errno)))")
        }
        if lock && flock(fd, LOCK_EX | LOCK_NB) != 0 {
            close(fd)
            throw ChatBatchError(
                .checkpointBusy,
                "checkpoint \(path) is held by another chatbatch run; wait for it to finish (or stop it) and run again")
        }
        lockFD = Mutex(fd)
        do {
            db = try SQLiteDatabase(path: path)
            try prepareSchema(fresh: !exists || Self.fileSize(path) == 0, migrate: lock)
        } catch {
            close(fd)
            throw error
        }
    }

    deinit { releaseLock() }

    /// Closes the connection (SQLite folds the WAL back and removes it) and releases the lock.
    func closeAndUnlock() {
        db.close()
        releaseLock()
    }

    /// Lets another run take the checkpoint; called when a run ends, not left to deinit.
    func releaseLock() {
        lockFD.withLock { fd in
            if fd >= 0 { close(fd) }
            fd = -1
        }
    }

    /// True when another process holds the checkpoint's lock right now.
    static func isHeld(path: String) -> Bool {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        if flock(fd, LOCK_SH | LOCK_NB) != 0 { return true }
        flock(fd, LOCK_UN)
        return false
    }

    static func fileSize(_ path: String) -> Int {
        (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
    }

    /// Refuses files that are not SQLite databases before SQLite gets a chance to touch them.
    static func checkHeader(_ path: String) throws(ChatBatchError) {
        switch SQLiteHeader.read(path) {
        case nil:
            throw ChatBatchError(.unreadableCheckpoint, "cannot read checkpoint \(path)")
        case .notSQLite:
            throw ChatBatchError(
                .notACheckpoint,
                "\(path) is not a chatbatch checkpoint (not an SQLite file, or truncated); refusing to overwrite it. Move it away or pass another --checkpoint")
        case .truncated(let size, let recorded):
            throw ChatBatchError(
                .damaged,
                "checkpoint \(path) is damaged: it is \(size) bytes but records \(recorded), and no write-ahead log is beside it; refusing to use it, since a damaged checkpoint could send answered prompts again. Restore it (and its -wal file, if you moved it) from a copy; a new checkpoint would pay again for every prompt this one answered")
        case .empty, .valid:
            return
        }
    }

    func prepareSchema(fresh: Bool, migrate: Bool) throws(ChatBatchError) {
        let appID: Int32
        do {
            appID = Int32(truncatingIfNeeded: try db.query("PRAGMA application_id").first?.first?.int ?? 0)
        } catch {
            throw ChatBatchError(.damaged, "checkpoint \(path) cannot be read (\(error.message)); it is damaged. Restore it from a copy; a new checkpoint would pay again for every prompt this one answered")
        }
        let tables = try db.query("SELECT count(*) FROM sqlite_master").first?.first?.int ?? 0
        if tables == 0 && appID == 0 {
            try db.execute("PRAGMA journal_mode=WAL")
            try db.execute("PRAGMA synchronous=NORMAL")
            try db.execute("PRAGMA application_id=\(Self.applicationID)")
            try db.execute("""
                BEGIN;
                CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
                CREATE TABLE requests(
                    custom_id TEXT PRIMARY KEY,
                    line INTEGER NOT NULL,
                    state TEXT NOT NULL,
                    attempts INTEGER NOT NULL DEFAULT 0,
                    body_hash TEXT NOT NULL,
                    model TEXT,
                    status_code INTEGER,
                    request_id TEXT,
                    prompt_tokens INTEGER NOT NULL DEFAULT 0,
                    completion_tokens INTEGER NOT NULL DEFAULT 0,
                    cost REAL NOT NULL DEFAULT 0,
                    error_code TEXT,
                    error_message TEXT,
                    ambiguous INTEGER NOT NULL DEFAULT 0,
                    crash_resend INTEGER NOT NULL DEFAULT 0,
                    latency_ms REAL,
                    ttft_ms REAL,
                    cached INTEGER NOT NULL DEFAULT 0,
                    saved_tokens INTEGER NOT NULL DEFAULT 0,
                    saved_cost REAL NOT NULL DEFAULT 0,
                    output TEXT,
                    out_kind INTEGER,
                    out_seq INTEGER,
                    updated_at REAL NOT NULL);
                CREATE INDEX requests_out ON requests(out_kind, out_seq) WHERE out_seq IS NOT NULL;
                CREATE TABLE attempts(
                    id INTEGER PRIMARY KEY,
                    custom_id TEXT NOT NULL,
                    run_id INTEGER NOT NULL,
                    attempt INTEGER NOT NULL,
                    started_at REAL NOT NULL,
                    status INTEGER,
                    latency_ms REAL,
                    request_id TEXT,
                    error TEXT,
                    ambiguous INTEGER NOT NULL DEFAULT 0);
                CREATE TABLE runs(
                    id INTEGER PRIMARY KEY,
                    started_at REAL NOT NULL,
                    ended_at REAL,
                    exit_code INTEGER,
                    summary TEXT);
                \(Self.v3Additions)
                INSERT INTO meta VALUES('schema_version', '\(Self.schemaVersion)');
                INSERT INTO meta VALUES('created_by', 'chatbatch');
                COMMIT;
                """)
            return
        }
        guard appID == Self.applicationID else {
            throw ChatBatchError(
                .foreign,
                "\(path) is an SQLite file of another program, not a chatbatch checkpoint; refusing to touch it. Pass another --checkpoint")
        }
        version = Int(try db.query("SELECT value FROM meta WHERE key='schema_version'").first?.first?.text ?? "") ?? 0
        if (1..<Self.schemaVersion).contains(version) && migrate {
            try db.inTransaction { () throws(ChatBatchError) in
                if version == 1 {
                    try db.execute("""
                        ALTER TABLE requests ADD COLUMN cached INTEGER NOT NULL DEFAULT 0;
                        ALTER TABLE requests ADD COLUMN saved_tokens INTEGER NOT NULL DEFAULT 0;
                        ALTER TABLE requests ADD COLUMN saved_cost REAL NOT NULL DEFAULT 0;
                        """)
                }
                try db.execute(Self.v3Additions)
                try db.execute("UPDATE meta SET value='\(Self.schemaVersion)' WHERE key='schema_version'")
            }
            version = Self.schemaVersion
        }
        guard (1...Self.schemaVersion).contains(version) else {
            let newer = version > Self.schemaVersion
            throw ChatBatchError(
                newer ? .newerSchema : .unknownSchema,
                "checkpoint \(path) has schema version \(version), this chatbatch reads version \(Self.schemaVersion)"
                    + (newer ? "; it was written by a newer chatbatch: upgrade to resume it" : ""))
        }
        try db.execute("PRAGMA synchronous=NORMAL")
    }

    // MARK: meta

    func meta(_ key: String) throws(ChatBatchError) -> String? {
        try db.query("SELECT value FROM meta WHERE key=?", [.text(key)]).first?.first?.text
    }

    func setMeta(_ key: String, _ value: String) throws(ChatBatchError) {
        try db.query("INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                     [.text(key), .text(value)])
    }

    // MARK: runs

    /// What a run learns from the checkpoint as it starts.
    struct OpenedRun: Sendable {
        var runID: Int
        /// Prompts a previous run left in flight (possibly billed); now pending, marked as resends after a crash.
        var crashRecovered: Int
        /// No prompt has a row yet: nothing to look up per line.
        var isEmpty: Bool
        /// Some line was recorded as invalid (a fixed line then replaces its `line-N` row).
        var hasInvalidRows: Bool
        /// Spend over every earlier run.
        var spent: Double
        var refusedModels: [String: ModelRefusal]
        /// Set when the input is unchanged since a run that finished every line: nothing needs reading.
        var finishedInput: FinishedInput?
    }

    /// What a run that finished every line of its input left behind, so that the next run can skip the input.
    struct FinishedInput: Sendable, Equatable {
        var fingerprint: String
        var done: Int
        var failed: Int
        var promptTokens: Int
        var completionTokens: Int
        var cost: Double

        var json: JSON {
            ["fingerprint": .string(fingerprint), "done": .int(done), "failed": .int(failed), "prompt_tokens": .int(promptTokens),
             "completion_tokens": .int(completionTokens), "cost": .double(cost)]
        }

        init(fingerprint: String, done: Int, failed: Int, promptTokens: Int, completionTokens: Int, cost: Double) {
            self.fingerprint = fingerprint
            self.done = done
            self.failed = failed
            self.promptTokens = promptTokens
            self.completionTokens = completionTokens
            self.cost = cost
        }

        init?(json: JSON?) {
            guard let json, let fingerprint = json["fingerprint"]?.stringValue, let done = json["done"]?.intValue,
                let failed = json["failed"]?.intValue
            else { return nil }
            self.init(
                fingerprint: fingerprint, done: done, failed: failed, promptTokens: json["prompt_tokens"]?.intValue ?? 0,
                completionTokens: json["completion_tokens"]?.intValue ?? 0, cost: json["cost"]?.doubleValue ?? 0)
        }
    }

    /// The record of the last run that finished every line, if no run has started since.
    func finishedInput() throws(ChatBatchError) -> FinishedInput? {
        FinishedInput(json: try meta("input.finished").flatMap { try? JSON.parse($0) })
    }

    func recordFinishedInput(_ finished: FinishedInput) throws(ChatBatchError) {
        try setMeta("input.finished", finished.json.serialized())
    }

    /// Starts a run: reconciles the output files, recovers prompts left in flight, records the run, and reads
    /// what the scheduler needs. `forgetRefusedModels` (`--retry-failed`) lets refused models be tried again.
    ///
    /// `fingerprint` (nil with `--force` or `--retry-failed`) is compared with what the last run that finished
    /// every line recorded; when they agree, nothing is scanned. Any other run forgets that record before it
    /// sends anything, so a record can only stand while nothing is pending or in flight.
    func openRun(sink: any OutputSink, forgetRefusedModels: Bool, fingerprint: String?, log: (String) -> Void) throws -> OpenedRun {
        try sink.reconcile(with: self, log: log)
        if let fingerprint, let finished = try finishedInput(), finished.fingerprint == fingerprint, try !outputNeedsRebuild() {
            return OpenedRun(
                runID: try beginRun(), crashRecovered: 0, isEmpty: false, hasInvalidRows: false, spent: finished.cost,
                refusedModels: try refusedModels(), finishedInput: finished)
        }
        try db.query("DELETE FROM meta WHERE key='input.finished'")
        let recovered = try recoverInflight()
        let id = try beginRun()
        if forgetRefusedModels { try clearRefusedModels() }
        return OpenedRun(
            runID: id, crashRecovered: recovered, isEmpty: try isEmpty(),
            hasInvalidRows: (try db.query("SELECT count(*) FROM requests WHERE error_code='invalid_line'").first?.first?.int ?? 0) > 0,
            spent: try totals().cost, refusedModels: try refusedModels())
    }

    /// Records a run's start and returns its id.
    func beginRun() throws(ChatBatchError) -> Int {
        try db.query("INSERT INTO runs(started_at) VALUES(?)", [.double(Date().timeIntervalSince1970)])
        return Int(sqlite3_last_insert_rowid(db.handle))
    }

    func endRun(id: Int, exitCode: Int32, summary: JSON) throws(ChatBatchError) {
        try db.query("UPDATE runs SET ended_at=?, exit_code=?, summary=? WHERE id=?",
                     [.double(Date().timeIntervalSince1970), .int(Int(exitCode)), .text(summary.serialized()), .int(id)])
    }

    /// Rows a previous run left in flight: it died while they were (possibly) on the wire.
    /// They become pending, marked so their next send is counted as a resend after a crash.
    func recoverInflight() throws(ChatBatchError) -> Int {
        let n = try db.query("SELECT count(*) FROM requests WHERE state='inflight'").first?.first?.int ?? 0
        if n > 0 {
            try db.query("UPDATE requests SET state='pending', crash_resend=1 WHERE state='inflight'")
        }
        return n
    }

    /// True when no prompt has a row yet (a fresh checkpoint: nothing to look up).
    func isEmpty() throws(ChatBatchError) -> Bool {
        try db.query("SELECT 1 FROM requests LIMIT 1").isEmpty
    }

    /// Models the provider refused (403/404) in an earlier run of this checkpoint: nothing more is sent for them.
    func refusedModels() throws(ChatBatchError) -> [String: ModelRefusal] {
        var out: [String: ModelRefusal] = [:]
        for row in try db.query("SELECT key, value FROM meta WHERE key LIKE 'refused_model.%'") {
            guard let text = row[1].text, let refusal = ModelRefusal(json: try? JSON.parse(text)) else { continue }
            out[refusal.model] = refusal
        }
        return out
    }

    /// Forgets every refused model (`--retry-failed`: the key may have been given the scope since).
    func clearRefusedModels() throws(ChatBatchError) {
        try db.query("DELETE FROM meta WHERE key LIKE 'refused_model.%'")
    }

    func recordRefusedModel(_ refusal: ModelRefusal) throws(ChatBatchError) {
        try setMeta("refused_model." + refusal.model, refusal.json.serialized())
    }

    /// Counts of rows by state.
    func stateCounts() throws(ChatBatchError) -> [RequestState: Int] {
        var out: [RequestState: Int] = [:]
        for row in try db.query("SELECT state, count(*) FROM requests GROUP BY state") {
            if let s = row[0].text.flatMap(RequestState.init(rawValue:)) { out[s] = row[1].int ?? 0 }
        }
        return out
    }

    /// Total spend and tokens over every run on this checkpoint.
    func totals() throws(ChatBatchError) -> (prompt: Int, completion: Int, cost: Double) {
        let row = try db.query("SELECT coalesce(sum(prompt_tokens),0), coalesce(sum(completion_tokens),0), coalesce(sum(cost),0) FROM requests").first ?? []
        return (row.first?.int ?? 0, row.count > 1 ? row[1].int ?? 0 : 0, row.count > 2 ? row[2].double ?? 0 : 0)
    }
}
