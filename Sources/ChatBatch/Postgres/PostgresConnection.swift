import CLibPQ
import ChatBatchCore
import Dispatch
import Foundation

/// One PostgreSQL connection through libpq: connect, run a statement with parameters, transactions. Every `PQ`
/// call of chatbatch is in this folder, as every `sqlite3_` call is in `SQLite/`.
///
/// libpq rather than an event-loop client: calls block the serial queue that owns the connection, as SQLite's do,
/// so a store backend is written the same way for both; and libpq reads its own environment (`PGPASSFILE`, service
/// files, `sslmode`), which users of `psql` already have set up.
///
/// `@unchecked Sendable`: a connection is only ever used from one serial queue at a time; it is handed over, never
/// shared.
final class PostgresConnection: @unchecked Sendable {
    let address: PostgresAddress
    let handle: OpaquePointer
    /// The SQLSTATE of the last statement that failed (`40001`, a serialization failure, is worth running again).
    private(set) var lastState: String? = nil

    /// Connects, waiting at most `timeout` seconds (unless the address or `PGCONNECT_TIMEOUT` says otherwise).
    init(_ address: PostgresAddress, timeout: Int = 10) throws(ChatBatchError) {
        self.address = address
        // Later keywords override earlier ones: the address (expanded from `dbname`) overrides the defaults.
        var keywords = ["fallback_application_name"]
        var values = ["chatbatch"]
        if ProcessInfo.processInfo.environment["PGCONNECT_TIMEOUT"] == nil {
            keywords.append("connect_timeout")
            values.append(String(timeout))
        }
        keywords.append("dbname")
        values.append(address.connectionString)
        let conn = Self.withCStrings(keywords) { k in
            Self.withCStrings(values) { v in PQconnectdbParams(k, v, 1) }
        }
        guard let conn else {
            throw ChatBatchError(.storeUnreachable, "store \(address): cannot connect: out of memory")
        }
        guard PQstatus(conn) == CONNECTION_OK else {
            let message = address.scrub(Self.trimmed(PQerrorMessage(conn)))
            let needed = PQconnectionNeedsPassword(conn) == 1, used = PQconnectionUsedPassword(conn) == 1
            PQfinish(conn)
            if needed {
                throw ChatBatchError(
                    .storeRefused,
                    "store \(address): the server asks for a password and none was given: set PGPASSWORD or "
                        + "PGPASSFILE (~/.pgpass), or put it in the address")
            }
            // (The login can succeed and the database still be missing: that is checked first.)
            if message.contains("database") && message.contains("does not exist") {
                throw ChatBatchError(.badStore, "store \(address): \(message)")
            }
            if used || message.contains("authentication failed") {
                throw ChatBatchError(
                    .storeRefused, "store \(address): the server refused the login: \(message)")
            }
            throw ChatBatchError(
                .storeUnreachable,
                "store \(address): cannot connect: \(message). Nothing was lost; run the same command again once "
                    + "the server is up")
        }
        handle = conn
        // Notices (a table that already exists, …) are not for the user's terminal.
        PQsetNoticeProcessor(handle, { _, _ in }, nil)
        try settle()
    }

    /// Session settings this wrapper reads values by (`bytea` in hex: a database may default to `escape`), and those
    /// its user asked to keep (`keep`), set again on every new connection.
    private func settle() throws(ChatBatchError) {
        try execute("SET bytea_output = hex")
        for setting in kept { try execute(setting) }
    }

    /// Settings (`SET …`) applied now and again after every reconnection.
    private var kept: [String] = []
    func keep(_ setting: String) throws(ChatBatchError) {
        kept.append(setting)
        try execute(setting)
    }

    deinit { PQfinish(handle) }

    /// True while the connection is up (false once the server went away; `reset()` tries again).
    var isUp: Bool { PQstatus(handle) == CONNECTION_OK }

    /// Connects again on the same address after the server went away.
    func reset() throws(ChatBatchError) {
        PQreset(handle)
        prepared = [:]  // a new session: its statements are prepared again as they are used
        guard isUp else {
            throw ChatBatchError(
                .storeUnreachable,
                "store \(address): cannot connect again: \(address.scrub(Self.trimmed(PQerrorMessage(handle))))")
        }
        try settle()
    }

    /// Runs `body`; while the server cannot be reached, connects again (backing off up to 2 s) and runs it again,
    /// for up to `seconds`. `outage` is told of the first such error (once). A refused statement is thrown at once.
    func retrying<T>(
        for seconds: Double, outage: (ChatBatchError) -> Void = { _ in }, _ body: () throws(ChatBatchError) -> T
    ) throws(ChatBatchError) -> T {
        let deadline = DispatchTime.now().uptimeNanoseconds + UInt64(seconds * 1e9)
        var told = false
        var wait = 0.1
        while true {
            do {
                return try body()
            } catch {
                guard error.code == .storeUnreachable, DispatchTime.now().uptimeNanoseconds < deadline else {
                    throw error
                }
                if !told { outage(error) }
                told = true
                usleep(UInt32(wait * 1e6))
                wait = min(wait * 2, 2)
                try? reset()
            }
        }
    }

    /// Runs one statement with positional parameters (`$1`, `$2`, … in text form; nil is NULL) and returns its
    /// rows, read by column name.
    @discardableResult
    func rows(_ sql: String, _ parameters: [String?] = []) throws(ChatBatchError) -> [PostgresRow] {
        // A text parameter ends at its first NUL byte, which PostgreSQL's text cannot hold anyway.
        if parameters.contains(where: { value in
            guard var value else { return false }
            return value.withUTF8 { $0.isEmpty ? false : memchr($0.baseAddress!, 0, $0.count) != nil }
        }) {
            throw ChatBatchError(
                .storeError, "store \(address): a value holds a NUL byte, which PostgreSQL text cannot")
        }
        let name = parameters.isEmpty ? nil : try prepare(sql, parameters: parameters.count)
        let result = Self.withOptionalCStrings(parameters) { p in
            if let name { return PQexecPrepared(handle, name, Int32(parameters.count), p, nil, nil, 0) }
            return PQexecParams(handle, sql, 0, nil, p, nil, nil, 0)
        }
        guard let result else { throw failure(sql, nil) }
        defer { PQclear(result) }
        switch PQresultStatus(result) {
        case PGRES_COMMAND_OK, PGRES_EMPTY_QUERY:
            return []
        case PGRES_TUPLES_OK:
            return Self.read(result)
        default:
            throw failure(sql, result)
        }
    }

    /// Statements prepared on this connection, by their text (`chatbatch_1`, …): a statement with parameters is
    /// parsed and planned once a session, not at every run (a worker's turn statement runs hundreds of times a
    /// second). Forgotten when the connection is made again.
    private var prepared: [String: String] = [:]

    /// The name `sql` is prepared under in this session, preparing it on its first use.
    private func prepare(_ sql: String, parameters: Int) throws(ChatBatchError) -> String {
        if let name = prepared[sql] { return name }
        let name = "chatbatch_\(prepared.count + 1)"
        guard let made = PQprepare(handle, name, sql, Int32(parameters), nil) else { throw failure(sql, nil) }
        defer { PQclear(made) }
        guard PQresultStatus(made) == PGRES_COMMAND_OK else { throw failure(sql, made) }
        prepared[sql] = name
        return name
    }

    /// Runs statements that take no parameters and return no rows (a schema, `BEGIN`), several at once if need be.
    func execute(_ sql: String) throws(ChatBatchError) {
        guard let result = PQexec(handle, sql) else { throw failure(sql, nil) }
        defer { PQclear(result) }
        let status = PQresultStatus(result)
        guard status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK || status == PGRES_EMPTY_QUERY else {
            throw failure(sql, result)
        }
    }

    /// Starts a `COPY … FROM STDIN`: the server waits for its data (`PQputCopyData`, then `PQputCopyEnd`).
    func begin(_ copy: String) throws(ChatBatchError) {
        guard let result = PQexec(handle, copy) else { throw failure(copy, nil) }
        defer { PQclear(result) }
        guard PQresultStatus(result) == PGRES_COPY_IN else { throw failure(copy, result) }
    }

    /// Reads what the server said of a `COPY`'s data, to its last result.
    func end(_ copy: String) throws(ChatBatchError) {
        var failed: ChatBatchError? = nil
        while let result = PQgetResult(handle) {
            if PQresultStatus(result) != PGRES_COMMAND_OK, failed == nil { failed = failure(copy, result) }
            PQclear(result)
        }
        if let failed { throw failed }
    }

    /// Hands `body` every row of `select` (with `parameters`), read through a cursor `fetching` rows at a time in
    /// one transaction: memory stays flat in the result's size.
    func eachRow(
        _ select: String, _ parameters: [String?], fetching: Int = 1000,
        _ body: (PostgresRow) throws(ChatBatchError) -> Void
    ) throws(ChatBatchError) {
        try inTransaction { () throws(ChatBatchError) in
            try rows("DECLARE chatbatch_rows NO SCROLL CURSOR FOR " + select, parameters)
            while true {
                let batch = try rows("FETCH \(fetching) FROM chatbatch_rows")
                for row in batch { try body(row) }
                if batch.count < fetching { break }
            }
            try execute("CLOSE chatbatch_rows")
        }
    }

    /// Runs `body` inside `BEGIN … COMMIT`; rolls back and rethrows the first error if anything fails.
    func inTransaction<T>(_ body: () throws(ChatBatchError) -> T) throws(ChatBatchError) -> T {
        try execute("BEGIN")
        do {
            let result = try body()
            try execute("COMMIT")
            return result
        } catch {
            if isUp { try? execute("ROLLBACK") }
            throw error
        }
    }

    /// The error for a failed statement: a lost connection is an outage (resumable), a refused statement the
    /// server's message with its SQLSTATE. Never holds the password.
    private func failure(_ sql: String, _ result: OpaquePointer?) -> ChatBatchError {
        let state = result.flatMap { PQresultErrorField($0, Int32(UInt8(ascii: "C"))) }.map { String(cString: $0) }
        lastState = state
        let message = address.scrub(Self.trimmed(PQerrorMessage(handle)))
        let what = sql.split(whereSeparator: \.isNewline).first.map { String($0.prefix(60)) } ?? ""
        // No SQLSTATE at all: libpq itself failed (the server went away mid-statement), whatever PQstatus says yet.
        if !isUp || state.map({ $0.hasPrefix("08") || $0 == "57P01" || $0 == "57P02" || $0 == "57P03" }) ?? true {
            return ChatBatchError(
                .storeUnreachable,
                "store \(address): the connection was lost (\(message)). Nothing committed is lost; run the same "
                    + "command again once the server is up")
        }
        return ChatBatchError(.storeError, "store \(address): '\(what)' failed [\(state ?? "?")]: \(message)")
    }

    private static func read(_ result: OpaquePointer) -> [PostgresRow] {
        let columns = Int(PQnfields(result))
        var index: [String: Int] = [:]
        for c in 0..<columns { index[String(cString: PQfname(result, Int32(c)))] = c }
        return (0..<Int(PQntuples(result))).map { r in
            PostgresRow(
                values: (0..<columns).map { c in
                    PQgetisnull(result, Int32(r), Int32(c)) == 1
                        ? nil : String(cString: PQgetvalue(result, Int32(r), Int32(c)))
                },
                index: index)
        }
    }

    private static func trimmed(_ text: UnsafePointer<CChar>?) -> String {
        text.map { String(cString: $0) }?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "unknown error"
    }

    private static func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafePointer<CChar>?>) -> R) -> R {
        withOptionalCStrings(strings.map { Optional($0) }) { body($0!) }
    }

    /// `strings` as a C array of C strings ending in NULL (a nil element is a NULL pointer), alive during `body`.
    private static func withOptionalCStrings<R>(
        _ strings: [String?], _ body: (UnsafePointer<UnsafePointer<CChar>?>?) -> R
    ) -> R {
        // (`strdup` fails only when memory is out, where nothing else would go on either.)
        let copies: [UnsafeMutablePointer<CChar>?] = strings.map { $0.map { strdup($0)! } }
        defer { copies.forEach { free($0) } }
        let pointers = copies.map { UnsafePointer($0) } + [nil]
        return pointers.withUnsafeBufferPointer { body($0.baseAddress) }
    }
}

/// One result row in libpq's text form, read by column name: `row["custom_id"]`. A name the query does not return
/// is a programming error.
struct PostgresRow: Sendable {
    let values: [String?]
    let index: [String: Int]

    subscript(_ column: String) -> String? {
        guard let i = index[column] else { preconditionFailure("the query returns no column \(column)") }
        return values[i]
    }

    func int(_ column: String) -> Int? { self[column].flatMap { Int($0) } }
    func double(_ column: String) -> Double? { self[column].flatMap { Double($0) } }
    func bool(_ column: String) -> Bool? { self[column].map { $0 == "t" } }

    /// A `bytea` column (libpq's text form `\x` followed by hex digits), read straight from the text's bytes: a
    /// worker reads every line it claims this way.
    func bytes(_ column: String) -> [UInt8]? {
        guard var text = self[column] else { return nil }
        return text.withUTF8 { u -> [UInt8]? in
            guard u.count >= 2, u[0] == UInt8(ascii: "\\"), u[1] == UInt8(ascii: "x"), u.count % 2 == 0 else {
                return nil
            }
            func nibble(_ c: UInt8) -> UInt8 { c <= 57 ? c &- 48 : (c | 0x20) &- 87 }
            let n = (u.count - 2) / 2
            return [UInt8](unsafeUninitializedCapacity: n) { out, count in
                for i in 0..<n { out[i] = nibble(u[2 + 2 * i]) << 4 | nibble(u[3 + 2 * i]) }
                count = n
            }
        }
    }
}

extension Array where Element == UInt8 {
    /// These bytes as a `bytea` parameter in libpq's text form.
    var postgresHex: String { "\\x" + hexDigits }
}
