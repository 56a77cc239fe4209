import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Takes secrets (an API key, a store's password) out of anything a server sent before it is kept or shown: a
/// server may echo a key in an error message (or anywhere else), and nothing chatbatch writes (logs, outputs, the
/// checkpoint, messages) may hold it. Here, upstream of every folder, so that each one masks secrets the same way.
struct Redactor: Sendable {
    /// What replaces a secret.
    static let mask = ChatBatchError.redacted
    let secrets: [[UInt8]]

    /// The secrets as given (for a decoded text), without their encoded forms.
    let plain: [[UInt8]]

    /// Keys shorter than 4 bytes are not searched for (they would match ordinary text). Each secret is searched for
    /// as it is and as base64 (standard and URL-safe, at each of the three alignments it can have inside a longer
    /// text); its byte-wise encodings (percent-encoded, JSON-escaped, whichever bytes a server chose) by
    /// `maskEncoded`.
    init(secrets: [String]) {
        plain = Array(Set(secrets)).map { Array($0.utf8) }.filter { $0.count >= 4 }
        var forms = Set<[UInt8]>()
        for secret in plain { forms.formUnion(Self.encodings(of: secret)) }
        self.secrets = forms.sorted { $0.count > $1.count }  // longest first: no form is cut by a shorter one's mask
    }

    /// The secret as it is, and its base64 forms.
    static func encodings(of secret: [UInt8]) -> [[UInt8]] {
        var out: [[UInt8]] = [secret]
        // base64 of the secret preceded by 0, 1 or 2 other bytes: the characters that depend only on the secret.
        for offset in 0..<3 {
            let encoded = Array(Data(Array(repeating: 0, count: offset) + secret).base64EncodedString().utf8)
            let skip = offset == 0 ? 0 : (offset == 1 ? 2 : 3)
            let whole = (offset + secret.count) / 3 * 4
            guard whole > skip + 4 else { continue }
            let core = Array(encoded[skip..<whole])
            out.append(core)
            out.append(
                core.map {
                    $0 == UInt8(ascii: "+") ? UInt8(ascii: "-") : $0 == UInt8(ascii: "/") ? UInt8(ascii: "_") : $0
                })
        }
        return out.filter { $0.count >= 4 }
    }

    /// The bytes with every secret replaced by the mask (unchanged, and not copied, when none occurs).
    func scrub(_ bytes: [UInt8]) -> [UInt8] {
        var out = bytes
        // A secret with any of its bytes percent-encoded or JSON-escaped, whichever bytes a server chose (`%2D` for
        // `-`, every byte as RFC 3986 or JSON would write it, a few): looked for only in text that holds such an
        // escape (an answer's `\n` and `\"` are not).
        if !plain.isEmpty, Self.holdsByteEscape(out) {
            for secret in plain { out = Self.maskEncoded(secret, in: out) }
        }
        for secret in secrets {
            guard let first = Self.find(secret, in: out, from: 0) else { continue }
            var result: [UInt8] = []
            result.reserveCapacity(out.count)
            var start = 0
            var at: Int? = first
            while let hit = at {
                result += out[start..<hit]
                result += Array(Self.mask.utf8)
                start = hit + secret.count
                at = Self.find(secret, in: out, from: start)
            }
            result += out[start...]
            out = result
        }
        return out
    }

    func scrub(_ text: String) -> String {
        guard !secrets.isEmpty else { return text }
        let bytes = Array(text.utf8)
        let scrubbed = scrub(bytes)
        return scrubbed == bytes ? text : String(decoding: scrubbed, as: UTF8.self)
    }

    /// True when `bytes` hold `%XX` (two hex digits), `\\u00` or `\\/`: an escape `maskEncoded` reads. Found with
    /// `memchr`, so an answer without one (the usual case) costs two fast scans.
    static func holdsByteEscape(_ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBufferPointer { b in
            guard let base = b.baseAddress else { return false }
            func isHex(_ c: UInt8) -> Bool {
                (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(c)
                    || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains(c)
                    || (UInt8(ascii: "A")...UInt8(ascii: "F")).contains(c)
            }
            func any(_ mark: UInt8, _ escape: (Int) -> Bool) -> Bool {
                var i = 0
                while i < b.count, let p = memchr(base + i, Int32(mark), b.count - i) {
                    i = base.distance(to: p.assumingMemoryBound(to: UInt8.self))
                    if escape(i) { return true }
                    i += 1
                }
                return false
            }
            return any(UInt8(ascii: "%")) { i in i + 2 < b.count && isHex(b[i + 1]) && isHex(b[i + 2]) }
                || any(UInt8(ascii: "\\")) { i in
                    i + 1 < b.count
                        && (b[i + 1] == UInt8(ascii: "/")
                            || (i + 3 < b.count && b[i + 1] == UInt8(ascii: "u") && b[i + 2] == UInt8(ascii: "0")
                                && b[i + 3] == UInt8(ascii: "0")))
                }
        }
    }

    /// `bytes` with every occurrence of `secret` masked in which at least one byte is written `%XX`, `\\u00XX` or (for
    /// `/`) `\\/` (the plain form is left to the exact search).
    static func maskEncoded(_ secret: [UInt8], in bytes: [UInt8]) -> [UInt8] {
        var result: [UInt8] = []
        var start = 0
        var i = 0
        while i < bytes.count {
            let c = bytes[i]
            if c == secret[0] || c == UInt8(ascii: "%") || c == UInt8(ascii: "\\"),
                let end = encodedMatch(secret, bytes, at: i),
                end - i > secret.count
            {
                if result.isEmpty { result.reserveCapacity(bytes.count) }
                result += bytes[start..<i]
                result += Array(mask.utf8)
                start = end
                i = end
            } else {
                i += 1
            }
        }
        guard start > 0 else { return bytes }
        result += bytes[start...]
        return result
    }

    /// Where a match of `secret` starting at `i` ends, each of its bytes raw, `%XX` (either case), `\\u00XX`, or `\\/`
    /// for `/`.
    private static func encodedMatch(_ secret: [UInt8], _ h: [UInt8], at i: Int) -> Int? {
        func hex(_ c: UInt8) -> UInt8? {
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
            default: return nil
            }
        }
        func byte(_ hi: Int, _ lo: Int) -> UInt8? {
            guard lo < h.count, let a = hex(h[hi]), let b = hex(h[lo]) else { return nil }
            return a << 4 | b
        }
        var j = i
        for b in secret {
            guard j < h.count else { return nil }
            if h[j] == b {
                j += 1
            } else if h[j] == UInt8(ascii: "%"), byte(j + 1, j + 2) == b {
                j += 3
            } else if b == UInt8(ascii: "/"), h[j] == UInt8(ascii: "\\"), j + 1 < h.count, h[j + 1] == b {
                j += 2
            } else if h[j] == UInt8(ascii: "\\"), j + 5 < h.count, h[j + 1] == UInt8(ascii: "u"),
                h[j + 2] == UInt8(ascii: "0"), h[j + 3] == UInt8(ascii: "0"), byte(j + 4, j + 5) == b
            {
                j += 6
            } else {
                return nil
            }
        }
        return j
    }

    static func find(_ needle: [UInt8], in haystack: [UInt8], from: Int) -> Int? {
        guard from < haystack.count, haystack.count - from >= needle.count else { return nil }
        return haystack.withUnsafeBufferPointer { h in
            needle.withUnsafeBufferPointer { n in
                let first = n[0]
                var i = from
                let last = h.count - n.count
                while i <= last {
                    guard let p = memchr(h.baseAddress! + i, Int32(first), last - i + 1) else { return nil }
                    i = h.baseAddress!.distance(to: p.assumingMemoryBound(to: UInt8.self))
                    if memcmp(h.baseAddress! + i, n.baseAddress!, n.count) == 0 { return i }
                    i += 1
                }
                return nil
            }
        }
    }
}
