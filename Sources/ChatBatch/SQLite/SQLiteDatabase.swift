import CSQLite
import Foundation

/// What a SQLite file is to chatbatch, so that its errors name it and map to the right codes: a busy checkpoint
/// is another run holding it; a busy cache is another run writing it.
enum SQLiteRole: String, Sendable {
    case checkpoint
    case cache

    var busy: ChatBatchError.Code { self == .checkpoint ? .checkpointBusy : .cacheBusy }
    var damaged: ChatBatchError.Code { self == .checkpoint ? .damaged : .badCache }
}

/// One SQLite connection: open, execute, prepare, transactions. Every `sqlite3_` call of chatbatch is in this
/// folder. One owner at a time.
///
/// `@unchecked Sendable`: a connection is only ever used from one serial queue (the run's, the cache writer's)
/// or from the one thread that opened it (the input reader); it is handed over, never shared.
final class SQLiteDatabase: @unchecked Sendable {
    let handle: OpaquePointer
    let path: String
    let role: SQLiteRole

    init(path: String, role: SQLiteRole = .checkpoint, readOnly: Bool = false, busyTimeout: Int32 = 5000)
        throws(ChatBatchError)
    {
        var db: OpaquePointer?
        let flags = readOnly ? SQLITE_OPEN_READONLY : (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE)
        let rc = sqlite3_open_v2(path, &db, flags | SQLITE_OPEN_NOMUTEX, nil)
        guard rc == SQLITE_OK, let db else {
            let message = db.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
            if let db { sqlite3_close_v2(db) }
            throw ChatBatchError(.openFailed, "cannot open \(role.rawValue) \(path): \(message)")
        }
        handle = db
        self.path = path
        self.role = role
        sqlite3_busy_timeout(db, busyTimeout)
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

    /// The error for a failed call, named after the file and what was being done, with a code that says what to do.
    func error(_ what: String, rc: Int32? = nil) -> ChatBatchError {
        let code: ChatBatchError.Code
        var advice = ""
        switch (rc ?? sqlite3_errcode(handle)) & 0xFF {
        case SQLITE_CORRUPT, SQLITE_NOTADB: code = role.damaged
        case SQLITE_FULL, SQLITE_IOERR:
            code = .writeFailed
            advice =
                " (the disk may be full or a file size limit reached). Everything committed before this is safe; free space and run the same command again to resume"
        case SQLITE_BUSY, SQLITE_LOCKED: code = role.busy
        default: code = .sqliteError
        }
        return ChatBatchError(code, "\(role.rawValue) \(path): \(what): \(lastError)\(advice)")
    }

    func execute(_ sql: String) throws(ChatBatchError) {
        var message: UnsafeMutablePointer<CChar>?
        let rc = sqlite3_exec(handle, sql, nil, nil, &message)
        if rc != SQLITE_OK {
            sqlite3_free(message)
            throw error("cannot run \(sql.prefix(40))", rc: rc)
        }
    }

    /// Runs `body` inside `BEGIN IMMEDIATE … COMMIT`; rolls back and rethrows the first error if anything fails
    /// (a failed rollback does not replace it).
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

    /// Runs `body` inside one read transaction (`BEGIN … COMMIT`), so its reads share one snapshot.
    func inReadTransaction<T>(_ body: () throws -> T) throws -> T {
        try execute("BEGIN")
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
        let rc = sqlite3_prepare_v3(handle, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &stmt, nil)
        guard rc == SQLITE_OK, let stmt else {
            throw error("cannot prepare '\(sql.prefix(60))'", rc: rc)
        }
        return SQLiteStatement(db: self, stmt: stmt)
    }

    /// Runs one statement with named bindings (`:name` in the SQL) and returns its rows, read by column name.
    @discardableResult
    func rows(_ sql: String, _ values: KeyValuePairs<String, SQLiteValue> = [:]) throws(ChatBatchError) -> [SQLiteRow] {
        let stmt = try prepare(sql)
        return try stmt.rows(values)
    }

    /// Runs one statement with bindings and returns the rows it produced, each as column values.
    @discardableResult
    func query(_ sql: String, _ values: [SQLiteValue] = []) throws(ChatBatchError) -> [[SQLiteValue]] {
        let stmt = try prepare(sql)
        try stmt.bind(values)
        var rows: [[SQLiteValue]] = []
        while try stmt.step() { rows.append(stmt.currentValues()) }
        try stmt.reset()
        return rows
    }
}

/// One result row, read by column name as GRDB reads them: `row["custom_id"].text`. A name the query does not
/// return is a programming error.
struct SQLiteRow: Sendable {
    let values: [SQLiteValue]
    let index: [String: Int]

    subscript(_ column: String) -> SQLiteValue {
        guard let i = index[column] else { preconditionFailure("the query returns no column \(column)") }
        return values[i]
    }
}

/// A value in or out of SQLite.
enum SQLiteValue: Sendable, Equatable {
    case null
    case int(Int)
    case double(Double)
    case text(String)
    case blob([UInt8])

    var int: Int? {
        if case .int(let v) = self { return v }
        if case .double(let d) = self { return Int(d) }
        return nil
    }
    var double: Double? {
        if case .double(let v) = self { return v }
        if case .int(let i) = self { return Double(i) }
        return nil
    }
    var text: String? {
        if case .text(let v) = self { return v }
        return nil
    }
    var blob: [UInt8]? {
        if case .blob(let v) = self { return v }
        return nil
    }

    static func optional(_ v: String?) -> SQLiteValue { v.map(SQLiteValue.text) ?? .null }
    static func optional(_ v: Int?) -> SQLiteValue { v.map(SQLiteValue.int) ?? .null }
    static func optional(_ v: Double?) -> SQLiteValue { v.map(SQLiteValue.double) ?? .null }
}

/// A prepared statement, reset and reused.
final class SQLiteStatement {
    let db: SQLiteDatabase
    private let stmt: OpaquePointer
    static let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)

    init(db: SQLiteDatabase, stmt: OpaquePointer) {
        self.db = db
        self.stmt = stmt
    }

    deinit { sqlite3_finalize(stmt) }

    var columnCount: Int { Int(sqlite3_column_count(stmt)) }

    /// Resets (a failure of the last step surfaces here) and binds `values` in order.
    func bind(_ values: [SQLiteValue]) throws(ChatBatchError) {
        try reset()
        sqlite3_clear_bindings(stmt)
        for (i, v) in values.enumerated() { try bind(v, at: Int32(i + 1)) }
    }

    /// Resets and binds `:name` parameters by name; a name the statement does not have is a programming error.
    func bind(_ values: KeyValuePairs<String, SQLiteValue>) throws(ChatBatchError) {
        try reset()
        sqlite3_clear_bindings(stmt)
        // A statement is bound with the same names in the same order each time (a literal at its one call site):
        // the positions of the last call are taken when the names match, compared without hashing.
        var same = values.count == lastNames.count
        if same {
            for (i, pair) in values.enumerated() where pair.key != lastNames[i] {
                same = false
                break
            }
        }
        if !same {
            lastNames = values.map(\.key)
            lastIndices = values.map { parameterIndex($0.key) }
        }
        for (i, pair) in values.enumerated() { try bind(pair.value, at: lastIndices[i]) }
    }

    /// The names of the last call to `bind` by name, and their positions.
    private var lastNames: [String] = []
    private var lastIndices: [Int32] = []

    /// The position of `:name`, looked up in SQLite once per statement and name (the writer binds the same names
    /// for every line, so the hot path neither builds the `:name` string nor scans the statement's parameters).
    private var parameterIndices: [String: Int32] = [:]

    private func parameterIndex(_ name: String) -> Int32 {
        if let idx = parameterIndices[name] { return idx }
        let idx = sqlite3_bind_parameter_index(stmt, ":" + name)
        precondition(idx > 0, "the statement has no parameter :\(name)")
        parameterIndices[name] = idx
        return idx
    }

    private func bind(_ v: SQLiteValue, at idx: Int32) throws(ChatBatchError) {
        let rc: Int32
        switch v {
        case .null: rc = sqlite3_bind_null(stmt, idx)
        case .int(let x): rc = sqlite3_bind_int64(stmt, idx, Int64(x))
        case .double(let x): rc = sqlite3_bind_double(stmt, idx, x)
        case .text(let s): rc = sqlite3_bind_text(stmt, idx, s, -1, Self.transient)
        case .blob(let bytes):
            rc = bytes.withUnsafeBytes {
                sqlite3_bind_blob(stmt, idx, $0.baseAddress, Int32($0.count), Self.transient)
            }
        }
        if rc != SQLITE_OK { throw db.error("cannot bind value \(idx)", rc: rc) }
    }

    /// Binds by name, runs to completion, and resets.
    func run(_ values: KeyValuePairs<String, SQLiteValue>) throws(ChatBatchError) {
        try bind(values)
        while try step() {}
        try reset()
    }

    /// Binds by name and returns every row, read by column name; resets.
    func rows(_ values: KeyValuePairs<String, SQLiteValue> = [:]) throws(ChatBatchError) -> [SQLiteRow] {
        try bind(values)
        let names = columnIndex
        var out: [SQLiteRow] = []
        while try step() { out.append(SQLiteRow(values: currentValues(), index: names)) }
        try reset()
        return out
    }

    /// Binds by name and returns the first row (nil when there is none); resets.
    func row(_ values: KeyValuePairs<String, SQLiteValue>) throws(ChatBatchError) -> SQLiteRow? {
        try bind(values)
        let found = try step() ? SQLiteRow(values: currentValues(), index: columnIndex) : nil
        try reset()
        return found
    }

    /// The result's column names (`AS` names where given), to their positions.
    private(set) lazy var columnIndex: [String: Int] = {
        var index: [String: Int] = [:]
        for i in 0..<columnCount {
            if let name = sqlite3_column_name(stmt, Int32(i)) { index[String(cString: name)] = i }
        }
        return index
    }()

    /// Steps once; true when a row is ready.
    func step() throws(ChatBatchError) -> Bool {
        let rc = sqlite3_step(stmt)
        switch rc {
        case SQLITE_ROW: return true
        case SQLITE_DONE: return false
        default: throw db.error("statement failed", rc: rc)
        }
    }

    /// Readies the statement to run again; reports what the last step left wrong.
    func reset() throws(ChatBatchError) {
        let rc = sqlite3_reset(stmt)
        if rc != SQLITE_OK { throw db.error("statement failed", rc: rc) }
    }

    /// Binds, runs to completion, and resets.
    func run(_ values: [SQLiteValue]) throws(ChatBatchError) {
        try bind(values)
        while try step() {}
        try reset()
    }

    /// Binds, steps once, and returns the first row's columns (nil when there is none); resets.
    func row(_ values: [SQLiteValue]) throws(ChatBatchError) -> [SQLiteValue]? {
        try bind(values)
        let found = try step() ? currentValues() : nil
        try reset()
        return found
    }

    /// The first column of the first row, or nil.
    func scalar(_ values: [SQLiteValue]) throws(ChatBatchError) -> SQLiteValue? { try row(values)?.first }

    /// Every column of the row the last step made ready, in order.
    func currentValues() -> [SQLiteValue] { (0..<columnCount).map { value($0) } }

    func value(_ i: Int) -> SQLiteValue {
        let c = Int32(i)
        switch sqlite3_column_type(stmt, c) {
        case SQLITE_INTEGER: return .int(Int(sqlite3_column_int64(stmt, c)))
        case SQLITE_FLOAT: return .double(sqlite3_column_double(stmt, c))
        case SQLITE_NULL: return .null
        case SQLITE_BLOB:
            let n = Int(sqlite3_column_bytes(stmt, c))
            guard n > 0, let p = sqlite3_column_blob(stmt, c) else { return .blob([]) }
            return .blob(Array(UnsafeRawBufferPointer(start: p, count: n)))
        default:
            guard let p = sqlite3_column_text(stmt, c) else { return .null }
            return .text(String(cString: p))
        }
    }
}
