import ChatBatchCore

/// Takes secrets out of what a server answered in forms the byte search cannot see: escaped inside JSON strings
/// (`\u0073k-…`, any mix of escapes), or split across the events of a stream and whole only once put together.
extension Redactor {
    /// The response with every secret gone, however it was written; unchanged (not copied) when none is there.
    func scrubAnswer(_ response: HTTPResponse) -> HTTPResponse {
        var r = scrub(response)
        // Reading an answer again costs as much as reading it: only one that may hold a key in another form is.
        guard !plain.isEmpty, !r.body.isEmpty, Self.hasASCIIEscape(r.body) || mayHoldSplitSecret(r.body) else {
            return r
        }
        if Self.isStream(r) {
            // A key split across events is whole only in the answer put back together: when it is there, the
            // answer is kept as that whole (scrubbed) body, or dropped if the stream was not complete (and retried).
            let assembled = StreamAssembler.assemble(r.body)
            guard let cleaned = scrubStrings(assembled.body) else { return r }
            r.body = assembled.complete && assembled.error == nil ? Array(cleaned.serialized().utf8) : []
            r.headers["content-type"] = "application/json"
            return r
        }
        // Escapes inside JSON strings, or a key split over lines (`\n` in a string): the strings are read decoded.
        if let json = try? JSON.parse(r.body), json.objectValue != nil || json.arrayValue != nil {
            if let cleaned = scrubStrings(json) { r.body = Array(cleaned.serialized().utf8) }
            return r
        }
        // A body that is not JSON with the key split over its lines: none of it is kept.
        if heldAcrossLines(r.body) { r.body = Array(Self.mask.utf8) }
        return r
    }

    /// True when a secret's first or last three bytes are there: a key cut in two (across events, or by a line
    /// break) keeps at least one of its ends whole.
    func mayHoldSplitSecret(_ bytes: [UInt8]) -> Bool {
        plain.contains { secret in
            Self.find(Array(secret.prefix(3)), in: bytes, from: 0) != nil
                || Self.find(Array(secret.suffix(3)), in: bytes, from: 0) != nil
        }
    }

    /// True when JSON text escapes an ASCII character (`\u0000`–`\u007F`, or `\/`): every character of a key is ASCII.
    static func hasASCIIEscape(_ bytes: [UInt8]) -> Bool {
        var i = 0
        while let at = find([UInt8(ascii: "\\")], in: bytes, from: i) {
            if at + 1 < bytes.count && bytes[at + 1] == UInt8(ascii: "/") { return true }
            if at + 4 < bytes.count && bytes[at + 1] == UInt8(ascii: "u") && bytes[at + 2] == UInt8(ascii: "0")
                && bytes[at + 3] == UInt8(ascii: "0") && (UInt8(ascii: "0")...UInt8(ascii: "7")).contains(bytes[at + 4])
            {
                return true
            }
            i = at + 2
        }
        return false
    }

    /// True when `bytes`, once its line breaks are taken out, holds a secret.
    func heldAcrossLines(_ bytes: [UInt8]) -> Bool {
        guard bytes.containsLineBreak else { return false }
        let joined = bytes.filter { $0 != 0x0A && $0 != 0x0D }
        return plain.contains { Self.find($0, in: joined, from: 0) != nil }
    }

    static func isStream(_ r: HTTPResponse) -> Bool {
        if let type = r.headers["content-type"], type.contains("event-stream") { return true }
        return r.body.starts(with: Array("data:".utf8)) || r.body.starts(with: Array("event:".utf8))
    }

    /// `value` with the secrets taken out of every string in it (keys included), or nil when none holds one.
    func scrubStrings(_ value: JSON) -> JSON? {
        switch value {
        case .string(let s):
            let bytes = Array(s.utf8)
            if heldAcrossLines(bytes) && !plain.contains(where: { Self.find($0, in: bytes, from: 0) != nil }) {
                return .string(Self.mask)  // split over lines: the whole text goes
            }
            guard plain.contains(where: { Self.find($0, in: bytes, from: 0) != nil }) else { return nil }
            return .string(scrub(s))
        case .array(let items):
            var changed = false
            let out = items.map { item -> JSON in
                guard let c = scrubStrings(item) else { return item }
                changed = true
                return c
            }
            return changed ? .array(out) : nil
        case .object(let object):
            var changed = false
            var out = JSONObject()
            for (key, item) in object {
                let k = scrubStrings(.string(key))?.stringValue
                let v = scrubStrings(item)
                if k != nil || v != nil { changed = true }
                out[k ?? key] = v ?? item
            }
            return changed ? .object(out) : nil
        default:
            return nil
        }
    }
}
