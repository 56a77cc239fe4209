import ChatBatchCore

/// Checks a value against a JSON Schema: type, properties, required, enum, const, items,
/// additionalProperties, anyOf/oneOf, and the simple bounds (minimum, maximum, exclusive ones,
/// minLength, maxLength, minItems, maxItems). Unknown keywords are ignored.
enum SchemaValidator {
    /// The first violation found, as `path: what`, or nil when the value satisfies the schema.
    static func firstViolation(_ value: JSON, _ schema: JSON, path: String = "$") -> String? {
        if let c = schema["const"], c != value { return "\(path): must be \(c.serialized())" }
        if let options = schema["enum"]?.arrayValue, !options.contains(value) {
            return "\(path): \(value.serialized().prefix(40)) is not one of \(JSON.array(options).serialized().prefix(80))"
        }
        for key in ["anyOf", "oneOf"] {
            if let options = schema[key]?.arrayValue, !options.isEmpty,
                !options.contains(where: { firstViolation(value, $0, path: path) == nil })
            {
                return "\(path): matches none of \(key)"
            }
        }
        if let types = typeNames(schema), !types.contains(where: { matches(value, $0) }) {
            return "\(path): expected \(types.joined(separator: " or ")), got \(value.typeName)"
        }
        switch value {
        case .object(let object):
            for required in schema["required"]?.arrayValue ?? [] {
                if let name = required.stringValue, object[name] == nil { return "\(path): missing required '\(name)'" }
            }
            let properties = schema["properties"]?.objectValue ?? JSONObject()
            for (key, member) in object {
                if let sub = properties[key] {
                    if let v = firstViolation(member, sub, path: "\(path).\(key)") { return v }
                } else if let extra = schema["additionalProperties"] {
                    if extra.boolValue == false { return "\(path): unexpected property '\(key)'" }
                    if extra.objectValue != nil, let v = firstViolation(member, extra, path: "\(path).\(key)") { return v }
                }
            }
        case .array(let items):
            if let min = schema["minItems"]?.intValue, items.count < min { return "\(path): fewer than \(min) items" }
            if let max = schema["maxItems"]?.intValue, items.count > max { return "\(path): more than \(max) items" }
            if let itemSchema = schema["items"], itemSchema.objectValue != nil {
                for (i, item) in items.enumerated() {
                    if let v = firstViolation(item, itemSchema, path: "\(path)[\(i)]") { return v }
                }
            }
        case .string(let s):
            if let min = schema["minLength"]?.intValue, s.count < min { return "\(path): shorter than \(min) characters" }
            if let max = schema["maxLength"]?.intValue, s.count > max { return "\(path): longer than \(max) characters" }
        case .int, .double:
            let d = value.doubleValue ?? 0
            if let min = schema["minimum"]?.doubleValue, d < min { return "\(path): less than \(min)" }
            if let max = schema["maximum"]?.doubleValue, d > max { return "\(path): more than \(max)" }
            if let min = schema["exclusiveMinimum"]?.doubleValue, d <= min { return "\(path): not more than \(min)" }
            if let max = schema["exclusiveMaximum"]?.doubleValue, d >= max { return "\(path): not less than \(max)" }
        default:
            break
        }
        return nil
    }

    static func typeNames(_ schema: JSON) -> [String]? {
        if let t = schema["type"]?.stringValue { return [t] }
        return schema["type"]?.arrayValue?.compactMap(\.stringValue)
    }

    static func matches(_ value: JSON, _ type: String) -> Bool {
        switch (type, value) {
        case ("object", .object), ("array", .array), ("string", .string), ("boolean", .bool), ("null", .null): return true
        case ("integer", .int): return true
        case ("integer", .double(let d)): return d.rounded() == d
        case ("number", .int), ("number", .double): return true
        default: return false
        }
    }
}

/// What was wrong with a 2xx answer to a structured or length-limited request.
struct AnswerProblem: Equatable {
    var code: String  // invalid_json, schema_mismatch, truncated
    var message: String
}

/// Checks an answer against what its request asked for.
enum AnswerCheck {
    /// `truncated` when a structured answer stopped at max_tokens; `invalid_json` when its content does not
    /// parse; `schema_mismatch` when it does not satisfy the request's json_schema.
    static func problem(request: JSON, body: JSON) -> AnswerProblem? {
        guard let kind = request["response_format"]?["type"]?.stringValue, kind == "json_object" || kind == "json_schema" else {
            return nil
        }
        let choice = body["choices"]?.arrayValue?.first
        if choice?["finish_reason"]?.stringValue == "length" {
            return AnswerProblem(code: "truncated", message: "the answer stopped at max_tokens before its JSON was complete; raise max_tokens")
        }
        guard let content = choice?["message"]?["content"]?.stringValue else {
            return AnswerProblem(code: "invalid_json", message: "the answer has no content")
        }
        let value: JSON
        do {
            value = try JSON.parse(content)
        } catch {
            return AnswerProblem(code: "invalid_json", message: "the answer's content is not JSON: \(error)")
        }
        if kind == "json_object" && value.objectValue == nil {
            return AnswerProblem(code: "invalid_json", message: "the answer's content is JSON \(value.typeName), not an object")
        }
        if kind == "json_schema", let schema = request["response_format"]?["json_schema"]?["schema"],
            let violation = SchemaValidator.firstViolation(value, schema)
        {
            return AnswerProblem(code: "schema_mismatch", message: "the answer does not satisfy the schema: \(violation)")
        }
        return nil
    }

    /// The body without `reasoning` / `reasoning_content` (`--drop-reasoning`).
    static func droppingReasoning(_ body: JSON) -> JSON {
        guard var choices = body["choices"]?.arrayValue else { return body }
        for i in choices.indices {
            choices[i]["message"]?["reasoning"] = nil
            choices[i]["message"]?["reasoning_content"] = nil
        }
        var out = body
        out["choices"] = .array(choices)
        return out
    }
}
