import Foundation

/// An input line as the store keeps it: its number, its custom_id, its bytes as they were in the file; a line over
/// the size limit is kept as its size alone (`oversize`), for the worker that claims it to refuse.
struct InputLineRecord: Sendable, Equatable {
    let line: Int
    let customID: String?
    let request: [UInt8]
    var oversize: Int? = nil
}

/// A line a worker claimed: its request and the lease that lets it (and no one else) commit the line's answer.
struct ClaimedLine: Sendable, Equatable {
    let line: Int
    let customID: String?
    let request: [UInt8]
    let oversize: Int?
    /// The lease's fencing token, fresh for every claim: every later statement on the line names it.
    let token: Int
    /// A request for it was on the wire when its last holder lost the lease (killed, cut off): the provider may
    /// have answered and billed it, and it is sent again (counted as possibly billed twice, never silently).
    let resentAfterCrash: Bool
    /// An earlier line of the job has the same custom_id (whichever worker holds it): this one is a duplicate,
    /// refused as a run on a file refuses it.
    var earlierLine: Int? = nil
}

/// One job's lines in a PostgreSQL store, claimed by any number of workers on any machines, as the best work queues
/// on PostgreSQL do (River, graphile-worker; a digest is in the README):
/// - a worker claims a few lines at a time (`FOR UPDATE SKIP LOCKED`, so claimers never wait for each other) with a
///   lease that expires unless renewed; a line whose lease expired is claimed again like a queued one;
/// - every claim draws a fresh fencing token, and every statement that changes a claimed line (sent, answered,
///   given back) names it in its `WHERE`: a worker that lost its lease changes nothing, so no line is answered twice
///   in the store and none is lost;
/// - the input is loaded once, by the worker that holds the job's loading lock; the others claim what is loaded.
///
/// One connection, used from one serial queue at a time.
final class PostgresWorkQueue: @unchecked Sendable {
    let connection: PostgresConnection
    let job: Int
    let worker: Int

    /// A job and worker already registered, on `connection` (a worker's second connection; a reader's, worker 0).
    init(connection: PostgresConnection, job: Int, worker: Int) {
        self.connection = connection
        self.job = job
        self.worker = worker
    }

    /// Another connection for the same job and worker (each serial queue of a worker has its own).
    convenience init(sibling: PostgresWorkQueue) throws(ChatBatchError) {
        self.init(
            connection: try PostgresConnection(sibling.connection.address), job: sibling.job, worker: sibling.worker)
    }

    /// Connects to the store, creates or checks its tables, registers the job (`name`; its input's `fingerprint`
    /// when this worker has the input) and this worker.
    init(
        connection: PostgresConnection, job name: String, fingerprint: String?, host: String, pid: Int,
        concurrency: Int
    ) throws(ChatBatchError) {
        self.connection = connection
        let address = connection.address
        (job, worker) = try connection.inTransaction { () throws(ChatBatchError) -> (Int, Int) in
            try Self.prepareSchema(connection)
            try connection.rows(
                "INSERT INTO chatbatch_jobs (name, fingerprint) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                [name, fingerprint ?? ""])
            let row = try connection.rows("SELECT id, fingerprint FROM chatbatch_jobs WHERE name = $1", [name])[0]
            let known = row["fingerprint"] ?? ""
            if let fingerprint, !known.isEmpty, known != fingerprint {
                throw ChatBatchError(
                    .otherInput,
                    "store \(address): job '\(name)' was loaded from another input (fingerprint \(known.prefix(12)), "
                        + "this one \(fingerprint.prefix(12))): name this run's job differently (--job-name)")
            }
            if let fingerprint, known.isEmpty {
                try connection.rows("UPDATE chatbatch_jobs SET fingerprint = $1 WHERE name = $2", [fingerprint, name])
            }
            let job = row.int("id")!
            let worker = try connection.rows(
                "INSERT INTO chatbatch_workers (job, host, pid, concurrency) VALUES ($1, $2, $3, $4) RETURNING id",
                [String(job), host, String(pid), String(concurrency)])[0].int("id")!
            return (job, worker)
        }
    }

    /// Creates the tables, or checks that those there are chatbatch's at a schema this build reads. Two workers
    /// starting at once do this one after the other (a transaction-scoped advisory lock).
    private static func prepareSchema(_ db: PostgresConnection) throws(ChatBatchError) {
        try db.rows("SELECT pg_advisory_xact_lock(7226427655263462001)")
        let found = try db.rows(
            "SELECT to_regclass('chatbatch_meta') IS NOT NULL AS meta, to_regclass('chatbatch_lines') IS NOT NULL AS lines"
        )[0]
        if found.bool("meta") == true {
            let schema = try db.rows("SELECT value FROM chatbatch_meta WHERE key = 'schema'").first.flatMap {
                $0["value"].flatMap { Int($0) }
            }
            guard let schema else {
                throw ChatBatchError(
                    .foreign, "store \(db.address): its chatbatch_meta table is not chatbatch's (no schema version)")
            }
            if schema > PostgresSchema.version {
                throw ChatBatchError(
                    .newerSchema,
                    "store \(db.address): its tables follow schema \(schema), newer than this chatbatch reads "
                        + "(\(PostgresSchema.version)): run a newer chatbatch")
            }
            if schema == PostgresSchema.version { return }
        } else if found.bool("lines") == true {
            throw ChatBatchError(
                .foreign, "store \(db.address): it has a chatbatch_lines table but no chatbatch_meta: not chatbatch's")
        }
        try db.execute(PostgresSchema.create)
        try db.execute(PostgresSchema.upgrade)
        try db.rows(
            "INSERT INTO chatbatch_meta (key, value) VALUES ('schema', $1) ON CONFLICT (key) DO UPDATE SET value = $1",
            [String(PostgresSchema.version)])
    }

    // MARK: loading the input

    /// The first half of the loading lock's key (the job's id is the second): "cbld" in ASCII.
    static let loadingLock: Int32 = 0x6362_6c64

    /// Takes the job's loading lock if no other worker holds it (released when this connection closes: a loader
    /// that dies hands the loading on). Returns whether this worker now loads.
    func takeLoading() throws(ChatBatchError) -> Bool {
        try connection.rows("SELECT pg_try_advisory_lock(\(Self.loadingLock), $1::int) AS taken", [String(job)])[0]
            .bool("taken") == true
    }

    /// Releases the loading lock (the input is loaded, or this worker stops loading).
    func releaseLoading() throws(ChatBatchError) {
        try connection.rows("SELECT pg_advisory_unlock(\(Self.loadingLock), $1::int)", [String(job)])
    }

    /// How far the input is loaded (lines), and whether all of it is.
    func loaded() throws(ChatBatchError) -> (lines: Int, all: Bool) {
        let row = try connection.rows("SELECT lines_loaded, loaded FROM chatbatch_jobs WHERE id = $1", [String(job)])[0]
        return (row.int("lines_loaded") ?? 0, row.bool("loaded") == true)
    }

    /// Loads input lines (numbered from 1) in one transaction with how far the input is now loaded (`through`, or
    /// the last line given), and (`last`) that it is whole. A line already there is left as it is.
    func load(_ lines: [InputLineRecord], through: Int = 0, last: Bool) throws(ChatBatchError) {
        try connection.inTransaction { () throws(ChatBatchError) in
            // COPY, the fastest way in: no statement per line, the bytes as they are.
            if !lines.isEmpty {
                var rows = PostgresCopyRows()
                for line in lines {
                    rows.row(fields: 5)
                    rows.bigint(job)
                    rows.bigint(line.line)
                    rows.text(line.customID)
                    rows.bytea(line.request)
                    rows.bigint(line.oversize)
                }
                // Straight into the table (the loader starts past what is loaded, so no line is there yet); should one
                // be (a caller loading again), through a scratch table that leaves the lines already there alone.
                try connection.execute("SAVEPOINT chatbatch_copy")
                do throws(ChatBatchError) {
                    try connection.copy(
                        "COPY chatbatch_lines (job, line, custom_id, request, oversize) FROM STDIN (FORMAT binary)",
                        rows)
                    try connection.execute("RELEASE SAVEPOINT chatbatch_copy")
                } catch  where connection.lastState == "23505" {
                    try connection.execute("ROLLBACK TO SAVEPOINT chatbatch_copy")
                    try connection.execute(
                        """
                        CREATE TEMP TABLE IF NOT EXISTS chatbatch_loading
                            (job bigint, line bigint, custom_id text, request bytea, oversize bigint)
                            ON COMMIT DELETE ROWS
                        """)
                    try connection.copy(
                        "COPY chatbatch_loading (job, line, custom_id, request, oversize) FROM STDIN (FORMAT binary)",
                        rows)
                    try connection.execute(
                        """
                        INSERT INTO chatbatch_lines (job, line, custom_id, request, oversize)
                        SELECT job, line, custom_id, request, oversize FROM chatbatch_loading
                        ON CONFLICT (job, line) DO NOTHING
                        """)
                }
            }
            try connection.rows(
                "UPDATE chatbatch_jobs SET lines_loaded = greatest(lines_loaded, $2), loaded = loaded OR $3 WHERE id = $1",
                [String(job), String(max(through, lines.map(\.line).max() ?? 0)), last ? "true" : "false"])
        }
    }

    /// Brings the planner's statistics of the lines up to date with a job just loaded: until autovacuum comes (a
    /// minute or more later) the planner takes the job for the few rows it had seen of it. The work's statements
    /// are written to stay bounded whatever it believes, but their plans are better with the truth (a turn took
    /// about a third longer without it). Only the columns the statements select on are sampled, never the requests
    /// or answers. A role that does not own the table is only warned by the server, and a table being vacuumed by
    /// hand is left alone after a second: a failure here is not the load's.
    func analyzeLines() {
        try? connection.inTransaction { () throws(ChatBatchError) in
            try connection.execute("SET LOCAL lock_timeout = '1s'")
            try connection.execute("ANALYZE chatbatch_lines (job, line, custom_id, state, leased_by, lease_expires)")
        }
    }

    /// `--retry-failed`: the job's failed lines go back to the queue, to be sent again by whichever worker claims
    /// them; what they cost is kept (it was paid), what they said is cleared. Returns how many.
    func requeueFailed() throws(ChatBatchError) -> Int {
        try connection.rows(
            """
            UPDATE chatbatch_lines SET state = 'queued', result = NULL, finished_at = NULL, model = NULL,
                error_code = NULL, error_message = NULL, latency_ms = NULL, ttft_ms = NULL
            WHERE job = $1 AND state = 'failed' RETURNING line
            """, [String(job)]
        ).count
    }

    // MARK: claims and leases

    /// Claims up to `limit` lines, those whose lease expired first, then queued ones from line `from` on (a worker
    /// passes the line after its last claim: the index is not walked again over the lines claimed since the job
    /// began, which linger in it until vacuumed), in line order, each under a new lease of `lease` seconds. Never
    /// waits for another claimer (`SKIP LOCKED`). Each comes with the first earlier line that has its custom_id, if
    /// any (lines are loaded in order, so every earlier line is in the store by then). Written so that no plan walks
    /// the job, whatever the planner believes of its size: the claimed rows are found by the primary key, and the
    /// earlier line by the custom_id index (`line + 0` is of no use to the primary key, which, taken for a small job,
    /// was seen walking every earlier line for each line claimed).
    func claim(limit: Int, lease: Double, from: Int = 0) throws(ChatBatchError) -> [ClaimedLine] {
        let rows = try connection.rows(
            """
            WITH expired AS (
                SELECT line, in_flight AS was_in_flight FROM chatbatch_lines
                WHERE job = $1 AND state = 'leased' AND lease_expires < now()
                ORDER BY line LIMIT $2 FOR UPDATE SKIP LOCKED),
            queued AS (
                SELECT line, in_flight AS was_in_flight FROM chatbatch_lines
                WHERE job = $1 AND state = 'queued' AND line >= $5
                ORDER BY line LIMIT $2 FOR UPDATE SKIP LOCKED),
            picked AS (SELECT * FROM expired UNION ALL SELECT * FROM queued ORDER BY line LIMIT $2)
            UPDATE chatbatch_lines AS l SET state = 'leased', lease_token = nextval('chatbatch_lease_tokens'),
                leased_by = $3, lease_expires = now() + make_interval(secs => $4), in_flight = false,
                claims = l.claims + 1, resent_after_crash = l.resent_after_crash + picked.was_in_flight::int
            FROM picked WHERE l.job = $1 AND l.line = ANY (ARRAY(SELECT line FROM picked)) AND l.line = picked.line
            RETURNING l.line, l.custom_id, l.request, l.oversize, l.lease_token, picked.was_in_flight,
                (SELECT min(d.line + 0) FROM chatbatch_lines d
                 WHERE d.job = $1 AND d.custom_id = l.custom_id AND d.line + 0 < l.line) AS earlier
            """,
            [String(job), String(limit), String(worker), String(lease), String(from)])
        return rows.map {
            ClaimedLine(
                line: $0.int("line")!, customID: $0["custom_id"], request: $0.bytes("request") ?? [],
                oversize: $0.int("oversize"),
                token: $0.int("lease_token")!, resentAfterCrash: $0.bool("was_in_flight") == true,
                earlierLine: $0.int("earlier"))
        }.sorted { $0.line < $1.line }
    }

    /// Records that the line's request is about to leave (committed before it does, as the checkpoint's claim is).
    /// False when the lease was lost: the request must not be sent.
    func sending(_ claimed: ClaimedLine) throws(ChatBatchError) -> Bool {
        // An expired lease, even one no one has claimed again yet, sends nothing: its next claimer would send too.
        try fenced("UPDATE chatbatch_lines SET in_flight = true", claimed, also: "lease_expires > now()")
    }

    /// Commits the line's outcome (`failed` for the errors file). False when the lease was lost: another worker
    /// holds the line now, and this outcome is not kept.
    func finish(_ claimed: ClaimedLine, result: [UInt8], failed: Bool) throws(ChatBatchError) -> Bool {
        try fenced(
            """
            UPDATE chatbatch_lines SET state = $4, result = $5, in_flight = false, lease_token = NULL,
                leased_by = NULL, lease_expires = NULL, finished_at = now()
            """, claimed, [failed ? "failed" : "done", result.postgresHex])
    }

    /// Gives the line back to the queue unsent (a worker stopping): no one paid for it.
    func giveBack(_ claimed: ClaimedLine) throws(ChatBatchError) -> Bool {
        try fenced(
            """
            UPDATE chatbatch_lines SET state = 'queued', in_flight = false, lease_token = NULL, leased_by = NULL,
                lease_expires = NULL
            """, claimed)
    }

    /// Renews every lease this worker holds for `lease` seconds from now, and its heartbeat. Returns how many
    /// lines it holds.
    @discardableResult
    func renew(lease: Double) throws(ChatBatchError) -> Int {
        try connection.inTransaction { () throws(ChatBatchError) -> Int in
            try connection.rows("UPDATE chatbatch_workers SET heartbeat_at = now() WHERE id = $1", [String(worker)])
            return try connection.rows(
                """
                UPDATE chatbatch_lines SET lease_expires = now() + make_interval(secs => $3)
                WHERE job = $1 AND leased_by = $2 AND state = 'leased' RETURNING line
                """, [String(job), String(worker), String(lease)]
            ).count
        }
    }

    /// Whether the whole input is loaded, and how many lines are still open without this worker: queued, or leased
    /// by another worker (which may finish them, or die and leave them to be claimed).
    func openElsewhere() throws(ChatBatchError) -> (loaded: Bool, open: Int) {
        let row = try connection.rows(
            """
            SELECT j.loaded, (SELECT count(*) FROM chatbatch_lines l WHERE l.job = j.id
                AND (l.state = 'queued' OR (l.state = 'leased' AND l.leased_by <> $2))) AS open
            FROM chatbatch_jobs j WHERE j.id = $1
            """, [String(job), String(worker)])[0]
        return (row.bool("loaded") == true, row.int("open") ?? 0)
    }

    /// Lines by state, and how many were sent again after their holder lost them.
    func counts() throws(ChatBatchError) -> [String: Int] {
        var out: [String: Int] = [:]
        for row in try connection.rows(
            "SELECT state, count(*) AS n, sum(resent_after_crash) AS resent FROM chatbatch_lines WHERE job = $1 GROUP BY state",
            [String(job)])
        {
            out[row["state"] ?? "?"] = row.int("n") ?? 0
            out["resent_after_crash", default: 0] += row.int("resent") ?? 0
        }
        return out
    }

    /// The statement `update` (with `… SET …`, no `WHERE`) on `claimed`'s line, only while its lease is held.
    /// `extra` are its parameters from `$4` on.
    private func fenced(
        _ update: String, _ claimed: ClaimedLine, _ extra: [String?] = [], also condition: String = "true"
    ) throws(ChatBatchError) -> Bool {
        let rows = try connection.rows(
            update
                + " WHERE job = $1 AND line = $2 AND lease_token = $3 AND state = 'leased' AND \(condition) RETURNING line",
            [String(job), String(claimed.line), String(claimed.token)] + extra)
        return rows.count == 1
    }

    /// The condition on the rows `l` a batch statement names in its array parameter `lines` (the job is `$1`; the
    /// array is unnested `AS v` beside it): found by the primary key (`l.line = ANY (…)` beside the join), whatever
    /// the planner believes of the job's size (a job loaded a moment ago is not in its statistics yet). An empty
    /// array reads nothing: with no lines any index would serve, and one was seen walking every leased line of the
    /// job for nothing.
    static func named(_ lines: String) -> String {
        "cardinality(\(lines)::bigint[]) > 0 AND l.job = $1 AND l.line = ANY (\(lines)::bigint[]) AND l.line = v.line"
    }

    /// A PostgreSQL array literal of text elements (NULL for nil), for `unnest`: each element quoted, with its
    /// backslashes and quotes escaped. Built as bytes: a turn's outcomes are kilobytes each, many times a second.
    static func array(_ values: [String?]) -> String {
        var out: [UInt8] = [UInt8(ascii: "{")]
        out.reserveCapacity(values.reduce(2) { $0 + ($1?.utf8.count ?? 4) + 3 })
        for (i, value) in values.enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            guard let value else {
                out += Array("NULL".utf8)
                continue
            }
            out.append(UInt8(ascii: "\""))
            for byte in value.utf8 {
                if byte == UInt8(ascii: "\\") || byte == UInt8(ascii: "\"") { out.append(UInt8(ascii: "\\")) }
                out.append(byte)
            }
            out.append(UInt8(ascii: "\""))
        }
        out.append(UInt8(ascii: "}"))
        return String(decoding: out, as: UTF8.self)
    }
}
