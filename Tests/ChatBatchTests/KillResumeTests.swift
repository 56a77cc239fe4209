import ChatBatchCore
import FakeGateway
import Foundation
import TestSupport
import Testing

@testable import ChatBatch

/// Runs the real `chatbatch` binary, kills it, and resumes it: money is only safe if this holds.
@Suite("Crash safety: SIGKILL, SIGINT and resume", .serialized)
struct KillResumeTests {
    /// A job file for the binary: short timeouts and backoff, many attempts.
    func writeJob(_ scratch: Scratch, _ g: FakeGateway, concurrency: Int = 16) {
        ChatBatchTests.writeJob(
            scratch, g, concurrency: concurrency,
            extra: [
                "timeout: 5", "grace: 5", "retry: {max_attempts: 40, base_delay: 0.01, max_delay: 0.2}",
                "prices: {input: 0.09, output: 0.36}"
            ])
    }

    func start(_ scratch: Scratch) throws -> Process {
        try launch(chatbatchBinary(), ["run", scratch.file("job.yaml"), "--summary-json", scratch.file("summary.json")])
    }

    @Test func sigkillAtSeveralPointsThenResumeSendsEveryPromptOnceAndCountsEveryResend() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start {
            $0.latencyMilliseconds = 20
            $0.jitterMilliseconds = 40
            $0.fail429Rate = 0.03
            $0.fail500Rate = 0.03
            $0.fail503Rate = 0.03
            $0.resetRate = 0.03
            $0.retryAfterSeconds = nil
            $0.randomSeed = 11
        }
        defer { g.shutdown() }
        let n = 400
        scratch.write("in.jsonl", lines: promptLines(n))
        writeJob(scratch, g)
        var kills = 0
        for step in [15, 40, 25, 60, 30] {
            let before = g.ledger.snapshot().count
            let p = try start(scratch)
            _ = eventually(timeout: 20) { g.ledger.snapshot().count >= before + step || !p.isRunning }
            guard p.isRunning else { break }
            kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
            kills += 1
        }
        #expect(kills >= 3)
        let last = try start(scratch)
        last.waitUntilExit()
        #expect(last.terminationStatus == 0)
        try expectExactlyOnce(scratch, ids: (1...n).map { String(format: "p%04d", $0) }, gateway: g)
        // Each kill left prompts in flight; their resends were counted (the proof above relies on it).
        let counted = try ambiguousCounts(scratch.file("out.jsonl.checkpoint")).values.reduce(0, +)
        #expect(counted >= kills)
        // The audit has a row for every request that left: each kill's requests in flight say "no answer recorded".
        let rows = try checkpointRows(scratch.file("out.jsonl.checkpoint")).count
        let attempts = try SQLiteDatabase(path: scratch.file("out.jsonl.checkpoint"), readOnly: true).query(
            "SELECT count(*), coalesce(sum(error=?), 0) FROM attempts", [.text(CheckpointWriter.noAnswerRecorded)])[0]
            .map { $0.int ?? 0 }
        let seen = g.ledger.snapshot().count
        #expect(rows == n)
        #expect(
            attempts[0] >= seen && attempts[0] - attempts[1] <= seen && attempts[1] >= kills,
            "attempts \(attempts), gateway \(seen)")
        let report = try CheckpointReport.report(checkpoint: scratch.file("out.jsonl.checkpoint"))
        #expect(
            report["attempts"]?.intValue == attempts[0]
                && report["answers_by_status"]?["no_answer_recorded"]?.intValue == attempts[1])
        // No line is torn, and the summary of the last run is there.
        #expect(scratch.lines("out.jsonl").allSatisfy { $0["custom_id"] != nil })
        let summary = try JSON.parse(String(contentsOfFile: scratch.file("summary.json"), encoding: .utf8))
        #expect(summary["exit_code"] == 0)
    }

    @Test(arguments: [SIGINT, SIGTERM])
    func signalStopsSendingLetsInFlightFinishAndExitsResumable(signal: Int32) throws {
        let scratch = Scratch()
        let g = try FakeGateway.start { $0.latencyMilliseconds = 100 }
        defer { g.shutdown() }
        scratch.write("in.jsonl", lines: promptLines(300))
        writeJob(scratch, g, concurrency: 8)
        let p = try start(scratch)
        #expect(eventually(timeout: 20) { g.ledger.snapshot().count >= 16 })
        kill(p.processIdentifier, signal)
        p.waitUntilExit()
        #expect(p.terminationStatus == 4)
        let done = scratch.lines("out.jsonl").count
        #expect(done > 0 && done < 300)
        // Requests in flight at the signal were allowed to finish: nothing was cut off.
        #expect(g.ledger.snapshot().allSatisfy { $0.outcome == "ok" })
        let db = try SQLiteDatabase(path: scratch.file("out.jsonl.checkpoint"), readOnly: true)
        #expect(try db.query("SELECT count(*) FROM requests WHERE state='inflight'").first?.first?.int == 0)
        let resume = try start(scratch)
        resume.waitUntilExit()
        #expect(resume.terminationStatus == 0)
        try expectExactlyOnce(scratch, ids: (1...300).map { String(format: "p%04d", $0) }, gateway: g)
        #expect(g.ledger.billedCounts().values.allSatisfy { $0 == 1 })
    }
}
