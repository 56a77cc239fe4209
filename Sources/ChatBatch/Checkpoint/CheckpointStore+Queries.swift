import ChatBatchCore

/// What `status`, `report` and the report page read from a checkpoint: each a named method with named columns, so
/// that no SQL lives outside the store (`Report/` asks for values, never for rows). The checkpoint's backend of
/// `JobHistory` (a PostgreSQL store's is `PostgresJobHistory`).
extension CheckpointStore: JobHistory {
    var title: String { path }

    /// Every run, oldest first.
    func runs() throws(ChatBatchError) -> [HistoryRun] {
        try db.rows("SELECT id, started_at, ended_at, exit_code, summary FROM runs ORDER BY id").map { row in
            HistoryRun(
                id: row["id"].int ?? 0, startedAt: row["started_at"].double ?? 0, endedAt: row["ended_at"].double,
                exitCode: row["exit_code"].int, summary: row["summary"].text)
        }
    }

    func runSettings(_ run: Int) throws(ChatBatchError) -> JSON? {
        try meta("run.\(run).settings").flatMap { try? JSON.parse($0) }
    }

    func lineCounts() throws(ChatBatchError) -> (done: Int, failed: Int, pending: Int, inflight: Int) {
        let counts = try stateCounts()
        return (counts[.done] ?? 0, counts[.failed] ?? 0, counts[.pending] ?? 0, counts[.inflight] ?? 0)
    }

    func endpointLabels() throws(ChatBatchError) -> [(id: Int, label: String)] {
        try endpoints().map { ($0.id, $0.label) }
    }

    func release() { db.close() }

    /// Each attempt as it ended (its start plus its latency), with its status (nil: no answer) and latency.
    func attemptEnds() throws(ChatBatchError) -> [(t: Double, status: Int?, latencyMs: Double)] {
        try db.rows(
            """
            SELECT started_at + coalesce(latency_ms, 0) / 1000.0 AS ended_at, status, latency_ms FROM attempts
            ORDER BY 1
            """
        ).map { ($0["ended_at"].double ?? 0, $0["status"].int, $0["latency_ms"].double ?? 0) }
    }

    /// Each answered line when it was answered, with its cost and tokens, in that order.
    func answeredLines() throws(ChatBatchError) -> [(t: Double, cost: Double, tokens: Int)] {
        try db.rows(
            """
            SELECT updated_at, cost, prompt_tokens + completion_tokens AS tokens FROM requests WHERE state='done'
            ORDER BY updated_at
            """
        ).map { ($0["updated_at"].double ?? 0, $0["cost"].double ?? 0, $0["tokens"].int ?? 0) }
    }

    /// The timeline's samples (each provider's in-flight window), in time order; none before schema 3.
    func windowSamples() throws(ChatBatchError) -> [(t: Double, endpoint: Int, window: Double)] {
        guard version >= 3 else { return [] }
        return try db.rows("SELECT t, coalesce(endpoint_id, 0) AS endpoint, window FROM samples ORDER BY t, rowid")
            .map { ($0["t"].double ?? 0, $0["endpoint"].int ?? 0, $0["window"].double ?? 0) }
    }

    /// Time to first token of every streamed answer (ms), sorted.
    func firstTokenTimes() throws(ChatBatchError) -> [Double] {
        try db.rows("SELECT ttft_ms FROM requests WHERE ttft_ms IS NOT NULL ORDER BY 1").compactMap {
            $0["ttft_ms"].double
        }
    }

    /// The latency of every attempt that got an answer (ms), sorted.
    func answerLatencies(endpointID: Int? = nil) throws(ChatBatchError) -> [Double] {
        try db.rows(
            """
            SELECT latency_ms FROM attempts WHERE status IS NOT NULL AND (:endpoint IS NULL OR endpoint_id=:endpoint)
            ORDER BY latency_ms
            """, ["endpoint": .optional(endpointID)]
        ).compactMap { $0["latency_ms"].double }
    }

    /// When each 2xx answer finished, in order.
    func successTimes() throws(ChatBatchError) -> [Double] {
        try db.rows(
            """
            SELECT started_at + coalesce(latency_ms, 0) / 1000.0 AS ended_at FROM attempts
            WHERE status BETWEEN 200 AND 299 ORDER BY 1
            """
        ).compactMap { $0["ended_at"].double }
    }

    /// Attempts by status: 0 for no answer, -1 for a request that left and whose answer no run recorded.
    func attemptsByStatus() throws(ChatBatchError) -> [(status: Int, count: Int)] {
        try db.rows(
            """
            SELECT CASE WHEN status IS NULL AND error=:unrecorded THEN -1 ELSE coalesce(status, 0) END AS code,
                count(*) AS n
            FROM attempts GROUP BY 1 ORDER BY 1
            """, ["unrecorded": .text(CheckpointWriter.noAnswerRecorded)]
        ).map { ($0["code"].int ?? 0, $0["n"].int ?? 0) }
    }

    /// Every attempt, and the lines each run sent (a line's attempts in one run after its first are retries).
    func attemptCounts() throws(ChatBatchError) -> (attempts: Int, sends: Int) {
        let row = try db.rows(
            "SELECT count(*) AS attempts, count(DISTINCT run_id || ':' || custom_id) AS sends FROM attempts"
        ).first
        return (row?["attempts"].int ?? 0, row?["sends"].int ?? 0)
    }

    /// Sends counted as possibly billed twice, over every line.
    func possiblyBilledTwice() throws(ChatBatchError) -> Int {
        try db.rows("SELECT coalesce(sum(ambiguous), 0) AS n FROM requests").first?["n"].int ?? 0
    }

    /// Failed lines by error code (`unknown` when none), most first.
    func failuresByCode() throws(ChatBatchError) -> [(code: String, lines: Int)] {
        try db.rows(
            """
            SELECT coalesce(error_code, 'unknown') AS code, count(*) AS n FROM requests WHERE state='failed'
            GROUP BY 1 ORDER BY 2 DESC
            """
        ).map { ($0["code"].text ?? "unknown", $0["n"].int ?? 0) }
    }

    /// A few failed lines with `code`: their custom_id, input line and message.
    func failedExamples(code: String, limit: Int = 3) throws(ChatBatchError) -> [(
        customID: String, line: Int, message: String
    )] {
        try db.rows(
            """
            SELECT custom_id, line, error_message FROM requests
            WHERE state='failed' AND coalesce(error_code, 'unknown')=:code LIMIT :limit
            """, ["code": .text(code), "limit": .int(limit)]
        ).map { ($0["custom_id"].text ?? "", $0["line"].int ?? 0, $0["error_message"].text ?? "") }
    }

    /// A breakdown per model, the model with most lines first.
    func byModel() throws(ChatBatchError) -> [HistoryBreakdown] {
        try db.rows(
            """
            SELECT coalesce(model, '(none)') AS model, count(*) AS lines, sum(state='done') AS done,
                sum(state='failed') AS failed, sum(prompt_tokens + completion_tokens) AS tokens, sum(cost) AS cost,
                avg(latency_ms) AS latency
            FROM requests GROUP BY 1 ORDER BY 2 DESC
            """
        ).map { row in
            HistoryBreakdown(
                name: row["model"].text ?? "", lines: row["lines"].int ?? 0, done: row["done"].int ?? 0,
                failed: row["failed"].int ?? 0, tokens: row["tokens"].int ?? 0, cost: row["cost"].double ?? 0,
                meanLatencyMs: row["latency"].double)
        }
    }

    /// What one endpoint did: requests and 429s among its attempts; lines answered and failed, tokens and cost.
    func endpointTotals(_ id: Int) throws(ChatBatchError) -> (
        requests: Int, rateLimited: Int, lines: HistoryBreakdown
    ) {
        let a = try db.rows(
            "SELECT count(*) AS n, coalesce(sum(status=429), 0) AS limited FROM attempts WHERE endpoint_id=:id",
            ["id": .int(id)]
        ).first
        let r = try db.rows(
            """
            SELECT coalesce(sum(state='done'), 0) AS done, coalesce(sum(state='failed'), 0) AS failed,
                coalesce(sum(prompt_tokens + completion_tokens), 0) AS tokens, coalesce(sum(cost), 0) AS cost
            FROM requests WHERE endpoint_id=:id
            """, ["id": .int(id)]
        ).first
        let lines = HistoryBreakdown(
            done: r?["done"].int ?? 0, failed: r?["failed"].int ?? 0, tokens: r?["tokens"].int ?? 0,
            cost: r?["cost"].double ?? 0)
        return (a?["n"].int ?? 0, a?["limited"].int ?? 0, lines)
    }

    /// Lines answered from the response cache, and the tokens and dollars they saved (none before schema 2).
    func cacheSavings() throws(ChatBatchError) -> (hits: Int, tokens: Int, cost: Double) {
        guard version >= 2 else { return (0, 0, 0) }
        let row = try db.rows(
            """
            SELECT count(*) AS hits, coalesce(sum(saved_tokens), 0) AS tokens, coalesce(sum(saved_cost), 0) AS cost
            FROM requests WHERE cached=1
            """
        ).first
        return (row?["hits"].int ?? 0, row?["tokens"].int ?? 0, row?["cost"].double ?? 0)
    }
}
