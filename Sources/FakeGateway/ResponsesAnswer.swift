import ChatBatchCore

/// `/v1/responses` (the Responses API, through which vLLM serves gpt-oss best): a `response` whose `output` holds a
/// reasoning item and a message item, usage as `input_tokens`/`output_tokens`; streamed as typed events
/// (`response.created`, `response.output_text.delta` …, `response.completed` carrying the whole response).
/// `text.format` with a JSON schema gets an answer that satisfies it, as chat's `response_format` does.
struct ResponsesAnswer {
    let id: String
    let model: String
    let created: Int

    /// The request as a chat body for the answer generator, or why it is refused (a 400 with OpenAI's wording).
    static func chatBody(_ request: JSON) -> Result<JSON, GatewayErrorAnswer> {
        var messages: [JSON] = []
        if let instructions = request["instructions"]?.stringValue {
            messages.append(["role": "system", "content": .string(instructions)])
        }
        switch request["input"] {
        case .string(let text)?: messages.append(["role": "user", "content": .string(text)])
        case .array(let items)? where !items.isEmpty && items.allSatisfy({ $0["role"]?.stringValue != nil }):
            for item in items {
                let content: JSON =
                    item["content"]?.arrayValue.map { parts in
                        .string(parts.compactMap { $0["text"]?.stringValue }.joined(separator: "\n"))
                    } ?? item["content"] ?? ""
                messages.append(["role": item["role"]!, "content": content])
            }
        default: return .failure(.invalid("'input' is required: a string or an array of input messages."))
        }
        if let max = request["max_output_tokens"], max.intValue.map({ $0 < 1 }) ?? true {
            return .failure(.invalid("'max_output_tokens' must be a positive integer."))
        }
        var chat: JSON = ["model": request["model"] ?? .null, "messages": .array(messages)]
        chat["max_tokens"] = request["max_output_tokens"]
        for key in ["seed", "temperature"] { chat[key] = request[key] }
        if let format = request["text"]?["format"], format["type"] == "json_schema" {
            guard let schema = format["schema"], schema.objectValue != nil else {
                return .failure(.invalid("'text.format.schema' must be a JSON Schema object."))
            }
            chat["response_format"] = [
                "type": "json_schema", "json_schema": ["name": format["name"] ?? "answer", "schema": schema]
            ]
        }
        return .success(chat)
    }

    func usage(_ a: GeneratedAnswer) -> JSON {
        [
            "input_tokens": .int(a.promptTokens), "output_tokens": .int(a.completionTokens),
            "total_tokens": .int(a.totalTokens), "output_tokens_details": ["reasoning_tokens": .int(a.reasoningTokens)]
        ]
    }

    func message(_ a: GeneratedAnswer, text: String) -> JSON {
        [
            "type": "message", "id": .string("msg_" + id), "status": "completed", "role": "assistant",
            "content": [["type": "output_text", "text": .string(text), "annotations": []]]
        ]
    }

    func reasoning(_ a: GeneratedAnswer) -> JSON {
        [
            "type": "reasoning", "id": .string("rs_" + id), "summary": [],
            "content": [["type": "reasoning_text", "text": .string(a.reasoning)]]
        ]
    }

    /// The whole response; `done` false gives the in-progress one `response.created` carries.
    func body(_ a: GeneratedAnswer, done: Bool = true) -> JSON {
        let cut = a.finishReason == "length"
        var r: JSON = [
            "id": .string("resp_" + id), "object": "response", "created_at": .int(created), "model": .string(model),
            "status": .string(done ? (cut ? "incomplete" : "completed") : "in_progress"),
            "output": done ? [reasoning(a), message(a, text: a.content ?? "")] : []
        ]
        if done { r["usage"] = usage(a) }
        if done && cut { r["incomplete_details"] = ["reason": "max_output_tokens"] }
        return r
    }

    /// The typed events of a streamed response, without the SSE framing; the last is `response.completed` (or
    /// `response.incomplete` when `max_output_tokens` cut it).
    func events(_ a: GeneratedAnswer) -> [String] {
        var out: [JSON] = [["type": "response.created", "response": body(a, done: false)]]
        out.append(["type": "response.output_item.added", "output_index": 0, "item": reasoning(a)])
        out.append(["type": "response.output_item.done", "output_index": 0, "item": reasoning(a)])
        out.append(["type": "response.output_item.added", "output_index": 1, "item": message(a, text: "")])
        let text = a.content ?? ""
        for piece in ResponseShapes.split(text, every: 16) {
            out.append([
                "type": "response.output_text.delta", "output_index": 1, "content_index": 0, "delta": .string(piece)
            ])
        }
        out.append(["type": "response.output_text.done", "output_index": 1, "content_index": 0, "text": .string(text)])
        out.append(["type": "response.output_item.done", "output_index": 1, "item": message(a, text: text)])
        let final = body(a)
        out.append([
            "type": .string(a.finishReason == "length" ? "response.incomplete" : "response.completed"),
            "response": final
        ])
        return out.enumerated().map { i, e in
            var event = e
            event["sequence_number"] = .int(i)
            return event.serialized()
        }
    }
}
