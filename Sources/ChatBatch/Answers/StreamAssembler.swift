import ChatBatchCore

/// Puts a streamed answer (SSE `chat.completion.chunk`s) back together into the `chat.completion` body
/// a non-streamed call returns: content, reasoning, tool calls joined by index, finish_reason and usage. A stream of
/// `text_completion` chunks (`/v1/completions`, their `choices[].text`) becomes the `text_completion` body.
enum StreamAssembler {
    struct Assembled {
        var body: JSON
        /// `data: [DONE]` arrived: the stream was not cut off.
        var complete: Bool
        /// An `error` the server sent inside the stream (as an `event: error`, or a data object carrying `error`).
        var error: JSON? = nil
        /// Text that could not be decoded was replaced.
        var repaired = false
        /// Chunks read (a stream of none is no answer, even with `[DONE]`).
        var chunks = 0
        /// Events that could not be read (not JSON), and the start of the first: a piece of the answer is missing.
        var unreadable = 0
        var firstUnreadable = ""
    }

    static func assemble(_ bytes: [UInt8]) -> Assembled {
        var id: JSON = .null, created: JSON = .null, model: JSON = .null
        var content = ""
        var sawContent = false
        var isText = false
        var reasoning = ""
        var reasoningField: String? = nil
        var calls: [Int: (id: JSON, type: JSON, name: String, arguments: String)] = [:]
        var finishReason: JSON = .null
        var usage: JSON? = nil
        var complete = false
        var error: JSON? = nil
        var repaired = false
        var eventIsError = false
        var chunks = 0
        var unreadable = 0
        var firstUnreadable = ""

        for rawLine in bytes.split(separator: 0x0A, omittingEmptySubsequences: true) {
            var line = rawLine[...]
            if line.last == 0x0D { line = line.dropLast() }
            if line.starts(with: Array("event:".utf8)) {
                eventIsError =
                    String(decoding: line.dropFirst(6), as: UTF8.self).trimmingCharacters(in: .whitespaces) == "error"
                continue
            }
            guard line.starts(with: Array("data:".utf8)) else { continue }
            var payload = line.dropFirst(5)
            while payload.first == 0x20 { payload = payload.dropFirst() }
            if payload.elementsEqual("[DONE]".utf8) {
                complete = true
                continue
            }
            guard let (chunk, fixed) = try? JSON.parseRepairing(payload) else {
                if unreadable == 0 { firstUnreadable = String(decoding: payload.prefix(80), as: UTF8.self) }
                unreadable += 1
                continue
            }
            repaired = repaired || fixed
            if eventIsError || (chunk["error"].map { !$0.isNull } ?? false) {
                error = error ?? (chunk["error"] ?? chunk)
                eventIsError = false
                continue
            }
            chunks += 1
            if id.isNull {
                id = chunk["id"] ?? .null
                created = chunk["created"] ?? .null
                model = chunk["model"] ?? .null
            }
            if let u = chunk["usage"], !u.isNull { usage = u }
            for choice in chunk["choices"]?.arrayValue ?? [] {
                if let f = choice["finish_reason"], !f.isNull { finishReason = f }
                if let t = choice["text"]?.stringValue {
                    content += t
                    isText = true
                }
                guard let delta = choice["delta"] else { continue }
                if let c = delta["content"]?.stringValue {
                    content += c
                    if !c.isEmpty { sawContent = true }
                }
                for field in ["reasoning", "reasoning_content"] {
                    if let r = delta[field]?.stringValue {
                        reasoning += r
                        reasoningField = reasoningField ?? field
                    }
                }
                for call in delta["tool_calls"]?.arrayValue ?? [] {
                    let index = call["index"]?.intValue ?? 0
                    var entry = calls[index] ?? (.null, "function", "", "")
                    if let v = call["id"], !v.isNull { entry.id = v }
                    if let v = call["type"], !v.isNull { entry.type = v }
                    if let n = call["function"]?["name"]?.stringValue { entry.name += n }
                    if let a = call["function"]?["arguments"]?.stringValue { entry.arguments += a }
                    calls[index] = entry
                }
            }
        }
        var message: JSON = ["role": "assistant"]
        message["content"] = (!sawContent && !calls.isEmpty) ? .null : .string(content)
        if let field = reasoningField { message[field] = .string(reasoning) }
        if !calls.isEmpty {
            message["tool_calls"] = .array(
                calls.keys.sorted().map { i in
                    let c = calls[i]!
                    return [
                        "id": c.id, "type": c.type,
                        "function": ["name": .string(c.name), "arguments": .string(c.arguments)]
                    ]
                })
        }
        var body: JSON = [
            "id": id, "object": "chat.completion", "created": created, "model": model,
            "choices": [["index": 0, "message": message, "logprobs": nil, "finish_reason": finishReason]]
        ]
        if isText {
            body["object"] = "text_completion"
            body["choices"] = [["index": 0, "text": .string(content), "logprobs": nil, "finish_reason": finishReason]]
        }
        if let usage { body["usage"] = usage }
        return Assembled(
            body: body, complete: complete, error: error, repaired: repaired, chunks: chunks, unreadable: unreadable,
            firstUnreadable: firstUnreadable)
    }
}
