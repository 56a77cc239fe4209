import Foundation
import Testing

@testable import ChatBatch

/// The PostgreSQL wrapper against a real server the test starts (`initdb` + `pg_ctl` in a temporary folder): values
/// in and out, transactions, and every way a connection fails, each with a message that names the store and never
/// holds its password.
@Suite(
    "PostgreSQL: the libpq wrapper against a real server",
    needs("PostgreSQL's initdb and pg_ctl (Debian: apt-get install postgresql)") { PostgresServer.binaries != nil })
struct PostgresConnectionTests {
    /// One server for the tests that neither stop nor restart it.
    static let shared = Result { try PostgresServer() }

    @Test func valuesGoInAndComeOutAsTheyWere() throws {
        let server = try Self.shared.get()
        let db = try PostgresConnection(PostgresAddress(server.url()))
        let table = "t_\(UUID().uuidString.prefix(8))"
        try db.execute("CREATE TABLE \(table) (id bigint PRIMARY KEY, name text, score double precision, body bytea)")
        let body: [UInt8] = [0, 1, 0x7f, 0x80, 0xff, 10, 13]
        let name = "it's \"quoted\"; DROP TABLE x; -- ünïcödé"
        try db.rows(
            "INSERT INTO \(table) (id, name, score, body) VALUES ($1, $2, $3, $4)",
            ["7", name, "0.125", body.postgresHex])
        try db.rows("INSERT INTO \(table) (id, name, score, body) VALUES ($1, $2, $3, $4)", ["8", nil, nil, nil])
        let rows = try db.rows("SELECT id, name, score, body FROM \(table) ORDER BY id")
        #expect(rows.count == 2)
        #expect(rows[0].int("id") == 7 && rows[0]["name"] == name && rows[0].double("score") == 0.125)
        #expect(rows[0].bytes("body") == body)
        #expect(rows[1]["name"] == nil && rows[1].bytes("body") == nil)
    }

    @Test func aValueWithANulByteIsRefusedNotCutShort() throws {
        let server = try Self.shared.get()
        let db = try PostgresConnection(PostgresAddress(server.url()))
        do {
            try db.rows("SELECT $1::text AS t", ["before\u{0}after"])
            Issue.record("a NUL byte went through")
        } catch {
            #expect(error.code == .storeError && error.message.contains("NUL"), "\(error)")
        }
        #expect(try db.rows("SELECT $1::text AS t", ["fine"])[0]["t"] == "fine")
    }

    @Test func aFailedTransactionLeavesNothingBehind() throws {
        let server = try Self.shared.get()
        let db = try PostgresConnection(PostgresAddress(server.url()))
        let table = "t_\(UUID().uuidString.prefix(8))"
        try db.execute("CREATE TABLE \(table) (id bigint PRIMARY KEY)")
        #expect(throws: ChatBatchError.self) {
            try db.inTransaction { () throws(ChatBatchError) in
                try db.rows("INSERT INTO \(table) (id) VALUES ($1)", ["1"])
                try db.rows("INSERT INTO \(table) (id) VALUES ($1)", ["1"])  // a duplicate key
            }
        }
        #expect(db.lastState == "23505")
        #expect(try db.rows("SELECT count(*) AS n FROM \(table)")[0].int("n") == 0)
    }

    @Test func aRefusedPasswordIsSaidWithoutThePassword() throws {
        let server = try Self.shared.get()
        let wrong = "Wrong-Pass%word-42"
        let encoded = wrong.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!
        let address = try PostgresAddress(server.url(password: encoded))
        do {
            _ = try PostgresConnection(address)
            Issue.record("a wrong password was accepted")
        } catch {
            #expect(error.code == .storeRefused && error.code.exit == .usageOrInput)
            #expect(error.message.contains("127.0.0.1:\(server.port)"), "\(error.message)")
            for secret in [wrong, encoded, server.password] { #expect(!error.message.contains(secret), "\(error)") }
        }
        // No password at all: the message says where one goes.
        do {
            _ = try PostgresConnection(
                PostgresAddress("postgres://\(PostgresServer.user)@127.0.0.1:\(server.port)/postgres"))
            Issue.record("no password was accepted")
        } catch {
            #expect(error.code == .storeRefused)
            #expect(error.message.contains("PGPASSWORD"), "\(error.message)")
        }
    }

    @Test func aDatabaseThatDoesNotExistIsNamed() throws {
        let server = try Self.shared.get()
        do {
            _ = try PostgresConnection(PostgresAddress(server.url(database: "no_such_db")))
            Issue.record("connected to a database that does not exist")
        } catch {
            #expect(error.code == .badStore, "\(error)")
            #expect(error.message.contains("no_such_db") && !error.message.contains(server.password))
        }
    }

    /// A server that is down is an outage (exit 3, resumable); a server restarted under a connection fails the
    /// statement as an outage too, and the same connection works again once it is back.
    @Test func aServerDownOrRestartedIsAnOutageNotAFailure() throws {
        let server = try PostgresServer()
        let db = try PostgresConnection(PostgresAddress(server.url()))
        try db.execute("CREATE TABLE kept (id bigint)")
        try db.rows("INSERT INTO kept (id) VALUES ($1)", ["1"])
        try server.stop()
        do {
            try db.rows("SELECT id FROM kept")
            Issue.record("a statement succeeded on a stopped server")
        } catch {
            #expect(error.code == .storeUnreachable && error.code.exit == .stoppedEarly, "\(error)")
            #expect(!error.message.contains(server.password))
        }
        do {
            _ = try PostgresConnection(PostgresAddress(server.url()), timeout: 2)
            Issue.record("connected to a stopped server")
        } catch {
            #expect(error.code == .storeUnreachable, "\(error)")
            #expect(error.message.contains("run the same command again") && !error.message.contains(server.password))
        }
        try server.start()
        try db.reset()
        #expect(try db.rows("SELECT id FROM kept").map { $0.int("id") } == [1])
        // A statement with parameters, prepared in the session before the restart, is prepared again in the new one.
        #expect(try db.rows("SELECT id FROM kept WHERE id = $1", ["1"]).count == 1)
    }

    /// A statement with parameters is prepared once a session and run many times, each time with its own values; a
    /// statement that fails to prepare is the server's error, and the next one works.
    @Test func aPreparedStatementRunsAgainWithNewValues() throws {
        let server = try Self.shared.get()
        let db = try PostgresConnection(PostgresAddress(server.url()))
        for i in 0..<5 {
            let row = try db.rows("SELECT $1::int * 2 AS twice, $2::text AS name", [String(i), "n\(i)"])[0]
            #expect(row.int("twice") == i * 2 && row["name"] == "n\(i)")
        }
        #expect(throws: ChatBatchError.self) {
            try db.rows("SELECT no_such_column FROM kept_nowhere WHERE x = $1", ["1"])
        }
        #expect(try db.rows("SELECT $1::text AS t", ["after"])[0]["t"] == "after")
        let bytes = (0..<4096).map { UInt8($0 % 256) }
        #expect(try db.rows("SELECT $1::bytea AS b", [bytes.postgresHex])[0].bytes("b") == bytes)
    }
}

/// Store addresses, without a server: what is a database, and what is shown of one.
@Suite("PostgreSQL: store addresses")
struct PostgresAddressTests {
    @Test func aURLOrKeywordsNameADatabaseAndAnythingElseIsAFile() {
        for text in ["postgres://u@h/db", "postgresql://h:5432/db?sslmode=require", "host=h dbname=db", "service=jobs"]
        {
            #expect(PostgresAddress.isAddress(text), "\(text)")
        }
        for text in ["jobs/nightly.ckpt", "/tmp/x=1", "checkpoint.sqlite", "a b"] {
            #expect(!PostgresAddress.isAddress(text), "\(text)")
        }
    }

    @Test func thePasswordIsNeverShown() throws {
        let cases = [
            ("postgres://bob:s3cret-Pass@db.example:5432/jobs?sslmode=require", "s3cret-Pass"),
            ("postgresql://bob@db.example/jobs?password=s3cret-Pass&sslmode=verify-full", "s3cret-Pass"),
            ("host=db.example dbname=jobs user=bob password='s3cret Pass'", "s3cret Pass"),
            ("postgres://bob:s3cret%40Pass@db.example/jobs", "s3cret@Pass"),
            ("postgres://bob:s3cret-Pass@db.example:5432,db2.example:5433/jobs", "s3cret-Pass"),
            ("host=db.example\tdbname=jobs\tpassword=s3cret-Pass", "s3cret-Pass"),
            ("host=db.example dbname=jobs sslmode=verify-full sslpassword=s3cret-Pass", "s3cret-Pass")
        ]
        for (text, password) in cases {
            let address = try PostgresAddress(text)
            #expect(!address.shown.contains(password) && !address.description.contains("s3cret"), "\(address)")
            #expect(address.shown.contains("db.example") && address.shown.contains("jobs"), "\(address)")
            #expect(address.connectionString == text)
            #expect(address.scrub("the server said \(password) was wrong") == "the server said [redacted] was wrong")
        }
        // An address libpq cannot read is refused without being repeated (it may hold the password).
        for text in ["postgres://bob:s3cret%zzPass@db.example/jobs", "host=db password='s3cret-Pass"] {
            do {
                _ = try PostgresAddress(text)
                Issue.record("\(text) was read")
            } catch {
                #expect(error.code == .badStore && !error.message.contains("s3cret"), "\(error)")
            }
        }
    }
}
