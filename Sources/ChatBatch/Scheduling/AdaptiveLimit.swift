/// A provider's in-flight limit: it finds the level the key allows and stays there, paying little to look higher.
///
/// After the warm-up it starts at `min(8, maximum)` (or at the level a run before learnt, `remembered`) and, until
/// the key has answered a 429, grows by four per success (about ×5 per round trip: 8 to 128 in two). A 429 says how many were in flight
/// when it was sent: the key allows fewer than that, so the limit goes to one below that level (the ceiling) rather
/// than halving, and later 429s of the same round only lower it to where they came. A 429 for a request sent at or
/// again and again with no quiet spell between is not about concurrency (a token rate): from the third, the limit
/// shrinks to three quarters. Below the ceiling it grows by one per success. At the ceiling it looks one higher only after
/// `probeAfter` seconds there; a look answered 429 confirms the ceiling without shrinking anything and doubles the
/// wait before the next (30 s, 60 s, 120 s …), so a key at a stable limit costs one paused round (its Retry-After) in
/// a minute at first and ever more rarely after, whatever the request rate; a look that succeeds raises the ceiling.
struct AdaptiveLimit: Sendable {
    let maximum: Int
    let adaptive: Bool
    private(set) var limit: Int
    private(set) var lowest: Int
    /// The level the key is known to allow (`Int.max` until a 429 says otherwise).
    private(set) var ceiling = Int.max
    /// When the limit reached the ceiling (uptime ns); nil while below it.
    private var atCeilingSince: UInt64? = nil
    /// Seconds at the ceiling before looking one higher; doubles each time a look is answered 429.
    private(set) var probeAfter = 30.0
    /// The limit is one above the ceiling, looking.
    private var probing = false
    /// A 429 has been seen (the fast ramp is over).
    private(set) var throttled = false
    /// Cuts since the limit last held for a while (a third in a row means a token rate, not concurrency).
    private var recentCuts = 0
    /// Bumped by every cut: a 429 for a request sent before the last cut cuts no further than where it was sent.
    private(set) var epoch = 0

    init(maximum: Int, adaptive: Bool, remembered: Int? = nil) {
        self.maximum = maximum
        self.adaptive = adaptive
        if adaptive, let remembered, remembered >= 1 {
            limit = min(maximum, remembered)
            ceiling = limit
            throttled = true
        } else {
            limit = adaptive ? min(8, maximum) : maximum
        }
        lowest = limit
    }

    /// A success at `now` for a request sent when `inflight` requests (itself included) were out at this provider.
    mutating func succeeded(now: UInt64, inflight: Int = 0) {
        guard adaptive, limit < maximum || probing else { return }
        if probing {
            // The look one higher succeeded (a request sent above the ceiling was answered): the key allows it.
            if inflight > ceiling {
                ceiling = limit
                probing = false
                atCeilingSince = now
            }
            return
        }
        if limit >= ceiling {
            let since = atCeilingSince ?? now
            atCeilingSince = since
            if Double(now &- since) / 1e9 >= 5 { recentCuts = 0 }  // it held: the next 429 is news again
            if Double(now &- since) / 1e9 >= probeAfter {
                atCeilingSince = nil
                probing = true
                limit = min(maximum, ceiling + 1)
            }
            return
        }
        limit = min(maximum, ceiling, limit + (throttled ? 1 : 4))
    }

    /// A 429 for a request sent in `sentEpoch` when `inflight` requests (itself included) were out at this provider.
    mutating func rateLimited(sentEpoch: Int, inflight: Int) {
        guard adaptive else { return }
        throttled = true
        if probing && inflight > ceiling {
            // The look one higher was answered 429: the ceiling holds; look half as often from now on.
            probing = false
            limit = min(limit, ceiling)
            probeAfter = min(probeAfter * 2, 3600)
            atCeilingSince = nil
            epoch += 1
            return
        }
        let level = max(1, inflight - 1)
        if sentEpoch < epoch {
            // Sent before the last cut: it lowers the ceiling only to where it came.
            guard level < ceiling || level < limit else { return }
            ceiling = min(ceiling, level)
            limit = min(limit, ceiling)
        } else if recentCuts >= 2 {
            // 429 after 429 with no quiet spell between: more than concurrency (a token rate): shrink by a quarter.
            limit = max(1, min(level, limit * 3 / 4))
            ceiling = limit
        } else {
            // Concurrency: the key allows fewer than were in flight when this one left.
            ceiling = min(ceiling, level)
            limit = min(limit, ceiling)
        }
        if sentEpoch == epoch { recentCuts += 1 }
        probing = false
        atCeilingSince = nil
        lowest = min(lowest, limit)
        epoch += 1
    }
}
