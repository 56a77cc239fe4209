import ChatBatchCore

/// Shapes a generated answer as the seed shows it: a `chat.completion` body, or SSE `chat.completion.chunk`s.
struct ResponseShapes {
    let id: String
    let model: String
    let created: Int
    let reasoningField: String

    func usage(_ a: GeneratedAnswer) -> JSON {
        [
            "prompt_tokens": .int(a.promptTokens),
            "completion_tokens": .int(a.completionTokens),
            "total_tokens": .int(a.totalTokens),
            "completion_tokens_details": ["reasoning_tokens": .int(a.reasoningTokens)]
        ]
    }

    func toolCallsJSON(_ a: GeneratedAnswer) -> JSON {
        .array(
            a.toolCalls.map { call in
                [
                    "id": .string(call.id), "type": "function",
                    "function": ["name": .string(call.name), "arguments": .string(call.arguments)]
                ]
            })
    }

    /// The non-streamed body.
    func completion(_ a: GeneratedAnswer) -> JSON {
        var message: JSON = ["role": "assistant", "content": a.content.map(JSON.string) ?? .null]
        message[reasoningField] = .string(a.reasoning)
        if !a.toolCalls.isEmpty { message["tool_calls"] = toolCallsJSON(a) }
        return [
            "id": .string(id), "object": "chat.completion", "created": .int(created), "model": .string(model),
            "choices": [["index": 0, "message": message, "logprobs": nil, "finish_reason": .string(a.finishReason)]],
            "usage": usage(a)
        ]
    }

    func chunk(delta: JSON, finishReason: String? = nil) -> JSON {
        [
            "id": .string(id), "object": "chat.completion.chunk", "created": .int(created), "model": .string(model),
            "choices": [
                ["index": 0, "delta": delta, "logprobs": nil, "finish_reason": finishReason.map(JSON.string) ?? .null]
            ]
        ]
    }

    /// The streamed answer as SSE event payloads (without the `data: ` framing), ending with `[DONE]`.
    ///
    /// Role first; then reasoning and content deltas a few words each; tool calls as a first chunk with
    /// id and name, then argument fragments by index; an empty delta carrying finish_reason; a usage
    /// chunk (empty choices) when `includeUsage`; and `[DONE]`.
    func chunks(_ a: GeneratedAnswer, includeUsage: Bool) -> [String] {
        var out: [String] = []
        out.append(chunk(delta: ["role": "assistant", "content": ""]).serialized())
        for piece in Self.split(a.reasoning, every: 12) {
            var delta = JSON.object(JSONObject())
            delta[reasoningField] = .string(piece)
            out.append(chunk(delta: delta).serialized())
        }
        for piece in Self.split(a.content ?? "", every: 16) {
            out.append(chunk(delta: ["content": .string(piece)]).serialized())
        }
        for (index, call) in a.toolCalls.enumerated() {
            out.append(
                chunk(delta: [
                    "tool_calls": [
                        [
                            "index": .int(index), "id": .string(call.id), "type": "function",
                            "function": ["name": .string(call.name), "arguments": ""]
                        ]
                    ]
                ]).serialized())
            for piece in Self.split(call.arguments, every: 7) {
                out.append(
                    chunk(delta: ["tool_calls": [["index": .int(index), "function": ["arguments": .string(piece)]]]])
                        .serialized())
            }
        }
        out.append(chunk(delta: .object(JSONObject()), finishReason: a.finishReason).serialized())
        if includeUsage {
            let usageChunk: JSON = [
                "id": .string(id), "object": "chat.completion.chunk", "created": .int(created), "model": .string(model),
                "choices": [], "usage": usage(a)
            ]
            out.append(usageChunk.serialized())
        }
        out.append("[DONE]")
        return out
    }

    /// Splits text into pieces of about `every` bytes, never inside a UTF-8 character.
    static func split(_ text: String, every: Int) -> [String] {
        var pieces: [String] = []
        var current = ""
        var size = 0
        for ch in text {
            current.append(ch)
            size += ch.utf8.count
            if size >= every {
                pieces.append(current)
                current = ""
                size = 0
            }
        }
        if !current.isEmpty { pieces.append(current) }
        return pieces
    }
}
