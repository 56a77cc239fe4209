import ChatBatchCore

/// What a request body may hold, and what a template names: for the warnings and checks that catch a typo
/// before it is paid for.
enum RequestFields {
    /// Chat Completions fields (OpenAI's), and the vLLM extensions the providers' pages name.
    static let known: Set<String> = Set(openAI + vllm)

    /// OpenAI's Chat Completions fields.
    private static let openAI =
        "model messages frequency_penalty logit_bias logprobs top_logprobs max_tokens max_completion_tokens n presence_penalty response_format seed stop stream stream_options temperature top_p tools tool_choice parallel_tool_calls user service_tier store metadata reasoning_effort modalities audio prediction web_search_options functions function_call"
        .split(separator: " ").map(String.init)

    /// vLLM's extensions (the Tera page names top_k, min_p and repetition_penalty).
    private static let vllm =
        "top_k min_p repetition_penalty min_tokens ignore_eos stop_token_ids include_stop_str_in_output skip_special_tokens spaces_between_special_tokens length_penalty best_of use_beam_search guided_json guided_regex guided_choice guided_grammar guided_decoding_backend chat_template chat_template_kwargs add_generation_prompt continue_final_message echo documents priority truncate_prompt_tokens request_id include_reasoning"
        .split(separator: " ").map(String.init)

    /// The fields a body of `endpoint` may hold without a warning.
    static func known(for endpoint: APIEndpoint) -> Set<String> {
        switch endpoint {
        case .chat: return known
        case .embeddings: return embeddings
        case .completions: return completions
        case .responses: return responses
        case .moderations: return ["model", "input"]
        }
    }

    /// OpenAI's and vLLM's embeddings fields.
    private static let embeddings: Set<String> = Set(
        "model input encoding_format dimensions user truncate_prompt_tokens add_special_tokens priority normalize"
            .split(separator: " ").map(String.init))

    /// OpenAI's legacy completions fields, and vLLM's sampling extensions.
    private static let completions: Set<String> = Set(
        "model prompt best_of echo frequency_penalty logit_bias logprobs max_tokens n presence_penalty seed stop stream stream_options suffix temperature top_p user"
            .split(separator: " ").map(String.init) + vllm)

    /// OpenAI's Responses API fields, and vLLM's sampling extensions.
    private static let responses: Set<String> = Set(
        "model input instructions max_output_tokens temperature top_p text tools tool_choice parallel_tool_calls reasoning metadata store stream previous_response_id include truncation user service_tier background max_tool_calls prompt prompt_cache_key safety_identifier top_logprobs"
            .split(separator: " ").map(String.init) + vllm)

    /// The known field a typo most likely meant (at most two edits away).
    static func suggestion(for name: String, in endpoint: APIEndpoint = .chat) -> String? {
        EditDistance.nearest(to: name, among: known(for: endpoint).sorted())
    }

    /// The record fields a Mustache template names outside sections (`{{text}}`, `{{{text}}}`, `{{& text}}`; for a
    /// dotted name its first part). Names inside a section may be the section's own, so they are not checked.
    static func templateFields(_ template: String) -> [String] {
        var names: [String] = []
        var depth = 0
        var rest = Substring(template)
        while let open = rest.range(of: "{{") {
            rest = rest[open.upperBound...]
            let triple = rest.first == "{"
            if triple { rest = rest.dropFirst() }
            guard let close = rest.range(of: triple ? "}}}" : "}}") else { break }
            var tag = rest[..<close.lowerBound].trimmingCharacters(in: .whitespaces)
            rest = rest[close.upperBound...]
            guard let sigil = tag.first else { continue }
            switch sigil {
            case "#", "^":
                depth += 1
                continue
            case "/":
                depth = max(0, depth - 1)
                continue
            case "!", ">", "%", "=", "<", "$": continue
            case "&": tag = String(tag.dropFirst()).trimmingCharacters(in: .whitespaces)
            default: break
            }
            guard depth == 0, tag != "." else { continue }
            let first = String(tag.split(separator: ".").first ?? "")
            if !first.isEmpty && !names.contains(first) { names.append(first) }
        }
        return names
    }
}
