import ChatBatchCore
import Dispatch
import Foundation

/// A change the writer commits.
enum CheckpointOp: Sendable {
    /// About to send: committed before the request leaves, so a crash leaves it visibly in flight, with an attempt
    /// row that says "sent, no answer recorded" until its answer (or the news that it never left) replaces it.
    case claim(customID: String, line: Int, bodyHash: String, model: String?, attempt: Int, route: Int)
    /// A claimed request never left (the run stopped first, or the transport gave it back): its attempt row goes.
    case unsent(customID: String)
    /// Finished, with its output line.
    case finish(FinishedRecord, attempt: AttemptRecord?)
    /// Back to pending (a retry will claim it again, or a later run will send it).
    case requeue(customID: String, line: Int, bodyHash: String, model: String?, attempt: AttemptRecord?, note: String?)
    /// A provider refused a model: remembered, so a resume sends nothing for it there either.
    case refuseModel(ModelRefusal, route: Int)
    /// A finished row is sent again (a forced resend, a retried failure, another endpoint's answer): it keeps its
    /// answer until a new one replaces it, and the outputs are rebuilt at the end.
    case supersede(customID: String)
    /// Forget a row altogether (a line that was invalid and is fixed now has its `line-N` row removed).
    case forget(customID: String)
    /// The endpoint answered: it is known to work (a failure of its first request no longer stops a run).
    case endpointAnswered(route: Int)
    /// Where the run stood (the report's timeline).
    case sample(inflight: Int, window: Int, paused: Bool, route: Int)
    /// A control was taken (applied or refused), with what came of it.
    case controlSettled(id: Int, outcome: String)
}

/// How a commit went.
enum CommitOutcome {
    case committed
    /// The checkpoint could not be written: nothing of this commit is recorded (its claims must not be sent).
    case checkpointFailed(ChatBatchError)
    /// The checkpoint holds the commit, but the output files could not be written (they are rebuilt from it later).
    case outputFailed(ChatBatchError)
}

/// Commits checkpoint changes, a group at a time, then appends the finished lines to the output files.
///
/// Used on the run's queue only: the run hands it everything one turn decided (claims and answers together), so a
/// turn costs one commit. A line reaches an output file only after its row is committed; the files' committed
/// lengths are recorded in the checkpoint, so a resume cuts off any torn or unrecorded tail and writes those lines
/// again from the checkpoint: each line ends up in its file exactly once.
final class CheckpointWriter {
    let store: CheckpointStore
    let sink: any OutputSink
    let runID: Int
    /// The endpoint id of each route (the run's endpoints, in order).
    let endpointIDs: [Int]
    private var statements: Statements?
    /// A forced resend replaced answers whose old lines are in the files: rebuild them when the run ends.
    private var needsRebuild: Bool
    /// The last output sequence number committed (-1 until read once from the checkpoint).
    private var lastSeq = -1
    /// When output lengths were last recorded (uptime nanoseconds).
    private var lastRecorded: UInt64 = 0
    /// The first failure; after a checkpoint failure nothing more is committed, after an output failure the
    /// checkpoint still is (what is in flight finishes into it) but the files are not written.
    private(set) var failure: ChatBatchError?
    private var outputFailed = false
    /// Answered lines this run set out to answer again (hashes of their custom_ids) and has not yet: they keep
    /// their old answer, and the run counts them as left pending.
    private var unreplaced = Set<UInt64>()
    /// The attempt row written at each claim not yet answered, by custom_id (a line is in flight once at a time).
    private var openAttempts: [String: Int] = [:]
    /// Folds the log into the file off the commit path (nil: SQLite's automatic checkpoint does, inside commits).
    private let walCheckpointer: WALCheckpointer?

    struct Statements {
        let claim, finish, requeue, openAttempt, settleAttempt, dropAttempt, forget, sample, answered: SQLiteStatement
        let nextSeq: SQLiteStatement
    }

    init(store: CheckpointStore, sink: any OutputSink, runID: Int, endpointIDs: [Int]) {
        self.store = store
        self.sink = sink
        self.runID = runID
        self.endpointIDs = endpointIDs
        needsRebuild = (try? store.outputNeedsRebuild()) ?? false
        walCheckpointer = try? WALCheckpointer(path: store.path, writer: store.db)
    }

    private func prepareStatements() throws(ChatBatchError) -> Statements {
        if let statements { return statements }
        let db = store.db
        let s = Statements(
            claim: try db.prepare(
                """
                INSERT INTO requests(custom_id, line, state, attempts, body_hash, model, updated_at)
                VALUES(:custom_id, :line, 'inflight', 1, :body_hash, :model, :now)
                ON CONFLICT(custom_id) DO UPDATE SET state='inflight', attempts=attempts+1, line=:line,
                    body_hash=CASE WHEN out_seq IS NULL THEN :body_hash ELSE body_hash END, model=:model,
                    updated_at=:now, ambiguous=ambiguous+crash_resend, crash_resend=0
                """),
            finish: try db.prepare(
                """
                INSERT INTO requests(custom_id, line, state, attempts, body_hash, model, status_code, request_id,
                    prompt_tokens, completion_tokens, cost, error_code, error_message, latency_ms, output, out_kind,
                    out_seq, updated_at, ttft_ms, cached, saved_tokens, saved_cost, usage_estimated, repaired,
                    endpoint_id, provider)
                VALUES(:custom_id, :line, :state, 0, :body_hash, :model, :status_code, :request_id,
                    :prompt_tokens, :completion_tokens, :cost, :error_code, :error_message, :latency_ms, :output,
                    :out_kind, :out_seq, :now, :ttft_ms, :cached, :saved_tokens, :saved_cost, :usage_estimated,
                    :repaired, :endpoint_id, :provider)
                ON CONFLICT(custom_id) DO UPDATE SET line=:line, state=:state, body_hash=:body_hash, model=:model,
                    status_code=:status_code, request_id=:request_id, prompt_tokens=prompt_tokens+:prompt_tokens,
                    completion_tokens=completion_tokens+:completion_tokens, cost=cost+:cost, error_code=:error_code,
                    error_message=:error_message, latency_ms=:latency_ms, output=:output, out_kind=:out_kind,
                    out_seq=:out_seq, updated_at=:now, ambiguous=ambiguous+:ambiguous, ttft_ms=:ttft_ms,
                    cached=:cached, saved_tokens=saved_tokens+:saved_tokens, saved_cost=saved_cost+:saved_cost,
                    usage_estimated=max(usage_estimated, :usage_estimated), repaired=:repaired,
                    endpoint_id=:endpoint_id, provider=:provider
                """),
            requeue: try db.prepare(
                """
                INSERT INTO requests(custom_id, line, state, attempts, body_hash, model, error_message, updated_at)
                VALUES(:custom_id, :line, 'pending', 0, :body_hash, :model, :note, :now)
                ON CONFLICT(custom_id) DO UPDATE SET state=\(CheckpointStore.answeredStateOrPending),
                    error_message=coalesce(:note, error_message), updated_at=:now, ambiguous=ambiguous+:ambiguous
                """),
            openAttempt: try db.prepare(
                """
                INSERT INTO attempts(custom_id, run_id, attempt, started_at, error, endpoint_id)
                VALUES(:custom_id, :run_id, :attempt, :now, :error, :endpoint_id)
                RETURNING id
                """),
            // One statement writes what came back: into the row opened at the claim (`:id`), or a new row when
            // none was opened (`:id` null: an answer settled without a claim).
            settleAttempt: try db.prepare(
                """
                INSERT INTO attempts(id, custom_id, run_id, attempt, started_at, status, latency_ms, request_id, error,
                    ambiguous, endpoint_id, inflight, window)
                VALUES(:id, :custom_id, :run_id, :attempt, :started_at, :status, :latency_ms, :request_id, :error,
                    :ambiguous, :endpoint_id, :inflight, :window)
                ON CONFLICT(id) DO UPDATE SET started_at=:started_at, status=:status, latency_ms=:latency_ms,
                    request_id=:request_id, error=:error, ambiguous=:ambiguous, endpoint_id=:endpoint_id,
                    inflight=:inflight, window=:window
                """),
            dropAttempt: try db.prepare("DELETE FROM attempts WHERE id=?"),
            forget: try db.prepare("DELETE FROM requests WHERE custom_id=?"),
            sample: try db.prepare(
                "INSERT INTO samples(run_id, t, endpoint_id, inflight, window, paused) VALUES(?, ?, ?, ?, ?, ?)"),
            answered: try db.prepare("UPDATE endpoints SET first_success_at=coalesce(first_success_at, ?) WHERE id=?"),
            nextSeq: try db.prepare("SELECT coalesce(max(out_seq), 0) FROM requests"))
        statements = s
        return s
    }

    /// Commits `ops` in one transaction, then appends their finished lines to the output files.
    @discardableResult
    func commit(_ ops: [CheckpointOp], forceRecord: Bool = false) -> CommitOutcome {
        if let failure, !outputFailed { return .checkpointFailed(failure) }
        var written: [(seq: Int, record: FinishedRecord)] = []
        var positions: [OutputPosition] = []
        do {
            let s = try prepareStatements()
            try store.db.inTransaction { () throws(ChatBatchError) in
                if lastSeq < 0 { lastSeq = try s.nextSeq.scalar([])?.int ?? 0 }
                var seq = lastSeq
                let now = Date().timeIntervalSince1970
                for op in ops { try apply(op, s, now: now, seq: &seq, written: &written) }
                // Output lengths are recorded at most every 200 ms (and when the run ends): lines written but not yet
                // recorded are cut off and written again on resume, so recording less often loses nothing.
                let uptime = DispatchTime.now().uptimeNanoseconds
                if !outputFailed && (forceRecord || uptime - lastRecorded >= 200_000_000) {
                    positions = sink.positionsToRecord()
                    for p in positions { try store.recordOutputPosition(p) }
                    lastRecorded = uptime
                }
                lastSeq = seq
            }
        } catch {
            failure = failure ?? error
            return .checkpointFailed(error)
        }
        walCheckpointer?.committed()
        sink.markRecorded(positions)
        guard !written.isEmpty, !outputFailed else { return .committed }
        do {
            try sink.append(written)
        } catch {
            let error = error as? ChatBatchError ?? ChatBatchError(.writeFailed, "\(error)")
            outputFailed = true
            failure = failure ?? error
            return .outputFailed(error)
        }
        return .committed
    }

    private func apply(
        _ op: CheckpointOp, _ s: Statements, now: Double, seq: inout Int,
        written: inout [(seq: Int, record: FinishedRecord)]
    ) throws(ChatBatchError) {
        switch op {
        case .claim(let id, let line, let hash, let model, let attempt, let route):
            try s.claim.run([
                "custom_id": .text(id), "line": .int(line), "body_hash": .text(hash), "model": .optional(model),
                "now": .double(now)
            ])
            let row = try s.openAttempt.row([
                "custom_id": .text(id), "run_id": .int(runID), "attempt": .int(attempt), "now": .double(now),
                "error": .text(Self.noAnswerRecorded), "endpoint_id": .int(endpointID(route))
            ])
            if let row = row?["id"].int { openAttempts[id] = row }
        case .unsent(let id):
            try settleAttempt(of: id, nil, s)
        case .finish(let r, let attempt):
            if !unreplaced.isEmpty { unreplaced.remove(StableHash.of(r.customID)) }
            seq += 1
            try s.finish.run([
                "custom_id": .text(r.customID), "line": .int(r.line), "state": .text(r.state.rawValue),
                "body_hash": .text(r.bodyHash), "model": .optional(r.model), "status_code": .optional(r.statusCode),
                "request_id": .optional(r.requestID), "prompt_tokens": .int(r.promptTokens),
                "completion_tokens": .int(r.completionTokens), "cost": .double(r.cost),
                "error_code": .optional(r.errorCode), "error_message": .optional(r.errorMessage),
                "latency_ms": .optional(r.latencyMs), "output": .text(r.output), "out_kind": .int(r.kind.rawValue),
                "out_seq": .int(seq), "now": .double(now), "ambiguous": .int(attempt?.ambiguous == true ? 1 : 0),
                "ttft_ms": .optional(r.ttftMs), "cached": .int(r.cached ? 1 : 0), "saved_tokens": .int(r.savedTokens),
                "saved_cost": .double(r.savedCost), "usage_estimated": .int(r.usageEstimated ? 1 : 0),
                "repaired": .int(r.repaired ? 1 : 0), "endpoint_id": .optional(r.route.map(endpointID)),
                "provider": .optional(r.provider)
            ])
            try settleAttempt(of: r.customID, attempt, s)
            written.append((seq, r))
        case .requeue(let id, let line, let hash, let model, let attempt, let note):
            try s.requeue.run([
                "custom_id": .text(id), "line": .int(line), "body_hash": .text(hash), "model": .optional(model),
                "note": .optional(note), "now": .double(now), "ambiguous": .int(attempt?.ambiguous == true ? 1 : 0)
            ])
            try settleAttempt(of: id, attempt, s)
        case .refuseModel(let refusal, let route):
            try store.recordRefusedModel(refusal, endpointID: endpointID(route))
        case .supersede(let id):
            unreplaced.insert(StableHash.of(id))
            // The row keeps its answer until a new one replaces it (a resend that never gets an answer changes
            // nothing); the replacement is appended to the files, so they are rebuilt without the old line.
            // Persisted with the change: a run that dies before rebuilding leaves the next one to do it.
            if !needsRebuild { try store.setOutputNeedsRebuild(true) }
            needsRebuild = true
        case .forget(let id):
            try s.forget.run([.text(id)])
            if !needsRebuild { try store.setOutputNeedsRebuild(true) }
            needsRebuild = true
        case .endpointAnswered(let route):
            try s.answered.run([.double(now), .int(endpointID(route))])
        case .sample(let inflight, let window, let paused, let route):
            try s.sample.run([
                .int(runID), .double(now), .int(endpointID(route)), .int(inflight), .int(window), .int(paused ? 1 : 0)
            ])
        case .controlSettled(let id, let outcome):
            try store.settleControl(id: id, runID: runID, outcome: outcome, at: now)
        }
    }

    private func endpointID(_ route: Int) -> Int {
        endpointIDs.indices.contains(route) ? endpointIDs[route] : endpointIDs.first ?? 0
    }

    /// What an attempt row says while its request is out: left so by a run that died, it is the audit's record of a
    /// request that left and whose answer nobody recorded.
    static let noAnswerRecorded = "sent; no answer recorded (the run ended while it was in flight)"

    /// Completes the attempt row opened at the claim with what came back (`nil`: the request never left, the row
    /// goes), or writes one when nothing was opened (an answer settled without a claim).
    private func settleAttempt(of id: String, _ a: AttemptRecord?, _ s: Statements) throws(ChatBatchError) {
        let open = openAttempts.removeValue(forKey: id)
        guard let a else {
            if let open { try s.dropAttempt.run([.int(open)]) }
            return
        }
        try s.settleAttempt.run([
            "id": .optional(open), "custom_id": .text(a.customID), "run_id": .int(runID), "attempt": .int(a.attempt),
            "started_at": .double(a.startedAt), "status": .optional(a.status), "latency_ms": .double(a.latencyMs),
            "request_id": .optional(a.requestID), "error": .optional(a.error), "ambiguous": .int(a.ambiguous ? 1 : 0),
            "endpoint_id": .int(endpointID(a.route)), "inflight": .optional(a.inflight), "window": .optional(a.window)
        ])
    }

    /// What the checkpoint says as a run ends.
    struct RunEnding: Sendable {
        /// A commit or an output write failed during the run.
        var writeFailure: ChatBatchError?
        /// Prompts left pending (answered lines this run was to answer again and did not count too: they keep their
        /// old answer), and the spend over every run (nil if it could not be read).
        var pending: Int
        var spent: Double?
        /// This run's latency percentiles per route (with several providers).
        var latencies: [Int: (p50: Double, p99: Double)] = [:]
    }

    /// Ends the run's writing: rebuilds the output files if a forced resend asked for it, flushes them, and reads
    /// what is left. `known` (a run that read no input) gives the counts without scanning the checkpoint;
    /// otherwise, when `fingerprint` is given (the run finished every line it read) and nothing is left pending
    /// or in flight, it is recorded so that the next run with the same input can skip it. `inputLines` (a run that
    /// read its whole input) is recorded for `status`; the input's path was recorded as the run began (`claim`).
    func endRun(
        log: (String) -> Void, fingerprint: String?, known: CheckpointStore.FinishedInput?, inputLines: Int?,
        ceilings: [Int: Int] = [:]
    ) -> RunEnding {
        for (route, ceiling) in ceilings where failure == nil {
            try? store.recordCeiling(ceiling, endpointID: endpointID(route))
        }
        if let inputLines, failure == nil { try? store.setMeta("input.lines", String(inputLines)) }
        // A file emptied, cut or deleted under the run no longer holds what the run wrote: rebuilt from the checkpoint.
        let damaged = failure == nil ? sink.damagedFiles() : []
        for path in damaged {
            log(
                "chatbatch: \(path) was changed while the run wrote it (emptied, cut, deleted or replaced); rebuilding it from the checkpoint"
            )
        }
        if !damaged.isEmpty { needsRebuild = true }
        if failure == nil, store.isGone() {
            log(
                "chatbatch: warning: the checkpoint \(store.path) was deleted or replaced while the run used it; this run's answers are in the outputs, but a new run there starts a new checkpoint and would send every line again. Keep the outputs, and restore the checkpoint from a copy if you have one"
            )
        }
        if failure == nil && needsRebuild {
            do {
                try sink.rebuildAll(from: store)
                try store.setOutputNeedsRebuild(false)
                needsRebuild = false
            } catch {
                log("chatbatch: could not rebuild the output files (\(error)); the next run or `chatbatch export` will")
            }
        }
        sink.sync()
        commit([], forceRecord: true)
        if let known { return RunEnding(writeFailure: failure, pending: unreplaced.count, spent: known.cost) }
        var latencies: [Int: (p50: Double, p99: Double)] = [:]
        if endpointIDs.count > 1 {
            for (route, id) in endpointIDs.enumerated() {
                let sorted =
                    ((try? store.db.query(
                        "SELECT latency_ms FROM attempts WHERE run_id=? AND endpoint_id=? AND status IS NOT NULL ORDER BY latency_ms",
                        [.int(runID), .int(id)])) ?? []).compactMap { $0.first?.double }
                guard let p50 = sorted.nearestRank(0.5), let p99 = sorted.nearestRank(0.99) else { continue }
                latencies[route] = (p50, p99)
            }
        }
        let counts = (try? store.stateCounts()) ?? [:]
        let totals = try? store.totals()
        if let fingerprint, let totals, failure == nil, unreplaced.isEmpty, counts[.pending] == nil,
            counts[.inflight] == nil
        {
            try? store.recordFinishedInput(
                CheckpointStore.FinishedInput(
                    fingerprint: fingerprint, done: counts[.done] ?? 0, failed: counts[.failed] ?? 0,
                    promptTokens: totals.prompt, completionTokens: totals.completion, cost: totals.cost))
        }
        return RunEnding(
            writeFailure: failure, pending: (counts[.pending] ?? 0) + unreplaced.count, spent: totals?.cost,
            latencies: latencies)
    }

    /// Records the run's end with its exit code and summary, then closes the checkpoint and gives up its lock.
    func close(exitCode: Int32, summary: JSON) {
        if failure == nil { try? store.endRun(id: runID, exitCode: exitCode, summary: summary) }
        statements = nil
        walCheckpointer?.close()
        store.closeAndUnlock()
    }
}
