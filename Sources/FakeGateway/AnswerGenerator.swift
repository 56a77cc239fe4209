import ChatBatchCore

/// One generated answer, before it is shaped as a chat.completion body or as stream chunks.
struct GeneratedAnswer: Sendable {
    struct ToolCall: Sendable {
        var id: String
        var name: String
        var arguments: String
    }
    var content: String?
    var reasoning: String
    var toolCalls: [ToolCall]
    var finishReason: String
    var promptTokens: Int
    var completionTokens: Int
    var reasoningTokens: Int

    var totalTokens: Int { promptTokens + completionTokens }
}

/// Makes answers that depend only on the request (and its `seed`), never on timing or on `stream`.
///
/// - `response_format` json_schema → an instance of the schema; json_object → a JSON object.
/// - `tools` with `tool_choice` other than "none" → tool calls whose arguments satisfy each tool's
///   parameter schema; two calls when `parallel_tool_calls` is not false and two or more tools are offered.
/// - Otherwise a sentence that starts by quoting the prompt.
/// - The answer is cut at `max_tokens` (reasoning first, then content) with finish_reason "length".
enum AnswerGenerator {
    static let vocabulary = [
        "the", "model", "batch", "answer", "token", "request", "gateway", "reason", "result", "value",
        "quick", "careful", "simple", "clear", "short", "data", "prompt", "line", "field", "record",
        "first", "second", "check", "count", "order", "state", "write", "read", "cost", "time"
    ]

    /// `answerTokens` pads plain answers to about that many tokens (reasoning then content), for realistic sizes.
    static func generate(body: JSON, answerTokens: Int? = nil) -> GeneratedAnswer {
        var seedSource = JSON.object(JSONObject())
        for key in [
            "model", "messages", "tools", "tool_choice", "response_format", "seed", "temperature", "parallel_tool_calls"
        ] {
            if let v = body[key] { seedSource[key] = v }
        }
        var rng = SplitMix64(seed: StableHash.of(seedSource.serialized()))
        let prompt = lastUserText(body)
        var reasoning = "The user asks: \(firstWords(prompt, 8)). " + words(&rng, 6 + Int(rng.next() % 18)) + "."
        if let answerTokens {
            reasoning += " " + words(&rng, answerTokens * 3 / 5 * TokenEstimate.bytesPerToken / 6) + "."
        }

        var content: String? = nil
        var toolCalls: [GeneratedAnswer.ToolCall] = []
        let tools = body["tools"]?.arrayValue ?? []
        let toolChoice = body["tool_choice"]
        if !tools.isEmpty && toolChoice?.stringValue != "none" {
            var chosen = tools
            if let name = toolChoice?["function"]?["name"]?.stringValue {
                chosen = tools.filter { $0["function"]?["name"]?.stringValue == name }
            }
            let parallel = body["parallel_tool_calls"]?.boolValue != false
            let count = parallel ? min(2, chosen.count) : min(1, chosen.count)
            for tool in chosen.prefix(count) {
                let function = tool["function"] ?? .null
                let schema = function["parameters"] ?? ["type": "object", "properties": [:]]
                let args = SchemaInstance.make(schema, rng: &rng, depth: 0)
                toolCalls.append(
                    .init(
                        id: "call_" + StableHash.hex(rng.next()).prefix(12),
                        name: function["name"]?.stringValue ?? "tool",
                        arguments: args.serialized()))
            }
        }
        if toolCalls.isEmpty {
            let format = body["response_format"]
            switch format?["type"]?.stringValue {
            case "json_schema":
                let schema = format?["json_schema"]?["schema"] ?? ["type": "object"]
                content = SchemaInstance.make(schema, rng: &rng, depth: 0).serialized()
            case "json_object":
                let obj: JSON = [
                    "answer": .string(words(&rng, 5)), "quoted": .string(firstWords(prompt, 6)),
                    "score": .int(Int(rng.next() % 100))
                ]
                content = obj.serialized()
            default:
                content = "Answer to \"\(firstWords(prompt, 6))\": " + words(&rng, 10 + Int(rng.next() % 30)) + "."
                if let answerTokens {
                    content! += " " + words(&rng, answerTokens * 2 / 5 * TokenEstimate.bytesPerToken / 6) + "."
                }
            }
        }

        var answer = GeneratedAnswer(
            content: content, reasoning: reasoning, toolCalls: toolCalls,
            finishReason: toolCalls.isEmpty ? "stop" : "tool_calls",
            promptTokens: TokenEstimate.promptTokens(body: body), completionTokens: 0, reasoningTokens: 0)
        let contentTokens =
            TokenEstimate.tokens(content ?? "")
            + toolCalls.reduce(0) { $0 + TokenEstimate.tokens($1.name + $1.arguments) }
        var reasoningTokens = TokenEstimate.tokens(reasoning)
        let limit = (body["max_tokens"] ?? body["max_completion_tokens"])?.intValue ?? Int.max
        if reasoningTokens + contentTokens > limit {
            answer.finishReason = "length"
            answer.toolCalls = []
            if reasoningTokens >= limit {
                answer.reasoning = cut(reasoning, tokens: limit)
                reasoningTokens = limit
                answer.content = ""
            } else {
                answer.content = cut(content ?? "", tokens: limit - reasoningTokens)
            }
            answer.completionTokens = limit
        } else {
            answer.completionTokens = reasoningTokens + contentTokens
        }
        answer.reasoningTokens = reasoningTokens
        return answer
    }

    static func cut(_ text: String, tokens: Int) -> String {
        String(decoding: text.utf8.prefix(max(0, tokens) * TokenEstimate.bytesPerToken), as: UTF8.self)
    }

    static func lastUserText(_ body: JSON) -> String {
        for message in (body["messages"]?.arrayValue ?? []).reversed() where message["role"]?.stringValue == "user" {
            if let s = message["content"]?.stringValue { return s }
            if let parts = message["content"]?.arrayValue {
                return parts.compactMap { $0["text"]?.stringValue }.joined(separator: " ")
            }
        }
        return ""
    }

    static func firstWords(_ text: String, _ n: Int) -> String {
        text.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\t" || $0 == "\"" }).prefix(n).joined(
            separator: " ")
    }

    static func words(_ rng: inout SplitMix64, _ n: Int) -> String {
        (0..<max(1, n)).map { _ in vocabulary[Int(rng.next() % UInt64(vocabulary.count))] }.joined(separator: " ")
    }
}

/// Builds a value that satisfies a JSON schema (type, properties, required, enum, const, items, bounds).
enum SchemaInstance {
    static func make(_ schema: JSON, rng: inout SplitMix64, depth: Int) -> JSON {
        if let c = schema["const"] { return c }
        if let options = schema["enum"]?.arrayValue, !options.isEmpty {
            return options[Int(rng.next() % UInt64(options.count))]
        }
        for key in ["anyOf", "oneOf", "allOf"] {
            if let first = schema[key]?.arrayValue?.first { return make(first, rng: &rng, depth: depth + 1) }
        }
        var type = schema["type"]?.stringValue
        if let types = schema["type"]?.arrayValue {
            type = types.compactMap(\.stringValue).first { $0 != "null" } ?? "null"
        }
        if type == nil { type = schema["properties"] != nil ? "object" : (schema["items"] != nil ? "array" : "string") }
        switch type {
        case "object":
            var out = JSONObject()
            guard depth < 8 else { return .object(out) }
            for (key, sub) in schema["properties"]?.objectValue ?? JSONObject() {
                out[key] = make(sub, rng: &rng, depth: depth + 1)
            }
            return .object(out)
        case "array":
            let minItems = schema["minItems"]?.intValue ?? 0
            let maxItems = schema["maxItems"]?.intValue ?? max(minItems, 3)
            let n = min(maxItems, max(minItems, 1 + Int(rng.next() % 3)))
            let items = schema["items"] ?? ["type": "string"]
            return .array(depth < 8 ? (0..<n).map { _ in make(items, rng: &rng, depth: depth + 1) } : [])
        case "integer":
            let lo = schema["minimum"]?.intValue ?? (schema["exclusiveMinimum"]?.intValue).map { $0 + 1 } ?? 0
            let hi =
                schema["maximum"]?.intValue ?? (schema["exclusiveMaximum"]?.intValue).map { $0 - 1 } ?? max(lo, 100)
            return .int(hi <= lo ? lo : lo + Int(rng.next() % UInt64(hi - lo + 1)))
        case "number":
            let lo = schema["minimum"]?.doubleValue ?? 0
            let hi = schema["maximum"]?.doubleValue ?? max(lo, 100)
            let v = lo + (hi - lo) * Double(rng.next() % 1000) / 1000
            return .double((v * 100).rounded() / 100)
        case "boolean":
            return .bool(rng.next() % 2 == 0)
        case "null":
            return .null
        default:
            var s: String
            switch schema["format"]?.stringValue {
            case "date": s = "2026-0\(1 + rng.next() % 9)-1\(rng.next() % 9)"
            case "date-time": s = "2026-05-1\(rng.next() % 9)T10:00:00Z"
            case "email": s = "user\(rng.next() % 1000)@example.com"
            case "uri": s = "https://example.com/\(rng.next() % 1000)"
            default:
                s = AnswerGenerator.words(&rng, 1 + Int(rng.next() % 3))
                if let first = s.first { s = first.uppercased() + s.dropFirst() }
            }
            let minLength = schema["minLength"]?.intValue ?? 0
            while s.count < minLength { s += " x" }
            if let maxLength = schema["maxLength"]?.intValue, s.count > maxLength { s = String(s.prefix(maxLength)) }
            return .string(s)
        }
    }
}
