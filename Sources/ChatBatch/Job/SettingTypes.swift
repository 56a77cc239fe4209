import ChatBatchCore

/// How a run uses the response cache (`--cache-mode`).
public enum CacheMode: String, NamedChoice, Codable {
    /// Answer from the cache when it can; store what is sent and succeeds.
    case readWrite = "read-write"
    /// Answer from the cache when it can; store nothing.
    case readOnly = "read-only"
    /// Send everything, and replace what the cache holds with the new answers.
    case refresh

    /// Lookups happen (not with refresh).
    var reads: Bool { self != .refresh }
    /// New answers are stored.
    var writes: Bool { self != .readOnly }
}

/// How results are written: the OpenAI Batch output shape, or one flat object per prompt.
public enum OutputFormat: String, NamedChoice, Codable {
    case batch
    case flat
}

/// What a run does with lines another endpoint answered (`--other-endpoint-answers`); a fake gateway's answers
/// are sent again to a real endpoint whatever this says.
public enum OtherEndpointAnswers: String, NamedChoice, Codable {
    /// Not sent; the run says how many and ends with exit code 2 (the default).
    case ask
    /// Taken as done.
    case keep
    /// Sent again to this run's endpoint, replacing the answers.
    case resend
}

/// One of `count` slices of an input, picked by a stable hash of each line's custom_id.
public struct Shard: Sendable, Equatable, Codable {
    public let index: Int
    public let count: Int

    /// Parses `i/n`, with 0 ≤ i < n.
    public init(parsing text: String) throws(ChatBatchError) {
        let parts = text.split(separator: "/")
        guard parts.count == 2, let i = Int(parts[0]), let n = Int(parts[1]), n >= 1, i >= 0, i < n else {
            throw ChatBatchError(.badShard, "--shard takes i/n with 0 <= i < n (for example 0/4), not '\(text)'")
        }
        index = i
        count = n
    }

    /// True when the line with this id belongs to this shard: FNV-1a 64 of the id's UTF-8 bytes, mod `count`.
    public func contains(_ id: String) -> Bool {
        Int(StableHash.of(id) % UInt64(count)) == index
    }
}

/// How a run with several providers shares its lines between them (`route:`).
public enum RouteMode: String, NamedChoice, Codable {
    /// Every provider takes lines as its own window allows.
    case fill
    /// In list order: a provider takes lines only when those before it cannot take one now.
    case priority
}
