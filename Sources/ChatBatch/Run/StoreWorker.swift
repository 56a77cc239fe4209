import ChatBatchCore
import Dispatch
import Foundation
import Synchronization

/// One turn handed to the store worker: its changes, the requests that leave once they are recorded, and the lines
/// of the requests that left at once (recorded ahead).
struct StoreTurn: Sendable {
    var ops: [CheckpointOp]
    var sends: [ScheduledJob]
    var sentAhead: Set<Int>
}

/// What came of recording a group of turns in the store.
struct StoreRecord: Sendable {
    /// The requests that may leave now.
    var sends: [ScheduledJob]
    /// Requests whose lines this worker no longer holds, and requests that must not leave (nothing was recorded).
    var lost: [ScheduledJob] = []
    var notSent: [ScheduledJob] = []
    /// The job's spend after these turns (when they added to it), and why nothing could be recorded.
    var spent: Double? = nil
    var failure: ChatBatchError? = nil
}

/// One worker of a job held in a PostgreSQL store (`--store`): any number of them, on any machines, run one job.
///
/// The store holds the job: its lines, who holds which (a lease renewed here every third of its length), and every
/// outcome. The worker runs the same machine, transport and checkpoint writer as a run on a checkpoint file, with
/// its lines claimed from the store (`StoreLineSource`) and a private checkpoint of its own in a temporary folder
/// (its attempts, for this run's summary; removed at the end). Each turn is committed locally, then recorded in the
/// store (with the turns that came meanwhile, in one statement) before its requests leave: a claim about to leave is
/// committed there fenced by its lease (a line whose lease was lost is not sent), and an outcome is kept only while
/// its lease holds.
///
/// It uses three connections, one per serial queue: the input queue's (claims), the run queue's (the turn's
/// statements) and its own queue's (renewals); a fourth loads the input while the others work.
final class StoreWorker: @unchecked Sendable {
    let address: PostgresAddress
    let name: String
    let lease: Double
    /// The run queue's connection.
    let runSide: PostgresWorkQueue
    /// The input queue's connection, through the feed's line source.
    let source: StoreLineSource
    /// The worker's private folder: its checkpoint and scratch outputs.
    let folder: String
    /// The store queue's connection: renewals and the keys' shared state.
    let renewals: PostgresWorkQueue
    /// Where renewals and key sharing run, one after the other.
    let storeQueue = DispatchQueue(label: "chatbatch.store")
    let stopped = Mutex(false)
    /// The keys' names in the store (a hash of the endpoint and the key, never the key), by route; and what this
    /// worker last published and heard of each (store queue only).
    var keyHashes: [String] = []
    var keysHeard = KeysHeard()
    /// Where each turn's changes are recorded in the store, one statement for every turn that came meanwhile.
    let recordQueue = DispatchQueue(label: "chatbatch.store.record")
    /// Turns waiting for the record queue (their changes, the requests that wait for them, the lines of those that
    /// left at once), and whether it is at work on them.
    private let waiting = Mutex<(turns: [StoreTurn], busy: Bool)>(([], false))
    /// Lines recorded as about to leave ahead of their sends (taken on the run queue, made on the record queue).
    let reserve: Mutex<SendReserve>
    /// The run's window now (set by the driver): an eighth of it is reserved ahead.
    var window: (@Sendable () -> Int)? = nil
    /// What the run does once a group of turns is recorded (set by the driver): send what may leave, and hear of
    /// lines lost, the job's spend, or a store that cannot be written.
    var recorded: (@Sendable (StoreRecord) -> Void)? = nil
    /// Claims whose requests are on the wire, by custom_id (record queue only).
    private var onWire: [String: ClaimedLine] = [:]
    /// What the whole job has spent, as of this worker's last outcome (run queue only; nil until then).
    private(set) var jobSpent: Double? = nil
    /// Lines of the job still open in the store when this worker stopped.
    private(set) var openLines: Int? = nil
    /// Said to the run (the driver's `log`).
    private let log: @Sendable (String) -> Void
    /// Where the job's results and errors files go when a worker finds the job complete (the user's paths).
    private(set) var results = "", errors = ""
    /// Outcomes another worker's claim replaced (this worker lost the lease first), said once and counted.
    private(set) var outcomesNotKept = 0
    /// What `report` reads, written beside the turns.
    let history: StoreHistory
    /// The last control read from the store (store queue only): a worker applies those given after it joined.
    private var controlsAfter = 0

    /// Connects to the store, registers this worker on the job `config.files.jobName` (checking that a job loaded
    /// before was loaded from this input, when this worker has it) and makes the private folder.
    init(_ config: RunConfiguration, store: String, log: @escaping @Sendable (String) -> Void) throws(ChatBatchError) {
        self.log = log
        address = try PostgresAddress(store)
        name = config.files.jobName
        lease = config.files.leaseSeconds
        reserve = Mutex(SendReserve(validitySeconds: config.files.leaseSeconds / 4))
        let input = config.files.input
        let fingerprint = FileManager.default.isReadableFile(atPath: input) ? Self.fingerprint(input) : nil
        var host = [CChar](repeating: 0, count: 256)
        gethostname(&host, host.count)
        let registered = try PostgresWorkQueue(
            connection: try PostgresConnection(address), job: name, fingerprint: fingerprint,
            host: String(decoding: host.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self),
            pid: Int(getpid()), concurrency: config.concurrency)
        runSide = registered
        renewals = try PostgresWorkQueue(sibling: registered)
        history = StoreHistory { () throws(ChatBatchError) in try PostgresWorkQueue(sibling: registered) }
        if config.choices.retryFailed {
            let n = try registered.requeueFailed()
            if n > 0 {
                log("chatbatch: --retry-failed: \(n) failed lines of job '\(name)' are queued to be sent again")
            }
        }
        // The report's row for this worker: its settings, with the outputs the user named.
        var settings = PreparedRun.settings(config)
        settings["prices_unknown"] = .array(config.routes.filter { !$0.pricesKnown }.map { .string($0.name) })
        try registered.recordSettings(settings.serialized())
        controlsAfter = try registered.lastControl()
        // A claim a quarter of the worker's concurrency at a time (16 at least): few round trips, few lines held idle.
        source = StoreLineSource(
            queue: try PostgresWorkQueue(sibling: registered), claimSize: min(256, max(16, config.concurrency / 4)),
            lease: config.files.leaseSeconds)
        let base = ProcessInfo.processInfo.environment["TMPDIR"].flatMap { $0.isEmpty ? nil : $0 } ?? "/tmp"
        var template = Array((base + "/chatbatch-worker-XXXXXX").utf8CString)
        guard let made = mkdtemp(&template) else {
            throw ChatBatchError(
                .unwritable, "cannot make a worker folder in \(base): \(String(cString: strerror(errno)))")
        }
        folder = String(cString: made)
        if fingerprint != nil { startLoading(input, log: log) }
    }

    /// What identifies an input across machines: its size and a hash of its bytes (not its path or time).
    static func fingerprint(_ path: String) -> String? {
        var st = stat()
        guard stat(path, &st) == 0, let hash = InputFingerprint.contentHash(path) else { return nil }
        return "store-v1:\(st.st_size):\(StableHash.hex(hash))"
    }

    /// The job as this worker runs it locally: its checkpoint and outputs in the private folder.
    func local(_ config: RunConfiguration) -> RunConfiguration {
        results = config.files.output
        errors = config.files.errors
        var c = config
        c.files.checkpoint = folder + "/checkpoint.sqlite"
        c.files.output = folder + "/results.jsonl"
        c.files.errors = folder + "/errors.jsonl"
        c.files.overwrite = true
        return c
    }

    /// Loads the input into the store on a connection of its own, when no other worker is loading it; the lines
    /// are claimed (here and elsewhere) as they are committed.
    private func startLoading(_ input: String, log: @escaping @Sendable (String) -> Void) {
        let address = address, name = name, runSide = runSide, source = source
        DispatchQueue(label: "chatbatch.store.load").async {
            do throws(ChatBatchError) {
                let loader = PostgresWorkQueue(
                    connection: try PostgresConnection(address), job: runSide.job, worker: runSide.worker)
                // The first lines are claimed as soon as they are committed, not at the feed's next look.
                if let n = try StoreLoader.load(input, into: loader, committed: { source.wake() }), n > 0 {
                    log("chatbatch: loaded \(n) lines of \(input) into job '\(name)' in the store \(address)")
                }
            } catch {
                log("chatbatch: could not load \(input) into the store (\(error.message)); another worker may")
            }
        }
    }

    /// Renews this worker's leases and heartbeat every third of the lease, until `stop()`.
    func startRenewing(log: @escaping @Sendable (String) -> Void) {
        storeQueue.asyncAfter(deadline: .now() + lease / 3) { [self] in
            guard !stopped.withLock({ $0 }) else { return }
            do throws(ChatBatchError) {
                try renewals.renew(lease: lease)
            } catch {
                if !renewals.connection.isUp { try? renewals.connection.reset() }
                log("chatbatch: could not renew this worker's leases in the store (\(error.message)); trying again")
            }
            startRenewing(log: log)
        }
    }

    /// Of a turn's requests, those recorded ahead as about to leave, whose reservations still hold: they leave now.
    func leavingNow(_ sends: [ScheduledJob]) -> [ScheduledJob] {
        let now = DispatchTime.now().uptimeNanoseconds
        return reserve.withLock { r in sends.filter { r.take($0.request.line, now: now) } }
    }

    /// Hands one turn's changes to the record queue, with the requests that leave once they are recorded and those
    /// that left at once (`sentAhead`: recorded before).
    func submit(_ ops: [CheckpointOp], _ sends: [ScheduledJob], sentAhead: [ScheduledJob] = []) {
        let start = waiting.withLock { w -> Bool in
            w.turns.append(StoreTurn(ops: ops, sends: sends, sentAhead: Set(sentAhead.map(\.request.line))))
            defer { w.busy = true }
            return !w.busy
        }
        if start { recordQueue.async { self.recordWaiting() } }
    }

    /// Records every waiting turn in one statement, and says what came of it, until none is waiting.
    private func recordWaiting() {
        while true {
            let turns = waiting.withLock { w -> [StoreTurn] in
                defer { w.turns = [] }
                if w.turns.isEmpty { w.busy = false }
                return w.turns
            }
            if turns.isEmpty { return }
            let sends = turns.flatMap(\.sends)
            var record = StoreRecord(sends: sends)
            do {
                let sentAhead = turns.reduce(into: Set<Int>()) { $0.formUnion($1.sentAhead) }
                let lost = try mirror(turns.flatMap(\.ops), sends: sends, sentAhead: sentAhead, log: log)
                let gone = Set(lost.map(\.request.line))
                record.sends = sends.filter { !gone.contains($0.request.line) }
                record.lost = lost
                record.spent = jobSpent
            } catch {
                record.sends = []
                record.notSent = sends
                record.failure = error
            }
            recorded?(record)
        }
    }

    /// Records turns already committed locally in the store, before their requests leave: outcomes (kept while
    /// their leases hold), requests that never left, and claims about to leave. Returns the jobs whose lease was lost:
    /// they must not be sent. A lost connection is tried again for up to a lease's length (nothing is sent
    /// meanwhile); past that the error is thrown and the run stops, resumable.
    func mirror(
        _ ops: [CheckpointOp], sends: [ScheduledJob], sentAhead: Set<Int> = [], log: (String) -> Void
    ) throws(ChatBatchError) -> [ScheduledJob] {
        var outcomes: [LineOutcome] = []
        var unsent: [ClaimedLine] = []
        var leaving: [ClaimedLine] = []
        var controls: [(id: Int, outcome: String)] = []
        for op in ops {
            switch op {
            case .controlSettled(let id, let outcome): controls.append((id, outcome))
            case .claim(let id, let line, _, _, _, _):
                reserve.withLock { $0.drop(line) }
                if let claim = source.claim(line: line) {
                    if !sentAhead.contains(line) { leaving.append(claim) }
                    onWire[id] = claim
                }
            case .unsent(let id):
                if let claim = onWire.removeValue(forKey: id) { unsent.append(claim) }
            case .finish(let record, _):
                reserve.withLock { $0.drop(record.line) }
                onWire.removeValue(forKey: record.customID)
                guard let claim = source.settled(line: record.line) else { continue }
                outcomes.append(
                    LineOutcome(
                        claim: claim, result: Array(record.output.utf8), failed: record.kind == .errors,
                        promptTokens: record.promptTokens, completionTokens: record.completionTokens,
                        cost: record.cost))
            default: continue
            }
        }
        if !controls.isEmpty {
            // Rare, and said in the log as well: a store that cannot take them now does not hold the turn up.
            let at = Date().timeIntervalSince1970
            for c in controls { try? runSide.settleControl(id: c.id, outcome: c.outcome, at: at) }
        }
        // The statement records the next few lines as about to leave too (see `SendReserve`).
        let ahead = reserveAhead(besides: leaving)
        if outcomes.isEmpty && unsent.isEmpty && leaving.isEmpty && ahead.isEmpty {
            history.gather(ops, kept: [])  // a retry's attempt, a sample: nothing of the turn's own statement
            return []
        }
        let sentAt = DispatchTime.now().uptimeNanoseconds
        let record = try retrying(log: log) { () throws(ChatBatchError) -> TurnRecord in
            try runSide.turn(outcomes: outcomes, unsent: unsent, leaving: leaving + ahead, margin: lease / 4)
        }
        let kept = record.kept, allowed = record.allowed
        reserve.withLock { $0.reserved(ahead.map(\.line).filter(allowed.contains), sentAt: sentAt) }
        history.gather(ops, kept: kept)
        if let spent = record.spent { jobSpent = spent }
        for outcome in outcomes where !kept.contains(outcome.claim.line) {
            outcomesNotKept += 1
            if outcomesNotKept <= 3 {
                log(
                    "chatbatch: line \(outcome.claim.line): this worker's lease lapsed and another worker took the "
                        + "line over; this answer is not kept (the line is counted as possibly billed twice)")
            }
        }
        let lost = sends.filter { !allowed.contains($0.request.line) }
        for job in lost {
            onWire.removeValue(forKey: job.request.customID)
            _ = source.settled(line: job.request.line)
        }
        return lost
    }

    /// The lines to record as about to leave ahead of their sends: the lowest held lines not on the wire, not
    /// recorded as leaving in this statement, and not reserved already, up to an eighth of the run's window.
    private func reserveAhead(besides leaving: [ClaimedLine]) -> [ClaimedLine] {
        let busy = Set(onWire.values.map(\.line)).union(leaving.map(\.line))
        let candidates = source.heldLines.filter { !busy.contains($0) }
        let size = max(1, (window?() ?? 8) / 8)
        let now = DispatchTime.now().uptimeNanoseconds
        let lines = reserve.withLock { r in
            r.size = size
            return r.wanted(from: candidates, now: now)
        }
        return lines.compactMap { source.claim(line: $0) }
    }

    /// Runs `body` on the run queue's connection, connecting again while the store cannot be reached, for up to a
    /// lease's length (said once).
    private func retrying<T>(log: (String) -> Void, _ body: () throws(ChatBatchError) -> T) throws(ChatBatchError)
        -> T
    {
        try runSide.connection.retrying(
            for: lease,
            outage: { error in
                log(
                    "chatbatch: the store \(address) cannot be reached (\(error.message)); nothing is sent until it "
                        + "can, for up to \(Int(lease)) s")
            }, body)
    }

    /// The worker stops: renewals end, the lines it holds whose requests never left go back to the queue at once,
    /// and it no longer counts as live. Returns whether the job is complete (every line settled).
    func stop() -> Bool {
        stopped.withLock { $0 = true }
        source.cancel()
        storeQueue.sync {}
        recordQueue.sync {}
        let unwritten = history.finish()
        if unwritten > 0 {
            log(
                "chatbatch: \(unwritten) rows of what `report` reads of this worker could not be written to the store "
                    + "(its answers and costs are there; only the report misses them)")
        }
        // Lines recorded as about to leave that never did go back as not sent: no one paid for them.
        let reserved = reserve.withLock { $0.removeAll() }.compactMap { source.claim(line: $0) }
        if !reserved.isEmpty {
            _ = try? retrying(log: { _ in }) { () throws(ChatBatchError) in
                try runSide.turn(outcomes: [], unsent: reserved, leaving: [])
            }
        }
        _ = try? retrying(log: { _ in }) { () throws(ChatBatchError) in try runSide.stopWorker() }
        let counts = (try? runSide.counts()) ?? [:]
        let loaded = (try? runSide.loaded().all) ?? false
        openLines = (counts["queued"] ?? 0) + (counts["leased"] ?? 0)
        return loaded && openLines == 0
    }

    /// Controls given to the job since the last look (`chatbatch control` on a store), oldest first; none while the
    /// store cannot be read (the next look reads them).
    func pendingControls() -> [ControlRequest] {
        storeQueue.sync {
            guard let rows = try? renewals.controls(after: controlsAfter) else { return [] }
            controlsAfter = rows.map(\.id).max() ?? controlsAfter
            return rows.compactMap { row in
                ControlAction(recorded: row.action).map {
                    ControlRequest(
                        id: row.id, action: $0, provider: row.provider, host: row.host, pid: row.pid, at: row.givenAt)
                }
            }
        }
    }

    /// Removes the private folder.
    func removeFolder() {
        try? FileManager.default.removeItem(atPath: folder)
    }
}
