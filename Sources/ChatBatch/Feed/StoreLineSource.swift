/// A job's lines as a worker claims them from its PostgreSQL store, a few at a time, for the input feed: each comes
/// out as the line it was in the input file (its number and bytes), and the claim that holds it is kept here, by
/// line number, for the statements that later commit the line under its lease.
final class StoreLineSource: LineSource {
    let queue: PostgresWorkQueue
    /// Lines claimed at once, and how long a claim holds without renewal (seconds).
    let claimSize: Int
    let lease: Double
    private var ready: [ClaimedLine] = []
    private var readyHead = 0
    /// Claims handed to the feed and not yet settled, by line number.
    private(set) var held: [Int: ClaimedLine] = [:]

    init(queue: PostgresWorkQueue, claimSize: Int = 16, lease: Double = 60) {
        self.queue = queue
        self.claimSize = claimSize
        self.lease = lease
    }

    /// The next claimed line; nil when nothing can be claimed now (every line is settled or held by a worker).
    func next() throws(ChatBatchError) -> RawLine? {
        if readyHead == ready.count {
            ready = try queue.claim(limit: claimSize, lease: lease)
            readyHead = 0
            if ready.isEmpty { return nil }
        }
        let claimed = ready[readyHead]
        readyHead += 1
        held[claimed.line] = claimed
        return RawLine(number: claimed.line, bytes: claimed.request, oversize: nil)
    }

    /// The line's claim is settled (its outcome committed, or given back): it is no longer held here.
    func settled(line: Int) -> ClaimedLine? { held.removeValue(forKey: line) }
}
