/// A token bucket: `rate` units per second, holding at most `capacity`.
struct TokenBucket {
    var rate: Double
    var capacity: Double
    var level: Double
    var updated: UInt64

    init(perMinute: Double, now: UInt64) {
        self.init(rate: perMinute / 60, capacity: max(1, perMinute / 60), level: max(1, perMinute / 60), now: now)
    }

    init(rate: Double, capacity: Double, level: Double, now: UInt64) {
        self.rate = rate
        self.capacity = capacity
        self.level = level
        updated = now
    }

    /// Adds what came in since it was last refilled (a time before that adds nothing).
    mutating func refill(_ now: UInt64) {
        guard now > updated else { return }
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
