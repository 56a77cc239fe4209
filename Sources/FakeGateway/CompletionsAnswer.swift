import ChatBatchCore

/// `/v1/completions` (the legacy text API, which vLLM and llama.cpp serve): a `text_completion` body, or SSE chunks
/// of `choices[].text` ending in one with `finish_reason`, a usage chunk when `stream_options.include_usage` asks,
/// and `[DONE]`. The text is the chat answer's content for the prompt as a user message; no reasoning.
struct CompletionsAnswer {
    let id: String
    let model: String
    let created: Int

    /// The prompt, or why the request is refused (a 400 with OpenAI's wording).
    static func prompt(_ request: JSON) -> Result<String, GatewayErrorAnswer> {
        let prompt: String
        switch request["prompt"] {
        case .string(let text)?: prompt = text
        case .array(let items)? where items.count == 1 && items[0].stringValue != nil: prompt = items[0].stringValue!
        default: return .failure(.invalid("'prompt' is required: a string (or an array of one string)."))
        }
        if let max = request["max_tokens"], max.intValue.map({ $0 < 1 }) ?? true {
            return .failure(.invalid("'max_tokens' must be a positive integer."))
        }
        return .success(prompt)
    }

    /// The chat answer for `prompt`, as a text completion bills it: the prompt's tokens in, the text's out.
    static func generate(prompt: String, request: JSON, answerTokens: Int?) -> GeneratedAnswer {
        var chat: JSON = [
            "model": request["model"] ?? .null, "messages": [["role": "user", "content": .string(prompt)]]
        ]
        for key in ["max_tokens", "seed", "temperature"] { chat[key] = request[key] }
        var answer = AnswerGenerator.generate(body: chat, answerTokens: answerTokens)
        answer.reasoning = ""
        answer.reasoningTokens = 0
        answer.promptTokens = TokenEstimate.tokens(prompt)
        answer.completionTokens = TokenEstimate.tokens(answer.content ?? "")
        return answer
    }

    func usage(_ a: GeneratedAnswer) -> JSON {
        [
            "prompt_tokens": .int(a.promptTokens), "completion_tokens": .int(a.completionTokens),
            "total_tokens": .int(a.totalTokens)
        ]
    }

    func choice(_ text: String, finishReason: String?) -> JSON {
        ["text": .string(text), "index": 0, "logprobs": nil, "finish_reason": finishReason.map(JSON.string) ?? .null]
    }

    func body(_ a: GeneratedAnswer) -> JSON {
        [
            "id": .string(id), "object": "text_completion", "created": .int(created), "model": .string(model),
            "choices": [choice(a.content ?? "", finishReason: a.finishReason)], "usage": usage(a)
        ]
    }

    func chunks(_ a: GeneratedAnswer, includeUsage: Bool) -> [String] {
        func event(_ choices: JSON, usage: JSON? = nil) -> String {
            var e: JSON = [
                "id": .string(id), "object": "text_completion", "created": .int(created), "model": .string(model),
                "choices": choices
            ]
            if let usage { e["usage"] = usage }
            return e.serialized()
        }
        var out = ResponseShapes.split(a.content ?? "", every: 16).map { event([choice($0, finishReason: nil)]) }
        out.append(event([choice("", finishReason: a.finishReason)]))
        if includeUsage { out.append(event([], usage: usage(a))) }
        out.append("[DONE]")
        return out
    }
}
