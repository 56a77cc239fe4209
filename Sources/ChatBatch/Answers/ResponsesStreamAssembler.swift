import ChatBatchCore

/// Puts a streamed Responses API answer back together: its typed events (`response.created`,
/// `response.output_text.delta` …) end in `response.completed` (or `response.incomplete`), which carries the whole
/// response, the body a non-streamed call returns. A stream without that event was cut off, whatever came before
/// it; `response.failed` and `error` events are the server's error.
enum ResponsesStreamAssembler {
    static func assemble(_ bytes: [UInt8]) -> StreamAssembler.Assembled {
        var out = StreamAssembler.Assembled(body: .null, complete: false)
        for rawLine in bytes.split(separator: 0x0A, omittingEmptySubsequences: true) {
            var line = rawLine[...]
            if line.last == 0x0D { line = line.dropLast() }
            guard line.starts(with: Array("data:".utf8)) else { continue }
            var payload = line.dropFirst(5)
            while payload.first == 0x20 { payload = payload.dropFirst() }
            if payload.elementsEqual("[DONE]".utf8) { continue }
            guard let (event, fixed) = try? JSON.parseRepairing(payload) else {
                if out.unreadable == 0 { out.firstUnreadable = String(decoding: payload.prefix(80), as: UTF8.self) }
                out.unreadable += 1
                continue
            }
            out.repaired = out.repaired || fixed
            out.chunks += 1
            switch event["type"]?.stringValue {
            case "response.completed", "response.incomplete":
                out.body = event["response"] ?? .null
                out.complete = true
            case "response.failed":
                out.error = out.error ?? (event["response"]?["error"] ?? event)
                out.body = event["response"] ?? .null
            case "error":
                out.error = out.error ?? (event["error"] ?? event)
            default:
                break
            }
        }
        return out
    }
}
