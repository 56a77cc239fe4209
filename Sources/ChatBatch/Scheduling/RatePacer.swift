/// A key's request rate, when it has one: paced sends, so that a key limited to N requests a minute gets them one
/// after another instead of a window of requests at once of which all but one come back 429.
///
/// It is off until the key shows a rate: headers that state it (then it follows them from the first answer, before
/// any 429), or 429s that are not noise. A 429 is noise unless at least `evidence` of the key's last `window` answers
/// were clear 429s, or twice that many were 429s at all (a key out of its quota refuses most of what is sent; a
/// stray 429 comes alone; `Scheduler.rateLimited` says which are clear); the 429s' waits then
/// give a first rate: a wait of two seconds or more means one request in that time; a shorter one says little more
/// than "one a second or more", so what the key answered over the last two seconds is the first guess. From there it
/// doubles for every second without a 429 while it held a send back, until a 429 for a request sent at the new
/// rate: the rate becomes what the key answered over the last second (less 5%; a quarter of the rate at most per
/// step, measuring again while that clamps it). After that, ten seconds without a 429 speed it up by a twentieth,
/// and each 429 slows it by 15%.
struct RatePacer: Sendable {
    /// Answers kept to tell a rate from noise, and the 429s among them that show one.
    static let window = 16
    static let evidence = 4

    /// The bucket sends are paced by, nil while off.
    private var bucket: TokenBucket? = nil
    /// Units (requests, or tokens) a second, nil while off.
    var rate: Double? { bucket?.rate }
    /// The rate comes from headers: 429s do not change it.
    private(set) var fromHeaders = false
    /// When the rate last changed, and whether a send was held back since (only then may it speed up).
    private var changed: UInt64 = 0
    private var held = false
    /// Still looking for the rate from below (twice as fast every quiet second).
    private var slowStart = false
    /// Answers that were not 429s per tenth of a second over the last two seconds (a ring), and the latest tenth.
    private var answeredPerTenth = [Int](repeating: 0, count: 20)
    private var lastTenth: UInt64 = 0
    /// The key's recent answers, oldest first: 0 for an answer, 1 for a 429 that may be a rate's, 2 for one that is.
    private var recent: [UInt8] = []

    /// Seconds until `amount` may be sent (0 when it may now, or when off).
    mutating func wait(for amount: Double = 1, now: UInt64) -> Double {
        guard let seconds = bucket?.wait(for: amount, now: now), seconds > 0 else { return 0 }
        held = true
        return seconds
    }

    /// A send of `amount` went out.
    mutating func take(_ amount: Double = 1) { bucket?.take(amount) }

    /// Gives back (or takes more of) what an estimate got wrong, once the answer's usage is known.
    mutating func adjust(_ amount: Double) { bucket?.adjust(amount) }

    /// An answer that was not a 429 (`limited` false), or was (`clear`: sent with so few in flight that only a rate
    /// explains it): kept for telling a rate from noise. Returns true when the 429s now show a rate (or it is pacing
    /// already).
    mutating func answered(limited: Bool, clear: Bool = true, now: UInt64) -> Bool {
        recent.append(limited ? (clear ? 2 : 1) : 0)
        if recent.count > Self.window { recent.removeFirst(recent.count - Self.window) }
        if !limited {
            let tenth = now / 100_000_000
            if tenth > lastTenth {
                for t in (lastTenth + 1)...min(tenth, lastTenth + 20) { answeredPerTenth[Int(t % 20)] = 0 }
                lastTenth = tenth
            }
            answeredPerTenth[Int(tenth % 20)] += 1
        }
        if !limited, let rate, !fromHeaders, held, Double(now &- changed) / 1e9 >= (slowStart ? 1 : 10) {
            bucket?.rate = rate * (slowStart ? 2 : 1.05)
            changed = now
            held = false
        }
        // Once pacing, every 429 is the rate's: it sends slower.
        let clearOnes = recent.lazy.filter { $0 == 2 }.count, all = recent.lazy.filter { $0 > 0 }.count
        return limited && (rate != nil || clearOnes >= Self.evidence || all >= 2 * Self.evidence)
    }

    /// A 429 that shows a rate, for a request sent at `sentAt`, asking to wait `wait` seconds (nil: it did not say):
    /// the key's bucket is empty. A 429 for a request sent before the rate last changed slows it no further.
    mutating func rateLimited(wait: Double?, sentAt: UInt64, now: UInt64) {
        bucket?.refill(now)
        bucket?.level = 0
        guard !fromHeaders, rate == nil || sentAt >= changed else { return }
        if let rate, slowStart {
            // Sent at a rate the key refused: what it answered over the last second is what it allows (a quarter
            // of the rate at most per step, measuring again while that clamps it).
            let measured = Double(answered(within: 1, now: now))
            bucket?.rate = min(rate, max(rate / 4, measured)) * 0.95
            slowStart = measured < rate / 4
        } else if let rate {
            bucket?.rate = rate * 0.85
        } else if let wait, wait >= 2, wait <= 3600 {
            // A wait of whole seconds: at most one request in that time.
            bucket = TokenBucket(rate: 1 / wait, capacity: 1, level: 0, now: now)
            slowStart = true
        } else if let wait, wait > 0 {
            // A second or less: the key allows at least that; what it answered over the last two seconds is the
            // first guess (a key that had just spent a burst is measured down from there).
            bucket = TokenBucket(
                rate: max(1 / wait, Double(answered(within: 2, now: now)) / 2), capacity: 1, level: 0, now: now)
            slowStart = true
        } else {
            return
        }
        changed = now
        held = false
    }

    /// The server said how much of its quota is left, and (unless it is whole) how fast it refills.
    mutating func heard(_ quota: RateLimitHint.Quota, now: UInt64) {
        if var paced = bucket {
            paced.refill(now)
            paced.rate = quota.rate ?? paced.rate
            paced.capacity = max(1, quota.limit)
            paced.level = min(paced.level, quota.remaining)
            bucket = paced
        } else if let refills = quota.rate {
            bucket = TokenBucket(rate: refills, capacity: max(1, quota.limit), level: quota.remaining, now: now)
        } else {
            return  // a whole quota: nothing to pace yet
        }
        fromHeaders = true
        changed = now
    }

    /// Answers that were not 429s over the last `seconds` (at most two).
    private func answered(within seconds: Double, now: UInt64) -> Int {
        let tenth = now / 100_000_000
        let first = tenth &- UInt64(min(20, max(1, Int(seconds * 10)))) &+ 1
        return (first...max(first, tenth)).reduce(0) { sum, t in
            t <= lastTenth && lastTenth - t < 20 && t + 20 > tenth ? sum + answeredPerTenth[Int(t % 20)] : sum
        }
    }
}
