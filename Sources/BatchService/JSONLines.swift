import Foundation

/// The lines of a JSONL file, read a megabyte at a time (memory stays flat in the file's size), as bytes: the
/// file is not decoded as a Swift `String`, whose character-by-character splitting costs more than the JSON.
enum JSONLines {
    /// Calls `body` with each line's number (from 1) and bytes, without its line end; blank lines are skipped.
    static func forEach(_ path: String, _ body: (Int, ArraySlice<UInt8>) throws -> Void) throws {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw APIError(500, "cannot read \(path)", type: "server_error")
        }
        defer { try? handle.close() }
        var pending: [UInt8] = []
        var number = 0
        func emit(_ line: ArraySlice<UInt8>) throws {
            number += 1
            var end = line.endIndex
            if end > line.startIndex, line[end - 1] == 0x0D { end -= 1 }
            let trimmed = line[line.startIndex..<end]
            if trimmed.contains(where: { $0 != 0x20 && $0 != 0x09 }) { try body(number, trimmed) }
        }
        while let chunk = try handle.read(upToCount: 1 << 20), !chunk.isEmpty {
            pending.append(contentsOf: chunk)
            var start = pending.startIndex
            while let newline = pending[start...].firstIndex(of: 0x0A) {
                try emit(pending[start..<newline])
                start = newline + 1
            }
            pending.removeSubrange(..<start)
        }
        if !pending.isEmpty { try emit(pending[...]) }
    }
}
