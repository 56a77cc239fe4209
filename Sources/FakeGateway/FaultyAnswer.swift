import ChatBatchCore

/// 200 answers that are wrong the ways real servers and proxies are wrong, for the fault tests: no choices, an
/// error inside a 200 or inside a stream, a stream request answered with plain JSON, an HTML page, gzip, bytes
/// that are not UTF-8, an unpaired surrogate, no usage.
enum FaultyAnswer {
    struct Raw {
        var status = 200
        var contentType = "application/json"
        var headers: [(String, String)] = []
        var body: [UInt8]
    }

    /// The raw answer for `action`, or nil when the action shapes the answer's content only (badjson, mismatch).
    static func make(
        _ action: ScriptedAction, shapes: ResponseShapes, answer: GeneratedAnswer, stream: Bool, includeUsage: Bool,
        omitUsage: Bool
    ) -> Raw? {
        var completion = shapes.completion(answer)
        if omitUsage || action == .noUsage { completion["usage"] = nil }
        let error: JSON = [
            "error": [
                "message": "The upstream model failed while generating.", "type": "server_error",
                "code": "upstream_error"
            ]
        ]
        switch action {
        case .noChoices:
            completion["choices"] = []
            return Raw(body: bytes(completion))
        case .errorIn200:
            return Raw(body: bytes(error))
        case .errorInStream where stream:
            let events = [shapes.chunks(answer, includeUsage: false)[0], error.serialized(), "[DONE]"]
            return Raw(contentType: "text/event-stream", body: Array(events.map { "data: \($0)\n\n" }.joined().utf8))
        case .errorInStream:
            return Raw(body: bytes(error))
        case .brokenEvent where stream:
            // One event cut short (not JSON), then the rest of the stream to its end, as a faulty proxy sends it.
            var events = shapes.chunks(answer, includeUsage: includeUsage)
            let cut = min(1, events.count - 1)
            events[cut] = String(events[cut].prefix(events[cut].count / 2))
            return Raw(contentType: "text/event-stream", body: Array(events.map { "data: \($0)\n\n" }.joined().utf8))
        case .brokenEvent:
            return Raw(body: bytes(completion))
        case .plainJSON:
            return Raw(body: bytes(completion))
        case .html:
            return Raw(
                contentType: "text/html",
                body: Array("<html><body><h1>Moved</h1><p>This service moved.</p></body></html>".utf8))
        case .gzip:
            let plain =
                stream
                ? Array(shapes.chunks(answer, includeUsage: includeUsage).map { "data: \($0)\n\n" }.joined().utf8)
                : bytes(completion)
            return Raw(
                contentType: stream ? "text/event-stream" : "application/json", headers: [("content-encoding", "gzip")],
                body: Gzip.stored(plain))
        case .badUTF8, .loneSurrogate:
            var shaped = answer
            shaped.content = "before " + marker + " after"
            var body = shapes.completion(shaped)
            if omitUsage { body["usage"] = nil }
            let replacement: [UInt8] = action == .badUTF8 ? [0x41, 0xFF, 0xFE, 0x42] : Array(#"\ud800"#.utf8)
            return Raw(body: replace(Array(marker.utf8), with: replacement, in: bytes(body)))
        case .noUsage:
            return stream ? nil : Raw(body: bytes(completion))
        default:
            return nil
        }
    }

    static let marker = "@@FAULT@@"

    static func bytes(_ json: JSON) -> [UInt8] {
        var out = [UInt8]()
        json.write(to: &out)
        return out
    }

    static func replace(_ needle: [UInt8], with replacement: [UInt8], in haystack: [UInt8]) -> [UInt8] {
        guard
            let at = (0...(haystack.count - needle.count)).first(where: {
                Array(haystack[$0..<$0 + needle.count]) == needle
            })
        else { return haystack }
        return Array(haystack[..<at]) + replacement + Array(haystack[(at + needle.count)...])
    }
}

/// A gzip member with stored (uncompressed) deflate blocks: valid gzip that any decoder reads, made without zlib.
enum Gzip {
    static func stored(_ data: [UInt8]) -> [UInt8] {
        var out: [UInt8] = [0x1F, 0x8B, 0x08, 0x00, 0, 0, 0, 0, 0x00, 0xFF]
        var offset = 0
        repeat {
            let n = min(65_535, data.count - offset)
            let last: UInt8 = offset + n == data.count ? 1 : 0
            out.append(last)
            out += [UInt8(n & 0xFF), UInt8(n >> 8), UInt8(~n & 0xFF), UInt8((~n >> 8) & 0xFF)]
            out += data[offset..<offset + n]
            offset += n
        } while offset < data.count
        for v in [crc32(data), UInt32(truncatingIfNeeded: data.count)] {
            out += [UInt8(v & 0xFF), UInt8((v >> 8) & 0xFF), UInt8((v >> 16) & 0xFF), UInt8(v >> 24)]
        }
        return out
    }

    static func crc32(_ data: [UInt8]) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in data {
            crc ^= UInt32(byte)
            for _ in 0..<8 { crc = crc & 1 == 1 ? (crc >> 1) ^ 0xEDB8_8320 : crc >> 1 }
        }
        return ~crc
    }
}
