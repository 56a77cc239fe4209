/// Why a text is not valid JSON, with the byte offset where reading stopped.
public struct JSONParseError: Error, Sendable, CustomStringConvertible {
    public let offset: Int
    public let reason: String
    public var description: String { "\(reason) at byte \(offset + 1)" }
}

extension JSON {
    /// Parses one JSON document from UTF-8 bytes; rejects invalid UTF-8 and trailing garbage.
    public static func parse<C: Collection>(_ bytes: C) throws(JSONParseError) -> JSON where C.Element == UInt8 {
        let array = Array(bytes)
        return try array.withUnsafeBufferPointer { buffer throws(JSONParseError) -> JSON in
            var parser = JSONParser(bytes: buffer)
            return try parser.parseDocument()
        }
    }

    /// Parses like `parse`, but keeps what cannot be decoded instead of refusing the document: invalid UTF-8
    /// and unpaired surrogate escapes in strings become U+FFFD. `repaired` says whether anything was replaced.
    public static func parseRepairing<C: Collection>(_ bytes: C) throws(JSONParseError) -> (value: JSON, repaired: Bool)
    where C.Element == UInt8 {
        let array = Array(bytes)
        return try array.withUnsafeBufferPointer { buffer throws(JSONParseError) -> (value: JSON, repaired: Bool) in
            var parser = JSONParser(bytes: buffer)
            parser.repairs = true
            let value = try parser.parseDocument()
            return (value, parser.repaired)
        }
    }

    /// Parses one JSON document from a string.
    public static func parse(_ text: String) throws(JSONParseError) -> JSON {
        try parse(Array(text.utf8))
    }

    /// Compact serialisation, members in order, no spaces.
    public func serialized() -> String {
        var out = [UInt8]()
        out.reserveCapacity(256)
        write(to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// Appends the compact serialisation to `out`.
    public func write(to out: inout [UInt8]) {
        switch self {
        case .null: out.append(contentsOf: "null".utf8)
        case .bool(let b): out.append(contentsOf: (b ? "true" : "false").utf8)
        case .int(let i): out.append(contentsOf: String(i).utf8)
        case .double(let d):
            if d.isFinite {
                if d.rounded() == d && abs(d) < 1e15 {
                    out.append(contentsOf: String(Int(d)).utf8)
                    out.append(contentsOf: ".0".utf8)
                } else {
                    out.append(contentsOf: d.description.utf8)  // a small string: no allocation, unlike "\(d)"
                }
            } else {
                out.append(contentsOf: "null".utf8)
            }
        case .string(let s): JSON.writeString(s, to: &out)
        case .array(let a):
            out.append(UInt8(ascii: "["))
            for (i, v) in a.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                v.write(to: &out)
            }
            out.append(UInt8(ascii: "]"))
        case .object(let o):
            out.append(UInt8(ascii: "{"))
            for (i, m) in o.members.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                JSON.writeString(m.key, to: &out)
                out.append(UInt8(ascii: ":"))
                m.value.write(to: &out)
            }
            out.append(UInt8(ascii: "}"))
        }
    }

    static let hexDigits = Array("0123456789abcdef".utf8)

    static func writeString(_ s: String, to out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        var s = s
        s.withUTF8 { bytes in
            // Copy runs that need no escaping in one go; escape the rest byte by byte.
            var runStart = 0
            for (i, byte) in bytes.enumerated()
            where byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") {
                if i > runStart { out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart..<i])) }
                runStart = i + 1
                switch byte {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"):
                    out.append(UInt8(ascii: "\\"))
                    out.append(byte)
                case 0x0A:
                    out.append(UInt8(ascii: "\\"))
                    out.append(UInt8(ascii: "n"))
                case 0x0D:
                    out.append(UInt8(ascii: "\\"))
                    out.append(UInt8(ascii: "r"))
                case 0x09:
                    out.append(UInt8(ascii: "\\"))
                    out.append(UInt8(ascii: "t"))
                default:
                    out.append(contentsOf: "\\u00".utf8)
                    out.append(hexDigits[Int(byte >> 4)])
                    out.append(hexDigits[Int(byte & 0xF)])
                }
            }
            if bytes.count > runStart {
                out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart..<bytes.count]))
            }
        }
        out.append(UInt8(ascii: "\""))
    }
}

/// A recursive-descent JSON reader over a byte buffer.
struct JSONParser {
    let bytes: UnsafeBufferPointer<UInt8>
    var i = 0
    var depth = 0
    /// Replace invalid UTF-8 and unpaired surrogates with U+FFFD instead of failing; `repaired` records that it
    /// happened.
    var repairs = false
    var repaired = false

    init(bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }

    func fail(_ reason: String) -> JSONParseError { JSONParseError(offset: i, reason: reason) }

    mutating func parseDocument() throws(JSONParseError) -> JSON {
        skipSpace()
        let v = try parseValue()
        skipSpace()
        if i < bytes.count { throw fail("unexpected text after the JSON value") }
        return v
    }

    mutating func skipSpace() {
        while i < bytes.count {
            switch bytes[i] {
            case 0x20, 0x09, 0x0A, 0x0D: i += 1
            default: return
            }
        }
    }

    mutating func parseValue() throws(JSONParseError) -> JSON {
        guard i < bytes.count else { throw fail("unexpected end of JSON") }
        switch bytes[i] {
        case UInt8(ascii: "{"): return try parseObject()
        case UInt8(ascii: "["): return try parseArray()
        case UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "t"):
            try literal("true")
            return .bool(true)
        case UInt8(ascii: "f"):
            try literal("false")
            return .bool(false)
        case UInt8(ascii: "n"):
            try literal("null")
            return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try parseNumber()
        default: throw fail("unexpected character '\(printable(bytes[i]))'")
        }
    }

    func printable(_ b: UInt8) -> String {
        b >= 0x20 && b < 0x7F ? String(UnicodeScalar(b)) : "\\x" + String(b, radix: 16)
    }

    mutating func literal(_ word: StaticString) throws(JSONParseError) {
        let n = word.utf8CodeUnitCount
        guard i + n <= bytes.count else { throw fail("unexpected end of JSON") }
        for k in 0..<n where bytes[i + k] != word.utf8Start[k] { throw fail("invalid literal") }
        i += n
    }

    mutating func enter() throws(JSONParseError) {
        depth += 1
        if depth > 512 { throw fail("JSON nested too deeply") }
    }

    mutating func parseObject() throws(JSONParseError) -> JSON {
        try enter()
        i += 1
        var members: [(key: String, value: JSON)] = []
        skipSpace()
        if i < bytes.count && bytes[i] == UInt8(ascii: "}") {
            i += 1
            depth -= 1
            return .object(JSONObject())
        }
        while true {
            skipSpace()
            guard i < bytes.count, bytes[i] == UInt8(ascii: "\"") else { throw fail("expected a string key") }
            let key = try parseString()
            skipSpace()
            guard i < bytes.count, bytes[i] == UInt8(ascii: ":") else { throw fail("expected ':' after key") }
            i += 1
            skipSpace()
            let value = try parseValue()
            if let dup = members.firstIndex(where: { $0.key == key }) {
                members[dup].value = value  // last one wins, as most parsers do
            } else {
                members.append((key, value))
            }
            skipSpace()
            guard i < bytes.count else { throw fail("unexpected end of JSON inside an object") }
            if bytes[i] == UInt8(ascii: ",") {
                i += 1
                continue
            }
            if bytes[i] == UInt8(ascii: "}") {
                i += 1
                break
            }
            throw fail("expected ',' or '}' in an object")
        }
        depth -= 1
        var o = JSONObject()
        o.members = members
        return .object(o)
    }

    mutating func parseArray() throws(JSONParseError) -> JSON {
        try enter()
        i += 1
        var items: [JSON] = []
        skipSpace()
        if i < bytes.count && bytes[i] == UInt8(ascii: "]") {
            i += 1
            depth -= 1
            return .array(items)
        }
        while true {
            skipSpace()
            items.append(try parseValue())
            skipSpace()
            guard i < bytes.count else { throw fail("unexpected end of JSON inside an array") }
            if bytes[i] == UInt8(ascii: ",") {
                i += 1
                continue
            }
            if bytes[i] == UInt8(ascii: "]") {
                i += 1
                break
            }
            throw fail("expected ',' or ']' in an array")
        }
        depth -= 1
        return .array(items)
    }

    mutating func parseString() throws(JSONParseError) -> String {
        i += 1  // opening quote
        let start = i
        // Fast path: no escapes, ASCII or valid UTF-8.
        var hasEscape = false
        var hasNonASCII = false
        while i < bytes.count {
            let b = bytes[i]
            if b == UInt8(ascii: "\"") { break }
            if b == UInt8(ascii: "\\") {
                hasEscape = true
                i += 2
                continue
            }
            if b < 0x20 { throw fail("control character in a string") }
            if b >= 0x80 { hasNonASCII = true }
            i += 1
        }
        guard i < bytes.count else { throw JSONParseError(offset: start - 1, reason: "unterminated string") }
        let raw = UnsafeBufferPointer(rebasing: bytes[start..<i])
        i += 1
        if hasNonASCII {
            if String(validating: raw, as: UTF8.self) == nil {
                guard repairs else { throw JSONParseError(offset: start, reason: "invalid UTF-8 in a string") }
                repaired = true
            }
        }
        if !hasEscape { return String(decoding: raw, as: UTF8.self) }
        return try unescape(raw, base: start)
    }

    mutating func unescape(_ raw: UnsafeBufferPointer<UInt8>, base: Int) throws(JSONParseError) -> String {
        var out = [UInt8]()
        out.reserveCapacity(raw.count)
        var k = 0
        func bad(_ r: String) -> JSONParseError { JSONParseError(offset: base + k, reason: r) }
        func hex4(_ at: Int) throws(JSONParseError) -> UInt32 {
            guard at + 4 <= raw.count else { throw bad("invalid \\u escape") }
            var v: UInt32 = 0
            for j in at..<at + 4 {
                let c = raw[j]
                let d: UInt32
                switch c {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): d = UInt32(c - UInt8(ascii: "0"))
                case UInt8(ascii: "a")...UInt8(ascii: "f"): d = UInt32(c - UInt8(ascii: "a") + 10)
                case UInt8(ascii: "A")...UInt8(ascii: "F"): d = UInt32(c - UInt8(ascii: "A") + 10)
                default: throw bad("invalid \\u escape")
                }
                v = v << 4 | d
            }
            return v
        }
        while k < raw.count {
            let b = raw[k]
            if b != UInt8(ascii: "\\") {
                out.append(b)
                k += 1
                continue
            }
            guard k + 1 < raw.count else { throw bad("invalid escape") }
            let e = raw[k + 1]
            k += 2
            switch e {
            case UInt8(ascii: "\""): out.append(e)
            case UInt8(ascii: "\\"): out.append(e)
            case UInt8(ascii: "/"): out.append(e)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "u"):
                var scalar = try hex4(k)
                k += 4
                if scalar >= 0xD800 && scalar < 0xDC00 {
                    // High surrogate: a low one must follow.
                    let low: UInt32? =
                        k + 6 <= raw.count && raw[k] == UInt8(ascii: "\\") && raw[k + 1] == UInt8(ascii: "u")
                        ? try hex4(k + 2) : nil
                    if let low, low >= 0xDC00 && low < 0xE000 {
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                        k += 6
                    } else {
                        guard repairs else { throw bad("unpaired surrogate in \\u escape") }
                        repaired = true
                        scalar = 0xFFFD
                    }
                } else if scalar >= 0xDC00 && scalar < 0xE000 {
                    guard repairs else { throw bad("unpaired surrogate in \\u escape") }
                    repaired = true
                    scalar = 0xFFFD
                }
                guard let u = Unicode.Scalar(scalar) else { throw bad("invalid \\u escape") }
                out.append(contentsOf: Array(String(Character(u)).utf8))
            default: throw bad("invalid escape '\\\(printable(e))'")
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}
