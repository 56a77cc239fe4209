/// What came of a claimed line: its output line, for the results file or (`failed`) the errors file, and what it
/// used and cost.
struct LineOutcome: Sendable {
    let claim: ClaimedLine
    let result: [UInt8]
    let failed: Bool
    var promptTokens = 0
    var completionTokens = 0
    var cost = 0.0
}

/// The statements a running worker makes once per turn, for every line of the turn at once: one round trip for the
/// claims that are about to leave, one for the outcomes. Each is fenced as the single-line ones are: a line changes
/// only while the lease named by its token is held.
extension PostgresWorkQueue {
    /// Records that these lines' requests are about to leave (committed before they do). Returns the lines whose
    /// lease still holds: the others must not be sent (another worker has them, or will).
    func sending(_ claims: [ClaimedLine]) throws(ChatBatchError) -> Set<Int> {
        guard !claims.isEmpty else { return [] }
        return try fencedBatch(
            "in_flight = true", claims, extra: [], also: "l.lease_expires > now()")
    }

    /// Commits these lines' outcomes (their output lines; `failed` for the errors file). Returns the lines whose
    /// outcome was kept; another worker holds the others now, and their outcomes are not kept.
    func finish(_ outcomes: [LineOutcome]) throws(ChatBatchError) -> Set<Int> {
        guard !outcomes.isEmpty else { return [] }
        return try fencedBatch(
            """
            state = CASE WHEN v.failed THEN 'failed' ELSE 'done' END, result = v.result, in_flight = false,
                lease_token = NULL, leased_by = NULL, lease_expires = NULL, finished_at = now(),
                prompt_tokens = l.prompt_tokens + v.prompt, completion_tokens = l.completion_tokens + v.completion,
                cost = l.cost + v.cost
            """, outcomes.map(\.claim),
            extra: [
                ("bytea", Self.array(outcomes.map { $0.result.postgresHex })),
                ("boolean", Self.array(outcomes.map { $0.failed ? "true" : "false" })),
                ("bigint", Self.array(outcomes.map { String($0.promptTokens) })),
                ("bigint", Self.array(outcomes.map { String($0.completionTokens) })),
                ("float8", Self.array(outcomes.map { String($0.cost) }))
            ], names: ["result", "failed", "prompt", "completion", "cost"])
    }

    /// Adds `cost` to what the job has spent (in the transaction that commits the outcomes that cost it); returns
    /// the job's total.
    func addSpent(_ cost: Double) throws(ChatBatchError) -> Double {
        try connection.rows(
            "UPDATE chatbatch_jobs SET spent = spent + $2 WHERE id = $1 RETURNING spent", [String(job), String(cost)]
        )[0].double("spent") ?? 0
    }

    /// These lines' requests never left after all (the run stopped first): no longer on the wire.
    func unsent(_ claims: [ClaimedLine]) throws(ChatBatchError) {
        guard !claims.isEmpty else { return }
        _ = try fencedBatch("in_flight = false", claims, extra: [])
    }

    /// `set` on every line of `claims` whose lease is held, in one statement; `extra` are more arrays (type and
    /// literal) joined to each line as `v.<name>`.
    private func fencedBatch(
        _ set: String, _ claims: [ClaimedLine], extra: [(type: String, array: String)], names: [String] = [],
        also condition: String = "true"
    ) throws(ChatBatchError) -> Set<Int> {
        var columns = ["line", "token"]
        var arrays = ["$2::bigint[]", "$3::bigint[]"]
        for (i, e) in extra.enumerated() {
            columns.append(names[i])
            arrays.append("$\(i + 4)::\(e.type)[]")
        }
        let rows = try connection.rows(
            """
            UPDATE chatbatch_lines AS l SET \(set)
            FROM unnest(\(arrays.joined(separator: ", "))) AS v(\(columns.joined(separator: ", ")))
            WHERE l.job = $1 AND l.line = v.line AND l.lease_token = v.token AND l.state = 'leased' AND \(condition)
            RETURNING l.line
            """,
            [String(job), Self.array(claims.map { String($0.line) }), Self.array(claims.map { String($0.token) })]
                + extra.map(\.array))
        return Set(rows.compactMap { $0.int("line") })
    }
}
