import Foundation

/// `chatbatch cache stats` and `chatbatch cache prune`: looking after a response cache file.
public enum CacheMaintenance {
    /// What the cache at `path` holds.
    public static func stats(path: String) throws -> CacheStats {
        let cache = try ResponseCache(path: path, create: false)
        defer { cache.close() }
        return try cache.stats()
    }

    /// Deletes the answers stored longer ago than `age` (e.g. `30d`, `12h`, `90m`, `3600s`); returns how many.
    public static func prune(path: String, olderThan age: String) throws -> Int {
        let seconds = try duration(age)
        let cache = try ResponseCache(path: path, create: false)
        defer { cache.close() }
        return try cache.prune(olderThan: seconds)
    }

    /// Seconds in `30d`, `12h`, `90m` or `3600s` (a bare number is seconds).
    public static func duration(_ text: String) throws(ChatBatchError) -> Double {
        let units: [Character: Double] = ["s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604_800]
        var number = Substring(text)
        var unit = 1.0
        if let last = text.last, let u = units[last] {
            number = text.dropLast()
            unit = u
        }
        guard let n = Double(number), n >= 0 else {
            throw ChatBatchError(.badDuration, "'\(text)' is not a duration: write it like 30d, 12h, 90m or 3600s")
        }
        return n * unit
    }
}
