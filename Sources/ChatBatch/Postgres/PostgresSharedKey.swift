/// What every worker of a store knows of one provider key, read at the server's clock (so machines whose clocks
/// disagree still agree on a pause).
struct SharedKeyState: Sendable, Equatable {
    /// Seconds left of a pause a 429 asked for at any worker (0: none).
    let pausedFor: Double
    /// The in-flight level the key was found to allow, over all its workers (nil: not learnt yet).
    let learnedLimit: Int?
    /// Workers using the key whose heartbeat is recent and that have work (requests out, or lines held): the learnt
    /// level is divided between them, so that the last workers of a job are not held to the share of idle ones.
    let liveWorkers: Int
    /// What the key's live workers have in flight together, as each last said.
    var inflight = 0
    /// Workers using the key whose heartbeat is recent, with work or not (a worker starting counts those it ramps
    /// up beside).
    var users = 0
    /// Live workers before this one (by when they joined): the first `level % liveWorkers` of them take one more.
    var rank = 0
    /// A round of refusals is open (its first was under two seconds ago): every worker says what it was serving when
    /// the round's first refused request was sent (`refusedAt`, seconds since 1970).
    var roundOpen = false
    var refusedAt: Double? = nil

    /// This worker's share of the learnt level (at least 1), nil while none is learnt. The shares add up to the
    /// level: a key of 15 over four workers is 4, 4, 4 and 3, not four times 3.
    var share: Int? {
        learnedLimit.map { level in
            let n = max(1, liveWorkers)
            return max(1, level / n + (rank < level % n ? 1 : 0))
        }
    }
}

/// One worker of a job as `status` lists it.
struct WorkerRow: Sendable, Equatable {
    let id: Int
    let host: String
    let pid: Int
    let concurrency: Int
    let held: Int
    let quietSeconds: Double
    let stopped: Bool
}

/// A provider key's limits shared by the workers of a store, named by `SHA256.hex(key)`: a 429 at one worker pauses
/// them all for its wait, and the level the key allows is one figure that the live workers divide.
extension PostgresWorkQueue {
    /// This worker uses the key named `hash`.
    func useKey(_ hash: String) throws(ChatBatchError) {
        try connection.inTransaction { () throws(ChatBatchError) in
            try connection.rows(
                "INSERT INTO chatbatch_keys (key_hash) VALUES ($1) ON CONFLICT (key_hash) DO NOTHING", [hash])
            try connection.rows(
                "INSERT INTO chatbatch_key_users (key_hash, worker) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                [hash, String(worker)])
        }
    }

    /// A 429 asked to wait `seconds`: the key pauses for every worker until then (a later pause is never shortened).
    func pauseKey(_ hash: String, seconds: Double) throws(ChatBatchError) {
        try connection.rows(
            """
            UPDATE chatbatch_keys SET updated_at = now(),
                paused_until = greatest(paused_until, now() + make_interval(secs => $2))
            WHERE key_hash = $1
            """, [hash, String(seconds)])
    }

    /// A round of refusals is open on the key: its first was recorded under two seconds ago.
    static let roundOpen = "learned_at > now() - interval '2 seconds'"

    /// The key refused a request of this worker's, the first of them sent at `refusedAt` (seconds since 1970): a round
    /// of refusals opens, with the level the key had then, unless one is open (its first two seconds) whose first
    /// refusal was under a second before (the same burst; a refusal after it, once the round's pause has ended, is
    /// news of the level the round learnt, and opens the next). Returns when the round's first refused request was
    /// sent, whoever's it was: every worker counts what it had out then.
    func openRound(_ hash: String, refusedAt: Double) throws(ChatBatchError) -> Double {
        let row = try connection.rows(
            """
            WITH k AS (
                SELECT coalesce(\(Self.roundOpen) AND $2 < refused_at + 1, false) AS joins
                FROM chatbatch_keys WHERE key_hash = $1)
            UPDATE chatbatch_keys SET updated_at = now(),
                refused_at = CASE WHEN k.joins THEN refused_at ELSE $2 END,
                round_from = CASE WHEN k.joins THEN round_from ELSE learned_limit END,
                learned_at = CASE WHEN k.joins THEN learned_at ELSE now() END
            FROM k WHERE key_hash = $1 RETURNING refused_at
            """, [hash, String(refusedAt)]
        ).first
        return row?.double("refused_at") ?? refusedAt
    }

    /// In a round of refusals: this worker was serving `serving` requests on the key when the round's first refused
    /// request was sent. The key's level is what the live workers' counts made in the round add up to (at least
    /// `workers`, one each), each worker's latest (a count made before its answers were in takes a request the key
    /// then refused for one it served). Counts from before the round count for nothing.
    ///
    /// A round opened at a level already learnt lowers it by what the workers say was refused in the round's first
    /// second (`refused`: what was offered above the level), by one at least and a quarter at most. The counts of
    /// what was served are least sure there, in the burst of every worker resuming together after a pause (a key of
    /// 16 was counted as 11), where the refusals are exactly the excess. Outside a round it only records what this
    /// worker said.
    func learnLimit(_ hash: String, serving: Int, refused: Int = 0, workers: Int, liveWithin: Double)
        throws(ChatBatchError)
    {
        try connection.rows(
            """
            WITH k AS (
                SELECT learned_at AS round_at FROM chatbatch_keys
                WHERE key_hash = $1 AND \(Self.roundOpen)),
            me AS (
                UPDATE chatbatch_key_users SET inflight = $3, refused = $6, said_at = now()
                WHERE key_hash = $1 AND worker = $2),
            others AS (
                SELECT coalesce(sum(u.inflight), 0) AS serving, coalesce(sum(u.refused), 0) AS refused
                FROM chatbatch_key_users u JOIN chatbatch_workers w ON w.id = u.worker, k
                WHERE u.key_hash = $1 AND u.worker <> $2 AND u.said_at >= k.round_at AND w.stopped_at IS NULL
                  AND w.heartbeat_at > now() - make_interval(secs => $5))
            UPDATE chatbatch_keys SET updated_at = now(), learned_limit = greatest($4::integer, CASE
                WHEN round_from IS NULL THEN $3 + others.serving
                ELSE least(round_from - 1, greatest(round_from - greatest(1, round_from / 4),
                    round_from - $6 - others.refused)) END)
            FROM k, others WHERE key_hash = $1
            """, [hash, String(worker), String(serving), String(workers), String(liveWithin), String(refused)])
    }

    /// The key's level was `from` and no worker has been refused at it for a while: look one higher, unless any
    /// worker looked in the last `quiet` seconds (one look for all of them, not one each).
    func raiseLimit(_ hash: String, from: Int, quiet: Double) throws(ChatBatchError) {
        try connection.rows(
            """
            UPDATE chatbatch_keys SET learned_limit = learned_limit + 1, looked_at = now(), updated_at = now()
            WHERE key_hash = $1 AND learned_limit = $2
              AND (looked_at IS NULL OR looked_at < now() - make_interval(secs => $3))
            """, [hash, String(from), String(quiet)])
    }

    /// This worker has `inflight` requests out on the key (said every half second, and when).
    func sayInflight(_ hash: String, _ inflight: Int) throws(ChatBatchError) {
        try connection.rows(
            "UPDATE chatbatch_key_users SET inflight = $3, said_at = now() WHERE key_hash = $1 AND worker = $2",
            [hash, String(worker), String(inflight)])
    }

    /// The key's shared state; a worker counts as live while its heartbeat is under `liveWithin` seconds old.
    func keyState(_ hash: String, liveWithin: Double) throws(ChatBatchError) -> SharedKeyState {
        let row = try connection.rows(
            """
            SELECT greatest(extract(epoch FROM k.paused_until - now()), 0)::float8 AS paused_for, k.learned_limit,
                coalesce(k.\(Self.roundOpen), false) AS round_open, k.refused_at,
                live.n AS live, live.inflight, live.before, live.users
            FROM chatbatch_keys k, LATERAL (
                SELECT count(*) FILTER (WHERE x.working) AS n,
                    coalesce(sum(x.inflight) FILTER (WHERE x.working), 0) AS inflight,
                    count(*) FILTER (WHERE x.working AND x.worker < $3) AS before, count(*) AS users
                FROM (
                    SELECT u.worker, u.inflight, u.inflight > 0 OR EXISTS (
                        SELECT 1 FROM chatbatch_lines l WHERE l.leased_by = w.id AND l.state = 'leased') AS working
                    FROM chatbatch_key_users u JOIN chatbatch_workers w ON w.id = u.worker
                    WHERE u.key_hash = k.key_hash AND w.stopped_at IS NULL
                      AND w.heartbeat_at > now() - make_interval(secs => $2)) AS x) AS live
            WHERE k.key_hash = $1
            """, [hash, String(liveWithin), String(worker)]
        ).first
        return SharedKeyState(
            pausedFor: row?.double("paused_for") ?? 0, learnedLimit: row?.int("learned_limit"),
            liveWorkers: row?.int("live") ?? 0, inflight: row?.int("inflight") ?? 0, users: row?.int("users") ?? 0,
            rank: row?.int("before") ?? 0, roundOpen: row?.bool("round_open") == true,
            refusedAt: row?.double("refused_at"))
    }

    /// The job's workers, for `status`: host, pid, concurrency, lines held, seconds since the last heartbeat (at the
    /// server's clock), and whether it stopped; live ones first, then by start.
    func workers() throws(ChatBatchError) -> [WorkerRow] {
        try connection.rows(
            """
            SELECT w.id, w.host, w.pid, w.concurrency, w.stopped_at IS NOT NULL AS stopped,
                extract(epoch FROM now() - w.heartbeat_at)::float8 AS quiet,
                (SELECT count(*) FROM chatbatch_lines l
                 WHERE l.job = w.job AND l.leased_by = w.id AND l.state = 'leased') AS held
            FROM chatbatch_workers w WHERE w.job = $1 ORDER BY stopped, w.started_at, w.id
            """, [String(job)]
        ).map {
            WorkerRow(
                id: $0.int("id") ?? 0, host: $0["host"] ?? "", pid: $0.int("pid") ?? 0,
                concurrency: $0.int("concurrency") ?? 0, held: $0.int("held") ?? 0,
                quietSeconds: $0.double("quiet") ?? 0, stopped: $0.bool("stopped") == true)
        }
    }

    /// This worker stops: the lines it holds whose requests never left go back to the queue at once (those on the
    /// wire keep their lease until it expires), and it no longer counts as live.
    func stopWorker() throws(ChatBatchError) {
        try connection.inTransaction { () throws(ChatBatchError) in
            try connection.rows(
                """
                UPDATE chatbatch_lines SET state = 'queued', lease_token = NULL, leased_by = NULL, lease_expires = NULL
                WHERE job = $1 AND leased_by = $2 AND state = 'leased' AND NOT in_flight
                """, [String(job), String(worker)])
            try connection.rows("UPDATE chatbatch_workers SET stopped_at = now() WHERE id = $1", [String(worker)])
        }
    }
}
