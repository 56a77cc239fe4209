import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A `multipart/form-data` body (RFC 7578) read from the file it was spooled to, a megabyte at a time: the Files
/// API sends two fields, `purpose` and `file` (with its filename); the file's bytes go straight to a file of their
/// own, so memory does not grow with the upload. Written by hand: nothing here needs more than this.
struct MultipartUpload {
    /// Small fields (`purpose`), at most 4 KB each.
    var fields: [String: String] = [:]
    /// The `file` part: its filename and its size, its bytes written to the path given.
    var filename: String?
    var fileBytes = 0

    /// The boundary a `Content-Type: multipart/form-data; boundary=…` header names.
    static func boundary(contentType: String) -> String? {
        guard contentType.lowercased().hasPrefix("multipart/form-data") else { return nil }
        for piece in contentType.split(separator: ";").dropFirst() {
            let pair = piece.trimmingCharacters(in: .whitespaces)
            guard pair.lowercased().hasPrefix("boundary=") else { continue }
            let value = unquoted(String(pair.dropFirst(9)))
            return value.isEmpty ? nil : value
        }
        return nil
    }

    /// Reads the body spooled at `spool`, writing the `file` part's bytes to `filePath`; nil when the body is not
    /// a multipart form with that boundary.
    init?(spool: String, boundary: String, filePath: String) throws {
        guard let input = FileHandle(forReadingAtPath: spool) else { return nil }
        defer { try? input.close() }
        let delimiter = Array(("\r\n--" + boundary).utf8)
        // The body starts with the delimiter without its CRLF: read as if a CRLF came before it.
        var buffer: [UInt8] = [0x0D, 0x0A]
        var eof = false
        func fill() throws {
            if let chunk = try input.read(upToCount: 1 << 20), !chunk.isEmpty {
                buffer.append(contentsOf: chunk)
            } else {
                eof = true
            }
        }
        var output: FileHandle?
        defer { try? output?.close() }
        var field: [UInt8]?
        var name: String?
        var written = 0
        /// A piece of the current part: the file's bytes to its file, a field's kept up to 4 KB past which it is
        /// dropped (nil: a part whose bytes are dropped).
        func emit(_ piece: ArraySlice<UInt8>) throws {
            if let output {
                try output.write(contentsOf: piece)
                written += piece.count
            } else if (field?.count ?? 0) <= 4096 {
                field?.append(contentsOf: piece)
            }
        }
        var sawEnd = false
        var pos = 0
        // Before the first delimiter: the preamble, dropped.
        var inPart = false
        while !sawEnd {
            if let found = Self.find(delimiter, in: buffer, from: pos) {
                if inPart {
                    try emit(buffer[pos..<found])
                    if let name, let value = field, output == nil, value.count <= 4096 {
                        fields[name] = String(decoding: value, as: UTF8.self)
                    }
                    try output?.close()
                    output = nil
                }
                pos = found + delimiter.count
                // After a delimiter: "--" ends the body; else CRLF, the part's headers, a blank line.
                while buffer.count - pos < 4 && !eof { try fill() }
                if buffer[pos...].starts(with: [0x2D, 0x2D]) {
                    sawEnd = true
                    break
                }
                var headerEnd = Self.find([0x0D, 0x0A, 0x0D, 0x0A], in: buffer, from: pos)
                while headerEnd == nil && !eof && buffer.count - pos < 16_384 {
                    try fill()
                    headerEnd = Self.find([0x0D, 0x0A, 0x0D, 0x0A], in: buffer, from: pos)
                }
                guard let end = headerEnd else { return nil }
                guard let (partName, partFile) = Self.disposition(String(decoding: buffer[pos..<end], as: UTF8.self))
                else { return nil }
                name = partName
                inPart = true
                field = []
                if partName == "file" && filename != nil {
                    field = nil  // a second file: its bytes are dropped, the first is the upload
                } else if partName == "file" {
                    filename = partFile ?? "upload.jsonl"
                    guard FileManager.default.createFile(atPath: filePath, contents: nil),
                        let handle = FileHandle(forWritingAtPath: filePath)
                    else { return nil }
                    output = handle
                    field = nil
                }
                pos = end + 4
            } else if eof {
                return nil  // no closing delimiter: a cut body
            } else {
                // Everything but a possible start of the delimiter belongs to the part; keep that tail.
                let keep = max(pos, buffer.count - delimiter.count + 1)
                if inPart { try emit(buffer[pos..<keep]) }
                buffer.removeSubrange(..<keep)
                pos = 0
                try fill()
            }
        }
        guard filename != nil else { return nil }
        fileBytes = written
    }

    /// The `name` and `filename` of a part's `Content-Disposition: form-data; …` header.
    static func disposition(_ headers: String) -> (String, String?)? {
        for line in headers.split(separator: "\r\n") where line.lowercased().hasPrefix("content-disposition:") {
            var name: String?
            var filename: String?
            for piece in line.split(separator: ";").dropFirst() {
                let pair = piece.trimmingCharacters(in: .whitespaces)
                guard let eq = pair.firstIndex(of: "=") else { continue }
                let value = unquoted(String(pair[pair.index(after: eq)...]))
                switch pair[..<eq].lowercased() {
                case "name": name = value
                case "filename": filename = value
                default: break
                }
            }
            return name.map { ($0, filename) }
        }
        return nil
    }

    static func unquoted(_ value: String) -> String {
        value.count >= 2 && value.hasPrefix("\"") && value.hasSuffix("\"")
            ? String(value.dropFirst().dropLast()) : value
    }

    /// The first `needle` in `haystack` at or after `from`: `memchr` finds each candidate first byte (a megabyte is
    /// scanned in microseconds), `memcmp` checks the rest.
    static func find(_ needle: [UInt8], in haystack: [UInt8], from: Int) -> Int? {
        guard !needle.isEmpty, from <= haystack.count - needle.count else { return nil }
        return haystack.withUnsafeBytes { hay -> Int? in
            needle.withUnsafeBytes { n -> Int? in
                guard let base = hay.baseAddress, let first = n.baseAddress else { return nil }
                var i = from
                let last = hay.count - n.count
                while i <= last {
                    guard let hit = memchr(base + i, Int32(needle[0]), last - i + 1) else { return nil }
                    let at = base.distance(to: UnsafeRawPointer(hit))
                    if memcmp(base + at, first, n.count) == 0 { return at }
                    i = at + 1
                }
                return nil
            }
        }
    }
}
