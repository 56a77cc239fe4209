/// One control given to a job's workers in a store, as a worker reads it.
struct StoreControlRow: Sendable, Equatable {
    let id: Int
    let givenAt: Double
    let host: String
    let pid: Int
    /// The control as a user writes it (`pause`, `set concurrency=4`).
    let action: String
    let provider: String?
}

/// Controls given to a job's workers in a store (`chatbatch control` on a store): each is a row for the workers that
/// run the job when it is given; each of them applies it between two turns and records what came of it. A worker
/// that joins later starts from the job's settings, as the next run of a job on a checkpoint file does.
extension PostgresWorkQueue {
    /// Records a control for the job's live workers (not stopped, a heartbeat in the last `liveWithin` seconds);
    /// returns its id and those workers, or nil (nothing recorded) when no worker runs the job. A store whose workers
    /// are an older chatbatch has no table for it: refused with what to do.
    func giveControl(action: String, provider: String?, host: String, pid: Int, at: Double, liveWithin: Double)
        throws(ChatBatchError) -> (id: Int, workers: [Int])?
    {
        guard try hasControls() else {
            throw ChatBatchError(
                .notRunning,
                "store \(connection.address): its workers are an older chatbatch that takes no controls (schema "
                    + "before \(PostgresSchema.version)): nothing changed")
        }
        return try connection.inTransaction { () throws(ChatBatchError) -> (id: Int, workers: [Int])? in
            let live = try liveWorkers(within: liveWithin)
            if live.isEmpty { return nil }
            let id = try connection.rows(
                """
                INSERT INTO chatbatch_controls (job, given_at, host, pid, action, provider)
                VALUES ($1, $2, $3, $4, $5, $6) RETURNING id
                """, [String(job), String(at), host, String(pid), action, provider]
            ).first?.int("id")
            return id.map { ($0, live) }
        }
    }

    /// The newest control given to the job (0: none): a worker applies only those given after it joined.
    func lastControl() throws(ChatBatchError) -> Int {
        guard try hasControls() else { return 0 }
        return try connection.rows(
            "SELECT coalesce(max(id), 0) AS id FROM chatbatch_controls WHERE job = $1", [String(job)]
        ).first?.int("id") ?? 0
    }

    /// Controls given to the job after the id `after`, oldest first.
    func controls(after: Int) throws(ChatBatchError) -> [StoreControlRow] {
        try connection.rows(
            """
            SELECT id, given_at, host, pid, action, provider FROM chatbatch_controls
            WHERE job = $1 AND id > $2 ORDER BY id
            """, [String(job), String(after)]
        ).map {
            StoreControlRow(
                id: $0.int("id") ?? 0, givenAt: $0.double("given_at") ?? 0, host: $0["host"] ?? "",
                pid: $0.int("pid") ?? 0, action: $0["action"] ?? "", provider: $0["provider"])
        }
    }

    /// Records what came of control `id` at this worker (applied, or refused and why).
    func settleControl(id: Int, outcome: String, at: Double) throws(ChatBatchError) {
        try connection.rows(
            """
            INSERT INTO chatbatch_control_outcomes (control, worker, applied_at, outcome) VALUES ($1, $2, $3, $4)
            ON CONFLICT (control, worker) DO NOTHING
            """, [String(id), String(worker), String(at), outcome])
    }

    /// What each worker made of control `id` so far: by worker, with its host and pid.
    func controlOutcomes(id: Int) throws(ChatBatchError) -> [(worker: Int, host: String, pid: Int, outcome: String)] {
        try connection.rows(
            """
            SELECT o.worker, w.host, w.pid, o.outcome FROM chatbatch_control_outcomes o
            JOIN chatbatch_workers w ON w.id = o.worker WHERE o.control = $1 ORDER BY o.worker
            """, [String(id)]
        ).map { ($0.int("worker") ?? 0, $0["host"] ?? "", $0.int("pid") ?? 0, $0["outcome"] ?? "") }
    }

    /// The job's workers that run now (not stopped, a heartbeat in the last `liveWithin` seconds), by id.
    func liveWorkers(within liveWithin: Double) throws(ChatBatchError) -> [Int] {
        try connection.rows(
            """
            SELECT id FROM chatbatch_workers
            WHERE job = $1 AND stopped_at IS NULL AND heartbeat_at > now() - make_interval(secs => $2)
            ORDER BY id
            """, [String(job), String(liveWithin)]
        ).compactMap { $0.int("id") }
    }

    /// Whether the store has the controls' tables (its workers are schema 4 or newer).
    private func hasControls() throws(ChatBatchError) -> Bool {
        try connection.rows("SELECT to_regclass('chatbatch_controls') IS NOT NULL AS ok")[0].bool("ok") == true
    }
}
