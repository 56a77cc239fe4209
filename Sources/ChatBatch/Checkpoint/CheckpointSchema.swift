import ChatBatchCore

/// The checkpoint's tables, and the upgrades from older schema versions.
extension CheckpointStore {
    /// What version 3 adds to a version 2 checkpoint (and a new checkpoint has from the start), as version 3 shipped.
    /// A shipped step is never edited: what comes later is a step of its own (`addV4`), and Tests/Fixtures
    /// holds a checkpoint written by each released schema's binary, which today's binary must open, resume and export.
    static let v3Additions = """
        ALTER TABLE requests ADD COLUMN usage_estimated INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE requests ADD COLUMN repaired INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE requests ADD COLUMN endpoint_id INTEGER;
        ALTER TABLE attempts ADD COLUMN endpoint_id INTEGER;
        ALTER TABLE attempts ADD COLUMN inflight INTEGER;
        ALTER TABLE attempts ADD COLUMN window INTEGER;
        CREATE TABLE endpoints(
            id INTEGER PRIMARY KEY,
            identity TEXT NOT NULL UNIQUE,
            label TEXT NOT NULL,
            provider TEXT NOT NULL,
            url TEXT NOT NULL,
            fake INTEGER NOT NULL DEFAULT 0,
            first_success_at REAL);
        CREATE TABLE samples(
            run_id INTEGER NOT NULL,
            t REAL NOT NULL,
            endpoint_id INTEGER,
            inflight INTEGER NOT NULL,
            window INTEGER NOT NULL,
            paused INTEGER NOT NULL DEFAULT 0);
        """
    /// What version 4 adds: the provider of an answer (several providers in one run). It was added to the version 3
    /// step after version 3 had shipped, so a version 3 checkpoint may or may not have it: added only when missing.
    func addV4() throws(ChatBatchError) {
        let columns = try db.query("PRAGMA table_info(requests)").compactMap { $0.count > 1 ? $0[1].text : nil }
        if !columns.contains("provider") { try db.execute("ALTER TABLE requests ADD COLUMN provider TEXT") }
    }

    func prepareSchema(fresh: Bool, migrate: Bool) throws(ChatBatchError) {
        let appID: Int32
        do {
            appID = Int32(truncatingIfNeeded: try db.query("PRAGMA application_id").first?.first?.int ?? 0)
        } catch {
            throw ChatBatchError(
                .damaged,
                "checkpoint \(path) cannot be read (\(error.message)); it is damaged. Restore it from a copy; a new checkpoint would pay again for every prompt this one answered"
            )
        }
        let tables = try db.query("SELECT count(*) FROM sqlite_master").first?.first?.int ?? 0
        if tables == 0 && appID == 0 {
            try db.execute("PRAGMA journal_mode=WAL")
            try db.execute("PRAGMA synchronous=NORMAL")
            try db.execute("PRAGMA application_id=\(Self.applicationID)")
            try db.inTransaction { () throws(ChatBatchError) in
                try db.execute(
                    """
                    CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
                    CREATE TABLE requests(
                        custom_id TEXT PRIMARY KEY,
                        line INTEGER NOT NULL,
                        state TEXT NOT NULL,
                        attempts INTEGER NOT NULL DEFAULT 0,
                        body_hash TEXT NOT NULL,
                        model TEXT,
                        status_code INTEGER,
                        request_id TEXT,
                        prompt_tokens INTEGER NOT NULL DEFAULT 0,
                        completion_tokens INTEGER NOT NULL DEFAULT 0,
                        cost REAL NOT NULL DEFAULT 0,
                        error_code TEXT,
                        error_message TEXT,
                        ambiguous INTEGER NOT NULL DEFAULT 0,
                        crash_resend INTEGER NOT NULL DEFAULT 0,
                        latency_ms REAL,
                        ttft_ms REAL,
                        cached INTEGER NOT NULL DEFAULT 0,
                        saved_tokens INTEGER NOT NULL DEFAULT 0,
                        saved_cost REAL NOT NULL DEFAULT 0,
                        output TEXT,
                        out_kind INTEGER,
                        out_seq INTEGER,
                        updated_at REAL NOT NULL);
                    CREATE INDEX requests_out ON requests(out_kind, out_seq) WHERE out_seq IS NOT NULL;
                    CREATE TABLE attempts(
                        id INTEGER PRIMARY KEY,
                        custom_id TEXT NOT NULL,
                        run_id INTEGER NOT NULL,
                        attempt INTEGER NOT NULL,
                        started_at REAL NOT NULL,
                        status INTEGER,
                        latency_ms REAL,
                        request_id TEXT,
                        error TEXT,
                        ambiguous INTEGER NOT NULL DEFAULT 0);
                    CREATE TABLE runs(
                        id INTEGER PRIMARY KEY,
                        started_at REAL NOT NULL,
                        ended_at REAL,
                        exit_code INTEGER,
                        summary TEXT);
                    \(Self.v3Additions)
                    ALTER TABLE requests ADD COLUMN provider TEXT;
                    \(Self.v5Additions)
                    INSERT INTO meta VALUES('schema_version', '\(Self.schemaVersion)');
                    INSERT INTO meta VALUES('created_by', 'chatbatch');
                    """)
            }
            return
        }
        guard appID == Self.applicationID else {
            throw ChatBatchError(
                .foreign,
                "\(path) is an SQLite file of another program, not a chatbatch checkpoint; refusing to touch it. Give the path of a chatbatch checkpoint (a run takes --checkpoint or --output)"
            )
        }
        version = Int(try db.query("SELECT value FROM meta WHERE key='schema_version'").first?.first?.text ?? "") ?? 0
        if (1..<Self.schemaVersion).contains(version) && migrate {
            try db.inTransaction { () throws(ChatBatchError) in
                if version == 1 {
                    try db.execute(
                        """
                        ALTER TABLE requests ADD COLUMN cached INTEGER NOT NULL DEFAULT 0;
                        ALTER TABLE requests ADD COLUMN saved_tokens INTEGER NOT NULL DEFAULT 0;
                        ALTER TABLE requests ADD COLUMN saved_cost REAL NOT NULL DEFAULT 0;
                        """)
                }
                if version < 3 { try db.execute(Self.v3Additions) }
                try addV4()
                if version < 5 { try db.execute(Self.v5Additions) }
                try db.execute("UPDATE meta SET value='\(Self.schemaVersion)' WHERE key='schema_version'")
            }
            version = Self.schemaVersion
        }
        guard (1...Self.schemaVersion).contains(version) else {
            let newer = version > Self.schemaVersion
            throw ChatBatchError(
                newer ? .newerSchema : .unknownSchema,
                "checkpoint \(path) has schema version \(version), this chatbatch reads version \(Self.schemaVersion)"
                    + (newer ? "; it was written by a newer chatbatch: upgrade to resume it" : ""))
        }
        try db.execute("PRAGMA synchronous=NORMAL")
    }
}
