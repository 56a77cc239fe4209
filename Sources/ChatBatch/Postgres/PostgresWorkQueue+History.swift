/// A request a worker made, as the report counts it (`chatbatch_attempts`).
struct AttemptHistory: Sendable, Equatable {
    var line: Int
    var startedAt: Double
    var latencyMs: Double
    /// nil: no answer (a reset, a timeout).
    var status: Int?
    /// Possibly billed twice (the connection broke after the request was read).
    var ambiguous = false
    /// The provider it went to.
    var endpoint: String
}

/// What the report reads of a finished line beside its outcome (`chatbatch_lines`' report columns).
struct LineHistory: Sendable, Equatable {
    var line: Int
    var model: String?
    var errorCode: String?
    var errorMessage: String?
    var latencyMs: Double?
    var ttftMs: Double?
    var cached = false
    var savedTokens = 0
    var savedCost = 0.0
    var endpoint: String?
}

/// A worker's in-flight limit for one provider at a moment (`chatbatch_samples`).
struct SampleHistory: Sendable, Equatable {
    var t: Double
    var endpoint: String
    var window: Int
}

/// What a worker writes for `report` and its page: its settings as it starts, its requests, the details of the
/// lines it finished and its limit over time as it goes (a second's worth at a time, on a connection of its own,
/// beside the turns: never before a request may leave), and its exit and summary as it stops.
extension PostgresWorkQueue {
    /// Records a batch of history in one statement. A line's details are written only where the line is settled
    /// (the worker passes only the outcomes the store kept from it).
    func recordHistory(attempts: [AttemptHistory], lines: [LineHistory], samples: [SampleHistory])
        throws(ChatBatchError)
    {
        if attempts.isEmpty && lines.isEmpty && samples.isEmpty { return }
        let a = Self.array, text = { (v: Double?) in v.map { String($0) } }
        // A second's lines are a thousand or more: joined to their rows by a hash, not a loop over the array for each
        // row (the planner takes the array for ten elements and the job for a few rows while its statistics lag).
        try connection.inTransaction { () throws(ChatBatchError) in
            try connection.execute("SET LOCAL enable_nestloop = off")
            try connection.rows(
                """
                WITH tried AS (
                    INSERT INTO chatbatch_attempts
                        (job, worker, line, started_at, latency_ms, status, ambiguous, endpoint)
                    SELECT $1, $2, v.* FROM unnest($3::bigint[], $4::float8[], $5::float8[], $6::integer[],
                        $7::boolean[], $8::text[]) AS v),
                settled AS (
                    UPDATE chatbatch_lines AS l SET model = v.model, error_code = v.code, error_message = v.message,
                        latency_ms = v.latency, ttft_ms = v.ttft, cached = v.cached, saved_tokens = v.saved_tokens,
                        saved_cost = v.saved_cost, endpoint = v.endpoint
                    FROM unnest($9::bigint[], $10::text[], $11::text[], $12::text[], $13::float8[], $14::float8[],
                        $15::boolean[], $16::bigint[], $17::float8[], $18::text[])
                        AS v(line, model, code, message, latency, ttft, cached, saved_tokens, saved_cost, endpoint)
                    WHERE \(Self.named("$9")) AND l.state IN ('done', 'failed'))
                INSERT INTO chatbatch_samples (job, worker, t, endpoint, "window")
                SELECT $1, $2, v.* FROM unnest($19::float8[], $20::text[], $21::integer[]) AS v
                """,
                [
                    String(job), String(worker), a(attempts.map { String($0.line) }),
                    a(attempts.map { String($0.startedAt) }), a(attempts.map { String($0.latencyMs) }),
                    a(attempts.map { $0.status.map(String.init) }), a(attempts.map { String($0.ambiguous) }),
                    a(attempts.map(\.endpoint)),
                    a(lines.map { String($0.line) }), a(lines.map(\.model)), a(lines.map(\.errorCode)),
                    a(lines.map(\.errorMessage)), a(lines.map { text($0.latencyMs) }), a(lines.map { text($0.ttftMs) }),
                    a(lines.map { String($0.cached) }), a(lines.map { String($0.savedTokens) }),
                    a(lines.map { String($0.savedCost) }), a(lines.map(\.endpoint)),
                    a(samples.map { String($0.t) }), a(samples.map(\.endpoint)), a(samples.map { String($0.window) })
                ])
        }
    }

    /// Records the settings this worker runs with (JSON), shown on the report page's row for it.
    func recordSettings(_ settings: String) throws(ChatBatchError) {
        try connection.rows("UPDATE chatbatch_workers SET settings = $2 WHERE id = $1", [String(worker), settings])
    }

    /// Records how this worker ended: its exit code and its summary (JSON).
    func recordEnd(exitCode: Int, summary: String) throws(ChatBatchError) {
        try connection.rows(
            "UPDATE chatbatch_workers SET exit_code = $2, summary = $3 WHERE id = $1",
            [String(worker), String(exitCode), summary])
    }
}
