import Foundation

/// Where a run stands, taken on the run's queue for progress output.
public struct ProgressSnapshot: Sendable {
    /// Lines finished (this run and earlier ones) and lines in the input (nil while unknown).
    public var finished: Int
    public var total: Int?
    public var inflight: Int
    public var limit: Int
    public var requestsPerSecond: Double
    public var tokens: Int
    public var cost: Double
    public var retries: Int
    public var failures: Int
    public var elapsed: Double
    /// The prices are known (else no dollar figure is shown).
    public var priceKnown = true
    /// Paused by `chatbatch control … pause`: the line says so first.
    public var paused = false

    /// One line: done/total, percent, requests per second, ETA, in flight, tokens, dollars, retries, failures.
    public var line: String { line(width: nil) }

    /// The line fitted to `width` columns (a terminal's): the least useful fields go first (tokens, retries, in
    /// flight, failures, dollars, rate, ETA), and what still does not fit is cut, so a redraw never wraps.
    public func line(width: Int?) -> String {
        var parts: [(text: String, keep: Int)] = []
        if paused { parts.append(("PAUSED", 10)) }
        if let total, total > 0 {
            let pct = Double(finished) / Double(total) * 100
            parts.append((String(format: "%d/%d (%.1f%%)", finished, total, pct), 9))
        } else {
            parts.append(("\(finished) done", 9))
        }
        parts.append((String(format: "%.1f req/s", requestsPerSecond), 6))
        if let total, requestsPerSecond > 0, total > finished {
            parts.append(("ETA " + Self.duration(Double(total - finished) / requestsPerSecond), 7))
        }
        parts.append(("in flight \(inflight)/\(limit)", 3))
        parts.append(("\(tokens) tokens", 1))
        if priceKnown { parts.append((String(format: "$%.4f", cost), 5)) }
        parts.append(("\(retries) retries", 2))
        parts.append(("\(failures) failed", 4))
        func joined() -> String { parts.map(\.text).joined(separator: " · ") }
        guard let width, width > 0 else { return joined() }
        let room = width - 1  // the last column stays empty: some terminals wrap on it
        while joined().count > room, parts.count > 1,
            let least = parts.indices.min(by: { parts[$0].keep < parts[$1].keep })
        {
            parts.remove(at: least)
        }
        let text = joined()
        return text.count > room ? String(text.prefix(max(0, room))) : text
    }

    static func duration(_ s: Double) -> String {
        let t = Int(s.rounded())
        return t >= 3600
            ? "\(t / 3600)h\(String(format: "%02d", t % 3600 / 60))m"
            : t >= 60 ? "\(t / 60)m\(String(format: "%02d", t % 60))s" : "\(t)s"
    }
}

/// How a run reports progress: how often, and to whom.
public struct ProgressOptions: Sendable {
    public var interval: Double
    public var sink: @Sendable (ProgressSnapshot, _ final: Bool) -> Void
    public init(interval: Double, sink: @escaping @Sendable (ProgressSnapshot, Bool) -> Void) {
        self.interval = interval
        self.sink = sink
    }
}
