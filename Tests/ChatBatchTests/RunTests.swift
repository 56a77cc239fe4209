import ChatBatchCore
import FakeGateway
import Foundation
import Testing

@testable import ChatBatch

@Suite("chatbatch run: fan-out, outputs, money")
struct RunTests {
    @Test func cleanRunAnswersEveryShapeOnceWithUsageAndCost() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start()
        defer { g.shutdown() }
        var lines = promptLines(40)
        lines.append(
            #"{"custom_id":"batch-1","method":"POST","url":"/v1/chat/completions","body":{"model":"openai/gpt-oss-120b","messages":[{"role":"user","content":"From a Batch API file"}],"max_tokens":100}}"#
        )
        lines.append(
            #"{"custom_id":"msgs-1","messages":[{"role":"user","content":"With messages"}],"temperature":0.3}"#)
        lines.append(#"{"prompt":"No id here"}"#)
        scratch.write("in.jsonl", lines: lines)
        let (summary, _) = try runJob(settings(scratch, g))
        #expect(summary.exit == .allDone)
        #expect(summary.done == 43 && summary.failed == 0 && summary.invalid == 0)
        let ids = (1...40).map { String(format: "p%04d", $0) } + ["batch-1", "msgs-1", "line-43"]
        try expectExactlyOnce(scratch, ids: ids, gateway: g)
        let results = scratch.lines("out.jsonl")
        var prompt = 0, completion = 0
        for r in results {
            #expect(r["error"] == .null)
            #expect(r["id"]?.stringValue?.hasPrefix("batch_req_") == true)
            #expect(r["response"]?["status_code"] == 200)
            #expect(r["response"]?["request_id"]?.stringValue?.hasPrefix("tera-") == true)
            let usage = try #require(r["response"]?["body"]?["usage"])
            prompt += usage["prompt_tokens"]?.intValue ?? 0
            completion += usage["completion_tokens"]?.intValue ?? 0
        }
        #expect(summary.promptTokens == prompt && summary.completionTokens == completion)
        let expectedCost: Double = (Double(prompt) * 0.09 + Double(completion) * 0.36) / 1e6
        #expect(abs(summary.cost - expectedCost) < 1e-12)
        // The gateway saw each custom_id in X-Client-Request-Id, and billed the same usage.
        let ledger = g.ledger.snapshot()
        #expect(Set(ledger.compactMap(\.clientRequestID)) == Set(ids))
        #expect(ledger.reduce(0) { $0 + $1.totalTokens } == prompt + completion)
        // Overrides on a messages line reached the body; the Batch API body kept its max_tokens.
        #expect(scratch.lines("out.errors.jsonl").isEmpty)
        // A second run sends nothing.
        let (again, _) = try runJob(settings(scratch, g))
        #expect(again.exit == .allDone && again.attempts == 0 && again.alreadyDone == 43)
        #expect(g.ledger.snapshot().count == ledger.count)
        #expect(scratch.lines("out.jsonl").count == 43)
    }

    @Test func failureMixEndsWithEveryPromptInOneFileAndNoUncountedDoubleBilling() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start {
            $0.fail429Rate = 0.05
            $0.fail500Rate = 0.05
            $0.fail503Rate = 0.05
            $0.resetRate = 0.05
            $0.retryAfterSeconds = nil
            $0.randomSeed = 7
        }
        defer { g.shutdown() }
        scratch.write("in.jsonl", lines: promptLines(300))
        var s = settings(scratch, g)
        s.maxAttempts = 25
        s.concurrency = 16
        let (summary, _) = try runJob(s)
        #expect(summary.exit == .allDone)
        #expect(summary.done == 300)
        #expect(summary.retries > 0)
        let resets = g.ledger.snapshot().filter { $0.outcome == "reset" }.count
        #expect(resets > 0)
        #expect(summary.possiblyBilledTwice == resets)
        try expectExactlyOnce(scratch, ids: (1...300).map { String(format: "p%04d", $0) }, gateway: g)
        // Every attempt is in the audit table.
        let db = try SQLiteDatabase(path: scratch.file("out.jsonl.checkpoint"), readOnly: true)
        #expect(try db.query("SELECT count(*) FROM attempts").first?.first?.int == g.ledger.snapshot().count)
    }

    @Test func retryAfterPausesTheWholeRun() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start {
            $0.script = ["p0003": [.rateLimited]]
            $0.retryAfterSeconds = 2
            $0.latencyMilliseconds = 20
        }
        defer { g.shutdown() }
        scratch.write("in.jsonl", lines: promptLines(60))
        var s = settings(scratch, g)
        s.concurrency = 4
        let (summary, _) = try runJob(s)
        #expect(summary.exit == .allDone && summary.done == 60)
        let ledger = g.ledger.snapshot()
        let limited = try #require(ledger.first { $0.status == 429 })
        // Requests already on their way when the 429 was read may land just after it; nothing else until Retry-After
        // passed.
        let inWindow = ledger.filter {
            $0.receivedAt > limited.respondedAt + 0.25 && $0.receivedAt < limited.respondedAt + 1.95
        }
        #expect(inWindow.isEmpty, "\(inWindow.count) requests inside the Retry-After window")
        #expect(ledger.contains { $0.receivedAt >= limited.respondedAt + 1.95 })
    }

    @Test func unauthorizedStopsTheRunAndLeavesTheRestPending() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start {
            $0.apiKeys = ["sk-right"]
            $0.latencyMilliseconds = 5
        }
        defer { g.shutdown() }
        scratch.write("in.jsonl", lines: promptLines(200))
        var s = settings(scratch, g)
        s.concurrency = 6
        let (summary, messages) = try runJob(s, key: "sk-wrong")
        #expect(summary.exit == .stoppedEarly)
        #expect(g.ledger.snapshot().count <= 6)
        #expect(messages.contains { $0.contains("API key was refused") && $0.contains("TERA_API_KEY") })
        #expect(scratch.lines("out.jsonl").isEmpty && scratch.lines("out.errors.jsonl").isEmpty)
        // With the right key the same command finishes the job.
        let (resumed, _) = try runJob(s, key: "sk-right")
        #expect(resumed.exit == .allDone && resumed.done == 200, "\(resumed.text)")
        try expectExactlyOnce(scratch, ids: (1...200).map { String(format: "p%04d", $0) }, gateway: g)
    }

    @Test func badRequestIsNotRetriedAndExhaustedAttemptsGoToErrors() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start {
            $0.script = ["p0002": [.badRequest], "p0004": [.serverError, .serverError, .serverError]]
        }
        defer { g.shutdown() }
        scratch.write("in.jsonl", lines: promptLines(5))
        var s = settings(scratch, g)
        s.maxAttempts = 3
        let (summary, _) = try runJob(s)
        #expect(summary.exit == .doneWithFailures)
        #expect(summary.done == 3 && summary.failed == 2)
        let errors = scratch.lines("out.errors.jsonl")
        let bad = try #require(errors.first { $0["custom_id"] == "p0002" })
        #expect(bad["error"]?["code"] == "invalid_request")  // error.code, the most specific name the server gives
        #expect(bad["response"]?["status_code"] == 400)
        #expect(g.ledger.snapshot().filter { $0.clientRequestID == "p0002" }.count == 1)
        let exhausted = try #require(errors.first { $0["custom_id"] == "p0004" })
        #expect(exhausted["error"]?["message"]?.stringValue?.contains("gave up after 3 attempts") == true)
        #expect(g.ledger.snapshot().filter { $0.clientRequestID == "p0004" }.count == 3)
        try expectExactlyOnce(scratch, ids: (1...5).map { String(format: "p%04d", $0) }, gateway: g)
        // A later run does not send failed lines again.
        let (again, _) = try runJob(s)
        #expect(again.attempts == 0 && again.alreadyFailed == 2)
    }

    @Test func changedLineIsCaughtAndForceReplacesItsAnswer() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start()
        defer { g.shutdown() }
        var lines = promptLines(10)
        scratch.write("in.jsonl", lines: lines)
        _ = try runJob(settings(scratch, g))
        lines[4] = #"{"custom_id":"p0005","prompt":"A different question"}"#
        scratch.write("in.jsonl", lines: lines)
        let before = g.ledger.snapshot().count
        let (changed, messages) = try runJob(settings(scratch, g))
        #expect(changed.exit == .usageOrInput && changed.changed == 1 && changed.attempts == 0)
        #expect(messages.contains { $0.contains("in.jsonl:5") && $0.contains("--force") })
        #expect(g.ledger.snapshot().count == before)
        var forced = settings(scratch, g)
        forced.force = true
        let (replaced, _) = try runJob(forced)
        #expect(replaced.exit == .allDone && replaced.attempts == 1)
        let results = scratch.lines("out.jsonl")
        #expect(results.count == 10)
        let answer = try #require(results.first { $0["custom_id"] == "p0005" })
        let content =
            answer["response"]?["body"]?["choices"]?.arrayValue?.first?["message"]?["content"]?.stringValue ?? ""
        #expect(content.contains("A different question"))
    }

    @Test func secondRunOnTheSameCheckpointIsRefused() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start()
        defer { g.shutdown() }
        scratch.write("in.jsonl", lines: promptLines(3))
        let holder = try CheckpointStore(path: scratch.file("out.jsonl.checkpoint"))
        let (summary, _) = try runJob(settings(scratch, g))
        #expect(summary.exit == .checkpointBusy)
        #expect(summary.stopReason?.contains("held by another chatbatch run") == true)
        #expect(g.ledger.snapshot().isEmpty)
        _ = holder
    }

    @Test func keyIsWrittenNowhereAndFilesAreOwnerOnly() throws {
        let scratch = Scratch()
        let key = "sk-tera-SECRET-\(UUID().uuidString)"
        let g = try FakeGateway.start {
            $0.apiKeys = [key]
            $0.script = ["p0002": [.badRequest]]
        }
        defer { g.shutdown() }
        scratch.write("in.jsonl", lines: promptLines(20))
        var s = settings(scratch, g)
        s.summaryJSON = scratch.file("summary.json")
        let (summary, messages) = try runJob(s, key: key)
        #expect(summary.exit == .doneWithFailures)
        #expect(!messages.joined().contains(key))
        for name in try FileManager.default.contentsOfDirectory(atPath: scratch.path) where name != "in.jsonl" {
            let data = try Data(contentsOf: URL(fileURLWithPath: scratch.file(name)))
            #expect(data.range(of: Data(key.utf8)) == nil, "\(name) holds the key")
            let mode = try FileManager.default.attributesOfItem(atPath: scratch.file(name))[.posixPermissions] as? Int
            #expect(mode == 0o600, "\(name) is \(String(mode ?? 0, radix: 8))")
        }
    }

    @Test func lostOutputIsRebuiltFromTheCheckpointWithoutSending() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start()
        defer { g.shutdown() }
        scratch.write("in.jsonl", lines: promptLines(25))
        _ = try runJob(settings(scratch, g))
        let original = try String(contentsOfFile: scratch.file("out.jsonl"), encoding: .utf8)
        try FileManager.default.removeItem(atPath: scratch.file("out.jsonl"))
        let sent = g.ledger.snapshot().count
        let (again, _) = try runJob(settings(scratch, g))
        #expect(again.attempts == 0)
        #expect(g.ledger.snapshot().count == sent)
        #expect(try String(contentsOfFile: scratch.file("out.jsonl"), encoding: .utf8) == original)
    }

    @Test func flatFormatAndStreamingGiveTheSameAnswers() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start()
        defer { g.shutdown() }
        scratch.write("in.jsonl", lines: promptLines(12))
        var s = settings(scratch, g)
        s.format = .flat
        _ = try runJob(s)
        let plain = scratch.lines("out.jsonl")
        let streamScratch = Scratch()
        streamScratch.write("in.jsonl", lines: promptLines(12))
        var streamed = settings(streamScratch, g)
        streamed.format = .flat
        streamed.stream = true
        _ = try runJob(streamed)
        let viaStream = streamScratch.lines("out.jsonl")
        func stable(_ line: JSON) -> JSON {
            var l = line
            l["latency_ms"] = nil
            l["request_id"] = nil
            l["ttft_ms"] = nil
            return l
        }
        #expect(plain.count == 12)
        let a: [String] = plain.map { stable($0).serialized() }.sorted()
        let b: [String] = viaStream.map { stable($0).serialized() }.sorted()
        #expect(a == b)
        let first = try #require(plain.first)
        #expect(first["content"]?.stringValue?.isEmpty == false)
        #expect(first["reasoning"]?.stringValue?.isEmpty == false)
        #expect(first["attempts"] == 1)
        #expect((first["cost"]?.doubleValue ?? 0) > 0)
    }

    @Test func aForcedRunThatDiesBeforeRebuildingLeavesTheNextRunToRebuild() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start()
        defer { g.shutdown() }
        scratch.write("in.jsonl", lines: promptLines(6))
        _ = try runJob(settings(scratch, g))
        // What a --force run leaves when it dies right after superseding p0003's answer: the row pending,
        // its old line still in the results file, the rebuild flag set, and (as every run that reads its
        // input does before sending) the finished-input record gone.
        let writer = try SQLiteDatabase(path: scratch.file("out.jsonl.checkpoint"))
        try writer.execute("DELETE FROM meta WHERE key='input.finished'")
        try writer.execute("UPDATE requests SET out_seq=NULL, out_kind=NULL, state='pending' WHERE custom_id='p0003'")
        try writer.execute("UPDATE meta SET value='1' WHERE key='output.needs_rebuild'")
        try writer.execute("INSERT OR REPLACE INTO meta VALUES('output.needs_rebuild', '1')")
        let (resumed, _) = try runJob(settings(scratch, g))
        #expect(resumed.attempts == 1)
        let ids = scratch.lines("out.jsonl").compactMap { $0["custom_id"]?.stringValue }
        #expect(ids.sorted() == (1...6).map { String(format: "p%04d", $0) })
        #expect(try writer.query("SELECT value FROM meta WHERE key='output.needs_rebuild'").first?.first?.text == "0")
    }

    @Test func aGrownInputRunsOnlyItsNewLinesAndRetryFailedResendsFailures() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start { $0.script = ["p0002": [.badRequest]] }
        defer { g.shutdown() }
        scratch.write("in.jsonl", lines: promptLines(5))
        let (first, _) = try runJob(settings(scratch, g))
        #expect(first.done == 4 && first.failed == 1)
        scratch.write("in.jsonl", lines: promptLines(8))
        let (grown, _) = try runJob(settings(scratch, g))
        #expect(grown.attempts == 3 && grown.done == 3 && grown.alreadyDone == 4 && grown.alreadyFailed == 1)
        var retry = settings(scratch, g)
        retry.retryFailed = true
        let (again, _) = try runJob(retry)
        #expect(again.attempts == 1 && again.done == 1 && again.exit == .allDone)
        // The failure's line left the errors file when its answer arrived: still exactly one line per prompt.
        #expect(scratch.lines("out.errors.jsonl").isEmpty)
        try expectExactlyOnce(scratch, ids: (1...8).map { String(format: "p%04d", $0) }, gateway: g)
    }
}
