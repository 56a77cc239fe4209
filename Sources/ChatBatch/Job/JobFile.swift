import ChatBatchCore
import Foundation
import Yams

/// Reads a YAML job file into `JobSettings`; paths in it are relative to the file's folder.
public enum JobFile {
    static let knownKeys: Set<String> = [
        "input", "output", "errors", "checkpoint", "format", "provider", "base_url", "model", "project_id",
        "api_key_env", "api_key_file", "headers", "concurrency", "max_attempts", "timeout", "connect_timeout",
        "retry", "grace", "request", "system", "template", "id_field", "prices", "limits", "strict", "stream",
        "summary_json", "retry_invalid", "drop_reasoning", "max_cost", "requests_per_minute", "tokens_per_minute", "adaptive_concurrency", "warmup",
        "cache", "cache_mode", "ca_cert", "proxy", "allow_http", "overwrite", "max_wait", "outage_budget",
    ]

    /// Today as `YYYY-MM-DD` (local time): what `{date}` in a job's paths becomes by default.
    public static func today() -> String {
        let f = DateFormatter()
        f.dateFormat = "yyyy-MM-dd"
        f.locale = Locale(identifier: "en_US_POSIX")
        return f.string(from: Date())
    }

    /// Loads and checks a job file; `{date}` in its paths becomes `date` (default: today).
    public static func load(path: String, date: String? = nil) throws(ChatBatchError) -> JobSettings {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ChatBatchError(.missingJob, "\(path): cannot read job file")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw ChatBatchError(.badJob, "\(path): job file is not UTF-8 text")
        }
        let root: JSON
        do {
            root = try Yams.compose(yaml: text).map(toJSON) ?? .object(JSONObject())
        } catch let error as YamlError {
            throw ChatBatchError(.badJob, "\(path): not valid YAML: \(error)")
        } catch {
            throw ChatBatchError(.badJob, "\(path): not valid YAML: \(error)")
        }
        guard let fields = root.objectValue else {
            throw ChatBatchError(.badJob, "\(path): a job file is a YAML mapping of settings")
        }
        let folder = (path as NSString).deletingLastPathComponent
        return try settings(from: fields, relativeTo: folder.isEmpty ? "." : folder, source: path, date: date ?? today())
    }

    static func settings(from fields: JSONObject, relativeTo folder: String, source: String, date: String) throws(ChatBatchError) -> JobSettings {
        func bad(_ key: String, _ what: String) -> ChatBatchError {
            ChatBatchError(.badJob, "\(source): `\(key)` \(what)")
        }
        func string(_ key: String) throws(ChatBatchError) -> String? {
            guard let v = fields[key], !v.isNull else { return nil }
            if let s = v.stringValue { return s }
            if let i = v.intValue { return String(i) }
            throw bad(key, "must be a string")
        }
        func path(_ key: String) throws(ChatBatchError) -> String? {
            guard var p = try string(key) else { return nil }
            p = p.replacingOccurrences(of: "{date}", with: date)
            if p.hasPrefix("~/") { return (p as NSString).expandingTildeInPath }
            return p.hasPrefix("/") ? p : (folder as NSString).appendingPathComponent(p)
        }
        func number(_ v: JSON?, _ key: String) throws(ChatBatchError) -> Double? {
            guard let v, !v.isNull else { return nil }
            guard let d = v.doubleValue else { throw bad(key, "must be a number") }
            return d
        }
        func integer(_ v: JSON?, _ key: String) throws(ChatBatchError) -> Int? {
            guard let v, !v.isNull else { return nil }
            guard let i = v.intValue else { throw bad(key, "must be a whole number") }
            return i
        }
        func flag(_ key: String) throws(ChatBatchError) -> Bool? {
            guard let v = fields[key], !v.isNull else { return nil }
            guard let b = v.boolValue else { throw bad(key, "must be true or false") }
            return b
        }
        for key in fields.keys where !knownKeys.contains(key) {
            throw ChatBatchError(.badJob, "\(source): unknown setting `\(key)` (known: \(knownKeys.sorted().joined(separator: ", ")))")
        }
        var s = JobSettings()
        s.input = try path("input")
        s.output = try path("output")
        s.errors = try path("errors")
        s.checkpoint = try path("checkpoint")
        s.apiKeyFile = try path("api_key_file")
        s.summaryJSON = try path("summary_json")
        s.cache = try path("cache")
        s.caCert = try path("ca_cert")
        s.proxy = try string("proxy")
        if let mode = try string("cache_mode") {
            guard let m = CacheMode(rawValue: mode) else { throw bad("cache_mode", "must be read-write, read-only or refresh, not '\(mode)'") }
            s.cacheMode = m
        }
        if let f = try string("format") {
            guard let format = OutputFormat(rawValue: f) else { throw bad("format", "must be batch or flat") }
            s.format = format
        }
        if let p = try string("provider") {
            guard let kind = Provider.Kind(rawValue: p) else { throw bad("provider", "must be tera, tir or openai-compatible") }
            s.provider = kind
        }
        s.baseURL = try string("base_url")
        s.model = try string("model")
        s.projectID = try string("project_id")
        s.apiKeyEnv = try string("api_key_env")
        if let h = fields["headers"], !h.isNull {
            guard let object = h.objectValue else { throw bad("headers", "must be a mapping of header names to values") }
            var headers: [String: String] = [:]
            for (name, value) in object {
                guard let v = value.stringValue ?? value.intValue.map(String.init) else { throw bad("headers", "values must be strings") }
                headers[name] = v
            }
            s.headers = headers
        }
        s.concurrency = try integer(fields["concurrency"], "concurrency")
        s.maxAttempts = try integer(fields["max_attempts"], "max_attempts")
        s.timeout = try number(fields["timeout"], "timeout")
        s.connectTimeout = try number(fields["connect_timeout"], "connect_timeout")
        s.grace = try number(fields["grace"], "grace")
        if let retry = fields["retry"], !retry.isNull {
            guard retry.objectValue != nil else { throw bad("retry", "must be a mapping (max_attempts, base_delay, max_delay)") }
            s.maxAttempts = try integer(retry["max_attempts"], "retry.max_attempts") ?? s.maxAttempts
            s.retryBaseDelay = try number(retry["base_delay"], "retry.base_delay")
            s.retryMaxDelay = try number(retry["max_delay"], "retry.max_delay")
        }
        if let r = fields["request"], !r.isNull {
            guard let object = r.objectValue else { throw bad("request", "must be a mapping of request body fields") }
            s.request = object
        }
        s.system = try string("system")
        s.template = try string("template")
        s.idField = try string("id_field")
        if let p = fields["prices"], !p.isNull {
            guard let input = try number(p["input"], "prices.input"), let output = try number(p["output"], "prices.output") else {
                throw bad("prices", "needs input and output, in USD per million tokens")
            }
            s.prices = Prices(inputPerMillion: input, outputPerMillion: output)
        }
        if let l = fields["limits"], !l.isNull {
            guard let out = try integer(l["max_output_tokens"], "limits.max_output_tokens"),
                let context = try integer(l["context_tokens"], "limits.context_tokens")
            else { throw bad("limits", "needs max_output_tokens and context_tokens") }
            s.limits = ModelLimits(maxOutputTokens: out, contextTokens: context)
        }
        s.strict = try flag("strict")
        s.stream = try flag("stream")
        s.maxCost = try number(fields["max_cost"], "max_cost")
        s.requestsPerMinute = try number(fields["requests_per_minute"], "requests_per_minute")
        s.tokensPerMinute = try number(fields["tokens_per_minute"], "tokens_per_minute")
        s.adaptiveConcurrency = try flag("adaptive_concurrency")
        s.warmup = try flag("warmup")
        s.retryInvalid = try integer(fields["retry_invalid"], "retry_invalid")
        s.dropReasoning = try flag("drop_reasoning")
        s.allowHTTP = try flag("allow_http")
        s.overwrite = try flag("overwrite")
        s.maxWait = try number(fields["max_wait"], "max_wait")
        s.outageBudget = try number(fields["outage_budget"], "outage_budget")
        return s
    }

    /// Converts a YAML node into a JSON value, keeping mapping order.
    static func toJSON(_ node: Node) -> JSON {
        switch node {
        case .scalar:
            switch Tag.Name(rawValue: node.tag.description) {
            case .null: return .null
            case .bool: return node.bool.map(JSON.bool) ?? .string(node.string ?? "")
            case .int: return node.int.map(JSON.int) ?? .string(node.string ?? "")
            case .float: return node.float.map(JSON.double) ?? .string(node.string ?? "")
            default: return .string(node.string ?? "")
            }
        case .mapping(let mapping):
            var o = JSONObject()
            for (key, value) in mapping { o[key.string ?? ""] = toJSON(value) }
            return .object(o)
        case .sequence(let sequence):
            return .array(sequence.map(toJSON))
        case .alias:
            return .null
        }
    }
}
