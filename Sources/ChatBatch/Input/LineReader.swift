import Foundation

/// One physical line of a JSONL file: its 1-based number and its bytes (no line end).
public struct RawLine {
    public var number: Int
    public var bytes: [UInt8]
    /// Set when the line was longer than the limit: its real size; `bytes` is then empty.
    public var oversize: Int?

    /// Spaces and tabs only (or nothing): no line at all, in a file or a store.
    public var isBlank: Bool { oversize == nil && bytes.allSatisfy { $0 == 0x20 || $0 == 0x09 } }
}

/// Reads a file line by line with a fixed buffer, so memory does not grow with the file.
///
/// Accepts LF and CRLF line ends, drops a UTF-8 byte-order mark at the start, and reports (without
/// keeping) lines longer than `maxLineBytes`.
public final class LineReader {
    public static let defaultMaxLineBytes = 8 << 20

    let path: String
    let maxLineBytes: Int
    private let fd: Int32
    private var buffer = [UInt8](repeating: 0, count: 1 << 20)
    private var start = 0
    private var end = 0
    private var eof = false
    private var lineNumber = 0
    private var partial: [UInt8] = []
    private var partialOversize = 0

    public init(path: String, maxLineBytes: Int = LineReader.defaultMaxLineBytes) throws(ChatBatchError) {
        self.path = path
        self.maxLineBytes = maxLineBytes
        var st = stat()
        guard stat(path, &st) == 0 else {
            throw ChatBatchError(.missingInput, "\(path): no such input file")
        }
        if (st.st_mode & S_IFMT) == S_IFDIR {
            throw ChatBatchError(.inputIsDirectory, "\(path) is a directory; give a JSONL file")
        }
        fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw ChatBatchError(.unreadableInput, "\(path): cannot read: \(String(cString: strerror(errno)))")
        }
    }

    deinit { close(fd) }

    private func fill() throws(ChatBatchError) {
        if start > 0 && start == end {
            start = 0
            end = 0
        }
        if end == buffer.count {
            if start > 0 {
                buffer.withUnsafeMutableBytes { raw in
                    raw.baseAddress!.copyMemory(from: raw.baseAddress! + start, byteCount: end - start)
                }
                end -= start
                start = 0
            }
        }
        let n = buffer.withUnsafeMutableBytes { raw in read(fd, raw.baseAddress! + end, raw.count - end) }
        if n < 0 {
            if errno == EINTR { return }
            throw ChatBatchError(.unreadableInput, "\(path): read failed: \(String(cString: strerror(errno)))")
        }
        if n == 0 { eof = true }
        end += n
    }

    /// The next line, or nil at the end of the file.
    public func next() throws(ChatBatchError) -> RawLine? {
        while true {
            if let nl = buffer[start..<end].firstIndex(of: 0x0A) {
                var line: [UInt8]
                let size = partialOversize + partial.count + (nl - start)
                if partialOversize > 0 || size > maxLineBytes {
                    line = []
                } else {
                    line = partial + buffer[start..<nl]
                }
                partial = []
                partialOversize = 0
                start = nl + 1
                lineNumber += 1
                return finish(&line, size: size)
            }
            if eof {
                if start == end && partial.isEmpty && partialOversize == 0 { return nil }
                let size = partialOversize + partial.count + (end - start)
                var line = partialOversize > 0 || size > maxLineBytes ? [] : partial + buffer[start..<end]
                partial = []
                partialOversize = 0
                start = end
                lineNumber += 1
                return finish(&line, size: size)
            }
            // No line end in the buffer: keep what we have (or just count it, past the limit) and read more.
            if end == buffer.count && start == 0 {
                if partialOversize > 0 || partial.count + end > maxLineBytes {
                    partialOversize += partial.count + end
                    partial = []
                } else {
                    partial.append(contentsOf: buffer[0..<end])
                }
                start = 0
                end = 0
            }
            try fill()
        }
    }

    private func finish(_ line: inout [UInt8], size: Int) -> RawLine {
        if size > maxLineBytes { return RawLine(number: lineNumber, bytes: [], oversize: size) }
        if line.last == 0x0D { line.removeLast() }
        if lineNumber == 1 && line.starts(with: [0xEF, 0xBB, 0xBF]) { line.removeFirst(3) }
        return RawLine(number: lineNumber, bytes: line, oversize: nil)
    }
}

/// Counts the lines of a file quickly (for progress totals): newline bytes, plus a last line without one.
func countLines(_ path: String) -> Int? {
    guard let handle = FileHandle(forReadingAtPath: path) else { return nil }
    defer { try? handle.close() }
    var count = 0
    var last: UInt8 = 0x0A
    while let chunk = try? handle.read(upToCount: 1 << 20), !chunk.isEmpty {
        chunk.withUnsafeBytes { raw in
            for b in raw where b == 0x0A { count += 1 }
        }
        last = chunk.last ?? last
    }
    return count + (last == 0x0A ? 0 : 1)
}
