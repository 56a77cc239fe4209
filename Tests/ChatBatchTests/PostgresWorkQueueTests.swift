import ChatBatchCore
import Foundation
import Synchronization
import TestSupport
import Testing

@testable import ChatBatch

/// The work queue of a job in PostgreSQL against a real server: claims that never overlap, leases that expire and
/// fence a worker that lost them, the input loaded once, and a store that is not chatbatch's refused.
@Suite(
    "PostgreSQL: claims, leases and fencing",
    needs("PostgreSQL's initdb and pg_ctl (Debian: apt-get install postgresql)") { PostgresServer.binaries != nil })
struct PostgresWorkQueueTests {
    static let shared = Result { try PostgresServer() }

    /// A worker on job `name` with a connection of its own.
    static func worker(_ name: String, fingerprint: String? = "f1", database: String = "postgres") throws
        -> PostgresWorkQueue
    {
        let server = try shared.get()
        return try PostgresWorkQueue(
            connection: PostgresConnection(PostgresAddress(server.url(database: database))), job: name,
            fingerprint: fingerprint, host: "test", pid: Int(getpid()), concurrency: 8)
    }

    static func lines(_ n: Int) -> [InputLineRecord] {
        (1...n).map { InputLineRecord(line: $0, customID: "c\($0)", request: Array("{\"prompt\":\"q\($0)\"}".utf8)) }
    }

    /// The worker's leases run out, as they do when it was killed or cut off and renewed nothing.
    static func expireLeases(_ queue: PostgresWorkQueue) throws {
        try queue.connection.rows(
            "UPDATE chatbatch_lines SET lease_expires = now() - interval '1 second' WHERE job = $1 AND leased_by = $2",
            [String(queue.job), String(queue.worker)])
    }

    @Test func workersClaimingAtOnceNeverShareALine() throws {
        let name = "job-\(UUID().uuidString)"
        let loader = try Self.worker(name)
        try loader.load(Self.lines(300), last: true)
        let claimed = Mutex<[[Int]]>([[], [], []])
        DispatchQueue.concurrentPerform(iterations: 3) { i in
            guard let queue = try? Self.worker(name) else { return }
            while let batch = try? queue.claim(limit: 7, lease: 60), !batch.isEmpty {
                claimed.withLock { $0[i] += batch.map(\.line) }
                for line in batch { _ = try? queue.finish(line, result: [1], failed: false) }
            }
        }
        let all = claimed.withLock { $0 }
        #expect(all.flatMap { $0 }.sorted() == Array(1...300), "every line claimed exactly once")
        #expect(try loader.counts()["done"] == 300)
    }

    /// A worker that was killed (its lease expires) loses its lines to the next claimer; a line whose request was on
    /// the wire is counted as possibly billed twice; the old holder can change nothing any more.
    @Test func anExpiredLeaseGoesBackAndItsOldHolderIsFencedOut() throws {
        let name = "job-\(UUID().uuidString)"
        let a = try Self.worker(name), b = try Self.worker(name)
        try a.load(Self.lines(2), last: true)
        let held = try a.claim(limit: 3, lease: 60)
        #expect(held.map(\.line) == [1, 2] && held.allSatisfy { !$0.resentAfterCrash })
        #expect(try a.sending(held[0]))  // line 1's request left; line 2's never did
        try Self.expireLeases(a)
        #expect(try !a.sending(held[1]), "an expired lease sends nothing, even before anyone claims the line again")
        let taken = try b.claim(limit: 5, lease: 60)
        #expect(taken.map(\.line) == [1, 2])
        #expect(taken.map(\.resentAfterCrash) == [true, false])
        #expect(Set(taken.map(\.token)).isDisjoint(with: held.map(\.token)), "a fresh token per claim")
        // The old holder's answer, its send mark and its give-back are all refused.
        #expect(try !a.finish(held[0], result: Array("late".utf8), failed: false))
        #expect(try !a.sending(held[1]))
        #expect(try !a.giveBack(held[1]))
        #expect(try a.renew(lease: 60) == 0)
        #expect(try b.finish(taken[0], result: Array("kept".utf8), failed: false))
        #expect(try b.finish(taken[1], result: Array("err".utf8), failed: true))
        let counts = try b.counts()
        #expect(counts["done"] == 1 && counts["failed"] == 1 && counts["resent_after_crash"] == 1, "\(counts)")
        let kept = try a.connection.rows(
            "SELECT result FROM chatbatch_lines WHERE job = $1 AND line = 1", [String(a.job)])[0].bytes("result")
        #expect(kept == Array("kept".utf8))
    }

    @Test func aRenewedLeaseIsKeptAndALineGivenBackIsNotCountedAsResent() throws {
        let name = "job-\(UUID().uuidString)"
        let a = try Self.worker(name), b = try Self.worker(name)
        try a.load(Self.lines(2), last: true)
        let held = try a.claim(limit: 2, lease: 0)
        #expect(try a.renew(lease: 60) == 2)
        #expect(try b.claim(limit: 5, lease: 60).isEmpty, "a renewed lease is not taken")
        #expect(try a.giveBack(held[1]))
        let again = try b.claim(limit: 5, lease: 60)
        #expect(again.map(\.line) == [2] && !again[0].resentAfterCrash)
        #expect(try a.finish(held[0], result: [1], failed: false))
    }

    /// One worker loads; a second waits its turn and takes over when the first goes (its connection closes).
    @Test func theInputIsLoadedByOneWorkerAndHandedOnWhenItDies() throws {
        let name = "job-\(UUID().uuidString)"
        var first: PostgresWorkQueue? = try Self.worker(name)
        let second = try Self.worker(name, fingerprint: nil)
        #expect(try first!.takeLoading())
        #expect(try !second.takeLoading())
        try first!.load(Array(Self.lines(10)[0..<5]), last: false)
        let partly = try second.loaded()
        #expect(partly.lines == 5 && !partly.all)
        #expect(try second.claim(limit: 100, lease: 60).count == 5, "what is loaded can be claimed")
        first = nil  // the loader dies: its session's lock goes with it
        #expect(eventually { (try? second.takeLoading()) == true })
        try second.load(Self.lines(10), last: true)  // the first 5 are there already: left as they are
        let whole = try second.loaded()
        #expect(whole.lines == 10 && whole.all)
        #expect(try second.counts() == ["leased": 5, "queued": 5, "resent_after_crash": 0])
    }

    @Test func aStoreThatIsNotChatbatchsOrIsNewerIsRefused() throws {
        let server = try Self.shared.get()
        let admin = try PostgresConnection(PostgresAddress(server.url()))
        let foreign = "foreign_\(UUID().uuidString.prefix(8).lowercased())"
        let newer = "newer_\(UUID().uuidString.prefix(8).lowercased())"
        try admin.execute("CREATE DATABASE \(foreign)")
        try admin.execute("CREATE DATABASE \(newer)")
        let other = try PostgresConnection(PostgresAddress(server.url(database: foreign)))
        try other.execute("CREATE TABLE chatbatch_lines (id int)")
        do {
            _ = try Self.worker("j", database: foreign)
            Issue.record("a database with another application's chatbatch_lines was taken")
        } catch let error as ChatBatchError {
            #expect(error.code == .foreign, "\(error)")
        }
        _ = try Self.worker("j", database: newer)
        let future = try PostgresConnection(PostgresAddress(server.url(database: newer)))
        try future.execute("UPDATE chatbatch_meta SET value = '99' WHERE key = 'schema'")
        do {
            _ = try Self.worker("j", database: newer)
            Issue.record("a newer schema was accepted")
        } catch let error as ChatBatchError {
            #expect(error.code == .newerSchema && error.message.contains("99"), "\(error)")
            #expect(!error.message.contains(server.password))
        }
    }

    /// A worker's turn is one statement: outcomes kept and sends allowed only under a held lease, the job's spend
    /// added in the same commit.
    @Test func aTurnKeepsOnlyWhatItsLeasesHoldAndAddsTheSpend() throws {
        let name = "job-\(UUID().uuidString)"
        let a = try Self.worker(name), b = try Self.worker(name)
        try a.load(Self.lines(4), last: true)
        let held = try a.claim(limit: 4, lease: 60)
        try Self.expireLeases(a)
        let taken = try b.claim(limit: 2, lease: 60)  // lines 1 and 2 are b's now; 3 and 4 are a's, expired
        #expect(taken.map(\.line) == [1, 2])
        let late = try a.turn(
            outcomes: [LineOutcome(claim: held[0], result: [1], failed: false, cost: 0.5)], unsent: [],
            leaving: [held[2]])
        #expect(late == TurnRecord(), "a lost lease keeps nothing; an expired one sends nothing")
        let record = try b.turn(
            outcomes: [
                LineOutcome(claim: taken[0], result: Array("ok".utf8), failed: false, promptTokens: 3, cost: 0.25)
            ], unsent: [], leaving: [taken[1]])
        #expect(record.kept == [1] && record.allowed == [2] && record.spent == 0.25)
        #expect(try b.counts()["done"] == 1 && b.totals().prompt == 3)
        // A line is recorded as leaving only while its lease holds for more than the margin the worker asks for (it
        // may send it until then without asking again): a lease of 60 s holds for 30 s more, not for 90.
        #expect(try b.turn(outcomes: [], unsent: [], leaving: [taken[1]], margin: 90) == TurnRecord())
        #expect(try b.turn(outcomes: [], unsent: [], leaving: [taken[1]], margin: 30).allowed == [2])
    }

    @Test func aStoreAtSchemaOneIsUpgradedInPlaceWithItsJobs() throws {
        let server = try Self.shared.get()
        let admin = try PostgresConnection(PostgresAddress(server.url()))
        let old = "old_\(UUID().uuidString.prefix(8).lowercased())"
        try admin.execute("CREATE DATABASE \(old)")
        let first = try Self.worker("kept", database: old)
        try first.load(Self.lines(3), last: true)
        // As schema 1 left it: none of the columns schema 2 added, nor the report's tables and columns of schema 3.
        let db = try PostgresConnection(PostgresAddress(server.url(database: old)))
        // A fresh store's lines run no trigger as they are loaded (a foreign key's check is one statement per row).
        let linesTriggers = "SELECT count(*) AS n FROM pg_trigger WHERE tgrelid = 'chatbatch_lines'::regclass"
        #expect(try db.rows(linesTriggers)[0].int("n") == 0)
        try db.execute(
            """
            ALTER TABLE chatbatch_jobs DROP COLUMN spent, DROP COLUMN results_path, DROP COLUMN errors_path;
            ALTER TABLE chatbatch_lines DROP COLUMN prompt_tokens, DROP COLUMN completion_tokens, DROP COLUMN cost,
                DROP COLUMN model, DROP COLUMN error_code, DROP COLUMN latency_ms, DROP COLUMN endpoint;
            ALTER TABLE chatbatch_key_users DROP COLUMN inflight;
            ALTER TABLE chatbatch_workers DROP COLUMN settings, DROP COLUMN summary;
            DROP TABLE chatbatch_attempts, chatbatch_samples;
            ALTER TABLE chatbatch_lines ADD FOREIGN KEY (job) REFERENCES chatbatch_jobs (id);
            UPDATE chatbatch_meta SET value = '1' WHERE key = 'schema'
            """)
        #expect(try db.rows(linesTriggers)[0].int("n") ?? 0 > 0)
        // A reader of this build refuses the report of an older store with what to do, and changes nothing.
        do {
            _ = try PostgresJobHistory(store: server.url(database: old), job: "kept")
            Issue.record("the report read a store older than its columns")
        } catch {
            #expect(error.code == .unknownSchema && error.message.contains("upgrades them"), "\(error)")
        }
        let again = try Self.worker("kept", database: old)
        #expect(try again.counts()["queued"] == 3)
        #expect(try again.jobRow().double("spent") == 0)
        let schema = try db.rows("SELECT value FROM chatbatch_meta WHERE key = 'schema'")[0]["value"]
        #expect(schema == String(PostgresSchema.version))
        #expect(try db.rows(linesTriggers)[0].int("n") == 0)  // schema 5 dropped the lines' foreign key
        // Schema 4's controls: a control given to the upgraded job reaches its worker.
        let given = try again.giveControl(action: "pause", provider: nil, host: "h", pid: 1, at: 1, liveWithin: 60)
        #expect(try given.map { g throws(ChatBatchError) in try again.controls(after: 0).map(\.id) == [g.id] } == true)
        try again.recordHistory(
            attempts: [AttemptHistory(line: 1, startedAt: 1, latencyMs: 5, status: 200, endpoint: "a")], lines: [],
            samples: [])
        #expect(try PostgresJobHistory(store: server.url(database: old), job: "kept").attemptCounts() == (1, 1))
    }

    /// A line whose custom_id an earlier line has is claimed with that line's number, whichever worker holds the
    /// earlier one, so every worker refuses the duplicate as a run on a file does.
    @Test func aClaimedLineKnowsAnEarlierLineWithItsCustomID() throws {
        let name = "job-\(UUID().uuidString)"
        let a = try Self.worker(name), b = try Self.worker(name)
        var lines = Self.lines(8)
        lines[6] = InputLineRecord(line: 7, customID: "c3", request: lines[6].request)  // line 7 repeats line 3's id
        try a.load(lines, last: true)
        let first = try a.claim(limit: 4, lease: 60)
        let second = try b.claim(limit: 4, lease: 60)
        #expect(first.map(\.line) == [1, 2, 3, 4] && first.allSatisfy { $0.earlierLine == nil })
        #expect(second.map(\.line) == [5, 6, 7, 8])
        #expect(second.map(\.earlierLine) == [nil, nil, 3, nil])
    }

    @Test func aJobNameLoadedFromAnotherInputIsRefused() throws {
        let name = "job-\(UUID().uuidString)"
        _ = try Self.worker(name, fingerprint: "aaaa")
        _ = try Self.worker(name, fingerprint: nil)  // a worker without the input takes the job as it is
        do {
            _ = try Self.worker(name, fingerprint: "bbbb")
            Issue.record("another input was accepted under the same job name")
        } catch let error as ChatBatchError {
            #expect(error.code == .otherInput && error.message.contains("--job-name"), "\(error)")
        }
    }

    /// A 429 at one worker pauses every worker on the key (a later pause is never shortened); the level learnt is
    /// divided between the live workers, and a stopped worker's share goes to the others.
    @Test func aKeysPauseAndLimitAreSharedByItsWorkers() throws {
        let name = "job-\(UUID().uuidString)"
        let key = SHA256.hex("sk-\(UUID().uuidString)")
        let a = try Self.worker(name), b = try Self.worker(name)
        try a.useKey(key)
        try b.useKey(key)
        // A worker with nothing out and no line held is not counted: it takes no share (but it ramps up beside the
        // others as one of the key's users).
        #expect(try b.keyState(key, liveWithin: 60).liveWorkers == 0)
        #expect(try b.keyState(key, liveWithin: 60).users == 2)
        try a.sayInflight(key, 3)
        try b.sayInflight(key, 4)
        #expect(
            try b.keyState(key, liveWithin: 60)
                == SharedKeyState(pausedFor: 0, learnedLimit: nil, liveWorkers: 2, inflight: 7, users: 2, rank: 1))
        #expect(try !a.keyState(key, liveWithin: 60).roundOpen)
        try a.pauseKey(key, seconds: 30)
        try a.pauseKey(key, seconds: 1)
        let paused = try b.keyState(key, liveWithin: 60).pausedFor
        #expect(paused > 25 && paused <= 30, "\(paused)")
        // One round of refusals, opened by b's refused request sent at 1000.5 s: a, refused later, joins it and
        // counts from b's moment too. b was serving 9 then; what a said before the round (3) counts for nothing,
        // what it counts in the round (7) adds up with b's; each worker's latest count is the one that holds (b's
        // first count took a request still out for one served: it was refused after).
        #expect(try b.openRound(key, refusedAt: 1000.5) == 1000.5)
        try b.learnLimit(key, serving: 10, workers: 2, liveWithin: 60)
        #expect(try a.keyState(key, liveWithin: 60).learnedLimit == 10)
        #expect(try a.keyState(key, liveWithin: 60).roundOpen && a.keyState(key, liveWithin: 60).refusedAt == 1000.5)
        #expect(try a.openRound(key, refusedAt: 1000.9) == 1000.5)
        try a.learnLimit(key, serving: 7, workers: 2, liveWithin: 60)
        #expect(try a.keyState(key, liveWithin: 60).learnedLimit == 17)
        try b.learnLimit(key, serving: 9, workers: 2, liveWithin: 60)
        #expect(try a.keyState(key, liveWithin: 60).learnedLimit == 16)
        #expect(try a.keyState(key, liveWithin: 60).share == 8)
        // A refusal sent more than a second after the round's first (after its pause) opens the next round, at the
        // level learnt: it is lowered by what was refused in the round (what was offered above it), by one at least
        // and a quarter at most, whatever the counts of what was served say.
        #expect(try a.openRound(key, refusedAt: 1001.6) == 1001.6)
        try a.learnLimit(key, serving: 3, refused: 1, workers: 2, liveWithin: 60)
        #expect(try a.keyState(key, liveWithin: 60).learnedLimit == 15)
        try b.learnLimit(key, serving: 30, refused: 1, workers: 2, liveWithin: 60)
        #expect(try a.keyState(key, liveWithin: 60).learnedLimit == 14)
        try b.learnLimit(key, serving: 2, refused: 9, workers: 2, liveWithin: 60)
        #expect(try a.keyState(key, liveWithin: 60).learnedLimit == 12)
        try b.learnLimit(key, serving: 12, refused: 0, workers: 2, liveWithin: 60)
        #expect(try a.keyState(key, liveWithin: 60).learnedLimit == 15)
        // The shares add up to the level (8 and 7, not twice 7). A look one higher, and no other worker looks again
        // until the quiet time has passed.
        #expect(try a.keyState(key, liveWithin: 60).share == 8 && b.keyState(key, liveWithin: 60).share == 7)
        try a.raiseLimit(key, from: 15, quiet: 30)
        try b.raiseLimit(key, from: 16, quiet: 30)
        #expect(try a.keyState(key, liveWithin: 60).learnedLimit == 16)
        try b.stopWorker()
        #expect(try a.keyState(key, liveWithin: 60).share == 16)
        #expect(try a.keyState(key, liveWithin: 60).users == 1)
        let rows = try a.workers()
        #expect(rows.map(\.id) == [a.worker, b.worker] && rows.map(\.stopped) == [false, true])
        #expect(rows.allSatisfy { $0.host == "test" && $0.pid == Int(getpid()) && $0.concurrency == 8 })
        #expect(rows[0].quietSeconds >= 0 && rows[0].quietSeconds < 60)
    }

    /// A worker that stops gives back at once what it had not sent; a line on the wire stays leased until its
    /// lease expires (its answer may still come to whoever holds it then).
    @Test func aStoppingWorkerGivesBackWhatItHadNotSent() throws {
        let name = "job-\(UUID().uuidString)"
        let a = try Self.worker(name), b = try Self.worker(name)
        try a.load(Self.lines(3), last: true)
        let held = try a.claim(limit: 3, lease: 60)
        #expect(try a.sending(held[1]))
        #expect(try a.workers().first { $0.id == a.worker }?.held == 3)
        try a.stopWorker()
        #expect(try a.workers().first { $0.id == a.worker }?.held == 1, "the line on the wire")
        #expect(try b.claim(limit: 5, lease: 60).map(\.line) == [1, 3])
        #expect(try a.finish(held[1], result: [1], failed: false), "its lease still holds")
    }
}
