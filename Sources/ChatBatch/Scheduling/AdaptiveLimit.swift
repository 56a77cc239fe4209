/// A provider's in-flight limit: it finds the level the key allows and stays there, paying little to look higher.
///
/// After the warm-up it starts at `min(8, maximum)` (or at the level a run before learnt, `remembered`) and, until
/// the key has answered a 429, grows by four per success (about ×5 per round trip: 8 to 128 in two); a worker of a
/// store whose key other workers use starts at its part of 8 and doubles per round trip (`startShared`). What a 429
/// means depends on how many were in flight when its request left:
/// - more than the key has ever answered at (`proven`): concurrency. The key allows fewer than that, so the limit goes
///   to one below that level (the ceiling) rather than halving; the round's other 429s only lower it to where they
///   came.
///   Until a second such 429 confirms that the key has a concurrency limit, a cut made by one 429 alone is undone by
///   `disproof` successes for requests sent above it (a stray 429 while the ramp ran ahead of `proven`).
/// - at most that: not concurrency, or a concurrency limit whose answers were counted late. The scheduler paces a
///   rate it can tell (`RatePacer`) and calls this for the others: the limit steps down one per such 429 of the
///   round, never below half of what the round had, and the ceiling stays there.
/// Below the ceiling it grows by one per success. At the ceiling it looks one higher only after `probeAfter` seconds
/// there; a look answered 429 confirms the ceiling without shrinking anything and doubles the wait before the next
/// (30 s, 60 s, 120 s …), so a key at a stable limit costs one paused round (its Retry-After) in a minute at first and
/// ever more rarely after, whatever the request rate; a look that succeeds raises the ceiling.
struct AdaptiveLimit: Sendable {
    private(set) var maximum: Int
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
    private(set) var probing = false
    /// A 429 has been seen (the fast ramp is over).
    private(set) var throttled = false
    /// The most requests in flight at this provider that a request was sent with and answered 2xx.
    private(set) var proven = 0
    /// Half the limit the current round of 429s started from: a round's 429s that are not concurrency stop there.
    private var roundFloor = 1
    /// Bumped by every cut: a 429 for a request sent before the last cut cuts no further than where it was sent.
    private(set) var epoch = 0
    /// The last concurrency cut, while one 429 alone made it: the ceiling and limit before it, and the successes
    /// since for requests sent above the new ceiling. One 429 is weak evidence: a level the key really refuses
    /// refuses again, and `disproof` successes above it undo the cut.
    private var lastCut: (ceiling: Int, limit: Int, successesAbove: Int)? = nil
    /// A concurrency cut was confirmed by a second 429: the key has a concurrency limit, and no later cut is undone
    /// (a request sent above it can still succeed, answered before the server counted it).
    private var concurrencyConfirmed = false
    static let disproof = 3
    /// The level comes from the workers of a store together (`adopt`): looking higher is theirs to do, as one.
    private var shared = false
    /// What the limit grows by per success until the first 429: 4 (about ×5 a round trip), or 1 (×2) on a key
    /// other workers ramp up on too (`startShared`).
    private var rampStep = 4

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

    /// The key is used by `workers` workers of a store (this one included) and no level is learnt yet: this worker
    /// starts at its part of the usual start and doubles per round trip rather than ×5, so that together they ramp
    /// up as one run would, and the key's first refusals are a few, not a burst from every worker at once.
    mutating func startShared(workers: Int) {
        guard adaptive, !throttled, workers > 1 else { return }
        rampStep = 1
        limit = max(1, min(8, maximum) / workers)
        lowest = min(lowest, limit)
    }

    /// The most it may reach from now on (`chatbatch control … set concurrency=N`): lowered, the limit drops to it at
    /// once; raised, a fixed limit moves to it and an adaptive one grows towards it as successes allow.
    mutating func setMaximum(_ n: Int) {
        maximum = max(1, n)
        if !adaptive || limit > maximum {
            limit = adaptive ? min(limit, maximum) : maximum
            lowest = min(lowest, limit)
        }
        if probing && limit >= maximum {
            probing = false
            limit = min(limit, ceiling)
        }
    }

    /// The level the key allows this run, learnt elsewhere (its share of what the workers of a store learnt together):
    /// it becomes the ceiling and the limit, up or down; this run's own 429s can still cut below it.
    mutating func adopt(_ level: Int) {
        guard adaptive else { return }
        throttled = true
        shared = true
        probing = false
        atCeilingSince = nil
        ceiling = max(1, level)
        limit = min(maximum, ceiling)
        lowest = min(lowest, limit)
        lastCut = nil
        epoch += 1
    }

    /// A success at `now` for a request sent when `inflight` requests (itself included) were out at this provider.
    mutating func succeeded(now: UInt64, inflight: Int = 0) {
        guard adaptive else { return }
        proven = max(proven, inflight)
        if let cut = lastCut, !probing, inflight > ceiling {
            if cut.successesAbove + 1 >= Self.disproof {
                // A stray 429 (a fault, a blip at the server), not the key's concurrency: as if it never came.
                ceiling = cut.ceiling
                limit = max(limit, min(maximum, cut.limit))
                atCeilingSince = nil
                lastCut = nil
                return
            }
            lastCut?.successesAbove += 1
        }
        guard limit < maximum || probing else { return }
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
            if shared { return }
            let since = atCeilingSince ?? now
            atCeilingSince = since
            if Double(now &- since) / 1e9 >= probeAfter {
                atCeilingSince = nil
                probing = true
                limit = min(maximum, ceiling + 1)
            }
            return
        }
        limit = min(maximum, ceiling, limit + (throttled ? 1 : rampStep))
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
        let before = limit
        if inflight > proven {
            // Concurrency: the key has never answered this many at once; it allows fewer than were in flight.
            // The first such 429 of a round may be a stray one (kept undoable); a second confirms the cut.
            if lastCut != nil {
                lastCut = nil
                concurrencyConfirmed = true
            } else if !concurrencyConfirmed && sentEpoch == epoch {
                lastCut = (ceiling, limit, 0)
            }
            ceiling = min(ceiling, max(1, inflight - 1))
            limit = min(limit, ceiling)
        } else {
            // The key answered this many before: a token rate or a stray 429. One step per 429, to half at most.
            if sentEpoch == epoch { roundFloor = max(1, limit / 2) }
            limit = max(roundFloor, min(limit, limit - 1))
            ceiling = min(ceiling, limit)
        }
        guard limit < before || sentEpoch == epoch else { return }
        probing = false
        atCeilingSince = nil
        lowest = min(lowest, limit)
        epoch += 1
    }
}
