import ChatBatchCore

/// The endpoints a line of an OpenAI Batch file may name in its `url`, and what each asks of the line's body.
///
/// Chat is what chatbatch was built for; the others run through the same machine (checkpoint, retries, limits,
/// several providers, the cache, the budget), and their answers go into the results file as the server sent them.
/// Every rule that differs by endpoint lives here (what a body must hold) or in `EndpointAnswer` (what an answer
/// must hold, its usage, its text).
public enum APIEndpoint: String, Sendable, CaseIterable {
    case chat = "/v1/chat/completions"
    case embeddings = "/v1/embeddings"
    case completions = "/v1/completions"
    case responses = "/v1/responses"
    case moderations = "/v1/moderations"

    /// The endpoint a line's `url` names (`/v1/embeddings`, or `/embeddings` as some files write it).
    init?(url: String) {
        let path = url.hasPrefix("/v1/") ? url : "/v1" + url
        guard let e = APIEndpoint(rawValue: path) else { return nil }
        self = e
    }

    /// The path after the API's base (`/embeddings`): it takes the place of `/chat/completions` in a provider's URL.
    var suffix: String { String(rawValue.dropFirst(3)) }

    /// The endpoint writes tokens: the job's model, `stream`, `max_tokens` limits and output prices apply.
    var generates: Bool { self == .chat || self == .completions || self == .responses }

    /// The body fields that bound the answer's length.
    var maxTokensFields: [String] {
        switch self {
        case .chat: return ["max_tokens", "max_completion_tokens"]
        case .completions: return ["max_tokens"]
        case .responses: return ["max_output_tokens"]
        case .embeddings, .moderations: return []
        }
    }

    /// The URL of this endpoint at a provider whose chat URL is `chatURL`: the last `/chat/completions` in its path
    /// becomes this endpoint's path, its query kept (TIR's `…/v1/chat/completions?project_id=7` →
    /// `…/v1/embeddings?project_id=7`).
    func url(chatURL: String) -> String {
        guard self != .chat else { return chatURL }
        let q = chatURL.firstIndex(of: "?") ?? chatURL.endIndex
        let path = chatURL[..<q]
        guard let r = path.range(of: "/chat/completions", options: .backwards) else {
            return EndpointURL.appending(suffix, to: chatURL)
        }
        return String(path[..<r.lowerBound]) + suffix + String(path[r.upperBound...]) + String(chatURL[q...])
    }

    /// The most inputs one embeddings request may hold (OpenAI's limit).
    static let maxEmbeddingInputs = 2_048
    /// The most tokens one embeddings request may hold over all its inputs (OpenAI's limit).
    static let maxEmbeddingTokens = 300_000

    /// Why `body` cannot be this endpoint's request (the line goes to the errors file unsent), or nil.
    func problem(_ body: JSON) -> String? {
        switch self {
        case .chat:
            return nil  // the request builder checks messages, which the system prompt and template shape
        case .embeddings, .moderations:
            guard let input = body["input"], !input.isNull else {
                return "a \(rawValue) line needs `input`: a string or an array of strings"
            }
            if case .string(let s) = input { return s.isEmpty ? "`input` is an empty string" : nil }
            guard let items = input.arrayValue else {
                return "`input` must be a string or an array, not \(input.typeName)"
            }
            if items.isEmpty { return "`input` is an empty array" }
            if self == .embeddings && items.count > Self.maxEmbeddingInputs {
                return
                    "`input` holds \(items.count) items; an embeddings request takes at most \(Self.maxEmbeddingInputs)"
            }
            if self == .embeddings, let i = items.firstIndex(where: { $0.stringValue == "" }) {
                return "input[\(i)] is an empty string"
            }
            let tokens = self == .embeddings ? promptTokens(body) : 0
            if tokens > Self.maxEmbeddingTokens {
                return
                    "`input` holds about \(tokens) tokens; an embeddings request takes at most \(Self.maxEmbeddingTokens)"
            }
            return nil
        case .completions:
            guard let prompt = body["prompt"], !prompt.isNull else {
                return "a /v1/completions line needs `prompt`: a string or an array of strings"
            }
            if prompt.stringValue == nil && prompt.arrayValue?.isEmpty != false {
                return "`prompt` must be a string or a non-empty array"
            }
            return nil
        case .responses:
            guard let input = body["input"], input.stringValue != nil || input.arrayValue?.isEmpty == false else {
                return "a /v1/responses line needs `input`: a string or a non-empty array of input items"
            }
            if let format = body["text"]?["format"], format["type"]?.stringValue == "json_schema",
                format["schema"]?.objectValue == nil
            {
                return "`text.format.schema` must be a JSON Schema object"
            }
            return nil
        }
    }

    /// chatbatch's estimate of the tokens the request's input holds.
    func promptTokens(_ body: JSON) -> Int {
        func tokens(_ value: JSON?) -> Int {
            switch value {
            case .string(let s)?: return TokenEstimate.tokens(s)
            case .array(let items)?: return items.reduce(0) { $0 + tokens($1) }
            case .int?: return 1
            case .object(let o)?: return tokens(o["text"] ?? o["content"] ?? .null)
            default: return 0
            }
        }
        switch self {
        case .chat: return TokenEstimate.promptTokens(body: body)
        case .embeddings, .moderations: return tokens(body["input"])
        case .completions: return TokenEstimate.perRequest + tokens(body["prompt"])
        case .responses:
            var total = TokenEstimate.perRequest + tokens(body["instructions"]) + tokens(body["input"])
            if let format = body["text"]?["format"]?["schema"] { total += TokenEstimate.tokens(format.serialized()) }
            return total
        }
    }

    /// The request's structured-output format in chat's shape (`{"type":"json_schema","json_schema":{"schema":…}}`):
    /// chat's `response_format`, or the Responses API's `text.format`.
    func responseFormat(_ body: JSON) -> JSON? {
        switch self {
        case .chat: return body["response_format"]
        case .responses:
            guard let format = body["text"]?["format"], let type = format["type"]?.stringValue else { return nil }
            if type == "json_schema" {
                return ["type": "json_schema", "json_schema": ["schema": format["schema"] ?? .null]]
            }
            return type == "json_object" ? ["type": "json_object"] : nil
        case .embeddings, .completions, .moderations: return nil
        }
    }
}

extension Prices {
    /// What one request to `endpoint` costs: chat, completions and responses at the input and output prices;
    /// embeddings their input at the embeddings price ($0 while it is unknown); moderations nothing (OpenAI's are
    /// free).
    public func cost(prompt: Int, completion: Int, endpoint: APIEndpoint) -> Double {
        switch endpoint {
        case .chat, .completions, .responses: return cost(prompt: prompt, completion: completion)
        case .embeddings: return Double(prompt) * (embeddingsPerMillion ?? 0) / 1_000_000
        case .moderations: return 0
        }
    }
}
