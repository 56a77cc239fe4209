import Foundation
import Synchronization
import TestSupport
import Testing

@testable import ChatBatch

/// Loading a job's input into a PostgreSQL store: every line once, as it is in the file, whoever loads and
/// whatever dies on the way.
@Suite(
    "PostgreSQL: loading the input into the store",
    needs("PostgreSQL's initdb and pg_ctl (Debian: apt-get install postgresql)") { PostgresServer.binaries != nil })
struct StoreLoaderTests {
    /// An input of `n` lines, among them lines a worker will refuse (not JSON, blank): the store keeps them as they
    /// are.
    static func input(_ n: Int) throws -> (path: String, lines: [String]) {
        let lines = (1...n).map { i -> String in
            switch i % 500 {
            case 7: return "not json \\ \"at all\""
            case 8: return ""
            case 9: return #"{"custom_id":"ü-\#(i)","prompt":"back\\slash \"quote\" 日本"}"#
            default: return #"{"custom_id":"c\#(i)","prompt":"question \#(i)"}"#
            }
        }
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("load-\(UUID().uuidString).jsonl").path
        try (lines.joined(separator: "\n") + "\n").write(toFile: path, atomically: true, encoding: .utf8)
        return (path, lines)
    }

    static func storedLines(_ queue: PostgresWorkQueue) throws -> [(line: Int, customID: String?, bytes: [UInt8])] {
        try queue.connection.rows(
            "SELECT line, custom_id, request FROM chatbatch_lines WHERE job = $1 ORDER BY line", [String(queue.job)]
        ).map { ($0.int("line")!, $0["custom_id"], $0.bytes("request") ?? []) }
    }

    @Test func everyLineIsLoadedOnceAsItIsInTheFile() throws {
        let (path, lines) = try Self.input(2_345)
        let queue = try PostgresWorkQueueTests.worker("job-\(UUID().uuidString)")
        #expect(try StoreLoader.load(path, into: queue, batchSize: 500) == 2_345 - 5)
        let stored = try Self.storedLines(queue)
        let kept = lines.enumerated().filter { !$0.element.isEmpty }  // blank lines are no lines
        #expect(stored.map(\.line) == kept.map { $0.offset + 1 })
        #expect(stored.map { String(decoding: $0.bytes, as: UTF8.self) } == kept.map(\.element))
        let id = { (line: Int) in stored.first { $0.line == line }?.customID }
        #expect(id(1) == "c1" && id(9) == "ü-9" && id(7) == nil)
        #expect(try queue.loaded().all)
        #expect(try StoreLoader.load(path, into: queue) == 0, "loaded already: nothing is read again")
    }

    /// Workers starting together: one loads, the others do not wait for it, and each line is in the store once.
    @Test func workersStartingTogetherLoadTheInputOnce() throws {
        let (path, _) = try Self.input(3_000)
        let name = "job-\(UUID().uuidString)"
        let results = Mutex<[Int?]>([])
        DispatchQueue.concurrentPerform(iterations: 3) { _ in
            do {
                let queue = try PostgresWorkQueueTests.worker(name)
                let loaded = try StoreLoader.load(path, into: queue, batchSize: 250)
                results.withLock { $0.append(loaded) }
            } catch {
                Issue.record("a worker failed: \(error)")
            }
        }
        let got = results.withLock { $0 }
        #expect(got.count == 3)
        #expect(got.compactMap { $0 }.reduce(0, +) == 3_000 - 6, "\(got)")
        let check = try PostgresWorkQueueTests.worker(name)
        #expect(try check.counts()["queued"] == 3_000 - 6)
    }

    /// A loader that dies after some batches hands on: the next worker loads the rest, and no line twice.
    @Test func aLoaderThatDiesIsTakenOverFromItsLastBatch() throws {
        let (path, lines) = try Self.input(1_200)
        let name = "job-\(UUID().uuidString)"
        var dying: PostgresWorkQueue? = try PostgresWorkQueueTests.worker(name)
        #expect(try dying!.takeLoading())
        try dying!.load(
            (1...400).filter { !lines[$0 - 1].isEmpty }.map {
                InputLineRecord(line: $0, customID: "c\($0)", request: Array(lines[$0 - 1].utf8))
            }, last: false)
        let next = try PostgresWorkQueueTests.worker(name, fingerprint: nil)
        #expect(try StoreLoader.load(path, into: next) == nil, "the first loader still holds the lock")
        dying = nil  // its server session ends a moment later, and its lock with it
        let loaded = Mutex<Int?>(nil)
        #expect(
            eventually {
                let n = try? StoreLoader.load(path, into: next)
                loaded.withLock { $0 = n ?? nil }
                return n != nil
            })
        #expect(loaded.withLock { $0 } == 800 - 2)  // lines 401 to 1,200, less two blank ones
        #expect(
            try Self.storedLines(next).map { String(decoding: $0.bytes, as: UTF8.self) }
                == lines.filter { !$0.isEmpty })
    }

    /// The input feed reads claimed lines as it reads the file: the same requests, the same bodies, the same lines
    /// refused; each claim is kept for the line it came with.
    @Test func theFeedBuildsTheSameRequestsFromClaimedLinesAsFromTheFile() throws {
        let scratch = Scratch()
        var lines = promptLines(40)
        lines[9] = #"{"custom_id":"broken","messages":"not a list"}"#
        lines.insert("", at: 20)  // a blank line: no line
        lines.append(#"{"custom_id":"huge","prompt":""# + String(repeating: "x", count: 9 << 20) + #""}"#)
        scratch.write("in.jsonl", lines: lines)
        var s = JobSettings()
        s.input = scratch.file("in.jsonl")
        s.output = scratch.file("out.jsonl")
        s.provider = .tera
        s.baseURL = "http://127.0.0.1:9"
        let config = try s.resolve()
        func drain(_ feed: InputFeed) throws -> (requests: [String], invalid: Int) {
            var requests: [String] = [], invalid = 0
            while !feed.done {
                let batch = try feed.next(limit: 7)
                requests += batch.requests.map { "\($0.line) \($0.customID) \($0.bodyHash)" }
                invalid += batch.invalid
            }
            return (requests, invalid)
        }
        let fromFile = try drain(InputFeed(config: config, checkpoint: nil, hasInvalidRows: false))
        let queue = try PostgresWorkQueueTests.worker("job-\(UUID().uuidString)")
        #expect(try StoreLoader.load(scratch.file("in.jsonl"), into: queue) == 41)
        let source = StoreLineSource(queue: queue, claimSize: 6)
        let fromStore = try drain(InputFeed(config: config, checkpoint: nil, hasInvalidRows: false, source: source))
        #expect(fromFile.requests.count == 39 && fromFile.invalid == 2, "the broken line and the one over the limit")
        #expect(fromStore.requests == fromFile.requests && fromStore.invalid == fromFile.invalid)
        #expect(source.heldCount == 41 && source.settled(line: 10)?.line == 10 && source.heldCount == 40)
        #expect(try queue.counts()["leased"] == 41)
    }

    /// A worker with nothing to claim waits while another holds lines (it may die with them), and its input ends
    /// when they are done.
    @Test func theInputEndsOnlyWhenNoLineIsOpenElsewhere() throws {
        let name = "job-\(UUID().uuidString)"
        let a = try PostgresWorkQueueTests.worker(name), b = try PostgresWorkQueueTests.worker(name)
        try a.load(PostgresWorkQueueTests.lines(2), last: true)
        let held = try a.claim(limit: 2, lease: 60)
        let source = StoreLineSource(queue: b, poll: 0.05)
        let ended = Mutex(false)
        let thread = Thread {
            _ = try? source.next()
            ended.withLock { $0 = true }
        }
        thread.start()
        #expect(!eventually(timeout: 0.5) { ended.withLock { $0 } }, "it waits while a holds lines")
        #expect(try a.finish(held[0], result: [1], failed: false))
        try PostgresWorkQueueTests.expireLeases(a)  // a dies holding line 2: b claims it
        #expect(eventually { source.heldCount == 1 })
        #expect(ended.withLock { $0 } == true)
        #expect(try source.next() == nil, "nothing is open anywhere")
        #expect(try b.finish(source.settled(line: 2)!, result: [1], failed: false))
    }

    /// A job loaded a moment ago is not in the planner's statistics until autovacuum comes (a minute or more later)
    /// unless the loader brings them up to date: its claims and turns then read only the rows they name, never every
    /// earlier line of the job (a claim near the end of a million lines would read a million rows for each line it
    /// takes). Counted by the server's own row counters for the transaction.
    @Test func aJobJustLoadedIsClaimedAndAnsweredReadingOnlyTheRowsNamed() throws {
        let (path, _) = try Self.input(20_000)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let a = try PostgresWorkQueueTests.worker("job-\(UUID().uuidString)")
        // The statistics as they were before this job: it is not in them.
        try a.connection.execute("ANALYZE chatbatch_lines")
        #expect(try StoreLoader.load(path, into: a) == 20_000 - 40)
        // The server's counters for this session (what it has not yet published), before and after `body`, in one
        // transaction (they are published only between transactions).
        let rowsRead = { (body: () throws(ChatBatchError) -> Void) throws(ChatBatchError) -> Int in
            let read = { () throws(ChatBatchError) -> Int in
                try a.connection.rows(
                    """
                    SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0) AS n
                    FROM pg_stat_xact_user_tables WHERE relname = 'chatbatch_lines'
                    """
                ).first?.int("n") ?? 0
            }
            return try a.connection.inTransaction { () throws(ChatBatchError) -> Int in
                let before = try read()
                try body()
                return try read() - before
            }
        }
        // Enough statements that the server may have moved to its generic plans (after five of each).
        var held: [ClaimedLine] = []
        for _ in 0..<8 { held += try a.claim(limit: 256, lease: 60, from: 17_000) }
        var last: [ClaimedLine] = []
        let claimRead = try rowsRead { () throws(ChatBatchError) in
            last = try a.claim(limit: 16, lease: 60, from: 19_100)
        }
        #expect(last.count == 16 && last.allSatisfy { $0.line >= 19_100 })
        #expect(claimRead >= 16 && claimRead < 200, "a claim of 16 lines read \(claimRead) rows")
        for _ in 0..<6 { _ = try a.turn(outcomes: [], unsent: [], leaving: [held.removeLast()]) }
        let turnRead = try rowsRead { () throws(ChatBatchError) in
            let outcomes = held.suffix(16).map { LineOutcome(claim: $0, result: [1], failed: false) }
            let record = try a.turn(outcomes: outcomes, unsent: [], leaving: last)
            #expect(record.kept.count == 16 && record.allowed.count == 16)
        }
        #expect(turnRead >= 32 && turnRead < 300, "a turn of 32 lines, with 2,000 held, read \(turnRead) rows")
    }
}
