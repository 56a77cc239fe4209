/// What `status` and `export` read of a job in a store, and where its output files were last written. Reading never
/// creates tables or registers a worker.
extension PostgresWorkQueue {
    /// Opens the job `name` in the store at `address` to read it; without a name, the store's only job. An unknown
    /// name, or several jobs and no name, is refused with the names the store holds.
    static func reading(_ address: PostgresAddress, job name: String?) throws(ChatBatchError) -> PostgresWorkQueue {
        let db = try PostgresConnection(address)
        let found = try db.rows(
            "SELECT to_regclass('chatbatch_meta') IS NOT NULL AND to_regclass('chatbatch_jobs') IS NOT NULL AS ours"
        )[0]
        guard found.bool("ours") == true else {
            throw ChatBatchError(.notACheckpoint, "store \(address): it holds no chatbatch job (no chatbatch tables)")
        }
        let jobs = try db.rows("SELECT id, name FROM chatbatch_jobs ORDER BY name")
        let names = jobs.compactMap { $0["name"] }
        let chosen = name.map { n in jobs.first { $0["name"] == n } } ?? (jobs.count == 1 ? jobs.first : nil)
        guard let chosen, let id = chosen.int("id") else {
            let known = names.isEmpty ? "none" : names.prefix(20).joined(separator: ", ")
            throw ChatBatchError(
                .missingCheckpoint,
                name.map { "store \(address): no job named '\($0)' (jobs: \(known))" }
                    ?? "store \(address): it holds several jobs; name one with --job-name (jobs: \(known))")
        }
        return PostgresWorkQueue(connection: db, job: id, worker: 0)
    }

    /// The job's name, how much of its input is loaded, and where its outputs were last written.
    func jobRow() throws(ChatBatchError) -> PostgresRow {
        try connection.rows(
            "SELECT name, lines_loaded, loaded, spent, results_path, errors_path FROM chatbatch_jobs WHERE id = $1",
            [String(job)])[0]
    }

    /// Tokens and cost over the job's finished lines.
    func totals() throws(ChatBatchError) -> (prompt: Int, completion: Int, cost: Double) {
        let row = try connection.rows(
            """
            SELECT coalesce(sum(prompt_tokens), 0) AS p, coalesce(sum(completion_tokens), 0) AS c,
                coalesce(sum(cost), 0)::float8 AS cost FROM chatbatch_lines WHERE job = $1
            """, [String(job)])[0]
        return (row.int("p") ?? 0, row.int("c") ?? 0, row.double("cost") ?? 0)
    }

    /// Hands `body` every finished line's output line, in input order: the answered ones, or (`failed`) the failed
    /// ones. Read through a cursor, a thousand at a time: memory stays flat in the job's size.
    func eachOutput(failed: Bool, _ body: ([UInt8]) throws(ChatBatchError) -> Void) throws(ChatBatchError) {
        try connection.eachRow(
            "SELECT result FROM chatbatch_lines WHERE job = $1 AND state = $2 ORDER BY line",
            [String(job), failed ? "failed" : "done"]
        ) { (row) throws(ChatBatchError) in try body(row.bytes("result") ?? []) }
    }

    /// The job's settled lines by line number, for `validate`: 1 answered, 2 failed, 0 not settled (or past the
    /// last settled line). Read through a cursor; a byte a line.
    func settledLines() throws(ChatBatchError) -> [UInt8] {
        var settled: [UInt8] = []
        try connection.eachRow(
            """
            SELECT line, state = 'failed' AS failed FROM chatbatch_lines
            WHERE job = $1 AND state IN ('done', 'failed')
            """,
            [String(job)], fetching: 10_000
        ) { row in
            guard let line = row.int("line"), line >= 0 else { return }
            if line >= settled.count { settled += [UInt8](repeating: 0, count: line + 1 - settled.count) }
            settled[line] = row.bool("failed") == true ? 2 : 1
        }
        return settled
    }

    /// Records where the job's outputs were written (a later worker may replace those files, and no others).
    func recordOutputs(results: String, errors: String) throws(ChatBatchError) {
        try connection.rows(
            "UPDATE chatbatch_jobs SET results_path = $2, errors_path = $3 WHERE id = $1",
            [String(job), results, errors])
    }
}
