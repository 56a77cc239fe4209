/// Whether the endpoint works: it answered before (in this run or one before, as the checkpoint says), and an
/// outage under way (nothing reaches it: refused connections, failed lookups or handshakes).
///
/// Before the endpoint ever answered, its first failure to be reached stops the run at once with the cause (a
/// wrong URL or port is not an outage). After, an outage pauses sending: one request probes it with backoff
/// until it answers, and a run stops, resumable, once the outage outlasts `outage_budget`. An outage uses up no
/// line's attempts.
struct EndpointHealth: Sendable {
    /// Something this endpoint answered (any HTTP status) is on record.
    private(set) var proven: Bool
    /// The endpoint answered for the first time in this checkpoint during this run (to be recorded once).
    private(set) var newlyProven = false
    private(set) var outage: Outage? = nil

    /// An outage under way.
    struct Outage: Sendable {
        var since: UInt64
        var probes = 0
        var reason: String
    }

    init(proven: Bool) { self.proven = proven }

    /// The endpoint answered (any HTTP status): returns the outage it ended, if there was one.
    mutating func answered() -> Outage? {
        if !proven { newlyProven = true }
        proven = true
        defer { outage = nil }
        return outage
    }

    /// Records that the first answer was written down.
    mutating func recordedProven() { newlyProven = false }

    /// Nothing reached the endpoint at `now`. Returns the wait before the next probe, or nil when the outage has
    /// outlasted `budget` seconds (the run must stop); `isNew` when this starts an outage.
    mutating func unreachable(_ reason: String, now: UInt64, budget: Double, base: Double) -> (
        wait: Double?, isNew: Bool
    ) {
        let isNew = outage == nil
        var o = outage ?? Outage(since: now, reason: reason)
        o.probes += 1
        o.reason = reason
        outage = o
        if Double(now &- o.since) / 1e9 > budget { return (nil, isNew) }
        // 0.5, 1, 2, 4 … seconds between probes, at most 30.
        return (min(30, max(0.05, base) * Double(1 << min(6, o.probes - 1))), isNew)
    }
}

/// Failed lines held back while nothing has succeeded in this run: when the first few answers all fail the same
/// way (a wrong key a proxy answers with 400, an unknown model on every line), the run stops with that message and
/// leaves the lines pending, instead of paying to fail every line.
struct FirstFailures: Sendable {
    /// How many identical failures, with no success, stop the run.
    static let limit = 5

    struct Held: Sendable {
        var record: FinishedRecord
        var attempt: AttemptRecord?
        var signature: String
    }

    private(set) var held: [Held] = []
    /// Something succeeded: failures are the lines' own from now on.
    private(set) var settled = false

    /// Holds a failure; true when the held failures now show a systematic one (all the same, `limit` of them).
    mutating func hold(_ record: FinishedRecord, _ attempt: AttemptRecord?, signature: String) -> Bool {
        held.append(Held(record: record, attempt: attempt, signature: signature))
        return held.count >= Self.limit && Set(held.map(\.signature)).count == 1
    }

    /// Whether failures are still held back (nothing has succeeded, and they have all been alike).
    var holding: Bool { !settled && Set(held.map(\.signature)).count <= 1 }

    /// Something succeeded (or failures differ): returns the held failures, to be written as the lines' own.
    mutating func release(settle: Bool = false) -> [Held] {
        if settle { settled = true }
        defer { held = [] }
        return held
    }
}
