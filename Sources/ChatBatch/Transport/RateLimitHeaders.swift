/// What a server says about its rate limits on an answer, in the headers OpenAI, LiteLLM and most gateways send:
/// `x-ratelimit-limit-requests`, `x-ratelimit-remaining-requests`, `x-ratelimit-reset-requests` (and `…-tokens`).
struct RateLimitHint: Sendable, Equatable {
    /// One quota: its size, what is left, and how long until it is whole again (seconds; nil when not said).
    struct Quota: Sendable, Equatable {
        var limit: Double
        var remaining: Double
        var reset: Double?

        /// Units per second the quota refills at: what it lacks over the time it takes to be whole. Nil when it is
        /// whole or says no reset (then it says what is left, not how fast it comes back).
        var rate: Double? {
            guard let reset, reset > 0, remaining < limit else { return nil }
            return max(limit / 3600, (limit - remaining) / reset)
        }
    }

    var requests: Quota?
    var tokens: Quota?

    /// The headers read (the transport keeps these).
    static let headerNames = ["requests", "tokens"].flatMap { kind in
        ["limit", "remaining", "reset"].map { "x-ratelimit-\($0)-\(kind)" }
    }

    /// Reads the headers (lower-cased names); nil when the answer carries no limit.
    init?(headers: [String: String]) {
        func quota(_ kind: String) -> Quota? {
            guard let limit = headers["x-ratelimit-limit-\(kind)"].flatMap(Self.number), limit > 0,
                let remaining = headers["x-ratelimit-remaining-\(kind)"].flatMap(Self.number), remaining >= 0
            else { return nil }
            return Quota(
                limit: limit, remaining: remaining, reset: headers["x-ratelimit-reset-\(kind)"].flatMap(Self.duration))
        }
        requests = quota("requests")
        tokens = quota("tokens")
        if requests == nil && tokens == nil { return nil }
    }

    static func number(_ text: String) -> Double? {
        guard let v = Double(text.trimmingCharacters(in: .whitespaces)), v.isFinite else { return nil }
        return v
    }

    /// A duration as servers write it: `1s`, `6m0s`, `1h2m3.5s`, `20ms`, or plain seconds (`1.5`).
    static func duration(_ text: String) -> Double? {
        let s = text.trimmingCharacters(in: .whitespaces).lowercased()
        if let plain = number(s) { return plain >= 0 ? plain : nil }
        var total = 0.0
        var digits = ""
        var i = s.startIndex
        while i < s.endIndex {
            let c = s[i]
            if c.isNumber || c == "." {
                digits.append(c)
                i = s.index(after: i)
                continue
            }
            guard let value = Double(digits) else { return nil }
            digits = ""
            let rest = s[i...]
            let (unit, length): (Double, Int) =
                rest.hasPrefix("ms")
                ? (0.001, 2) : c == "h" ? (3600, 1) : c == "m" ? (60, 1) : c == "s" ? (1, 1) : (0, 0)
            guard length > 0 else { return nil }
            total += value * unit
            i = s.index(i, offsetBy: length)
        }
        return digits.isEmpty && total.isFinite ? total : nil
    }
}
