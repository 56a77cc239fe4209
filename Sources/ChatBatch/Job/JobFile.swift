import ChatBatchCore
import Foundation
import Yams

/// Reads a YAML job file into `JobSettings`; paths in it are relative to the file's folder.
public enum JobFile {
    /// The keys an entry of `providers` may hold (besides `name`): what a provider has of its own.
    static let providerKeys = Set(JobKey.all.filter(\.perProvider).map(\.name))

    static let knownKeys = Set(JobKey.all.map(\.name))

    /// Today as `YYYY-MM-DD` (local time): what `{date}` in a job's paths becomes by default.
    public static func today() -> String {
        let f = DateFormatter()
        f.dateFormat = "yyyy-MM-dd"
        f.locale = Locale(identifier: "en_US_POSIX")
        return f.string(from: Date())
    }

    /// Loads and checks a job file; `{date}` in its paths becomes `date` (default: today).
    public static func load(path: String, date: String? = nil) throws(ChatBatchError) -> JobSettings {
        // `{date}` goes into paths: a word of letters, digits, `.`, `_` and `-`, never a way out of the job's folder.
        if let date,
            date.isEmpty || date.contains("..") || date.hasPrefix(".")
                || !date.unicodeScalars.allSatisfy({
                    CharacterSet.alphanumerics.contains($0) && $0.isASCII || "._-".unicodeScalars.contains($0)
                })
        {
            throw ChatBatchError(
                .badJob,
                "--date \(date.terminalSafe) is not a date: give YYYY-MM-DD (letters, digits, '.', '_' and '-' only, no '..')"
            )
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ChatBatchError(.missingJob, "\(path): cannot read job file")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw ChatBatchError(.badJob, "\(path): job file is not UTF-8 text")
        }
        let root: JSON
        do {
            var budget = maxValues
            root =
                try Yams.compose(yaml: text).map { node throws(ChatBatchError) in
                    try toJSON(node, budget: &budget, path)
                }
                ?? .object(JSONObject())
        } catch let error as ChatBatchError {
            throw error
        } catch let error as YamlError {
            throw ChatBatchError(.badJob, "\(path): not valid YAML: \(error)")
        } catch {
            throw ChatBatchError(.badJob, "\(path): not valid YAML: \(error)")
        }
        guard let fields = root.objectValue else {
            throw ChatBatchError(.badJob, "\(path): a job file is a YAML mapping of settings")
        }
        let folder = (path as NSString).deletingLastPathComponent
        var settings = try settings(
            from: fields, relativeTo: folder.isEmpty ? "." : folder, source: path, date: date ?? today())
        if settings.jobName == nil { settings.jobName = JobSettings.stem(of: path) }
        return settings
    }

    static func settings(from fields: JSONObject, relativeTo folder: String, source: String, date: String)
        throws(ChatBatchError) -> JobSettings
    {
        for key in fields.keys where !knownKeys.contains(key) {
            throw ChatBatchError(
                .badJob, "\(source): unknown setting `\(key)` (known: \(knownKeys.sorted().joined(separator: ", ")))")
        }
        let reader = Reader(fields: fields, folder: folder, source: source, date: date)
        var s = JobSettings()
        for key in JobKey.all where fields[key.name].map({ !$0.isNull }) == true { try key.read(reader, &s) }
        return s
    }

    /// Reads typed values out of a job file's mapping, with messages that name the file and the key.
    struct Reader: Sendable {
        let fields: JSONObject
        let folder: String
        let source: String
        let date: String

        func bad(_ key: String, _ what: String) -> ChatBatchError {
            ChatBatchError(.badJob, "\(source): `\(key)` \(what)")
        }

        func value(_ key: String) -> JSON? {
            var node: JSON? = .object(fields)
            for part in key.split(separator: ".") { node = node?[String(part)] }
            return node.flatMap { $0.isNull ? nil : $0 }
        }

        func string(_ key: String) throws(ChatBatchError) -> String? {
            guard let v = value(key) else { return nil }
            if let s = v.stringValue { return s }
            if let i = v.intValue { return String(i) }
            throw bad(key, "must be a string")
        }

        /// A path relative to the job file's folder, with `{date}` and `~/` expanded.
        func path(_ key: String) throws(ChatBatchError) -> String? {
            guard var p = try string(key) else { return nil }
            p = p.replacingOccurrences(of: "{date}", with: date)
            if p.hasPrefix("~/") { return (p as NSString).expandingTildeInPath }
            return p.hasPrefix("/") ? p : (folder as NSString).appendingPathComponent(p)
        }

        func number(_ key: String) throws(ChatBatchError) -> Double? {
            guard let v = value(key) else { return nil }
            guard let d = v.doubleValue else { throw bad(key, "must be a number") }
            return d
        }

        func integer(_ key: String) throws(ChatBatchError) -> Int? {
            guard let v = value(key) else { return nil }
            guard let i = v.intValue else { throw bad(key, "must be a whole number") }
            return i
        }

        func flag(_ key: String) throws(ChatBatchError) -> Bool? {
            guard let v = value(key) else { return nil }
            guard let b = v.boolValue else { throw bad(key, "must be true or false") }
            return b
        }

        func choice<T: NamedChoice>(_ key: String) throws(ChatBatchError) -> T? {
            guard let text = try string(key) else { return nil }
            guard let v = T(rawValue: text) else { throw bad(key, "must be \(T.choices), not '\(text)'") }
            return v
        }

        func object(_ key: String, _ what: String) throws(ChatBatchError) -> JSONObject? {
            guard let v = value(key) else { return nil }
            guard let o = v.objectValue else { throw bad(key, "must be \(what)") }
            return o
        }

        func headers(_ key: String) throws(ChatBatchError) -> [String: String]? {
            guard let object = try self.object(key, "a mapping of header names to values") else { return nil }
            var headers: [String: String] = [:]
            for (name, value) in object {
                guard let v = value.stringValue ?? value.intValue.map(String.init) else {
                    throw bad(key, "values must be strings")
                }
                headers[name] = v
            }
            return headers
        }

        /// `providers:`, a list of mappings, each read with the keys a provider may have.
        func providers(_ key: String) throws(ChatBatchError) -> [JobSettings]? {
            guard let v = value(key) else { return nil }
            guard let list = v.arrayValue, !list.isEmpty else {
                throw bad(key, "must be a list of providers (each with name and provider)")
            }
            var entries: [JobSettings] = []
            for (i, item) in list.enumerated() {
                guard let fields = item.objectValue else {
                    throw bad("\(key)[\(i)]", "must be a mapping (name, provider, …)")
                }
                for k in fields.keys where k != "name" && !JobFile.providerKeys.contains(k) {
                    throw bad(
                        "\(key)[\(i)]",
                        "has unknown setting `\(k)` (a provider may set: name, \(JobFile.providerKeys.sorted().joined(separator: ", ")))"
                    )
                }
                let reader = Reader(fields: fields, folder: folder, source: source, date: date)
                var entry = JobSettings()
                for k in JobKey.all where k.perProvider && fields[k.name].map({ !$0.isNull }) == true {
                    try k.read(reader, &entry)
                }
                entry.name = try reader.string("name")
                entries.append(entry)
            }
            return entries
        }

        func retry(_ s: inout JobSettings) throws(ChatBatchError) {
            guard try object("retry", "a mapping (max_attempts, base_delay, max_delay)") != nil else { return }
            s.maxAttempts = try integer("retry.max_attempts") ?? s.maxAttempts
            s.retryBaseDelay = try number("retry.base_delay")
            s.retryMaxDelay = try number("retry.max_delay")
        }

        func prices(_ key: String) throws(ChatBatchError) -> Prices? {
            guard value(key) != nil else { return nil }
            guard let input = try number(key + ".input"), let output = try number(key + ".output") else {
                throw bad(
                    key,
                    "needs input and output, in USD per million tokens (and embeddings, if the input has such lines)")
            }
            return Prices(
                inputPerMillion: input, outputPerMillion: output, embeddingsPerMillion: try number(key + ".embeddings"))
        }

        func limits(_ key: String) throws(ChatBatchError) -> ModelLimits? {
            guard value(key) != nil else { return nil }
            guard let out = try integer(key + ".max_output_tokens"), let context = try integer(key + ".context_tokens")
            else {
                throw bad(key, "needs max_output_tokens and context_tokens")
            }
            return ModelLimits(maxOutputTokens: out, contextTokens: context)
        }
    }

    /// The most values a job file may hold once its YAML aliases are expanded: a real job has a few hundred, and a
    /// file whose aliases nest (the "billion laughs") would expand past any memory.
    static let maxValues = 100_000

    /// Converts a YAML node into a JSON value, keeping mapping order; refuses one that expands past `budget` values.
    static func toJSON(_ node: Node, budget: inout Int, _ path: String) throws(ChatBatchError) -> JSON {
        budget -= 1
        guard budget >= 0 else {
            throw ChatBatchError(
                .badJob,
                "\(path): the job file expands to more than \(maxValues) values (YAML aliases that nest?); refusing it")
        }
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
            for (key, value) in mapping { o[key.string ?? ""] = try toJSON(value, budget: &budget, path) }
            return .object(o)
        case .sequence(let sequence):
            var items: [JSON] = []
            for item in sequence { items.append(try toJSON(item, budget: &budget, path)) }
            return .array(items)
        case .alias:
            return .null
        }
    }
}
