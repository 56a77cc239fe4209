import ChatBatchCore

/// Builds the lines chatbatch writes: OpenAI Batch output shape, errors with `error {code, message}`, and the flat
/// shape.
enum OutputLines {
    static func batchID(_ customID: String) -> String { "batch_req_" + StableHash.hex(StableHash.of(customID)) }

    /// A result line: `{"id","custom_id","response":{"status_code","request_id","body"},"error":null}`.
    static func result(customID: String, status: Int, requestID: String?, body: JSON) -> JSON {
        [
            "id": .string(batchID(customID)), "custom_id": .string(customID),
            "response": ["status_code": .int(status), "request_id": requestID.map(JSON.string) ?? .null, "body": body],
            "error": nil
        ]
    }

    /// The same line as `result`, with the server's body bytes spliced in unchanged when they are
    /// single-line JSON (they were parsed already): no second serialisation on the hot path.
    static func result(customID: String, status: Int, requestID: String?, rawBody: [UInt8], parsed: JSON) -> String {
        guard !rawBody.containsLineBreak else {
            return result(customID: customID, status: status, requestID: requestID, body: parsed).serialized()
        }
        var out = [UInt8]()
        out.reserveCapacity(rawBody.count + 160)
        out += Array(#"{"id":"#.utf8)
        JSON.string(batchID(customID)).write(to: &out)
        out += Array(#","custom_id":"#.utf8)
        JSON.string(customID).write(to: &out)
        out += Array(#","response":{"status_code":"#.utf8)
        out += Array(String(status).utf8)
        out += Array(#","request_id":"#.utf8)
        (requestID.map(JSON.string) ?? .null).write(to: &out)
        out += Array(#","body":"#.utf8)
        var end = rawBody.count
        while end > 0, rawBody[end - 1] == 0x20 || rawBody[end - 1] == 0x09 { end -= 1 }
        var start = 0
        while start < end, rawBody[start] == 0x20 || rawBody[start] == 0x09 { start += 1 }
        out += rawBody[start..<end]
        out += Array(#"},"error":null}"#.utf8)
        return String(decoding: out, as: UTF8.self)
    }

    /// An errors-file line; `response` is kept when the server answered (its body carries the server's message).
    static func error(
        customID: String, code: String, message: String, status: Int? = nil, requestID: String? = nil, body: JSON? = nil
    ) -> JSON {
        var response = JSON.null
        if let status {
            response = [
                "status_code": .int(status), "request_id": requestID.map(JSON.string) ?? .null, "body": body ?? .null
            ]
        }
        return [
            "id": .string(batchID(customID)), "custom_id": .string(customID), "response": response,
            "error": ["code": .string(code), "message": .string(message)]
        ]
    }

    /// The flat shape of a result line: custom_id, content, reasoning, tool_calls, finish_reason, usage, cost,
    /// attempts, latency_ms, request_id. An embeddings answer gives `embedding` (one input) or `embeddings` (several)
    /// instead of the text fields, a moderation `results`; a response's finish_reason is its `status`.
    static func flat(canonical: JSON, _ facts: LineFacts) -> JSON {
        let response = canonical["response"] ?? .null
        let body = response["body"] ?? .null
        var out: JSON = ["custom_id": canonical["custom_id"] ?? .null]
        switch body["object"]?.stringValue {
        case "list" where body["data"]?.arrayValue != nil:
            let vectors = (body["data"]?.arrayValue ?? []).map { $0["embedding"] ?? .null }
            if vectors.count == 1 { out["embedding"] = vectors[0] } else { out["embeddings"] = .array(vectors) }
        case _ where body["results"]?.arrayValue != nil:
            out["results"] = body["results"]
        case "text_completion":
            flatText(
                APIEndpoint.completions.written(body), finish: body["choices"]?.arrayValue?.first?["finish_reason"],
                into: &out)
        case "response":
            flatText(APIEndpoint.responses.written(body), finish: body["status"], into: &out)
        default:
            flatText(
                APIEndpoint.chat.written(body), finish: body["choices"]?.arrayValue?.first?["finish_reason"], into: &out
            )
        }
        out["usage"] = body["usage"] ?? .null
        out["cost"] = .double(facts.cost)
        out["attempts"] = .int(facts.attempts)
        out["latency_ms"] = facts.latencyMs.map { .double(($0 * 10).rounded() / 10) } ?? .null
        if let ttftMs = facts.ttftMs { out["ttft_ms"] = .double((ttftMs * 10).rounded() / 10) }
        out["request_id"] = response["request_id"] ?? .null
        if let provider = facts.provider { out["provider"] = .string(provider) }
        if facts.cached { out["cached"] = true }
        if facts.usageEstimated { out["usage_estimated"] = true }
        if facts.repaired { out["text_repaired"] = true }
        if let error = canonical["error"], !error.isNull { out["error"] = error }
        return out
    }

    /// The text fields of the flat shape: content (and `parsed` when it is JSON), reasoning, tool calls, finish_reason.
    private static func flatText(_ written: WrittenAnswer, finish: JSON?, into out: inout JSON) {
        out["content"] = written.text.map(JSON.string) ?? .null
        if let text = written.text, let value = try? JSON.parse(text),
            value.objectValue != nil || value.arrayValue != nil
        {
            out["parsed"] = value
        }
        out["reasoning"] = written.reasoning.map(JSON.string) ?? .null
        out["tool_calls"] =
            written.toolCalls.isEmpty
            ? .null
            : .array(
                written.toolCalls.map { call in
                    [
                        "id": call.id, "name": .string(call.name),
                        "arguments": (try? JSON.parse(call.arguments)) ?? .string(call.arguments)
                    ]
                })
        out["finish_reason"] = finish ?? .null
    }

    /// The bytes written for one finished row, newline included.
    static func render(kind: OutputKind, format: OutputFormat, canonical: String, _ facts: LineFacts) -> [UInt8] {
        var bytes: [UInt8]
        if kind == .results && format == .flat, let parsed = try? JSON.parse(canonical) {
            bytes = []
            flat(canonical: parsed, facts).write(to: &bytes)
        } else {
            bytes = Array(canonical.utf8)
        }
        bytes.append(0x0A)
        return bytes
    }
}

/// What the flat output says about a line besides the answer: attempts, latency, cost, time to first token,
/// and whether it came from the cache, its usage was estimated, or its text repaired.
struct LineFacts: Sendable, Equatable {
    var attempts = 0
    var latencyMs: Double? = nil
    var cost = 0.0
    var ttftMs: Double? = nil
    var cached = false
    var usageEstimated = false
    var repaired = false
    /// The provider that answered, in a run with several.
    var provider: String? = nil
}
