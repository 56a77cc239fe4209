import ChatBatchCore

/// What an answer of one endpoint wrote: its text (what a structured output is checked in), its tool calls'
/// arguments, and whether it stopped at its token limit.
struct WrittenAnswer {
    var text: String?
    /// nil when the answer has no reasoning field at all.
    var reasoning: String? = nil
    var toolCalls: [(id: JSON, name: String, arguments: String)] = []
    var cut = false
}

/// Where each endpoint's answer keeps what chatbatch reads: whether a 2xx body is an answer at all, its usage, what
/// it wrote. (What a request must hold is `APIEndpoint.problem`.)
extension APIEndpoint {
    /// Why a 2xx body is not this endpoint's answer (`no_choices`), or nil when it is one.
    func missingAnswer(_ body: JSON) -> String? {
        switch self {
        case .chat:
            return body["choices"]?.arrayValue?.first?["message"]?.objectValue == nil ? "no choices" : nil
        case .completions:
            return body["choices"]?.arrayValue?.first?["text"]?.stringValue == nil ? "no choices with text" : nil
        case .embeddings:
            let data = body["data"]?.arrayValue ?? []
            return data.isEmpty || data.contains { $0["embedding"] == nil } ? "no embeddings in `data`" : nil
        case .responses:
            guard body["output"]?.arrayValue != nil else { return "no `output`" }
            let status = body["status"]?.stringValue ?? "completed"
            return status == "completed" || status == "incomplete" ? nil : "the response's status is \(status)"
        case .moderations:
            return body["results"]?.arrayValue?.isEmpty == false ? nil : "no `results`"
        }
    }

    /// The tokens the server says it billed: prompt (input) and completion (output); embeddings and moderations
    /// bill input only.
    func reportedUsage(_ body: JSON) -> (prompt: Int?, completion: Int?) {
        let usage = body["usage"]
        switch self {
        case .responses: return (usage?["input_tokens"]?.intValue, usage?["output_tokens"]?.intValue)
        case .embeddings, .moderations:
            return (usage?["prompt_tokens"]?.intValue ?? usage?["total_tokens"]?.intValue, 0)
        case .chat, .completions: return (usage?["prompt_tokens"]?.intValue, usage?["completion_tokens"]?.intValue)
        }
    }

    /// What the answer wrote.
    func written(_ body: JSON) -> WrittenAnswer {
        switch self {
        case .chat:
            let choice = body["choices"]?.arrayValue?.first
            let message = choice?["message"] ?? .null
            var out = WrittenAnswer(
                text: message["content"]?.stringValue,
                reasoning: message["reasoning"]?.stringValue ?? message["reasoning_content"]?.stringValue,
                cut: choice?["finish_reason"]?.stringValue == "length")
            for call in message["tool_calls"]?.arrayValue ?? [] {
                out.toolCalls.append(
                    (
                        call["id"] ?? .null, call["function"]?["name"]?.stringValue ?? "?",
                        call["function"]?["arguments"]?.stringValue ?? ""
                    ))
            }
            return out
        case .completions:
            let choice = body["choices"]?.arrayValue?.first
            return WrittenAnswer(
                text: choice?["text"]?.stringValue, cut: choice?["finish_reason"]?.stringValue == "length")
        case .responses:
            var out = WrittenAnswer(
                text: nil,
                cut: body["status"]?.stringValue == "incomplete"
                    && body["incomplete_details"]?["reason"]?.stringValue == "max_output_tokens")
            for item in body["output"]?.arrayValue ?? [] {
                switch item["type"]?.stringValue {
                case "message":
                    for part in item["content"]?.arrayValue ?? [] where part["type"] == "output_text" {
                        out.text = (out.text ?? "") + (part["text"]?.stringValue ?? "")
                    }
                case "reasoning":
                    for part in (item["content"]?.arrayValue ?? []) + (item["summary"]?.arrayValue ?? []) {
                        out.reasoning = (out.reasoning ?? "") + (part["text"]?.stringValue ?? "")
                    }
                case "function_call":
                    out.toolCalls.append(
                        (
                            item["call_id"] ?? .null, item["name"]?.stringValue ?? "?",
                            item["arguments"]?.stringValue ?? ""
                        ))
                default: break
                }
            }
            return out
        case .embeddings, .moderations:
            return WrittenAnswer()
        }
    }

    /// The body without its reasoning (`--drop-reasoning`): chat's `reasoning` fields, the Responses API's reasoning
    /// items.
    func droppingReasoning(_ body: JSON) -> JSON {
        var out = body
        switch self {
        case .chat:
            guard var choices = body["choices"]?.arrayValue else { return body }
            for i in choices.indices {
                choices[i]["message"]?["reasoning"] = nil
                choices[i]["message"]?["reasoning_content"] = nil
            }
            out["choices"] = .array(choices)
        case .responses:
            guard let items = body["output"]?.arrayValue else { return body }
            out["output"] = .array(items.filter { $0["type"]?.stringValue != "reasoning" })
        case .embeddings, .completions, .moderations:
            break
        }
        return out
    }
}
