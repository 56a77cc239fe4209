import ChatBatchCore

/// A job in a PostgreSQL store as `report` and its page read it: the store's backend of `JobHistory` (a checkpoint
/// file's is `CheckpointStore+Queries`). Each worker is a run; each provider of each worker has its own in-flight
/// limit on the timeline (the page sums them). Reading never creates tables or registers a worker.
final class PostgresJobHistory: JobHistory {
    let queue: PostgresWorkQueue
    let title: String
    /// The providers requests went to, in the order the report lists them (their ids are positions here, from 1).
    private var labels: [String]? = nil

    /// Opens job `name` (nil: the store's only job) in the store at `address`. A store whose tables are older than
    /// the report's columns is refused with what to do.
    init(store address: String, job name: String?) throws(ChatBatchError) {
        queue = try PostgresWorkQueue.reading(try PostgresAddress(address), job: name)
        let schema = try queue.connection.rows("SELECT value FROM chatbatch_meta WHERE key = 'schema'").first?["value"]
        guard let schema = schema.flatMap({ Int($0) }), schema >= 3 else {
            throw ChatBatchError(
                .unknownSchema,
                "store \(queue.connection.address): its tables follow schema \(schema ?? "?"), older than the report "
                    + "reads (3): a worker of this chatbatch upgrades them as it joins the job")
        }
        title = "\(queue.connection.address.shown), job '\(try queue.jobRow()["name"] ?? "")'"
    }

    private var job: String { String(queue.job) }

    private func rows(_ sql: String, _ parameters: [String?] = []) throws(ChatBatchError) -> [PostgresRow] {
        try queue.connection.rows(sql, [job] + parameters)
    }

    func runs() throws(ChatBatchError) -> [HistoryRun] {
        try rows(
            """
            SELECT id, host, pid, extract(epoch FROM started_at)::float8 AS started,
                extract(epoch FROM stopped_at)::float8 AS ended, exit_code, summary
            FROM chatbatch_workers WHERE job = $1 ORDER BY started_at, id
            """
        ).map {
            HistoryRun(
                id: $0.int("id") ?? 0, startedAt: $0.double("started") ?? 0, endedAt: $0.double("ended"),
                exitCode: $0.int("exit_code"), summary: $0["summary"],
                place: "\($0["host"] ?? "?") pid \($0["pid"] ?? "?")")
        }
    }

    func runSettings(_ run: Int) throws(ChatBatchError) -> JSON? {
        try rows("SELECT settings FROM chatbatch_workers WHERE job = $1 AND id = $2", [String(run)]).first?["settings"]
            .flatMap { try? JSON.parse($0) }
    }

    func lineCounts() throws(ChatBatchError) -> (done: Int, failed: Int, pending: Int, inflight: Int) {
        let row = try rows(
            """
            SELECT count(*) FILTER (WHERE state = 'done') AS done, count(*) FILTER (WHERE state = 'failed') AS failed,
                count(*) FILTER (WHERE state IN ('queued', 'leased') AND NOT in_flight) AS pending,
                count(*) FILTER (WHERE state = 'leased' AND in_flight) AS inflight
            FROM chatbatch_lines WHERE job = $1
            """)[0]
        return (row.int("done") ?? 0, row.int("failed") ?? 0, row.int("pending") ?? 0, row.int("inflight") ?? 0)
    }

    func totals() throws(ChatBatchError) -> (prompt: Int, completion: Int, cost: Double) { try queue.totals() }

    /// Known unless a worker said a provider of its publishes no prices.
    func pricesKnown() throws(ChatBatchError) -> Bool {
        try rows("SELECT settings FROM chatbatch_workers WHERE job = $1 AND settings IS NOT NULL").allSatisfy {
            let unknown = $0["settings"].flatMap { try? JSON.parse($0) }?["prices_unknown"]?.arrayValue ?? []
            return unknown.isEmpty
        }
    }

    func attemptEnds() throws(ChatBatchError) -> [(t: Double, status: Int?, latencyMs: Double)] {
        try rows(
            """
            SELECT started_at + latency_ms / 1000.0 AS ended, status, latency_ms FROM chatbatch_attempts
            WHERE job = $1 ORDER BY 1
            """
        ).map { ($0.double("ended") ?? 0, $0.int("status"), $0.double("latency_ms") ?? 0) }
    }

    func answeredLines() throws(ChatBatchError) -> [(t: Double, cost: Double, tokens: Int)] {
        try rows(
            """
            SELECT extract(epoch FROM finished_at)::float8 AS t, cost, prompt_tokens + completion_tokens AS tokens
            FROM chatbatch_lines WHERE job = $1 AND state = 'done' ORDER BY finished_at
            """
        ).map { ($0.double("t") ?? 0, $0.double("cost") ?? 0, $0.int("tokens") ?? 0) }
    }

    func windowSamples() throws(ChatBatchError) -> [(t: Double, endpoint: Int, window: Double)] {
        try rows(
            """
            SELECT t, dense_rank() OVER (ORDER BY worker, endpoint) AS lane, "window" FROM chatbatch_samples
            WHERE job = $1 ORDER BY t
            """
        ).map { ($0.double("t") ?? 0, $0.int("lane") ?? 0, $0.double("window") ?? 0) }
    }

    func firstTokenTimes() throws(ChatBatchError) -> [Double] {
        try rows("SELECT ttft_ms FROM chatbatch_lines WHERE job = $1 AND ttft_ms IS NOT NULL ORDER BY 1").compactMap {
            $0.double("ttft_ms")
        }
    }

    func answerLatencies(endpointID: Int? = nil) throws(ChatBatchError) -> [Double] {
        let label = try endpointID.map { (id) throws(ChatBatchError) in try endpoint(id) }
        return try rows(
            """
            SELECT latency_ms FROM chatbatch_attempts
            WHERE job = $1 AND status IS NOT NULL AND ($2::text IS NULL OR endpoint = $2) ORDER BY 1
            """, [label]
        ).compactMap { $0.double("latency_ms") }
    }

    func successTimes() throws(ChatBatchError) -> [Double] {
        try rows(
            """
            SELECT started_at + latency_ms / 1000.0 AS ended FROM chatbatch_attempts
            WHERE job = $1 AND status BETWEEN 200 AND 299 ORDER BY 1
            """
        ).compactMap { $0.double("ended") }
    }

    func attemptsByStatus() throws(ChatBatchError) -> [(status: Int, count: Int)] {
        try rows(
            "SELECT coalesce(status, 0) AS code, count(*) AS n FROM chatbatch_attempts WHERE job = $1 GROUP BY 1 ORDER BY 1"
        ).map { ($0.int("code") ?? 0, $0.int("n") ?? 0) }
    }

    /// A line's attempts at one worker after its first are retries; a line sent again by another worker is not.
    func attemptCounts() throws(ChatBatchError) -> (attempts: Int, sends: Int) {
        let row = try rows(
            "SELECT count(*) AS attempts, count(DISTINCT (worker, line)) AS sends FROM chatbatch_attempts WHERE job = $1"
        )[0]
        return (row.int("attempts") ?? 0, row.int("sends") ?? 0)
    }

    /// Requests sent again after their worker died with them on the wire, and those whose connection broke after
    /// the server had read them.
    func possiblyBilledTwice() throws(ChatBatchError) -> Int {
        try rows(
            """
            SELECT (SELECT coalesce(sum(resent_after_crash), 0) FROM chatbatch_lines WHERE job = $1)
                + (SELECT count(*) FROM chatbatch_attempts WHERE job = $1 AND ambiguous) AS n
            """)[0].int("n") ?? 0
    }

    func failuresByCode() throws(ChatBatchError) -> [(code: String, lines: Int)] {
        try rows(
            """
            SELECT coalesce(error_code, 'unknown') AS code, count(*) AS n FROM chatbatch_lines
            WHERE job = $1 AND state = 'failed' GROUP BY 1 ORDER BY 2 DESC, 1
            """
        ).map { ($0["code"] ?? "unknown", $0.int("n") ?? 0) }
    }

    func failedExamples(code: String, limit: Int = 3) throws(ChatBatchError) -> [(
        customID: String, line: Int, message: String
    )] {
        try rows(
            """
            SELECT custom_id, line, error_message FROM chatbatch_lines
            WHERE job = $1 AND state = 'failed' AND coalesce(error_code, 'unknown') = $2 ORDER BY line LIMIT $3
            """, [code, String(limit)]
        ).map { ($0["custom_id"] ?? "", $0.int("line") ?? 0, $0["error_message"] ?? "") }
    }

    /// Lines not finished yet have no model recorded: they count under `(not finished)`.
    func byModel() throws(ChatBatchError) -> [HistoryBreakdown] {
        try rows(
            """
            SELECT coalesce(model, CASE WHEN state IN ('done', 'failed') THEN '(none)' ELSE '(not finished)' END)
                    AS model, count(*) AS lines, count(*) FILTER (WHERE state = 'done') AS done,
                count(*) FILTER (WHERE state = 'failed') AS failed, sum(prompt_tokens + completion_tokens) AS tokens,
                sum(cost)::float8 AS cost, avg(latency_ms)::float8 AS latency
            FROM chatbatch_lines WHERE job = $1 GROUP BY 1 ORDER BY 2 DESC, 1
            """
        ).map {
            HistoryBreakdown(
                name: $0["model"] ?? "", lines: $0.int("lines") ?? 0, done: $0.int("done") ?? 0,
                failed: $0.int("failed") ?? 0, tokens: $0.int("tokens") ?? 0, cost: $0.double("cost") ?? 0,
                meanLatencyMs: $0.double("latency"))
        }
    }

    func endpointLabels() throws(ChatBatchError) -> [(id: Int, label: String)] {
        if labels == nil {
            labels = try rows("SELECT DISTINCT endpoint FROM chatbatch_attempts WHERE job = $1 ORDER BY 1").compactMap {
                $0["endpoint"]
            }
        }
        return (labels ?? []).enumerated().map { ($0.offset + 1, $0.element) }
    }

    private func endpoint(_ id: Int) throws(ChatBatchError) -> String {
        try endpointLabels().first { $0.id == id }?.label ?? ""
    }

    func endpointTotals(_ id: Int) throws(ChatBatchError) -> (
        requests: Int, rateLimited: Int, lines: HistoryBreakdown
    ) {
        let label = try endpoint(id)
        let a = try rows(
            """
            SELECT count(*) AS n, count(*) FILTER (WHERE status = 429) AS limited FROM chatbatch_attempts
            WHERE job = $1 AND endpoint = $2
            """, [label])[0]
        let r = try rows(
            """
            SELECT count(*) FILTER (WHERE state = 'done') AS done, count(*) FILTER (WHERE state = 'failed') AS failed,
                coalesce(sum(prompt_tokens + completion_tokens), 0) AS tokens, coalesce(sum(cost), 0)::float8 AS cost
            FROM chatbatch_lines WHERE job = $1 AND endpoint = $2
            """, [label])[0]
        let lines = HistoryBreakdown(
            done: r.int("done") ?? 0, failed: r.int("failed") ?? 0, tokens: r.int("tokens") ?? 0,
            cost: r.double("cost") ?? 0)
        return (a.int("n") ?? 0, a.int("limited") ?? 0, lines)
    }

    func cacheSavings() throws(ChatBatchError) -> (hits: Int, tokens: Int, cost: Double) {
        let row = try rows(
            """
            SELECT count(*) AS hits, coalesce(sum(saved_tokens), 0) AS tokens, coalesce(sum(saved_cost), 0)::float8 AS cost
            FROM chatbatch_lines WHERE job = $1 AND cached
            """)[0]
        return (row.int("hits") ?? 0, row.int("tokens") ?? 0, row.double("cost") ?? 0)
    }

    /// A store's job takes no controls (`chatbatch control` works on a checkpoint).
    func controls(limit: Int = 20) throws(ChatBatchError) -> [JSON] { [] }

    /// The connection closes when the last reference to it goes.
    func release() {}
}
