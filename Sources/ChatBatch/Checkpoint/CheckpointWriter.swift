import CSQLite
import ChatBatchCore
import Dispatch
import Foundation
import Synchronization

/// A change the writer commits.
enum CheckpointOp: Sendable {
    /// About to send: committed before the request leaves, so a crash leaves it visibly in flight.
    /// Once committed, the claims of one commit are handed to the writer's `onClaimed` together;
    /// when they could not be, `refused` runs for each (the request must not be sent).
    case claim(customID: String, line: Int, bodyHash: String, model: String?, token: Int)
    /// Finished, with its output line.
    case finish(FinishedRecord, attempt: AttemptRecord?)
    /// Back to pending (a retry will claim it again, or a later run will send it).
    case requeue(customID: String, line: Int, bodyHash: String, model: String?, attempt: AttemptRecord?, note: String?)
    /// The provider refused a model: remembered, so a resume sends nothing for it either.
    case refuseModel(ModelRefusal)
    /// Forget a finished row's output (a forced resend of a changed line); outputs are rebuilt at the end.
    case supersede(customID: String)
}

/// Commits checkpoint changes in groups on one serial queue, then appends the finished lines to the output files.
///
/// Every op handed in while a commit is running joins the next commit, so commits stay few under load
/// and immediate when idle. A line reaches an output file only after its row is committed; the files'
/// committed lengths are recorded in the checkpoint, so a resume cuts off any torn or unrecorded tail
/// and writes those lines again from the checkpoint: each line ends up in its file exactly once.
final class CheckpointWriter: Sendable {
    struct Pending {
        var ops: [CheckpointOp] = []
        var scheduled = false
        var failure: (any Error)? = nil
        /// An output file could not be written: keep committing to the checkpoint, stop writing files.
        var outputFailed = false
        /// The run ended and gave up the checkpoint: later changes are dropped.
        var closed = false
    }

    let queue = DispatchQueue(label: "chatbatch.checkpoint")
    let state: Mutex<Pending> = Mutex(Pending())
    // Only touched on `queue`.
    let store: CheckpointStore
    nonisolated(unsafe) let sink: any OutputSink
    nonisolated(unsafe) var statements: Statements?
    /// A forced resend replaced answers whose old lines are in the files: rebuild them when the run ends.
    nonisolated(unsafe) var needsRebuild: Bool
    /// The last output sequence number committed (-1 until read once from the checkpoint).
    nonisolated(unsafe) var lastSeq = -1
    /// When output lengths were last recorded (uptime nanoseconds).
    nonisolated(unsafe) var lastRecorded: UInt64 = 0
    let runID: Int
    /// Told of the first failure: `outputOnly` when only an output file failed (the checkpoint still commits, so
    /// what is in flight can still finish into it).
    let onFailure: @Sendable (_ error: any Error, _ outputOnly: Bool) -> Void
    /// Receives the tokens of claims just committed (their requests may now be sent), or refused.
    let onClaims: @Sendable (_ tokens: [Int], _ committed: Bool) -> Void

    struct Statements {
        let claim, finish, requeue, attempt, supersede: SQLiteStatement
        let nextSeq: SQLiteStatement
    }

    init(
        store: CheckpointStore, sink: any OutputSink, runID: Int, onFailure: @escaping @Sendable (any Error, Bool) -> Void,
        onClaims: @escaping @Sendable ([Int], Bool) -> Void
    ) {
        self.onClaims = onClaims
        self.store = store
        self.sink = sink
        needsRebuild = (try? store.outputNeedsRebuild()) ?? false
        self.runID = runID
        self.onFailure = onFailure
    }

    func prepareStatements() throws(ChatBatchError) -> Statements {
        if let statements { return statements }
        let db = store.db
        let s = Statements(
            claim: try db.prepare("""
                INSERT INTO requests(custom_id, line, state, attempts, body_hash, model, updated_at)
                VALUES(?1, ?2, 'inflight', 1, ?3, ?4, ?5)
                ON CONFLICT(custom_id) DO UPDATE SET state='inflight', attempts=attempts+1, line=?2, body_hash=?3, model=?4,
                    updated_at=?5, ambiguous=ambiguous+crash_resend, crash_resend=0
                """),
            finish: try db.prepare("""
                INSERT INTO requests(custom_id, line, state, attempts, body_hash, model, status_code, request_id, prompt_tokens,
                    completion_tokens, cost, error_code, error_message, latency_ms, output, out_kind, out_seq, updated_at, ttft_ms,
                    cached, saved_tokens, saved_cost, usage_estimated, repaired)
                VALUES(?1, ?2, ?3, 0, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?19, ?20, ?21, ?22, ?23, ?24)
                ON CONFLICT(custom_id) DO UPDATE SET line=?2, state=?3, body_hash=?4, model=?5, status_code=?6, request_id=?7,
                    prompt_tokens=prompt_tokens+?8, completion_tokens=completion_tokens+?9, cost=cost+?10, error_code=?11,
                    error_message=?12, latency_ms=?13, output=?14, out_kind=?15, out_seq=?16, updated_at=?17,
                    ambiguous=ambiguous+?18, ttft_ms=?19, cached=?20, saved_tokens=saved_tokens+?21, saved_cost=saved_cost+?22,
                    usage_estimated=max(usage_estimated, ?23), repaired=?24
                """),
            requeue: try db.prepare("""
                INSERT INTO requests(custom_id, line, state, attempts, body_hash, model, error_message, updated_at)
                VALUES(?1, ?2, 'pending', 0, ?3, ?4, ?5, ?6)
                ON CONFLICT(custom_id) DO UPDATE SET state='pending', error_message=coalesce(?5, error_message), updated_at=?6,
                    ambiguous=ambiguous+?7
                """),
            attempt: try db.prepare("""
                INSERT INTO attempts(custom_id, run_id, attempt, started_at, status, latency_ms, request_id, error, ambiguous)
                VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?)
                """),
            supersede: try db.prepare("UPDATE requests SET out_seq=NULL, out_kind=NULL, state='pending' WHERE custom_id=?"),
            nextSeq: try db.prepare("SELECT coalesce(max(out_seq), 0) FROM requests"))
        statements = s
        return s
    }

    /// Hands in one change; it is committed with whatever else is waiting.
    func submit(_ op: CheckpointOp) {
        let schedule = state.withLock { p -> Bool in
            if p.closed { return false }
            p.ops.append(op)
            if p.scheduled { return false }
            p.scheduled = true
            return true
        }
        if schedule { queue.async { self.flush() } }
    }

    /// Commits everything handed in so far and waits for it, output lines included.
    func drain() {
        queue.sync { self.flush() }
        queue.sync { self.flush(forceRecord: true) }
    }

    /// What the checkpoint says as a run ends.
    struct RunEnding {
        /// A commit or an output write failed during the run.
        var writeFailure: (any Error)?
        /// Prompts left pending, and the spend over every run (nil if it could not be read).
        var pending: Int
        var spent: Double?
    }

    /// Ends the run: commits what is waiting, rebuilds the output files if a forced resend asked for it, flushes
    /// them, records the run's end with the summary `conclude` makes, then closes the checkpoint and its lock.
    /// `conclude` returns the run's result with its exit code and JSON summary, which are recorded with the run.
    ///
    /// `known` (a run that read no input) gives the counts without scanning the checkpoint; otherwise, when
    /// `fingerprint` is given (the run finished every line it read) and nothing is left pending or in flight,
    /// it is recorded so that the next run with the same input can skip it.
    func endRun<Result>(
        log: (String) -> Void, fingerprint: String?, known: CheckpointStore.FinishedInput?,
        _ conclude: (RunEnding) -> (Result, exitCode: Int32, summary: JSON)
    ) -> Result {
        drain()
        let writeFailure = failure
        let result = queue.sync { () -> Result in
            if writeFailure == nil && needsRebuild {
                do {
                    try sink.rebuildAll(from: store)
                    try store.setOutputNeedsRebuild(false)
                    needsRebuild = false
                } catch {
                    log("chatbatch: could not rebuild the output files (\(error)); the next run or `chatbatch export` will")
                }
            }
            sink.sync()
            flush(forceRecord: true)
            let ending: RunEnding
            if let known {
                ending = RunEnding(writeFailure: writeFailure, pending: 0, spent: known.cost)
            } else {
                let counts = (try? store.stateCounts()) ?? [:]
                let totals = try? store.totals()
                ending = RunEnding(writeFailure: writeFailure, pending: counts[.pending] ?? 0, spent: totals?.cost)
                if let fingerprint, let totals, writeFailure == nil, counts[.pending] == nil, counts[.inflight] == nil {
                    try? store.recordFinishedInput(CheckpointStore.FinishedInput(
                        fingerprint: fingerprint, done: counts[.done] ?? 0, failed: counts[.failed] ?? 0,
                        promptTokens: totals.prompt, completionTokens: totals.completion, cost: totals.cost))
                }
            }
            let (result, exitCode, summary) = conclude(ending)
            if writeFailure == nil { try? store.endRun(id: runID, exitCode: exitCode, summary: summary) }
            state.withLock { $0.closed = true }
            statements = nil
            store.closeAndUnlock()
            return result
        }
        return result
    }

    /// The first failure, if a commit or an output write failed (the run must stop).
    var failure: (any Error)? { state.withLock { $0.failure } }

    private func flush(forceRecord: Bool = false) {
        let ops = state.withLock { p -> [CheckpointOp] in
            let ops = p.ops
            p.ops = []
            p.scheduled = false
            return ops
        }
        if state.withLock({ $0.failure != nil && !$0.outputFailed }) {
            refuseClaims(ops)
            return
        }
        do {
            let s = try prepareStatements()
            let db = store.db
            try db.execute("BEGIN IMMEDIATE")
            if lastSeq < 0 {
                try s.nextSeq.bind([])
                lastSeq = try s.nextSeq.step() ? s.nextSeq.value(0).int ?? 0 : 0
                sqlite3_reset(s.nextSeq.stmt)
            }
            var seq = lastSeq
            var written: [(seq: Int, record: FinishedRecord)] = []
            var claimed: [Int] = []
            let now = Date().timeIntervalSince1970
            for op in ops {
                switch op {
                case .claim(let id, let line, let hash, let model, let token):
                    try s.claim.run([.text(id), .int(line), .text(hash), model.map(SQLiteValue.text) ?? .null, .double(now)])
                    claimed.append(token)
                case .finish(let r, let attempt):
                    seq += 1
                    try s.finish.run([
                        .text(r.customID), .int(r.line), .text(r.state.rawValue), .text(r.bodyHash), r.model.map(SQLiteValue.text) ?? .null,
                        r.statusCode.map(SQLiteValue.int) ?? .null, r.requestID.map(SQLiteValue.text) ?? .null,
                        .int(r.promptTokens), .int(r.completionTokens), .double(r.cost),
                        r.errorCode.map(SQLiteValue.text) ?? .null, r.errorMessage.map(SQLiteValue.text) ?? .null,
                        r.latencyMs.map(SQLiteValue.double) ?? .null, .text(r.output), .int(r.kind.rawValue), .int(seq), .double(now),
                        .int(attempt?.ambiguous == true ? 1 : 0), r.ttftMs.map(SQLiteValue.double) ?? .null,
                        .int(r.cached ? 1 : 0), .int(r.savedTokens), .double(r.savedCost), .int(r.usageEstimated ? 1 : 0),
                        .int(r.repaired ? 1 : 0),
                    ])
                    if let attempt { try insert(attempt, s) }
                    written.append((seq, r))
                case .requeue(let id, let line, let hash, let model, let attempt, let note):
                    try s.requeue.run([.text(id), .int(line), .text(hash), model.map(SQLiteValue.text) ?? .null,
                                       note.map(SQLiteValue.text) ?? .null, .double(now), .int(attempt?.ambiguous == true ? 1 : 0)])
                    if let attempt { try insert(attempt, s) }
                case .refuseModel(let refusal):
                    try store.recordRefusedModel(refusal)
                case .supersede(let id):
                    try s.supersede.run([.text(id)])
                    // Persisted with the change: a run that dies before rebuilding leaves the next one to do it.
                    if !needsRebuild { try store.setOutputNeedsRebuild(true) }
                    needsRebuild = true
                }
            }
            // Output lengths are recorded at most every 200 ms (and when the run ends): lines written but not yet
            // recorded are cut off and written again on resume, so recording less often loses nothing.
            let outputFailed = state.withLock { $0.outputFailed }
            let uptime = DispatchTime.now().uptimeNanoseconds
            var positions: [OutputPosition] = []
            if !outputFailed && (forceRecord || uptime - lastRecorded >= 200_000_000) {
                positions = sink.positionsToRecord()
                for p in positions { try store.recordOutputPosition(p) }
                lastRecorded = uptime
            }
            try db.execute("COMMIT")
            sink.markRecorded(positions)
            lastSeq = seq
            if !claimed.isEmpty { onClaims(claimed, true) }
            if !written.isEmpty && !outputFailed {
                do {
                    try sink.append(written)
                } catch {
                    state.withLock { $0.outputFailed = true; if $0.failure == nil { $0.failure = error } }
                    onFailure(error, true)
                }
            }
        } catch {
            try? store.db.execute("ROLLBACK")
            state.withLock { if $0.failure == nil { $0.failure = error } }
            refuseClaims(ops)
            onFailure(error, false)
        }
    }

    /// Tells every claim in `ops` that it was not recorded, so its request is never sent.
    private func refuseClaims(_ ops: [CheckpointOp]) {
        let tokens = ops.compactMap { op -> Int? in
            if case .claim(_, _, _, _, let token) = op { return token }
            return nil
        }
        if !tokens.isEmpty { onClaims(tokens, false) }
    }

    private func insert(_ a: AttemptRecord, _ s: Statements) throws(ChatBatchError) {
        try s.attempt.run([
            .text(a.customID), .int(runID), .int(a.attempt), .double(a.startedAt), a.status.map(SQLiteValue.int) ?? .null,
            .double(a.latencyMs), a.requestID.map(SQLiteValue.text) ?? .null, a.error.map(SQLiteValue.text) ?? .null,
            .int(a.ambiguous ? 1 : 0),
        ])
    }
}
