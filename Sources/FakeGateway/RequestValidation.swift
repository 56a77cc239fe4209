import ChatBatchCore

/// An error answer as the seed's table gives it: status, `error.type`, `error.code` and a message.
struct GatewayErrorAnswer: Error, Sendable, Equatable {
    var status: Int
    var type: String
    var code: String
    var message: String

    var body: JSON { ["error": ["message": .string(message), "type": .string(type), "code": .string(code)]] }

    static func invalid(_ message: String) -> Self {
        .init(status: 400, type: "invalid_request_error", code: "invalid_request", message: message)
    }
    static let unauthorized = Self(
        status: 401, type: "authentication_error", code: "invalid_api_key", message: "Missing or invalid API key.")
    /// A 401 that quotes the key it was given, as some servers do.
    static func unauthorized(echoing key: String) -> Self {
        .init(
            status: 401, type: "authentication_error", code: "invalid_api_key",
            message: "Incorrect API key provided: \(key).")
    }
    static func forbidden(_ message: String) -> Self {
        .init(status: 403, type: "permission_error", code: "model_not_permitted", message: message)
    }
    /// LiteLLM's answer for a model it does not route: a 400, not a 404.
    static func invalidModelName(_ model: String) -> Self {
        .init(
            status: 400, type: "invalid_request_error", code: "400",
            message:
                "/chat/completions: Invalid model name passed in model=\(model). Call `/v1/models` to view available models for your key."
        )
    }
    static func modelNotFound(_ model: String) -> Self {
        .init(
            status: 404, type: "model_not_found", code: "model_not_found",
            message: "The model '\(model)' does not exist. Check /v1/models.")
    }
    static let notFound = Self(status: 404, type: "not_found_error", code: "not_found", message: "No such route.")
    static let rateLimited = Self(
        status: 429, type: "rate_limit_error", code: "rate_limit_exceeded",
        message: "Per-key rate limit hit. Retry after the Retry-After interval.")
    static let serverError = Self(
        status: 500, type: "server_error", code: "server_error",
        message: "Gateway-side failure after backend retries exhausted.")
    static let unavailable = Self(
        status: 503, type: "service_unavailable", code: "service_unavailable",
        message: "Backend cold or no healthy replica.")

    static func forStatus(_ status: Int) -> Self {
        switch status {
        case 429: return .rateLimited
        case 500: return .serverError
        case 503: return .unavailable
        case 408:
            return Self(status: 408, type: "timeout_error", code: "request_timeout", message: "The request timed out.")
        case 529:
            return Self(
                status: 529, type: "overloaded_error", code: "overloaded", message: "The service is overloaded.")
        default: return .invalid("Scripted bad request.")
        }
    }
}

/// Checks a chat request body the way the gateway does: shape, then sampling values.
enum RequestValidation {
    static let roles: Set<String> = ["system", "developer", "user", "assistant", "tool"]

    /// Returns the 400 answer for an invalid body, or nil when it may be served.
    static func check(_ body: JSON, maxOutputTokens: Int) -> GatewayErrorAnswer? {
        guard let messages = body["messages"]?.arrayValue else {
            return .invalid("'messages' is required and must be an array.")
        }
        if messages.isEmpty { return .invalid("'messages' must not be empty.") }
        for (i, m) in messages.enumerated() {
            guard let role = m["role"]?.stringValue, roles.contains(role) else {
                return .invalid("messages[\(i)].role must be one of system, developer, user, assistant, tool.")
            }
            if let c = m["content"], c.stringValue == nil, c.arrayValue == nil, !c.isNull {
                return .invalid("messages[\(i)].content must be a string or an array of parts.")
            }
        }
        if let v = body["temperature"], !inRange(v, 0, 2) {
            return .invalid("'temperature' must be a number from 0 to 2.")
        }
        if let v = body["top_p"], !inRange(v, 0, 1) { return .invalid("'top_p' must be a number from 0 to 1.") }
        for key in ["frequency_penalty", "presence_penalty"] {
            if let v = body[key], !inRange(v, -2, 2) { return .invalid("'\(key)' must be a number from -2 to 2.") }
        }
        for key in ["max_tokens", "max_completion_tokens"] {
            if let v = body[key], !v.isNull {
                guard let n = v.intValue, n >= 1 else { return .invalid("'\(key)' must be a positive integer.") }
                if n > maxOutputTokens {
                    return .invalid(
                        "'\(key)' is \(n), more than this model's maximum output of \(maxOutputTokens) tokens.")
                }
            }
        }
        if let n = body["n"], n.intValue != 1 { return .invalid("Only n=1 is supported.") }
        if let s = body["stream"], s.boolValue == nil { return .invalid("'stream' must be a boolean.") }
        if let format = body["response_format"] {
            switch format["type"]?.stringValue {
            case "text", "json_object": break
            case "json_schema":
                if format["json_schema"]?["schema"]?.objectValue == nil {
                    return .invalid("response_format.json_schema.schema must be an object.")
                }
            default: return .invalid("response_format.type must be text, json_object or json_schema.")
            }
        }
        if let tools = body["tools"] {
            guard let list = tools.arrayValue else { return .invalid("'tools' must be an array.") }
            for (i, t) in list.enumerated() where t["function"]?["name"]?.stringValue == nil {
                return .invalid("tools[\(i)].function.name is required.")
            }
        }
        if let choice = body["tool_choice"] {
            if let s = choice.stringValue, !["auto", "none", "required"].contains(s) {
                return .invalid("tool_choice must be auto, none, required or a function.")
            }
            if choice.objectValue != nil && choice["function"]?["name"]?.stringValue == nil {
                return .invalid("tool_choice.function.name is required.")
            }
        }
        if let effort = body["reasoning_effort"]?.stringValue, !["low", "medium", "high"].contains(effort) {
            return .invalid("reasoning_effort must be low, medium or high.")
        }
        return nil
    }

    static func inRange(_ v: JSON, _ lo: Double, _ hi: Double) -> Bool {
        if v.isNull { return true }
        guard let d = v.doubleValue else { return false }
        return d >= lo && d <= hi
    }
}
