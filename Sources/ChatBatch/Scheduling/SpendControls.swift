import Dispatch

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
        level = min(capacity, level + Double(now - updated) / 1e9 * rate)
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

/// The in-flight limit: a slow start, then halving on 429 and growing back one step per round of successes.
///
/// After the warm-up it starts at `min(8, maximum)` and grows by one per success (doubling each round trip)
/// until the first 429; from then on a 429 halves it (at most once per round: a 429 for a request sent
/// before the last cut does not cut again) and each `limit` successes add one, up to `maximum`.
/// Every 429 pauses the whole run (Retry-After is per key), so growing past the limit where the last 429
/// came costs a pause each time: the limit stays one below that ceiling, and the ceiling is raised by one
/// only after `probeEvery` successes at it.
struct AdaptiveLimit {
    let maximum: Int
    let adaptive: Bool
    private(set) var limit: Int
    private(set) var lowest: Int
    private var slowStart = true
    private var successes = 0
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
        successes += 1
        if slowStart || successes >= limit {
            limit += 1
            successes = 0
        }
    }

    /// A 429 for a request sent in `sentEpoch`.
    mutating func rateLimited(sentEpoch: Int) {
        guard adaptive, sentEpoch == epoch else { return }
        slowStart = false
        ceiling = max(1, limit - 1)
        atCeiling = 0
        limit = max(1, limit / 2)
        lowest = min(lowest, limit)
        successes = 0
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
