import ChatBatchCore
import Mustache

/// A line turned into the exact request body chatbatch will send.
struct PreparedRequest: Sendable {
    var customID: String
    var line: Int
    var body: [UInt8]
    var bodyHash: String
    var model: String?
    var maxTokens: Int?
    var promptTokens: Int
    var stream: Bool
    /// The body's `response_format`, when it asks for JSON: answers are checked against it.
    var responseFormat: JSON? = nil
    /// A previous run died while this prompt was in flight: sending it now may bill it twice.
    var resentAfterCrash = false
    /// The checkpoint has a row for it already (so a stop leaves it counted among the pending rows).
    var hasRow = false
    /// The response cache's key (only with `--cache`).
    var cacheKey: String? = nil
    /// Body fields that are not fields of its endpoint (a typo such as `max_token`), for a warning.
    var unknownFields: [String]? = nil
    /// The endpoint the line names (`url`); chat unless it names another.
    var endpoint: APIEndpoint = .chat

    /// What a provider's refusal is keyed by: the model for chat; the endpoint and model for the others, so that a
    /// provider without `/v1/embeddings` refuses those lines after one request and goes on with the rest.
    var refusalKey: String? {
        endpoint == .chat ? model : endpoint.rawValue + " " + (model ?? "(no model)")
    }
}

/// What one input line became.
enum ParsedLine: Sendable {
    case request(PreparedRequest)
    /// Not sendable; `key` is the checkpoint row (`line-N`), `customID` what the errors file shows.
    case invalid(key: String, customID: String, line: Int, reason: String)
}

extension RequestBuilder {
    /// The longest custom_id accepted, in UTF-8 bytes (OpenAI's Batch API allows 64 characters; ids of a few hundred
    /// bytes are seen in real files).
    static let maxCustomIDBytes = 512
}

/// Turns input lines into request bodies: the OpenAI Batch shape, `messages` or `prompt` lines, or records
/// rendered through the job's template; then merges the job's request defaults, system prompt and model,
/// and checks the result against the model's limits.
struct RequestBuilder: Sendable {
    let config: RunConfiguration
    let template: MustacheTemplate?
    /// The record fields the template names (a record lacking one is an invalid line, not an empty prompt).
    let templateFields: [String]

    init(config: RunConfiguration) throws(ChatBatchError) {
        self.config = config
        if let text = config.shape.template {
            do {
                template = try MustacheTemplate(string: "{{% CONTENT_TYPE: TEXT}}" + text)
            } catch {
                throw ChatBatchError(.badTemplate, "template does not parse: \(error)")
            }
        } else {
            template = nil
        }
        templateFields = config.shape.template.map(RequestFields.templateFields) ?? []
    }

    func parse(_ raw: RawLine, file: String) -> ParsedLine {
        let key = "line-\(raw.number)"
        func invalid(_ reason: String, id: String? = nil) -> ParsedLine {
            .invalid(key: key, customID: id ?? key, line: raw.number, reason: "\(file):\(raw.number): \(reason)")
        }
        if let size = raw.oversize {
            return invalid(
                "line is \(size) bytes, more than the \(LineReader.defaultMaxLineBytes >> 20) MiB a line may hold")
        }
        let json: JSON
        do {
            json = try JSON.parse(raw.bytes)
        } catch {
            return invalid("not valid JSON: \(error)")
        }
        guard let object = json.objectValue else {
            return invalid("a line must be a JSON object, not \(json.typeName)")
        }

        var id: String? = nil
        if let c = object["custom_id"] {
            switch c {
            case .string(let s) where !s.isEmpty: id = s
            case .int(let i): id = String(i)
            case .null: break
            default: return invalid("custom_id must be a non-empty string, not \(c.typeName)")
            }
        }
        var body: JSON
        var endpoint = APIEndpoint.chat
        if object["body"] != nil || object["url"] != nil || object["method"] != nil {
            // OpenAI Batch API input shape.
            let method = object["method"]?.stringValue ?? "POST"
            guard method.uppercased() == "POST" else {
                return invalid("unsupported method '\(method)': only POST", id: id)
            }
            let url = object["url"]?.stringValue ?? APIEndpoint.chat.rawValue
            guard let named = APIEndpoint(url: url) else {
                let known = APIEndpoint.allCases.map(\.rawValue).joined(separator: ", ")
                return invalid("unsupported url '\(url)': chatbatch runs \(known)", id: id)
            }
            endpoint = named
            guard let b = object["body"], b.objectValue != nil else {
                return invalid("`body` must be a JSON object", id: id)
            }
            body = b
        } else if let template {
            let idValue = object[config.shape.idField]
            if id == nil, let v = idValue { id = v.stringValue ?? v.intValue.map(String.init) }
            let missing = templateFields.filter { object[$0] == nil || object[$0]?.isNull == true }
            if !missing.isEmpty {
                let fields = object.keys.prefix(8).joined(separator: ", ")
                return invalid(
                    "the template names {{\(missing.joined(separator: "}}, {{"))}} but the record has no such field (it has: \(fields))",
                    id: id)
            }
            if id == nil {
                return invalid(
                    "the record has no `\(config.shape.idField)` field (id_field), so its answer could not be matched to it; add one, or set id_field to the field that holds the id"
                )
            }
            let text = template.render(Self.mustacheValue(json))
            body = ["messages": [["role": "user", "content": .string(text)]]]
        } else if let messages = object["messages"] {
            body = .object(object)
            body["custom_id"] = nil
            body["messages"] = messages
        } else if let prompt = object["prompt"] {
            guard let text = prompt.stringValue else {
                return invalid("`prompt` must be a string, not \(prompt.typeName)", id: id)
            }
            body = .object(object)
            body["custom_id"] = nil
            body["prompt"] = nil
            body["messages"] = [["role": "user", "content": .string(text)]]
        } else {
            return invalid(
                "expected `body` (OpenAI Batch shape), `messages` or `prompt`, or a record with a template set in the job",
                id: id)
        }
        let customID = id ?? key
        // It travels as the X-Client-Request-Id header: a CR or LF there would put text of the line's choosing on the
        // wire, and a huge one makes libcurl fail for want of memory (which must never read as an outage).
        if customID.utf8.count > Self.maxCustomIDBytes {
            return invalid(
                "custom_id is \(customID.utf8.count) bytes long; at most \(Self.maxCustomIDBytes) are allowed (it is sent as a request header)",
                id: String(customID.prefix(64)) + "…")
        }
        if let bad = customID.unicodeScalars.first(where: {
            $0.value < 0x20 || $0.value == 0x7F || (0x80...0x9F).contains($0.value)
        }) {
            return invalid(
                "custom_id holds a control character (U+\(String(format: "%04X", bad.value))); it is sent as a request header and must be printable",
                id: customID)
        }

        if endpoint == .chat {
            if let problem = Self.shapeChat(&body, config: config) { return invalid(problem, id: customID) }
        } else if let problem = endpoint.problem(body) {
            return invalid(problem, id: customID)
        }
        if endpoint == .embeddings, !config.embeddingsPriced,
            config.limits.maxCost != nil || config.routes.contains(where: { $0.maxCost != nil })
        {
            return invalid(
                "max_cost is set but no embeddings price is known, so the budget could not count this line; set prices.embeddings in the job (USD per million input tokens) or pass --price-embeddings",
                id: customID)
        }
        // The job's model replaces the line's where the endpoint writes with it; an embedding model is the line's own.
        if let model = config.shape.model, endpoint.generates {
            body["model"] = .string(model)
        } else if body["model"] == nil, let model = config.shape.model ?? config.shape.defaultModel {
            body["model"] = .string(model)
        }
        guard let m = body["model"] else {
            return invalid(
                "no model: the line names none and the job sets none (set `model` in the job or pass --model)",
                id: customID)
        }
        if m.stringValue == nil { return invalid("`model` must be a string", id: customID) }
        if config.shape.stream && endpoint.generates { body["stream"] = true }
        let stream = body["stream"]?.boolValue == true
        if stream && (endpoint == .chat || endpoint == .completions) {
            var options = body["stream_options"]?.objectValue ?? JSONObject()
            options["include_usage"] = true
            body["stream_options"] = .object(options)
        }

        // Pre-flight checks against the model's limits: such a line would only earn a 400.
        var maxTokens: Int? = endpoint.generates ? nil : 0
        for k in endpoint.maxTokensFields {
            guard let v = body[k], !v.isNull else { continue }
            guard let n = v.intValue, n >= 1 else {
                return invalid("`\(k)` must be a positive whole number", id: customID)
            }
            if n > config.shape.modelLimits.maxOutputTokens {
                return invalid(
                    "`\(k)` is \(n), more than the model's maximum output of \(config.shape.modelLimits.maxOutputTokens) tokens",
                    id: customID)
            }
            maxTokens = n
        }
        let promptTokens = endpoint.promptTokens(body)
        if endpoint.generates, promptTokens + (maxTokens ?? 0) > config.shape.modelLimits.contextTokens {
            return invalid(
                "about \(promptTokens) prompt tokens plus max_tokens \(maxTokens ?? 0) exceed the model's context of \(config.shape.modelLimits.contextTokens) tokens",
                id: customID)
        }
        var bytes = [UInt8]()
        body.write(to: &bytes)
        let known = RequestFields.known(for: endpoint)
        let unknown = body.objectValue?.keys.filter { !known.contains($0) } ?? []
        // Chat keeps the hash and cache key it always had; another endpoint's are its path and the body.
        let hashed = endpoint == .chat ? bytes : Array((endpoint.rawValue + "\n").utf8) + bytes
        let keyed: JSON = endpoint == .chat ? body : ["url": .string(endpoint.rawValue), "body": body]
        return .request(
            PreparedRequest(
                customID: customID, line: raw.number, body: bytes, bodyHash: StableHash.hex(StableHash.of(hashed)),
                model: body["model"]?.stringValue, maxTokens: maxTokens, promptTokens: promptTokens, stream: stream,
                responseFormat: endpoint.responseFormat(body),
                cacheKey: config.cache.path == nil ? nil : CacheKey.of(keyed, fake: config.endpoint.fake),
                unknownFields: unknown.isEmpty ? nil : unknown, endpoint: endpoint))
    }

    /// Checks a chat body's messages (they must make sense before anything is merged into them), then merges the
    /// job's request defaults and system prompt; returns why the line is refused, or nil.
    static func shapeChat(_ body: inout JSON, config: RunConfiguration) -> String? {
        guard let messages = body["messages"]?.arrayValue else { return "`messages` must be an array of messages" }
        if messages.isEmpty { return "`messages` is empty" }
        for (i, m) in messages.enumerated() {
            guard m.objectValue != nil else { return "messages[\(i)] must be an object" }
            guard m["role"]?.stringValue != nil else { return "messages[\(i)].role must be a string" }
            if let c = m["content"], c.stringValue == nil, c.arrayValue == nil, !c.isNull {
                return "messages[\(i)].content must be a string or an array of parts"
            }
        }
        // Defaults fill what the line leaves out.
        for (k, v) in config.shape.requestDefaults where body[k] == nil { body[k] = v }
        if let system = config.shape.system, messages.first?["role"]?.stringValue != "system" {
            body["messages"] = .array([["role": "system", "content": .string(system)]] + messages)
        }
        return nil
    }

    /// A JSON value as the nested dictionaries and arrays Mustache renders.
    static func mustacheValue(_ json: JSON) -> Any {
        switch json {
        case .null: return ""
        case .bool(let b): return b
        case .int(let i): return i
        case .double(let d): return d
        case .string(let s): return s
        case .array(let a): return a.map(mustacheValue)
        case .object(let o):
            var d: [String: Any] = [:]
            for (k, v) in o { d[k] = mustacheValue(v) }
            return d
        }
    }
}
