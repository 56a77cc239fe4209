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

/// What the store kept of one turn: the outcomes kept, the lines that may be sent, and the job's spend when the
/// turn added to it.
struct TurnRecord: Sendable, Equatable {
    var kept: Set<Int> = []
    var allowed: Set<Int> = []
    var spent: Double? = nil
}

/// The statement a running worker makes once per turn, for every line of the turn at once: one round trip, one
/// commit. Each change is fenced as the single-line statements are: a line changes only while the lease named by
/// its token is held.
extension PostgresWorkQueue {
    /// Commits one turn: `outcomes` (kept while their leases hold; their cost added to the job's spend), `unsent`
    /// (requests that never left after all) and `leaving` (requests about to leave, recorded before they do; a line
    /// whose lease lapsed, even one no one has claimed again, must not be sent). A line is recorded as leaving only
    /// while its lease holds for more than `margin` seconds: it may leave until then.
    func turn(outcomes: [LineOutcome], unsent: [ClaimedLine], leaving: [ClaimedLine], margin: Double = 0)
        throws(ChatBatchError) -> TurnRecord
    {
        if outcomes.isEmpty && unsent.isEmpty && leaving.isEmpty { return TurnRecord() }
        let lines = { (claims: [ClaimedLine]) in Self.array(claims.map { String($0.line) }) }
        let tokens = { (claims: [ClaimedLine]) in Self.array(claims.map { String($0.token) }) }
        // A line named by the turn, fenced by its token alone: the table's check holds a token exactly while the
        // line is leased, and a `state = 'leased'` here would let the planner walk the leased lines' index instead.
        let fenced = { (lines: String) in Self.named(lines) + " AND l.lease_token = v.token" }
        let rows = try connection.rows(
            """
            WITH fin AS (
                UPDATE chatbatch_lines AS l SET state = CASE WHEN v.failed THEN 'failed' ELSE 'done' END,
                    result = v.result, in_flight = false, lease_token = NULL, leased_by = NULL, lease_expires = NULL,
                    finished_at = now(), prompt_tokens = l.prompt_tokens + v.prompt,
                    completion_tokens = l.completion_tokens + v.completion, cost = l.cost + v.cost
                FROM unnest($2::bigint[], $3::bigint[], $4::bytea[], $5::boolean[], $6::bigint[], $7::bigint[],
                    $8::float8[]) AS v(line, token, result, failed, prompt, completion, cost)
                WHERE \(fenced("$2")) RETURNING l.line, v.cost),
            spend AS (
                UPDATE chatbatch_jobs SET spent = spent + (SELECT sum(cost) FROM fin)
                WHERE id = $1 AND (SELECT coalesce(sum(cost), 0) FROM fin) > 0 RETURNING spent),
            gone AS (
                UPDATE chatbatch_lines AS l SET in_flight = false
                FROM unnest($9::bigint[], $10::bigint[]) AS v(line, token) WHERE \(fenced("$9")) RETURNING l.line),
            sent AS (
                UPDATE chatbatch_lines AS l SET in_flight = true
                FROM unnest($11::bigint[], $12::bigint[]) AS v(line, token)
                WHERE \(fenced("$11")) AND l.lease_expires > now() + make_interval(secs => $13)
                RETURNING l.line)
            SELECT 'kept' AS what, line, NULL::float8 AS spent FROM fin
            UNION ALL SELECT 'sent', line, NULL FROM sent
            UNION ALL SELECT 'spent', NULL, spent FROM spend
            UNION ALL SELECT 'gone', count(*), NULL FROM gone
            """,
            [
                String(job), lines(outcomes.map(\.claim)), tokens(outcomes.map(\.claim)),
                Self.array(outcomes.map { $0.result.postgresHex }),
                Self.array(outcomes.map { $0.failed ? "true" : "false" }),
                Self.array(outcomes.map { String($0.promptTokens) }),
                Self.array(outcomes.map { String($0.completionTokens) }), Self.array(outcomes.map { String($0.cost) }),
                lines(unsent), tokens(unsent), lines(leaving), tokens(leaving), String(margin)
            ])
        var record = TurnRecord()
        for row in rows {
            switch row["what"] {
            case "kept": if let line = row.int("line") { record.kept.insert(line) }
            case "sent": if let line = row.int("line") { record.allowed.insert(line) }
            case "spent": record.spent = row.double("spent")
            default: continue
            }
        }
        return record
    }
}
