import ChatBatchCore
import Foundation

/// An answer kept in the response cache.
struct CachedAnswer: Sendable, Equatable {
    /// The chat.completion body, as one line of JSON (a streamed answer is kept reassembled).
    var body: [UInt8]
    /// The provider's request id of the answer that was paid for.
    var requestID: String?
    var promptTokens: Int
    var completionTokens: Int
}

extension CachedAnswer {
    /// The answer inside a results line of the batch shape (`response.body`), as the checkpoint keeps it.
    init?(resultLine: String) {
        guard let line = try? JSON.parse(resultLine), let response = line["response"],
            response["status_code"]?.intValue == 200,
            let body = response["body"], body.objectValue != nil
        else { return nil }
        self.init(
            body: Array(body.serialized().utf8), requestID: response["request_id"]?.stringValue,
            promptTokens: body["usage"]?["prompt_tokens"]?.intValue ?? 0,
            completionTokens: body["usage"]?["completion_tokens"]?.intValue ?? 0)
    }
}

/// What `chatbatch cache stats` shows.
public struct CacheStats: Sendable {
    public var entries = 0
    public var bytes = 0
    public var promptTokens = 0
    public var completionTokens = 0
    public var oldest: Double? = nil
    public var newest: Double? = nil
    public var byModel: [String: Int] = [:]
    /// Answers a real endpoint gave, and answers the fake gateway gave (which only ever answer fake runs).
    public var real = 0
    public var fake = 0

    public var json: JSON {
        var models = JSONObject()
        for k in byModel.keys.sorted() { models[k] = .int(byModel[k]!) }
        return [
            "entries": .int(entries), "bytes": .int(bytes), "prompt_tokens": .int(promptTokens),
            "completion_tokens": .int(completionTokens),
            "oldest": oldest.map { .string(Self.iso($0)) } ?? .null,
            "newest": newest.map { .string(Self.iso($0)) } ?? .null,
            "by_model": .object(models), "by_endpoint": ["real": .int(real), "fake_gateway": .int(fake)]
        ]
    }

    public var text: String {
        var lines = ["entries    \(entries) answers, \(bytes) bytes of answer bodies"]
        lines.append(
            "endpoints  \(real) from real endpoints, \(fake) from the fake gateway (they answer only --fake-gateway runs)"
        )
        lines.append("tokens     \(promptTokens) prompt + \(completionTokens) completion paid for once")
        if let oldest, let newest { lines.append("stored     \(Self.iso(oldest)) to \(Self.iso(newest))") }
        for (model, n) in byModel.sorted(by: { $0.key < $1.key }) { lines.append("model      \(model): \(n)") }
        return lines.joined(separator: "\n")
    }

    static func iso(_ t: Double) -> String { ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: t)) }
}

/// A SQLite file of successful answers keyed by a hash of their canonical request body, shared by runs and shards.
///
/// Several processes may use one file at once: WAL, a busy timeout, and writes retried until they commit.
/// A file that is not a chatbatch cache, or is damaged, is refused rather than trusted. Each instance is one
/// connection, used from one queue at a time.
final class ResponseCache: @unchecked Sendable {
    // @unchecked Sendable: `db` and `statements` are used from one serial queue at a time (the input queue
    // for lookups, the cache writer's queue for stores), never from two at once.
    static let schemaVersion = 1
    static let applicationID: Int32 = 0x4342_4341  // "CBCA"

    let path: String
    let db: SQLiteDatabase
    private var lookupStatement: SQLiteStatement?

    /// Opens the cache at `path` (creating it, owner-only, when `create`), refusing a foreign or damaged file.
    init(path: String, create: Bool) throws(ChatBatchError) {
        self.path = path
        var isDir: ObjCBool = false
        let exists = FileManager.default.fileExists(atPath: path, isDirectory: &isDir)
        if isDir.boolValue {
            throw ChatBatchError(.badCache, "cache \(path) is a directory; pass a file path to --cache")
        }
        if !exists && !create { throw ChatBatchError(.badCache, "no cache at \(path)") }
        switch SQLiteHeader.read(path) {
        case .notSQLite:
            throw ChatBatchError(
                .badCache,
                "\(path) is not a chatbatch cache (not an SQLite file); refusing to use or overwrite it. Pass another --cache"
            )
        case .truncated(let size, let recorded):
            throw ChatBatchError(
                .badCache,
                "cache \(path) is damaged (\(size) bytes, records \(recorded)); refusing to trust its answers. Move it away to start a new cache"
            )
        case nil where exists:
            throw ChatBatchError(.badCache, "cannot read cache \(path)")
        default: break
        }
        if !exists {
            // A cache under a folder not made yet (~/.cache/chatbatch/answers.db on a new machine): make it,
            // owner-only.
            let folder = (path as NSString).deletingLastPathComponent
            guard makeFolders(folder) else {
                throw ChatBatchError(
                    .badCache,
                    "cannot create the folder \(folder) for cache \(path): \(String(cString: strerror(errno)))")
            }
            let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
            guard fd >= 0 else {
                throw ChatBatchError(.badCache, "cannot create cache \(path): \(String(cString: strerror(errno)))")
            }
            _ = closeFile(fd)
        }
        db = try SQLiteDatabase(path: path, role: .cache, busyTimeout: 30_000)
        // Another run may be creating the same file right now: switching an empty file to WAL needs an exclusive
        // lock that SQLite does not always wait for, so a busy answer is tried again for a few seconds.
        var attempt = 0
        while true {
            do {
                try prepareSchema()
                break
            } catch  where error.code == .cacheBusy && attempt < 100 {
                attempt += 1
                usleep(50_000)
            }
        }
    }

    /// The application id and the number of tables, read in one snapshot (another process may be creating the file).
    /// Call inside a transaction.
    private func identity() throws(ChatBatchError) -> (appID: Int32, tables: Int) {
        let appID = Int32(truncatingIfNeeded: try db.query("PRAGMA application_id").first?.first?.int ?? 0)
        return (appID, try db.query("SELECT count(*) FROM sqlite_master").first?.first?.int ?? 0)
    }

    private func prepareSchema() throws(ChatBatchError) {
        var id: (appID: Int32, tables: Int)
        do {
            id = try db.inReadTransaction { try identity() }
        } catch let error as ChatBatchError where error.code == .cacheBusy {
            throw error
        } catch {
            throw ChatBatchError(
                .badCache, "cache \(path) cannot be read (\(error)); it is damaged. Move it away to start a new cache")
        }
        if id.tables == 0 && id.appID == 0 {
            // Empty: create it, unless another run did so meanwhile (the check is repeated under the write lock).
            try db.execute("PRAGMA journal_mode=WAL")
            id = try db.inTransaction { () throws(ChatBatchError) in
                let current = try identity()
                guard current.tables == 0 && current.appID == 0 else { return current }
                try db.execute(
                    """
                    CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
                    CREATE TABLE answers(
                        key TEXT PRIMARY KEY,
                        model TEXT,
                        body BLOB NOT NULL,
                        request_id TEXT,
                        prompt_tokens INTEGER NOT NULL,
                        completion_tokens INTEGER NOT NULL,
                        created_at REAL NOT NULL);
                    INSERT INTO meta VALUES('schema_version', '\(Self.schemaVersion)');
                    PRAGMA application_id=\(Self.applicationID);
                    """)
                return (Self.applicationID, 2)
            }
        }
        guard id.appID == Self.applicationID else {
            throw ChatBatchError(
                .badCache,
                "\(path) is an SQLite file of another program, not a chatbatch cache; refusing to touch it. Pass another --cache"
            )
        }
        try db.execute("PRAGMA synchronous=NORMAL")
        let version =
            Int(try db.query("SELECT value FROM meta WHERE key='schema_version'").first?.first?.text ?? "") ?? 0
        guard version == Self.schemaVersion else {
            throw ChatBatchError(
                .badCache,
                "cache \(path) has schema version \(version); this chatbatch reads version \(Self.schemaVersion)")
        }
    }

    /// Runs `body` inside one read transaction, so a batch of lookups takes the file's lock once (outside one,
    /// every lookup locks, unlocks and checks the write-ahead log on its own: a few syscalls per line).
    func batch<T>(_ body: () throws -> T) throws -> T {
        try db.inReadTransaction(body)
    }

    /// The answer stored for `key`, if any.
    func lookup(_ key: String) throws(ChatBatchError) -> CachedAnswer? {
        if lookupStatement == nil {
            lookupStatement = try db.prepare(
                "SELECT body, request_id, prompt_tokens, completion_tokens FROM answers WHERE key=:key")
        }
        guard let row = try lookupStatement!.row(["key": .text(key)]) else { return nil }
        return CachedAnswer(
            body: row["body"].blob ?? [], requestID: row["request_id"].text,
            promptTokens: row["prompt_tokens"].int ?? 0,
            completionTokens: row["completion_tokens"].int ?? 0)
    }

    /// True when an answer is stored for `key`.
    func contains(_ key: String) throws(ChatBatchError) -> Bool {
        !(try db.query("SELECT 1 FROM answers WHERE key=?", [.text(key)]).isEmpty)
    }

    /// Stores answers in one transaction; `replace` overwrites (refresh), otherwise the first answer stored wins.
    func store(_ entries: [(key: String, model: String?, answer: CachedAnswer)], replace: Bool) throws(ChatBatchError) {
        try db.inTransaction { () throws(ChatBatchError) in
            let insert = try db.prepare(
                (replace ? "INSERT OR REPLACE" : "INSERT OR IGNORE")
                    + " INTO answers(key, model, body, request_id, prompt_tokens, completion_tokens, created_at) VALUES(?, ?, ?, ?, ?, ?, ?)"
            )
            let now = Date().timeIntervalSince1970
            for e in entries {
                try insert.run([
                    .text(e.key), .optional(e.model), .blob(e.answer.body), .optional(e.answer.requestID),
                    .int(e.answer.promptTokens), .int(e.answer.completionTokens), .double(now)
                ])
            }
        }
    }

    func stats() throws(ChatBatchError) -> CacheStats {
        var s = CacheStats()
        if let row = try db.rows(
            """
            SELECT count(*) AS entries, coalesce(sum(length(body)), 0) AS bytes, coalesce(sum(prompt_tokens), 0) AS prompt,
                coalesce(sum(completion_tokens), 0) AS completion, min(created_at) AS oldest, max(created_at) AS newest
            FROM answers
            """
        ).first {
            s.entries = row["entries"].int ?? 0
            s.bytes = row["bytes"].int ?? 0
            s.promptTokens = row["prompt"].int ?? 0
            s.completionTokens = row["completion"].int ?? 0
            s.oldest = row["oldest"].double
            s.newest = row["newest"].double
        }
        for row in try db.rows("SELECT coalesce(model, '(none)') AS model, count(*) AS n FROM answers GROUP BY 1") {
            s.byModel[row["model"].text ?? ""] = row["n"].int ?? 0
        }
        let fake = try db.query(
            "SELECT count(*) FROM answers WHERE substr(key, 1, ?) = ?",
            [.int(CacheKey.fakePrefix.utf8.count), .text(CacheKey.fakePrefix)])
        s.fake = fake.first?.first?.int ?? 0
        s.real = s.entries - s.fake
        return s
    }

    /// Deletes answers stored more than `seconds` ago; returns how many.
    func prune(olderThan seconds: Double) throws(ChatBatchError) -> Int {
        let before = try db.query("SELECT count(*) FROM answers").first?.first?.int ?? 0
        try db.query("DELETE FROM answers WHERE created_at < ?", [.double(Date().timeIntervalSince1970 - seconds)])
        let after = try db.query("SELECT count(*) FROM answers").first?.first?.int ?? 0
        return before - after
    }

    func close() {
        lookupStatement = nil
        db.close()
    }
}

/// The C library's `close`, under a name that instance methods called `close` do not hide.
private func closeFile(_ fd: Int32) -> Int32 { close(fd) }
