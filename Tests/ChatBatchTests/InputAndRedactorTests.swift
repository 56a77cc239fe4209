import Foundation
import Testing

@testable import ChatBatch

/// Two small parts on their own: the streaming line reader, and the redactor that takes a key out of whatever a
/// server sends back.
@Suite("Line reader and redactor, directly")
struct InputAndRedactorTests {
    static func file(_ bytes: [UInt8]) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("lines-\(UUID().uuidString)").path
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return path
    }

    static func read(_ path: String, maxLineBytes: Int = LineReader.defaultMaxLineBytes) throws -> [RawLine] {
        let reader = try LineReader(path: path, maxLineBytes: maxLineBytes)
        var lines: [RawLine] = []
        while let line = try reader.next() { lines.append(line) }
        return lines
    }

    @Test func linesEndInLFOrCRLFTheMarkIsDroppedAndTheLastNeedsNoNewline() throws {
        let path = try Self.file([0xEF, 0xBB, 0xBF] + Array("a\r\nb\n\nc".utf8))
        defer { unlink(path) }
        let lines = try Self.read(path)
        #expect(lines.map { String(decoding: $0.bytes, as: UTF8.self) } == ["a", "b", "", "c"])
        #expect(lines.map(\.number) == [1, 2, 3, 4])
    }

    @Test func aLineOverTheLimitIsReportedWithItsSizeNotKept() throws {
        let long = [UInt8](repeating: UInt8(ascii: "x"), count: 100_000)
        let path = try Self.file(Array("short\n".utf8) + long + Array("\nafter\n".utf8))
        defer { unlink(path) }
        let lines = try Self.read(path, maxLineBytes: 1000)
        #expect(lines.count == 3)
        #expect(lines[1].oversize == 100_000 && lines[1].bytes.isEmpty)
        #expect(String(decoding: lines[2].bytes, as: UTF8.self) == "after" && lines[2].number == 3)
    }

    @Test func aMissingFileIsAnErrorNamingIt() throws {
        let error = #expect(throws: ChatBatchError.self) { try LineReader(path: "/nonexistent/input.jsonl") }
        #expect(error?.message.contains("/nonexistent/input.jsonl") == true)
    }

    @Test func aKeyIsMaskedInEveryFormAServerMayEchoIt() throws {
        let key = "sk-tera-Secret/Key+42"
        let redactor = Redactor(secrets: [key, "abc"])
        // RFC 3986: unreserved characters stay as they are, the others become %XX.
        let unreserved = CharacterSet(
            charactersIn: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
        let percent = key.addingPercentEncoding(withAllowedCharacters: unreserved)!
        let base64 = Data(("prefix:" + key).utf8).base64EncodedString()
        let jsonEscaped = key.replacingOccurrences(of: "/", with: "\\/")
        // Encoded more than RFC 3986 asks (`-` as %2D), every byte, or a few bytes as JSON escapes.
        let overEncoded = percent.replacingOccurrences(of: "-", with: "%2D")
        let everyByte = key.utf8.map { String(format: "%%%02x", $0) }.joined()
        let someEscaped = "\\u0073k-tera-Secret\\u002FKey\\u002b42"
        for echo in [key, percent, base64, jsonEscaped, "{\"key\":\"\(key)\"}", overEncoded, everyByte, someEscaped] {
            let scrubbed = redactor.scrub("before \(echo) after")
            #expect(!scrubbed.contains(key), "\(echo)")
            #expect(!scrubbed.contains(percent), "\(echo)")
            #expect(scrubbed != "before \(echo) after", "nothing was masked in \(echo)")
            #expect(scrubbed.hasPrefix("before ") && scrubbed.hasSuffix(" after"), "\(scrubbed)")
        }
        // An answer's own `%` and escapes before the echo do not hide it.
        for echo in [overEncoded, everyByte, someEscaped, jsonEscaped] {
            let text = "100% sure,\\n\\\"quoted\\\" then \(echo)"
            #expect(redactor.scrub(text).contains(Redactor.mask), "\(text)")
        }
        // Too short to search for: ordinary text is left alone.
        #expect(redactor.scrub("abc abc") == "abc abc")
        let clean: [UInt8] = Array("nothing to hide".utf8)
        #expect(redactor.scrub(clean) == clean)
    }

    @Test func onlyTheEscapesAKeyCanHideBehindStartTheEncodedSearch() {
        for text in ["a%2Db", "a%2db", "x\\u0041", "a\\/b", "%41"] {
            #expect(Redactor.holdsByteEscape(Array(text.utf8)), "\(text)")
        }
        for text in ["100% sure", "line\\nnext", "say \\\"hi\\\"", "%", "%4", "\\", "\\u01", "%zz", ""] {
            #expect(!Redactor.holdsByteEscape(Array(text.utf8)), "\(text)")
        }
    }
}
