import ChatBatchCore
import Foundation

/// Checks a value against a JSON Schema, as the specification counts (draft 2020-12, with the draft-4
/// boolean `exclusiveMinimum`/`exclusiveMaximum` and array `items` still read): type (1.0 is an integer), const
/// and enum (numbers equal by value), anyOf, oneOf (exactly one), allOf, not, if/then/else, local `$ref`
/// (`#`, `#/$defs/…`, `#/definitions/…`); properties, required, additionalProperties, patternProperties,
/// minProperties, maxProperties; items, prefixItems, minItems, maxItems, uniqueItems, contains; minLength and
/// maxLength in Unicode code points (not grapheme clusters), pattern; minimum, maximum, the exclusive bounds,
/// multipleOf. `format` is an annotation and unknown keywords are ignored, as the specification says.
enum SchemaValidator {
    /// The first violation found, as `path: what`, or nil when the value satisfies the schema.
    static func firstViolation(_ value: JSON, _ schema: JSON, path: String = "$") -> String? {
        check(value, schema, root: schema, path: path, depth: 0)
    }

    private static func check(_ value: JSON, _ schema: JSON, root: JSON, path: String, depth: Int) -> String? {
        if schema.boolValue == false { return "\(path): no value is allowed here" }
        guard schema.objectValue != nil, depth < 64 else { return nil }
        func sub(_ v: JSON, _ s: JSON, _ p: String) -> String? { check(v, s, root: root, path: p, depth: depth + 1) }
        if let ref = schema["$ref"]?.stringValue, let target = resolve(ref, root: root),
            let v = sub(value, target, path)
        {
            return v
        }
        if let c = schema["const"], !equal(c, value) { return "\(path): must be \(c.serialized())" }
        if let options = schema["enum"]?.arrayValue, !options.contains(where: { equal($0, value) }) {
            return
                "\(path): \(value.serialized().prefix(40)) is not one of \(JSON.array(options).serialized().prefix(80))"
        }
        if let options = schema["anyOf"]?.arrayValue, !options.isEmpty,
            !options.contains(where: { sub(value, $0, path) == nil })
        {
            return "\(path): matches none of anyOf"
        }
        if let options = schema["oneOf"]?.arrayValue, !options.isEmpty {
            let matching = options.filter { sub(value, $0, path) == nil }.count
            if matching != 1 { return "\(path): matches \(matching) of oneOf, not exactly one" }
        }
        for option in schema["allOf"]?.arrayValue ?? [] {
            if let v = sub(value, option, path) { return v }
        }
        if let not = schema["not"], sub(value, not, path) == nil { return "\(path): matches the schema under not" }
        if let condition = schema["if"] {
            if sub(value, condition, path) == nil {
                if let then = schema["then"], let v = sub(value, then, path) { return v }
            } else if let otherwise = schema["else"], let v = sub(value, otherwise, path) {
                return v
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
            if let min = schema["minProperties"]?.intValue, object.count < min {
                return "\(path): fewer than \(min) properties"
            }
            if let max = schema["maxProperties"]?.intValue, object.count > max {
                return "\(path): more than \(max) properties"
            }
            let properties = schema["properties"]?.objectValue ?? JSONObject()
            let patterns = schema["patternProperties"]?.objectValue ?? JSONObject()
            for (key, member) in object {
                var matched = false
                if let s = properties[key] {
                    matched = true
                    if let v = sub(member, s, "\(path).\(key)") { return v }
                }
                for (pattern, s) in patterns where search(pattern, in: key) {
                    matched = true
                    if let v = sub(member, s, "\(path).\(key)") { return v }
                }
                if !matched, let extra = schema["additionalProperties"] {
                    if extra.boolValue == false { return "\(path): unexpected property '\(key)'" }
                    if extra.objectValue != nil, let v = sub(member, extra, "\(path).\(key)") { return v }
                }
            }
        case .array(let items):
            if let min = schema["minItems"]?.intValue, items.count < min { return "\(path): fewer than \(min) items" }
            if let max = schema["maxItems"]?.intValue, items.count > max { return "\(path): more than \(max) items" }
            var prefix = schema["prefixItems"]?.arrayValue ?? []
            var rest = schema["items"]
            // draft 4–2019: items as an array is the prefix, additionalItems the rest
            if let tuple = rest?.arrayValue {
                prefix = tuple
                rest = schema["additionalItems"]
            }
            for (i, item) in items.enumerated() {
                let itemSchema = i < prefix.count ? prefix[i] : rest
                if let itemSchema, let v = sub(item, itemSchema, "\(path)[\(i)]") { return v }
            }
            if schema["uniqueItems"]?.boolValue == true {
                for i in items.indices {
                    for j in items.indices where j > i && equal(items[i], items[j]) {
                        return "\(path): items \(i) and \(j) are equal"
                    }
                }
            }
            if let contains = schema["contains"] {
                let n = items.filter { sub($0, contains, path) == nil }.count
                let least = schema["minContains"]?.intValue ?? 1
                if n < least { return "\(path): fewer than \(least) items match contains" }
                if let most = schema["maxContains"]?.intValue, n > most {
                    return "\(path): more than \(most) items match contains"
                }
            }
        case .string(let s):
            let length = s.unicodeScalars.count  // the specification counts code points
            if let min = schema["minLength"]?.intValue, length < min {
                return "\(path): shorter than \(min) characters"
            }
            if let max = schema["maxLength"]?.intValue, length > max { return "\(path): longer than \(max) characters" }
            if let pattern = schema["pattern"]?.stringValue, !search(pattern, in: s) {
                return "\(path): does not match the pattern \(pattern)"
            }
        case .int, .double:
            let d = value.doubleValue ?? 0
            if let min = schema["minimum"]?.doubleValue {
                if schema["exclusiveMinimum"]?.boolValue == true ? d <= min : d < min {
                    return "\(path): less than \(min)"
                }
            }
            if let max = schema["maximum"]?.doubleValue {
                if schema["exclusiveMaximum"]?.boolValue == true ? d >= max : d > max {
                    return "\(path): more than \(max)"
                }
            }
            if let min = schema["exclusiveMinimum"]?.doubleValue, d <= min { return "\(path): not more than \(min)" }
            if let max = schema["exclusiveMaximum"]?.doubleValue, d >= max { return "\(path): not less than \(max)" }
            if let m = schema["multipleOf"]?.doubleValue, m > 0 {
                let q = d / m
                if abs(q - q.rounded()) > 1e-9 * max(1, abs(q)) { return "\(path): not a multiple of \(m)" }
            }
        default:
            break
        }
        return nil
    }

    /// JSON equality as the specification has it: numbers by value (1 equals 1.0), objects regardless of order.
    static func equal(_ a: JSON, _ b: JSON) -> Bool {
        switch (a, b) {
        case (.int, .int), (.int, .double), (.double, .int), (.double, .double): return a.doubleValue == b.doubleValue
        case (.array(let x), .array(let y)): return x.count == y.count && zip(x, y).allSatisfy { equal($0, $1) }
        case (.object(let x), .object(let y)):
            return x.count == y.count && x.allSatisfy { key, value in y[key].map { equal(value, $0) } ?? false }
        default: return a == b
        }
    }

    /// A local reference: `#`, `#/$defs/name`, `#/definitions/name`, or any `#/a/b` JSON pointer.
    static func resolve(_ ref: String, root: JSON) -> JSON? {
        guard ref.hasPrefix("#") else { return nil }
        var node = root
        for raw in ref.dropFirst().split(separator: "/") {
            let key = raw.replacingOccurrences(of: "~1", with: "/").replacingOccurrences(of: "~0", with: "~")
            if let array = node.arrayValue, let i = Int(key), array.indices.contains(i) {
                node = array[i]
                continue
            }
            guard let next = node[key] else { return nil }
            node = next
        }
        return node
    }

    /// ECMA-262-like search (unanchored), through ICU; a pattern that does not compile matches everything.
    static func search(_ pattern: String, in text: String) -> Bool {
        guard let regex = try? NSRegularExpression(pattern: pattern) else { return true }
        return regex.firstMatch(in: text, range: NSRange(text.startIndex..., in: text)) != nil
    }

    static func typeNames(_ schema: JSON) -> [String]? {
        if let t = schema["type"]?.stringValue { return [t] }
        return schema["type"]?.arrayValue?.compactMap(\.stringValue)
    }

    static func matches(_ value: JSON, _ type: String) -> Bool {
        switch (type, value) {
        case ("object", .object), ("array", .array), ("string", .string), ("boolean", .bool), ("null", .null):
            return true
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
    /// `truncated` when a structured answer or a tool call stopped at max_tokens; `invalid_json` when its content
    /// (or a tool call's arguments) does not parse; `schema_mismatch` when it does not satisfy the request's
    /// json_schema.
    static func problem(responseFormat: JSON?, body: JSON, endpoint: APIEndpoint = .chat) -> AnswerProblem? {
        let written = endpoint.written(body)
        let cut = written.cut
        for (i, call) in written.toolCalls.enumerated() {
            let arguments = call.arguments
            guard !arguments.trimmingCharacters(in: .whitespaces).isEmpty, (try? JSON.parse(arguments)) == nil else {
                continue
            }
            let name = call.name
            if cut {
                return AnswerProblem(
                    code: "truncated",
                    message:
                        "tool call \(i) (\(name)) stopped at max_tokens before its arguments were complete; raise max_tokens"
                )
            }
            return AnswerProblem(
                code: "invalid_json",
                message: "tool call \(i) (\(name)) has arguments that are not JSON: \(arguments.prefix(80))")
        }
        guard let kind = responseFormat?["type"]?.stringValue, kind == "json_object" || kind == "json_schema" else {
            return nil
        }
        if cut {
            return AnswerProblem(
                code: "truncated",
                message: "the answer stopped at max_tokens before its JSON was complete; raise max_tokens")
        }
        guard let content = written.text else {
            return AnswerProblem(code: "invalid_json", message: "the answer has no content")
        }
        let value: JSON
        do {
            value = try JSON.parse(content)
        } catch {
            return AnswerProblem(code: "invalid_json", message: "the answer's content is not JSON: \(error)")
        }
        if kind == "json_object" && value.objectValue == nil {
            return AnswerProblem(
                code: "invalid_json", message: "the answer's content is JSON \(value.typeName), not an object")
        }
        if kind == "json_schema", let schema = responseFormat?["json_schema"]?["schema"],
            let violation = SchemaValidator.firstViolation(value, schema)
        {
            return AnswerProblem(
                code: "schema_mismatch", message: "the answer does not satisfy the schema: \(violation)")
        }
        return nil
    }
}
