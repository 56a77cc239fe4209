/// What a lane's key served over its last few seconds: when each request still out was sent, and when each answered
/// one (not refused) was sent and came back, so that what the key was serving for this run at any recent moment can
/// be counted afterwards.
///
/// Workers sharing a key learn its level from a refusal: the key was then serving exactly its level, over all of
/// them. Each counts what it had out at the moment the first refused request was sent, from this log, once its
/// answers are in: what each had out when it heard of the refusal (up to half a second later) was not that, since
/// the capacity a paused worker frees goes to those not paused yet (a key of 16 was learnt as 18 that way).
struct ServingLog: Sendable {
    /// Requests out, by send time (uptime ns; several leave in one turn).
    private(set) var out: [UInt64: Int] = [:]
    /// Answers that were not refusals, oldest first (from `head`), and the send times of refused requests.
    private var answered: [(sent: UInt64, done: UInt64)] = []
    private var head = 0
    private(set) var refused: [UInt64] = []
    /// How long answers are kept (nanoseconds): a round of refusals is counted within two seconds.
    static let keep: UInt64 = 5_000_000_000

    /// A request left at `at`.
    mutating func sent(at: UInt64) {
        out[at, default: 0] += 1
    }

    /// The request sent at `sent` came back at `now` (nil: it never left): answered, unless `refused` follows.
    mutating func returned(sent: UInt64, at now: UInt64?) {
        if let n = out[sent] { out[sent] = n > 1 ? n - 1 : nil }
        guard let now else { return }
        answered.append((sent, now))
        forget(before: now)
    }

    /// The answer to the request sent at `sent` was a refusal (a 429): it was never served.
    mutating func refused(sent: UInt64) {
        if let i = answered[head...].lastIndex(where: { $0.sent == sent }) { answered.remove(at: i) }
        refused.append(sent)
    }

    /// Requests the key was serving for this lane at `t`: sent by then, and out then or answered after it.
    func serving(at t: UInt64) -> Int {
        out.reduce(0) { $0 + ($1.key <= t ? $1.value : 0) }
            + answered[head...].reduce(0) { $0 + ($1.sent <= t && $1.done > t ? 1 : 0) }
    }

    private mutating func forget(before now: UInt64) {
        guard now > Self.keep else { return }
        let horizon = now - Self.keep
        while head < answered.count, answered[head].done < horizon { head += 1 }
        if head > 4096 && head * 2 > answered.count {
            answered.removeFirst(head)
            head = 0
        }
        if let first = refused.first, first < horizon { refused.removeAll { $0 < horizon } }
    }
}
