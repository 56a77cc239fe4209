import Foundation

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
        func u32(_ at: Int) -> Int {
            Int(head[at]) << 24 | Int(head[at + 1]) << 16 | Int(head[at + 2]) << 8 | Int(head[at + 3])
        }
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
