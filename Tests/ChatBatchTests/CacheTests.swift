import ChatBatchCore
import FakeGateway
import Foundation
import Synchronization
import TestSupport
import Testing

@testable import ChatBatch

/// The response cache: a request answered in any earlier run is answered again without being sent.
@Suite("Response cache: pay once per distinct request across runs", .serialized)
struct CacheTests {
    /// Output lines by custom_id, as bytes.
    func linesByID(_ scratch: Scratch, _ name: String) throws -> [String: String] {
        let text = try String(contentsOfFile: scratch.file(name), encoding: .utf8)
        var out: [String: String] = [:]
        for line in text.split(separator: "\n") {
            let id = try JSON.parse(String(line))["custom_id"]?.stringValue ?? ""
            out[id] = String(line)
        }
        return out
    }

    func cached(_ scratch: Scratch, _ g: FakeGateway, output: String, mode: CacheMode = .readWrite) -> JobSettings {
        var s = settings(scratch, g)
        s.output = scratch.file(output)
        s.cache = scratch.file("answers.cache")
        s.cacheMode = mode
        return s
    }

    @Test func aSecondRunWithANewCheckpointSendsNothingAndWritesTheSameAnswers() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start()
        defer { g.shutdown() }
        var lines = promptLines(40)
        lines.append(#"{"custom_id":"s1","messages":[{"role":"user","content":"Streamed"}],"stream":true}"#)
        lines.append(
            #"{"custom_id":"j1","prompt":"Extract","response_format":{"type":"json_schema","json_schema":{"name":"n","schema":{"type":"object","properties":{"name":{"type":"string"}},"required":["name"]}}}}"#
        )
        scratch.write("in.jsonl", lines: lines)
        let (first, _) = try runJob(cached(scratch, g, output: "first.jsonl"))
        #expect(first.done == 42 && first.cacheMisses == 42 && first.cacheHits == 0)
        let paid = g.ledger.snapshot().count
        #expect(try CacheMaintenance.stats(path: scratch.file("answers.cache")).entries == 42)
        // A new output and a new checkpoint: every line is answered from the cache.
        let (second, _) = try runJob(cached(scratch, g, output: "second.jsonl"))
        #expect(second.exit == .allDone && second.done == 42 && second.attempts == 0 && second.cacheHits == 42)
        #expect(g.ledger.snapshot().count == paid)
        #expect(
            second.cost == 0 && abs(second.costSaved - first.cost) < 1e-12 && second.tokensSaved == first.totalTokens)
        #expect(try linesByID(scratch, "second.jsonl") == linesByID(scratch, "first.jsonl"))
        // The flat format marks them, and status counts what they saved.
        var flat = cached(scratch, g, output: "flat.jsonl")
        flat.format = .flat
        _ = try runJob(flat)
        let rows = scratch.lines("flat.jsonl")
        #expect(
            rows.count == 42 && rows.allSatisfy { $0["cached"] == true && $0["attempts"] == 0 && $0["cost"] == 0.0 })
        let status = try CheckpointReport.status(checkpoint: scratch.file("second.jsonl.checkpoint"))
        #expect(status["cache"]?["hits"] == 42 && status["cost_usd"] == 0.0)
        #expect(CheckpointReport.statusText(status).contains("42 answered from the cache"))
        // validate says what the cache would answer.
        let report = try BatchValidator.validate(try cached(scratch, g, output: "third.jsonl").resolve())
        #expect(report.cacheHits == 42 && report.toSend == 0 && report.costMost == 0)
    }

    @Test func tenPercentChangedLinesSendExactlyThoseLines() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start()
        defer { g.shutdown() }
        scratch.write("in.jsonl", lines: promptLines(50))
        _ = try runJob(cached(scratch, g, output: "first.jsonl"))
        let before = g.ledger.snapshot().count
        // Five lines ask something else; key order and whitespace in the others do not matter.
        var lines = (1...50).map { i in
            #"{ "prompt": "Question number \#(i)?",   "custom_id": "p\#(String(format: "%04d", i))" }"#
        }
        for i in [3, 11, 20, 37, 49] {
            lines[i - 1] = #"{"custom_id":"p\#(String(format: "%04d", i))","prompt":"Changed \#(i)?"}"#
        }
        scratch.write("in.jsonl", lines: lines)
        let (second, _) = try runJob(cached(scratch, g, output: "second.jsonl"))
        #expect(second.cacheHits == 45 && second.cacheMisses == 5 && second.done == 50)
        let sent = g.ledger.snapshot().dropFirst(before).compactMap(\.clientRequestID)
        #expect(Set(sent) == Set(["p0003", "p0011", "p0020", "p0037", "p0049"]) && sent.count == 5)
    }

    @Test func twoShardsSharingOneCacheAtOnceLoseNothing() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start { $0.latencyMilliseconds = 5 }
        defer { g.shutdown() }
        let n = 400
        scratch.write("in.jsonl", lines: promptLines(n))
        let results = (0..<2).map { i -> JobSettings in
            var s = cached(scratch, g, output: "shard\(i).jsonl")
            s.shard = try! Shard(parsing: "\(i)/2")
            return s
        }
        let exits = Mutex<[RunExit]>([])
        DispatchQueue.concurrentPerform(iterations: 2) { i in
            let summary = try? runJob(results[i]).0
            exits.withLock { $0.append(summary?.exit ?? .interrupted) }
        }
        #expect(exits.withLock { $0 } == [.allDone, .allDone])
        #expect(try CacheMaintenance.stats(path: scratch.file("answers.cache")).entries == n)
        let before = g.ledger.snapshot().count
        let (whole, _) = try runJob(cached(scratch, g, output: "whole.jsonl"))
        #expect(whole.cacheHits == n && whole.attempts == 0 && g.ledger.snapshot().count == before)
    }

    @Test func aKillDuringACachedRunResumesWithNothingPaidTwice() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start {
            $0.latencyMilliseconds = 40
            $0.jitterMilliseconds = 40
        }
        defer { g.shutdown() }
        let n = 300
        // The first half is in the cache already.
        scratch.write("in.jsonl", lines: promptLines(n / 2))
        _ = try runJob(cached(scratch, g, output: "first.jsonl"))
        scratch.write("in.jsonl", lines: promptLines(n))
        ChatBatchTests.writeJob(scratch, g, concurrency: 8, extra: ["cache: answers.cache", "timeout: 5"])
        let p = try launch(chatbatchBinary(), ["run", scratch.file("job.yaml")])
        #expect(eventually(timeout: 30) { g.ledger.snapshot().count >= n / 2 + 40 || !p.isRunning })
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        let (code, stderr) = try runToEnd(chatbatchBinary(), ["run", scratch.file("job.yaml")])
        #expect(code == 0, "\(stderr)")
        try expectExactlyOnce(scratch, ids: (1...n).map { String(format: "p%04d", $0) }, gateway: g)
        // The cached half was paid for once, by the first run, and never sent again.
        let billed = g.ledger.billedCounts()
        #expect((1...(n / 2)).allSatisfy { billed[String(format: "p%04d", $0)] == 1 })
        #expect(try CacheMaintenance.stats(path: scratch.file("answers.cache")).entries == n)
    }

    @Test func readOnlyStoresNothingRefreshSendsAgainAndReplaces() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start()
        defer { g.shutdown() }
        scratch.write("in.jsonl", lines: promptLines(20))
        let (readOnly, _) = try runJob(cached(scratch, g, output: "a.jsonl", mode: .readOnly))
        let afterReadOnly = try CacheMaintenance.stats(path: scratch.file("answers.cache")).entries
        #expect(readOnly.attempts == 20 && afterReadOnly == 0)
        _ = try runJob(cached(scratch, g, output: "b.jsonl"))
        let before = g.ledger.snapshot().count
        let (refresh, _) = try runJob(cached(scratch, g, output: "c.jsonl", mode: .refresh))
        #expect(refresh.attempts == 20 && refresh.cacheHits == 0 && g.ledger.snapshot().count == before + 20)
        #expect(try CacheMaintenance.stats(path: scratch.file("answers.cache")).entries == 20)
        // The answers now stored are the refreshed ones.
        let (d, _) = try runJob(cached(scratch, g, output: "d.jsonl"))
        let (dLines, cLines) = (try linesByID(scratch, "d.jsonl"), try linesByID(scratch, "c.jsonl"))
        #expect(d.cacheHits == 20 && dLines == cLines)
        #expect(try CacheMaintenance.prune(path: scratch.file("answers.cache"), olderThan: "30d") == 0)
        #expect(try CacheMaintenance.prune(path: scratch.file("answers.cache"), olderThan: "0s") == 20)
        #expect(throws: ChatBatchError.self) { try CacheMaintenance.duration("soon") }
        #expect(try CacheMaintenance.duration("12h") == 43_200)
    }

    @Test func theBudgetAndRateLimitsCountOnlyWhatIsSent() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start()
        defer { g.shutdown() }
        scratch.write("in.jsonl", lines: promptLines(30))
        _ = try runJob(cached(scratch, g, output: "a.jsonl"))
        var s = cached(scratch, g, output: "b.jsonl")
        s.maxCost = 0.000001  // not enough for one request
        s.requestsPerMinute = 1
        let (summary, _) = try runJob(s)
        #expect(summary.exit == .allDone && summary.cacheHits == 30 && summary.attempts == 0)
    }

    @Test func aForeignOrDamagedCacheIsRefusedAndLeftAlone() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start()
        defer { g.shutdown() }
        scratch.write("in.jsonl", lines: promptLines(3))
        scratch.write("answers.cache", lines: ["not a database"])
        let (junk, _) = try runJob(cached(scratch, g, output: "a.jsonl"))
        #expect(
            junk.refused && junk.exit == .usageOrInput && junk.stopReason?.contains("not a chatbatch cache") == true)
        #expect(try String(contentsOfFile: scratch.file("answers.cache"), encoding: .utf8) == "not a database\n")
        try FileManager.default.removeItem(atPath: scratch.file("answers.cache"))
        let other = try SQLiteDatabase(path: scratch.file("answers.cache"))
        try other.execute("CREATE TABLE t(x); INSERT INTO t VALUES(1)")
        other.close()
        let (foreign, _) = try runJob(cached(scratch, g, output: "a.jsonl"))
        #expect(foreign.refused && foreign.stopReason?.contains("another program") == true)
        #expect(g.ledger.snapshot().isEmpty)
    }
}
