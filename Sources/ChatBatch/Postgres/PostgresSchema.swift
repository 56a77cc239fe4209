/// The tables a job keeps in a PostgreSQL store, created or checked when a worker connects. Every table is named
/// `chatbatch_…`, so a database shared with other applications is fine; `chatbatch_meta` says which schema the
/// tables follow.
///
/// - `chatbatch_jobs`: one row per job name (the job file's name, or `--job-name`), with its input's fingerprint
///   and how much of the input is loaded.
/// - `chatbatch_lines`: one row per input line: its request, its state (`queued`, `leased`, `done`, `failed`), the
///   lease that holds it (`lease_token`, fresh for every claim; `leased_by`; `lease_expires`), whether a request for
///   it is on the wire (`in_flight`), and what came back.
/// - `chatbatch_workers`: one row per worker process: host, pid, concurrency, heartbeat.
/// - `chatbatch_keys`: the state of a provider's key shared by every worker that uses it, named by the key's
///   SHA-256 (never the key); `chatbatch_key_users`: which workers use which key.
/// - `chatbatch_attempts` and `chatbatch_samples`: what `report` and its page draw: every request a worker made, and
///   each worker's in-flight limit over time (written about once a second beside the work, never in its way).
/// - `chatbatch_controls` and `chatbatch_control_outcomes`: the controls given to a job's workers, and what each
///   worker made of each.
enum PostgresSchema {
    /// The schema this build writes; a store with a newer one is refused, an older one upgraded.
    static let version = 5

    /// The columns added since schema 1 (the store's parts before `--store` ran jobs), which `create` leaves out: run
    /// after `create` on every store, new or older. Schema 3 added what the report reads: each finished line's model,
    /// error, latency, time to first token, cache savings and endpoint; each worker's settings, exit and summary.
    /// Schema 4 added the controls given to a job's workers (`chatbatch control` on a store) and what each made of
    /// them, when a worker last looked above a key's level, and when each worker last said what it had out. Schema 5
    /// dropped the lines' foreign key to their job (see `create`) and keeps when a round of refusals' first refused
    /// request was sent, the level it began at, and what each worker saw refused in it.
    static let upgrade = """
        ALTER TABLE chatbatch_jobs ADD COLUMN IF NOT EXISTS spent float8 NOT NULL DEFAULT 0;
        ALTER TABLE chatbatch_jobs ADD COLUMN IF NOT EXISTS results_path text;
        ALTER TABLE chatbatch_jobs ADD COLUMN IF NOT EXISTS errors_path text;
        ALTER TABLE chatbatch_lines ADD COLUMN IF NOT EXISTS prompt_tokens bigint NOT NULL DEFAULT 0;
        ALTER TABLE chatbatch_lines ADD COLUMN IF NOT EXISTS completion_tokens bigint NOT NULL DEFAULT 0;
        ALTER TABLE chatbatch_lines ADD COLUMN IF NOT EXISTS cost float8 NOT NULL DEFAULT 0;
        ALTER TABLE chatbatch_key_users ADD COLUMN IF NOT EXISTS inflight integer NOT NULL DEFAULT 0;
        ALTER TABLE chatbatch_keys ADD COLUMN IF NOT EXISTS learned_at timestamptz;
        CREATE INDEX IF NOT EXISTS chatbatch_lines_leased ON chatbatch_lines (leased_by) WHERE state = 'leased';
        CREATE INDEX IF NOT EXISTS chatbatch_lines_queued ON chatbatch_lines (job, line) WHERE state = 'queued';
        CREATE INDEX IF NOT EXISTS chatbatch_lines_expiring ON chatbatch_lines (job, lease_expires)
            WHERE state = 'leased';
        ALTER TABLE chatbatch_lines ADD COLUMN IF NOT EXISTS model text;
        ALTER TABLE chatbatch_lines ADD COLUMN IF NOT EXISTS error_code text;
        ALTER TABLE chatbatch_lines ADD COLUMN IF NOT EXISTS error_message text;
        ALTER TABLE chatbatch_lines ADD COLUMN IF NOT EXISTS latency_ms float8;
        ALTER TABLE chatbatch_lines ADD COLUMN IF NOT EXISTS ttft_ms float8;
        ALTER TABLE chatbatch_lines ADD COLUMN IF NOT EXISTS cached boolean NOT NULL DEFAULT false;
        ALTER TABLE chatbatch_lines ADD COLUMN IF NOT EXISTS saved_tokens bigint NOT NULL DEFAULT 0;
        ALTER TABLE chatbatch_lines ADD COLUMN IF NOT EXISTS saved_cost float8 NOT NULL DEFAULT 0;
        ALTER TABLE chatbatch_lines ADD COLUMN IF NOT EXISTS endpoint text;
        ALTER TABLE chatbatch_workers ADD COLUMN IF NOT EXISTS settings text;
        ALTER TABLE chatbatch_workers ADD COLUMN IF NOT EXISTS exit_code integer;
        ALTER TABLE chatbatch_workers ADD COLUMN IF NOT EXISTS summary text;
        CREATE INDEX IF NOT EXISTS chatbatch_lines_custom_id ON chatbatch_lines (job, custom_id);
        ALTER TABLE chatbatch_keys ADD COLUMN IF NOT EXISTS looked_at timestamptz;
        ALTER TABLE chatbatch_key_users ADD COLUMN IF NOT EXISTS said_at timestamptz;
        CREATE TABLE IF NOT EXISTS chatbatch_controls (
            id bigserial PRIMARY KEY,
            job bigint NOT NULL REFERENCES chatbatch_jobs (id),
            given_at float8 NOT NULL,
            host text NOT NULL,
            pid integer NOT NULL,
            action text NOT NULL,
            provider text);
        CREATE INDEX IF NOT EXISTS chatbatch_controls_job ON chatbatch_controls (job, id);
        CREATE TABLE IF NOT EXISTS chatbatch_control_outcomes (
            control bigint NOT NULL REFERENCES chatbatch_controls (id),
            worker bigint NOT NULL REFERENCES chatbatch_workers (id),
            applied_at float8 NOT NULL,
            outcome text NOT NULL,
            PRIMARY KEY (control, worker));
        ALTER TABLE chatbatch_lines DROP CONSTRAINT IF EXISTS chatbatch_lines_job_fkey;
        ALTER TABLE chatbatch_keys ADD COLUMN IF NOT EXISTS refused_at float8;
        ALTER TABLE chatbatch_keys ADD COLUMN IF NOT EXISTS round_from integer;
        ALTER TABLE chatbatch_key_users ADD COLUMN IF NOT EXISTS refused integer NOT NULL DEFAULT 0;
        """

    /// The tables as this build creates them. The lines have no foreign key to their job, unlike the other tables:
    /// PostgreSQL checks one by a statement per row inserted, and that check was more than half of the server's work
    /// loading an input (COPY ran at 40,000 lines a second with it, 70,000–90,000 without). A job's lines are only
    /// loaded by a worker holding the job's row, and no job is ever deleted, so the key guarded nothing.
    static let create = """
        CREATE TABLE IF NOT EXISTS chatbatch_meta (key text PRIMARY KEY, value text NOT NULL);
        CREATE TABLE IF NOT EXISTS chatbatch_jobs (
            id bigserial PRIMARY KEY,
            name text NOT NULL UNIQUE,
            fingerprint text NOT NULL,
            lines_loaded bigint NOT NULL DEFAULT 0,
            loaded boolean NOT NULL DEFAULT false,
            spent float8 NOT NULL DEFAULT 0,
            results_path text,
            errors_path text,
            created_at timestamptz NOT NULL DEFAULT now());
        CREATE TABLE IF NOT EXISTS chatbatch_lines (
            job bigint NOT NULL,
            line bigint NOT NULL,
            custom_id text,
            request bytea NOT NULL,
            oversize bigint,
            state text NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'leased', 'done', 'failed')),
            lease_token bigint,
            leased_by bigint,
            lease_expires timestamptz,
            in_flight boolean NOT NULL DEFAULT false,
            claims integer NOT NULL DEFAULT 0,
            resent_after_crash integer NOT NULL DEFAULT 0,
            result bytea,
            prompt_tokens bigint NOT NULL DEFAULT 0,
            completion_tokens bigint NOT NULL DEFAULT 0,
            cost float8 NOT NULL DEFAULT 0,
            finished_at timestamptz,
            PRIMARY KEY (job, line),
            CHECK ((state = 'leased') = (lease_token IS NOT NULL)));
        CREATE INDEX IF NOT EXISTS chatbatch_lines_open ON chatbatch_lines (job, line)
            WHERE state IN ('queued', 'leased');
        CREATE INDEX IF NOT EXISTS chatbatch_lines_leased ON chatbatch_lines (leased_by) WHERE state = 'leased';
        CREATE INDEX IF NOT EXISTS chatbatch_lines_queued ON chatbatch_lines (job, line) WHERE state = 'queued';
        CREATE INDEX IF NOT EXISTS chatbatch_lines_expiring ON chatbatch_lines (job, lease_expires)
            WHERE state = 'leased';
        CREATE SEQUENCE IF NOT EXISTS chatbatch_lease_tokens;
        CREATE TABLE IF NOT EXISTS chatbatch_workers (
            id bigserial PRIMARY KEY,
            job bigint NOT NULL REFERENCES chatbatch_jobs (id),
            host text NOT NULL,
            pid integer NOT NULL,
            concurrency integer NOT NULL,
            started_at timestamptz NOT NULL DEFAULT now(),
            heartbeat_at timestamptz NOT NULL DEFAULT now(),
            stopped_at timestamptz);
        CREATE TABLE IF NOT EXISTS chatbatch_keys (
            key_hash text PRIMARY KEY,
            paused_until timestamptz,
            learned_limit integer,
            learned_at timestamptz,
            refused_at float8,
            round_from integer,
            updated_at timestamptz NOT NULL DEFAULT now());
        CREATE TABLE IF NOT EXISTS chatbatch_key_users (
            key_hash text NOT NULL REFERENCES chatbatch_keys (key_hash),
            worker bigint NOT NULL REFERENCES chatbatch_workers (id),
            inflight integer NOT NULL DEFAULT 0,
            PRIMARY KEY (key_hash, worker));
        CREATE TABLE IF NOT EXISTS chatbatch_attempts (
            job bigint NOT NULL REFERENCES chatbatch_jobs (id),
            worker bigint NOT NULL,
            line bigint NOT NULL,
            started_at float8 NOT NULL,
            latency_ms float8 NOT NULL,
            status integer,
            ambiguous boolean NOT NULL DEFAULT false,
            endpoint text NOT NULL);
        CREATE INDEX IF NOT EXISTS chatbatch_attempts_job ON chatbatch_attempts (job);
        CREATE TABLE IF NOT EXISTS chatbatch_samples (
            job bigint NOT NULL REFERENCES chatbatch_jobs (id),
            worker bigint NOT NULL,
            t float8 NOT NULL,
            endpoint text NOT NULL,
            "window" integer NOT NULL);
        CREATE INDEX IF NOT EXISTS chatbatch_samples_job ON chatbatch_samples (job, t);
        """
}
