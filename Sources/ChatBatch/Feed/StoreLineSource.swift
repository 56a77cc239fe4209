import Dispatch
import Synchronization

/// A job's lines as a worker claims them from its PostgreSQL store, a few at a time, for the input feed: each comes
/// out as the line it was in the input file (its number and bytes), and the claim that holds it is kept here, by
/// line number, for the statements that later commit the line under its lease.
///
/// The input ends for this worker only when the whole input is loaded and no line is open elsewhere: while another
/// worker loads, or holds lines it may yet die with, this one waits (up to `poll` seconds between looks, or until
/// `cancel()`), so that the last worker standing finishes a job whatever became of the others.
final class StoreLineSource: LineSource, @unchecked Sendable {
    let queue: PostgresWorkQueue
    /// Lines claimed at once, how long a claim holds without renewal, and the wait between looks (seconds).
    let claimSize: Int
    let lease: Double
    let poll: Double
    private var ready: [ClaimedLine] = []
    private var readyHead = 0
    /// Claims handed to the feed and not yet settled, by line number (the feed adds on the input queue, the run
    /// settles on its own).
    private let held = Mutex<[Int: ClaimedLine]>([:])
    private let looking = DispatchSemaphore(value: 0)
    private let cancelled = Mutex(false)

    init(queue: PostgresWorkQueue, claimSize: Int = 16, lease: Double = 60, poll: Double = 1) {
        self.queue = queue
        self.claimSize = claimSize
        self.lease = lease
        self.poll = poll
    }

    /// The next claimed line; nil once the job has no line left for this worker (or it was cancelled).
    func next() throws(ChatBatchError) -> RawLine? {
        // While the lines open elsewhere change (the job's last ones being answered) this worker looks every tenth
        // of a second, so that it ends with the job rather than up to `poll` after; while they do not, less often.
        var wait = min(0.1, poll)
        var openBefore = -1
        while readyHead == ready.count {
            ready = try patiently { () throws(ChatBatchError) in try claimNext() }
            readyHead = 0
            if !ready.isEmpty { break }
            let state = try patiently { () throws(ChatBatchError) in try queue.openElsewhere() }
            if state.loaded && state.open == 0 { return nil }
            if cancelled.withLock({ $0 }) { return nil }
            wait = state.open != openBefore ? min(0.1, poll) : min(poll, wait * 2)
            openBefore = state.open
            _ = looking.wait(timeout: .now() + wait)
        }
        let claimed = ready[readyHead]
        readyHead += 1
        expected -= 1
        held.withLock { $0[claimed.line] = claimed }
        return RawLine(number: claimed.line, bytes: claimed.request, oversize: claimed.oversize)
    }

    /// Where this worker's next look for queued lines starts: after its last claim. A look that finds nothing starts
    /// over from the first line (lines given back by a worker that stopped lie behind it).
    private var claimFrom = 0

    /// Lines the feed still means to read in its current read: no more are claimed (held idle here, they are lines
    /// other workers cannot have).
    private var expected = Int.max

    func expect(_ lines: Int) { expected = lines }

    private func claimNext() throws(ChatBatchError) -> [ClaimedLine] {
        let limit = min(claimSize, max(1, expected))
        var claimed = try queue.claim(limit: limit, lease: lease, from: claimFrom)
        if claimed.isEmpty && claimFrom > 0 {
            claimFrom = 0
            claimed = try queue.claim(limit: limit, lease: lease, from: 0)
        }
        if let last = claimed.last { claimFrom = max(claimFrom, last.line + 1) }
        return claimed
    }

    /// A statement tried again while the store cannot be reached, for up to a lease's length: an outage of the
    /// store pauses the feed, it does not fail a line.
    private func patiently<T>(_ body: () throws(ChatBatchError) -> T) throws(ChatBatchError) -> T {
        try queue.connection.retrying(for: lease, body)
    }

    /// Looks for lines now rather than at the end of the wait (this worker's loader committed some).
    func wake() { looking.signal() }

    /// Stops waiting for lines (the run is stopping): `next()` returns nil at its next look.
    func cancel() {
        cancelled.withLock { $0 = true }
        looking.signal()
    }

    /// False when `next()` would wait for lines (other workers hold the rest, or the input is still loading): the
    /// feed hands over what it has read first.
    func hasLineNow() throws(ChatBatchError) -> Bool {
        if readyHead < ready.count { return true }
        ready = try patiently { () throws(ChatBatchError) in try claimNext() }
        readyHead = 0
        return !ready.isEmpty
    }

    func resentAfterCrash(line: Int) -> Bool { claim(line: line)?.resentAfterCrash == true }

    func earlierLine(sameIDAs line: Int) -> Int? { claim(line: line)?.earlierLine }

    /// The claim that holds `line`, while it is held here.
    func claim(line: Int) -> ClaimedLine? { held.withLock { $0[line] } }

    /// How many claims are held here.
    var heldCount: Int { held.withLock { $0.count } }

    /// The lines whose claims are held here.
    var heldLines: [Int] { held.withLock { Array($0.keys) } }

    /// The line's claim is settled (its outcome committed, or given back): it is no longer held here.
    func settled(line: Int) -> ClaimedLine? { held.withLock { $0.removeValue(forKey: line) } }
}
