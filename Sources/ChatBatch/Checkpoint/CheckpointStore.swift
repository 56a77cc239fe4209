import ChatBatchCore
import Foundation
import Synchronization

/// The SQLite checkpoint of one run: a row per custom_id, a row per HTTP attempt, a row per run.
///
/// Opening it checks that it is a chatbatch checkpoint of a known schema and takes an exclusive lock,
/// so two runs on one checkpoint never overlap.
final class CheckpointStore: @unchecked Sendable {
    // @unchecked Sendable: `db` and `version` are used only on the run queue once the run starts;
    // before that, only by the thread that opened the store.
    /// 2 added `cached`, `saved_tokens` and `saved_cost` (the response cache); 3 added estimated usage, repaired
    /// text, the endpoints that answered, and the in-flight timeline (`v3Additions`); 4 the provider of each answer
    /// (`addV4`, for a version 3 file that lacks it); 5 the controls given to a running job (`v5Additions`). An
    /// older checkpoint is upgraded in place when a run or an export opens it, and read as it is by `status`,
    /// `report` and `validate`.
    static let schemaVersion = 5
    static let applicationID: Int32 = 0x4342_4348  // "CBCH"

    let db: SQLiteDatabase
    let path: String
    private let lockFD: Mutex<Int32>

    /// The schema version as the file holds it: older than `schemaVersion` only when read without upgrading
    /// (`status`, `report`, `validate`), and then queries leave out what it lacks.
    var version = CheckpointStore.schemaVersion

    /// Opens (creating if needed) the checkpoint at `path`, owner-only, locked for this process.
    ///
    /// A new checkpoint is made whole in a file of its own and then linked into place, so that a run killed while
    /// creating it never leaves a checkpoint without its tables (`inPlace` makes that file).
    init(path: String, create: Bool = true, lock: Bool = true, inPlace: Bool = false) throws(ChatBatchError) {
        self.path = path
        let fm = FileManager.default
        var isDir: ObjCBool = false
        var exists = fm.fileExists(atPath: path, isDirectory: &isDir)
        if isDir.boolValue {
            throw ChatBatchError(.notAFile, "checkpoint \(path) is a directory")
        }
        var link = stat()
        if lstat(path, &link) == 0 && (link.st_mode & S_IFMT) == S_IFLNK {
            throw ChatBatchError(
                .notAFile, "checkpoint \(path) is a symbolic link; refusing to write through it (give the file itself)")
        }
        if exists {
            try Self.checkHeader(path)
        } else if !create {
            throw ChatBatchError(.missingCheckpoint, "no checkpoint at \(path)")
        } else if !inPlace {
            try Self.createWhole(path)
            exists = true
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
        // A file made empty beforehand (touch, another umask) becomes owner-only as the checkpoint starts in it.
        if Self.fileSize(path) == 0 { fchmod(fd, 0o600) }
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

    /// Makes a checkpoint with all its tables beside `path`, then links it into place (another run that made one at
    /// the same moment wins, and this one is dropped).
    private static func createWhole(_ path: String) throws(ChatBatchError) {
        let whole = path + ".new-\(getpid())"
        unlink(whole)
        defer { unlink(whole) }
        let store = try CheckpointStore(path: whole, create: true, lock: false, inPlace: true)
        store.closeAndUnlock()
        // link() fails rather than replace a checkpoint made meanwhile; a file system without hard links renames.
        if link(whole, path) != 0 && errno != EEXIST && rename(whole, path) != 0 {
            throw ChatBatchError(.openFailed, "cannot create checkpoint \(path): \(String(cString: strerror(errno)))")
        }
    }

    /// Closes the connection (SQLite folds the WAL back and removes it) and releases the lock.
    func closeAndUnlock() {
        db.close()
        releaseLock()
    }

    /// True when the file at `path` is no longer the one this store holds open (deleted or replaced under it).
    func isGone() -> Bool {
        lockFD.withLock { fd in
            guard fd >= 0 else { return false }
            var open = stat(), named = stat()
            return fstat(fd, &open) != 0 || stat(path, &named) != 0 || open.st_ino != named.st_ino
                || open.st_dev != named.st_dev
        }
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
                "\(path) is not a chatbatch checkpoint (not an SQLite file, or truncated); refusing to overwrite it. Move it away, or give the path of a chatbatch checkpoint (a run takes --checkpoint or --output)"
            )
        case .truncated(let size, let recorded):
            throw ChatBatchError(
                .damaged,
                "checkpoint \(path) is damaged: it is \(size) bytes but records \(recorded), and no write-ahead log is beside it; refusing to use it, since a damaged checkpoint could send answered prompts again. Restore it (and its -wal file, if you moved it) from a copy; a new checkpoint would pay again for every prompt this one answered"
            )
        case .empty, .valid:
            return
        }
    }

    // MARK: meta

    func meta(_ key: String) throws(ChatBatchError) -> String? {
        try db.query("SELECT value FROM meta WHERE key=?", [.text(key)]).first?.first?.text
    }

    func setMeta(_ key: String, _ value: String) throws(ChatBatchError) {
        try db.query(
            "INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            [.text(key), .text(value)])
    }

    /// The state a row returns to when a send of it ends without an answer: the one its recorded answer gives
    /// (done, or failed for an errors-file line), or pending when it has none. A resend of an answered line never
    /// takes its answer away before a new one is there.
    static let answeredStateOrPending =
        "CASE WHEN out_seq IS NULL THEN 'pending' WHEN out_kind=\(OutputKind.results.rawValue) THEN 'done' ELSE 'failed' END"

    /// Rows a previous run left in flight: it died while they were (possibly) on the wire. They go back to pending
    /// (or to the answer they had, for a resend of an answered line), marked so that their next send is counted
    /// as a resend after a crash. Returns how many had no answer, and so will be sent again.
    func recoverInflight() throws(ChatBatchError) -> Int {
        let n =
            try db.query("SELECT count(*) FROM requests WHERE state='inflight' AND out_seq IS NULL").first?.first?.int
            ?? 0
        try db.query("UPDATE requests SET state=\(Self.answeredStateOrPending), crash_resend=1 WHERE state='inflight'")
        return n
    }

    /// True when no prompt has a row yet (a fresh checkpoint: nothing to look up).
    func isEmpty() throws(ChatBatchError) -> Bool {
        try db.query("SELECT 1 FROM requests LIMIT 1").isEmpty
    }

    /// Models an endpoint refused (403/404) in an earlier run of this checkpoint: nothing more is sent for them
    /// there. A refusal recorded before refusals were kept per endpoint counts for every endpoint.
    func refusedModels(endpointID: Int) throws(ChatBatchError) -> [String: ModelRefusal] {
        var out: [String: ModelRefusal] = [:]
        for row in try db.rows("SELECT key, value FROM meta WHERE key LIKE 'refused_model.%'") {
            guard let key = row["key"].text, let text = row["value"].text,
                let refusal = ModelRefusal(json: try? JSON.parse(text))
            else { continue }
            let scoped = key.hasPrefix("refused_model.e")
            if scoped && !key.hasPrefix("refused_model.e\(endpointID).") { continue }
            out[refusal.model] = refusal
        }
        return out
    }

    /// Forgets every refused model (`--retry-failed`: the key may have been given the scope since).
    func clearRefusedModels() throws(ChatBatchError) {
        try db.query("DELETE FROM meta WHERE key LIKE 'refused_model.%'")
    }

    func recordRefusedModel(_ refusal: ModelRefusal, endpointID: Int) throws(ChatBatchError) {
        try setMeta("refused_model.e\(endpointID)." + refusal.model, refusal.json.serialized())
    }

    /// The in-flight level an endpoint's key was found to allow (a 429 said so), as a run recorded it.
    func ceiling(endpointID: Int) throws(ChatBatchError) -> Int? {
        try meta("ceiling.e\(endpointID)").flatMap { Int($0) }
    }

    func recordCeiling(_ ceiling: Int, endpointID: Int) throws(ChatBatchError) {
        try setMeta("ceiling.e\(endpointID)", String(ceiling))
    }

    /// What each endpoint has spent over every run on this checkpoint.
    func spentByEndpoint() throws(ChatBatchError) -> [Int: Double] {
        guard version >= 3 else { return [:] }
        var out: [Int: Double] = [:]
        for row in try db.rows(
            "SELECT endpoint_id, coalesce(sum(cost), 0) AS cost FROM requests WHERE endpoint_id IS NOT NULL GROUP BY 1")
        {
            out[row["endpoint_id"].int ?? 0] = row["cost"].double ?? 0
        }
        return out
    }

    /// Counts of rows by state.
    func stateCounts() throws(ChatBatchError) -> [RequestState: Int] {
        var out: [RequestState: Int] = [:]
        for row in try db.rows("SELECT state, count(*) AS n FROM requests GROUP BY state") {
            if let s = row["state"].text.flatMap(RequestState.init(rawValue:)) { out[s] = row["n"].int ?? 0 }
        }
        return out
    }

    /// Total spend and tokens over every run on this checkpoint.
    func totals() throws(ChatBatchError) -> (prompt: Int, completion: Int, cost: Double) {
        let row = try db.rows(
            """
            SELECT coalesce(sum(prompt_tokens), 0) AS prompt, coalesce(sum(completion_tokens), 0) AS completion,
                coalesce(sum(cost), 0) AS cost
            FROM requests
            """
        ).first
        return (row?["prompt"].int ?? 0, row?["completion"].int ?? 0, row?["cost"].double ?? 0)
    }

}
