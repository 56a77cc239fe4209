import Foundation
import Testing

@testable import ChatBatch

/// The SQLite wrapper on its own, on a real file: values in and out by name, one transaction function, errors that
/// name the file.
@Suite("SQLite wrapper: named parameters and columns, transactions, errors")
struct SQLiteWrapperTests {
    static func database() throws -> (SQLiteDatabase, String) {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("sqlite-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let db = try SQLiteDatabase(path: folder + "/t.sqlite")
        try db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, n INTEGER, x REAL, b BLOB)")
        return (db, folder)
    }

    @Test func everyKindOfValueGoesInByNameAndComesOutByColumnName() throws {
        let (db, folder) = try Self.database()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let insert = try db.prepare("INSERT INTO t(name, n, x, b) VALUES(:name, :n, :x, :b)")
        let bytes: [UInt8] = [0, 1, 0xFF, 0x0A]
        try insert.run(["b": .blob(bytes), "x": .double(2.5), "n": .int(-7), "name": .text("é\u{0}z")])
        try insert.run(["name": .null, "n": .optional(Int?.none), "x": .double(0), "b": .blob([])])
        // The same names in the same order again: their positions are taken from the call before.
        try insert.run(["name": .text("c"), "n": .int(3), "x": .double(0.5), "b": .blob([7])])
        let rows = try db.rows("SELECT id, name, n, x, b, n * 2 AS twice FROM t ORDER BY id")
        #expect(rows.count == 3)
        #expect(rows[2]["name"].text == "c" && rows[2]["n"].int == 3 && rows[2]["x"].double == 0.5)
        #expect(rows[2]["b"].blob == [7])
        #expect(rows[0]["name"].text == "é")  // text is bound up to its first NUL, as C strings are
        #expect(rows[0]["n"].int == -7 && rows[0]["twice"].int == -14)
        #expect(rows[0]["x"].double == 2.5)
        #expect(rows[0]["b"].blob == bytes)
        #expect(rows[1]["name"] == .null && rows[1]["n"] == .null && rows[1]["b"].blob == [])
        let one = try db.prepare("SELECT count(*) AS n FROM t WHERE x > :above")
        #expect(try one.row(["above": .double(1)])?["n"].int == 1)
        #expect(try one.row(["above": .double(5)])?["n"].int == 0)
    }

    @Test func aTransactionThatThrowsLeavesNothingBehind() throws {
        let (db, folder) = try Self.database()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        #expect(throws: ChatBatchError.self) {
            try db.inTransaction { () throws(ChatBatchError) in
                try db.execute("INSERT INTO t(name) VALUES('kept?')")
                try db.execute("INSERT INTO nowhere VALUES(1)")
            }
        }
        #expect(try db.rows("SELECT count(*) AS n FROM t").first?["n"].int == 0)
        try db.inTransaction { () throws(ChatBatchError) in try db.execute("INSERT INTO t(name) VALUES('kept')") }
        #expect(try db.rows("SELECT name FROM t").map { $0["name"].text } == ["kept"])
    }

    @Test func anErrorNamesTheFileAndWhatWasBeingDone() throws {
        let (db, folder) = try Self.database()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let error = #expect(throws: ChatBatchError.self) { try db.execute("SELEC 1") }
        #expect(error?.message.contains(folder + "/t.sqlite") == true)
        #expect(error?.message.contains("cannot run SELEC 1") == true)
        let notADatabase = folder + "/text.sqlite"
        try Data("this is not a database, it is a long enough line of text".utf8).write(
            to: URL(fileURLWithPath: notADatabase))
        let other = try SQLiteDatabase(path: notADatabase)
        let damaged = #expect(throws: ChatBatchError.self) { try other.execute("SELECT * FROM sqlite_master") }
        #expect(damaged?.code == SQLiteRole.checkpoint.damaged)
    }
}
