import CSQLite
import Foundation

/// A small SQLite connection: open, execute, prepare. One owner at a time.
///
/// `@unchecked Sendable`: a connection is only ever used from one serial queue (the checkpoint writer)
/// or from the one thread that opened it (the input reader); it is handed over, never shared.
final class SQLiteDatabase: @unchecked Sendable {
    let handle: OpaquePointer
    let path: String

    init(path: String, readOnly: Bool = false) throws(ChatBatchError) {
        var db: OpaquePointer?
        let flags = readOnly ? SQLITE_OPEN_READONLY : (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE)
        let rc = sqlite3_open_v2(path, &db, flags | SQLITE_OPEN_NOMUTEX, nil)
        guard rc == SQLITE_OK, let db else {
            let message = db.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
            if let db { sqlite3_close_v2(db) }
            throw ChatBatchError(.openFailed, "cannot open checkpoint \(path): \(message)")
        }
        handle = db
        self.path = path
        sqlite3_busy_timeout(db, 5000)
    }

    private var isOpen = true

    deinit { close() }

    /// Closes the connection; statements still alive finalize it when they go (`sqlite3_close_v2`).
    func close() {
        if isOpen { sqlite3_close_v2(handle) }
        isOpen = false
    }

    var lastError: String { String(cString: sqlite3_errmsg(handle)) }

    /// The rowid of the last row inserted on this connection.
    var lastInsertedRow: Int { Int(sqlite3_last_insert_rowid(handle)) }

    func error(_ what: String) -> ChatBatchError {
        let rc = sqlite3_errcode(handle)
        let code: ChatBatchError.Code
        var advice = ""
        switch rc & 0xFF {
        case SQLITE_CORRUPT, SQLITE_NOTADB: code = .damaged
        case SQLITE_FULL, SQLITE_IOERR:
            code = .writeFailed
            advice = " (the disk may be full or a file size limit reached). Everything committed before this is safe; free space and run the same command again to resume"
        case SQLITE_BUSY, SQLITE_LOCKED: code = .checkpointBusy
        default: code = .sqliteError
        }
        return ChatBatchError(code, "checkpoint \(path): \(what): \(lastError)\(advice)")
    }

    func execute(_ sql: String) throws(ChatBatchError) {
        var message: UnsafeMutablePointer<CChar>?
        if sqlite3_exec(handle, sql, nil, nil, &message) != SQLITE_OK {
            sqlite3_free(message)
            throw error("cannot run \(sql.prefix(40))")
        }
    }

    /// Runs `body` inside `BEGIN IMMEDIATE … COMMIT`; rolls back and rethrows the first error if anything fails.
    func inTransaction<T>(_ body: () throws(ChatBatchError) -> T) throws(ChatBatchError) -> T {
        try execute("BEGIN IMMEDIATE")
        do {
            let result = try body()
            try execute("COMMIT")
            return result
        } catch {
            try? execute("ROLLBACK")
            throw error
        }
    }

    func prepare(_ sql: String) throws(ChatBatchError) -> SQLiteStatement {
        var stmt: OpaquePointer?
        guard sqlite3_prepare_v3(handle, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &stmt, nil) == SQLITE_OK, let stmt else {
            throw error("cannot prepare '\(sql.prefix(60))'")
        }
        return SQLiteStatement(db: self, stmt: stmt)
    }

    /// Runs one statement with bindings and returns the rows it produced, each as column values.
    @discardableResult
    func query(_ sql: String, _ values: [SQLiteValue] = []) throws(ChatBatchError) -> [[SQLiteValue]] {
        let stmt = try prepare(sql)
        try stmt.bind(values)
        var rows: [[SQLiteValue]] = []
        while try stmt.step() { rows.append((0..<stmt.columnCount).map { stmt.value($0) }) }
        return rows
    }
}

/// A value in or out of SQLite.
enum SQLiteValue: Sendable, Equatable {
    case null
    case int(Int)
    case double(Double)
    case text(String)

    var int: Int? { if case .int(let v) = self { return v }; if case .double(let d) = self { return Int(d) }; return nil }
    var double: Double? { if case .double(let v) = self { return v }; if case .int(let i) = self { return Double(i) }; return nil }
    var text: String? { if case .text(let v) = self { return v }; return nil }

    static func optional(_ v: String?) -> SQLiteValue { v.map(SQLiteValue.text) ?? .null }
    static func optional(_ v: Int?) -> SQLiteValue { v.map(SQLiteValue.int) ?? .null }
    static func optional(_ v: Double?) -> SQLiteValue { v.map(SQLiteValue.double) ?? .null }
}

/// A prepared statement, reset and reused.
final class SQLiteStatement {
    let db: SQLiteDatabase
    let stmt: OpaquePointer
    static let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)

    init(db: SQLiteDatabase, stmt: OpaquePointer) {
        self.db = db
        self.stmt = stmt
    }

    deinit { sqlite3_finalize(stmt) }

    var columnCount: Int { Int(sqlite3_column_count(stmt)) }

    func bind(_ values: [SQLiteValue]) throws(ChatBatchError) {
        sqlite3_reset(stmt)
        sqlite3_clear_bindings(stmt)
        for (i, v) in values.enumerated() {
            let idx = Int32(i + 1)
            let rc: Int32
            switch v {
            case .null: rc = sqlite3_bind_null(stmt, idx)
            case .int(let x): rc = sqlite3_bind_int64(stmt, idx, Int64(x))
            case .double(let x): rc = sqlite3_bind_double(stmt, idx, x)
            case .text(let s): rc = sqlite3_bind_text(stmt, idx, s, -1, Self.transient)
            }
            if rc != SQLITE_OK { throw db.error("cannot bind value \(i + 1)") }
        }
    }

    /// Steps once; true when a row is ready.
    func step() throws(ChatBatchError) -> Bool {
        switch sqlite3_step(stmt) {
        case SQLITE_ROW: return true
        case SQLITE_DONE: return false
        default: throw db.error("statement failed")
        }
    }

    /// Binds, steps once, and returns the first column of the first row (nil when there is none); resets.
    func scalar(_ values: [SQLiteValue]) throws(ChatBatchError) -> SQLiteValue? {
        try bind(values)
        defer { sqlite3_reset(stmt) }
        return try step() ? value(0) : nil
    }

    /// Binds, runs to completion, and resets.
    func run(_ values: [SQLiteValue]) throws(ChatBatchError) {
        try bind(values)
        while try step() {}
        sqlite3_reset(stmt)
    }

    func value(_ i: Int) -> SQLiteValue {
        let c = Int32(i)
        switch sqlite3_column_type(stmt, c) {
        case SQLITE_INTEGER: return .int(Int(sqlite3_column_int64(stmt, c)))
        case SQLITE_FLOAT: return .double(sqlite3_column_double(stmt, c))
        case SQLITE_NULL: return .null
        default:
            guard let p = sqlite3_column_text(stmt, c) else { return .null }
            return .text(String(cString: p))
        }
    }
}

/// What the first 100 bytes of a file say about it as an SQLite database, read before SQLite touches it.
enum SQLiteHeader: Equatable {
    case empty
    case valid
    case notSQLite
    /// The header records more pages than the file holds: it was cut off.
    case truncated(size: Int, recorded: Int)

    /// nil when the file cannot be read.
    static func read(_ path: String) -> SQLiteHeader? {
        guard let handle = FileHandle(forReadingAtPath: path) else { return nil }
        defer { try? handle.close() }
        let head = Array((try? handle.read(upToCount: 100)) ?? Data())
        if head.isEmpty { return .empty }
        guard head.count >= 100, Array(head.prefix(16)) == Array("SQLite format 3\0".utf8) else { return .notSQLite }
        // The header records the database size (valid when its two change counters agree).
        func u32(_ at: Int) -> Int { Int(head[at]) << 24 | Int(head[at + 1]) << 16 | Int(head[at + 2]) << 8 | Int(head[at + 3]) }
        let rawPageSize = Int(head[16]) << 8 | Int(head[17])
        let pageSize = rawPageSize == 1 ? 65536 : rawPageSize
        var st = stat()
        let size = stat(path, &st) == 0 ? Int(st.st_size) : 0
        if u32(24) == u32(92), u32(28) > 0, size < u32(28) * pageSize {
            // A write-ahead log beside it holds pages the file lacks (a checkpoint into the file stopped, e.g. on a
            // full disk): SQLite reads them from the log, so the file is whole as SQLite sees it.
            var wal = stat()
            if stat(path + "-wal", &wal) == 0, wal.st_size > 0 { return .valid }
            return .truncated(size: size, recorded: u32(28) * pageSize)
        }
        return .valid
    }
}
