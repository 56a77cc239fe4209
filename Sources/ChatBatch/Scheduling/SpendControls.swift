import Dispatch

/// Uptime arithmetic that no value can crash: waits come from servers (Retry-After) and may be anything.
enum Clock {
    /// Nanoseconds in `seconds`, clamped to [0, about 292 years]; NaN is 0.
    static func nanoseconds(_ seconds: Double) -> UInt64 {
        guard seconds > 0 else { return 0 }
        return seconds >= 9.2e9 ? UInt64(9.2e18) : UInt64(seconds * 1e9)
    }
}

/// A token bucket: `rate` units per second, holding at most `capacity`.
struct TokenBucket {
    let rate: Double
    let capacity: Double
    var level: Double
    var updated: UInt64

    init(perMinute: Double, now: UInt64) {
        rate = perMinute / 60
        capacity = max(1, perMinute / 60)
        level = capacity
        updated = now
    }

    mutating func refill(_ now: UInt64) {
        level = min(capacity, level + Double(now &- updated) / 1e9 * rate)
        updated = now
    }

    /// Seconds until `amount` is available (0 when it is); a request larger than the bucket waits for a full one.
    mutating func wait(for amount: Double, now: UInt64) -> Double {
        refill(now)
        let need = min(amount, capacity)
        return level >= need ? 0 : (need - level) / rate
    }

    mutating func take(_ amount: Double) { level -= amount }
    /// Gives back (or takes more of) what an estimate got wrong; the level may go below zero.
    mutating func adjust(_ amount: Double) { level = min(capacity, level + amount) }
}

/// The in-flight limit: doubling per round trip up to a ceiling, halving on 429, and back up fast.
///
/// After the warm-up it starts at `min(8, maximum)` and grows by one per success (doubling each round trip).
/// A 429 halves it (at most once per round: a 429 for a request sent before the last cut does not cut again)
/// and sets the ceiling one below the level where it came. Below the ceiling the limit grows back by one per
/// success again, so one throttled request costs a halving and a few round trips, not the rest of the run.
/// Every 429 pauses the whole run (Retry-After is per key), so growing past the ceiling costs a pause each
/// time: the ceiling is raised by one only after `probeEvery` successes at it. A key that really is at its
/// limit keeps answering 429 at the ceiling's level, which keeps the ceiling there.
struct AdaptiveLimit: Sendable {
    let maximum: Int
    let adaptive: Bool
    private(set) var limit: Int
    private(set) var lowest: Int
    private var ceiling = Int.max
    private var atCeiling = 0
    let probeEvery = 200
    private(set) var epoch = 0

    init(maximum: Int, adaptive: Bool) {
        self.maximum = maximum
        self.adaptive = adaptive
        limit = adaptive ? min(8, maximum) : maximum
        lowest = limit
    }

    mutating func succeeded() {
        guard adaptive, limit < maximum else { return }
        if limit >= ceiling {
            atCeiling += 1
            if atCeiling >= probeEvery { ceiling += 1; atCeiling = 0 }
            return
        }
        limit += 1
    }

    /// A 429 for a request sent in `sentEpoch`.
    mutating func rateLimited(sentEpoch: Int) {
        guard adaptive, sentEpoch == epoch else { return }
        ceiling = max(1, limit - 1)
        atCeiling = 0
        limit = max(1, limit / 2)
        lowest = min(lowest, limit)
        epoch += 1
    }
}

/// What a run may still spend: the cap, what is spent, and the worst case of what is in flight.
struct Budget {
    let cap: Double?
    var spent: Double
    var inflightWorst = 0.0

    /// True when sending one more request whose worst case is `worst` keeps the total within the cap.
    func allows(_ worst: Double) -> Bool {
        guard let cap else { return true }
        return spent + inflightWorst + worst <= cap + 1e-12
    }
}
