import ChatBatchCore
import FakeGateway
import Foundation
import TestSupport
import Testing

@testable import ChatBatch

/// `report`, `report --html` and `validate` on a job in a store: every worker's requests and lines, told by the
/// gateway's ledger; what a worker would still send.
extension PostgresFleetTests {
    func report(_ scratch: Scratch, _ arguments: [String]) throws -> (Int32, String) {
        try runToEnd(
            chatbatchBinary(), ["report", scratch.file("job.yaml")] + arguments, environment: try environment,
            captureStdout: true)
    }

    @Test func theReportOfAStoresJobCountsEveryWorkersRequestsAsTheGatewayDid() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start {
            $0.latencyMilliseconds = 30
            $0.fail429Rate = 0.08
            $0.fail500Rate = 0.05
            $0.retryAfterSeconds = 0
            $0.script = ["p0007": [.badRequest], "p0042": [.badRequest]]
        }
        defer { g.shutdown() }
        let n = 240
        scratch.write("in.jsonl", lines: promptLines(n))
        let job = "report-\(UUID().uuidString.prefix(8))"
        try writeJob(scratch, g, job: job)
        // Before any worker: the job is not in the store yet (nor, maybe, any table), and the report says so.
        let (early, said) = try report(scratch, [])
        #expect(early != 0 && (said.contains(job) || said.contains("no chatbatch tables")), "\(said)")
        let workers = try (1...2).map { try worker(scratch, log: "w\($0).log") }
        #expect(eventually(timeout: 30) { g.ledger.count >= 20 })
        // While the workers run, the report reads what they have written so far.
        let (during, duringText) = try report(scratch, [])
        #expect(during == 0 && duringText.contains("latency ms"), "\(duringText)")
        for w in workers { w.waitUntilExit() }
        // Each worker's exit is its own lines': done (0), or done with the failed lines it held (1).
        #expect(workers.allSatisfy { [0, 1].contains($0.terminationStatus) }, "\(scratch.text("w1.log"))")
        #expect(workers.contains { $0.terminationStatus == 1 })

        let r = try json("report", scratch)
        let ledger = g.ledger.snapshot()
        func answered(_ status: Int) -> Int { ledger.filter { $0.status == status }.count }
        #expect(r["attempts"]?.intValue == ledger.count, "\(r)")
        #expect(r["retries"]?.intValue == ledger.count - n, "\(r)")
        let statuses = r["answers_by_status"] ?? .null
        for status in [200, 429, 500, 400] {
            #expect(statuses[String(status)]?.intValue ?? 0 == answered(status), "\(status): \(statuses)")
        }
        #expect(r["failures_by_code"]?.objectValue?.map(\.value.intValue).reduce(0) { $0 + ($1 ?? 0) } == 2, "\(r)")
        let billed = ledger.filter { $0.status == 200 }
        #expect(r["prompt_tokens"]?.intValue == billed.reduce(0) { $0 + $1.promptTokens }, "\(r)")
        #expect(r["completion_tokens"]?.intValue == billed.reduce(0) { $0 + $1.completionTokens }, "\(r)")
        #expect((r["cost_usd"]?.doubleValue ?? 0) > 0 && r["latency_ms"]?["p50"]?.doubleValue != nil, "\(r)")
        let password = try Self.shared.get().password
        #expect(r["store"]?.stringValue?.contains(job) == true && !r.serialized().contains(password))

        // The page: both workers as runs (host and pid), the failures with their lines, nothing of the password.
        let (made, madeText) = try report(scratch, ["--html", scratch.file("report.html")])
        #expect(made == 0, "\(madeText)")
        let page = scratch.text("report.html")
        #expect(page.contains("<title>chatbatch report</title>") && page.contains(job))
        #expect(page.components(separatedBy: " pid ").count - 1 == 2, "two workers, two runs")
        #expect(page.contains("p0007") && page.contains("p0042") && page.contains("openai/gpt-oss-120b"))
        #expect(page.contains("<svg") && !page.contains(password))
        // The same page on the store's address and the job's name, as a machine without the job file has it.
        let (again, againText) = try runToEnd(
            chatbatchBinary(),
            ["report", try Self.shared.get().url(), "--job-name", job, "--html", scratch.file("again.html")],
            captureStdout: true)
        #expect(again == 0 && scratch.text("again.html").contains(job), "\(againText)")
    }

    @Test func validateCountsWhatTheStoreSettledAsNotToSend() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start {
            $0.latencyMilliseconds = 30
            $0.script = ["p0005": [.badRequest]]
        }
        defer { g.shutdown() }
        let n = 300
        scratch.write("in.jsonl", lines: promptLines(n))
        try writeJob(scratch, g, job: "validate-\(UUID().uuidString.prefix(8))")
        // No worker yet: the store holds no such job, and every line is to send.
        let before = try json("validate", scratch)
        #expect(before["to_send"]?.intValue == n && before["already_done"]?.intValue == 0, "\(before)")
        // A worker stopped part way: what it settled is not to send; the rest is.
        let w = try worker(scratch, log: "w1.log")
        #expect(eventually(timeout: 30) { g.ledger.count >= 60 })
        kill(w.processIdentifier, SIGTERM)
        w.waitUntilExit()
        let stored = try status(scratch)
        let done = stored["done"]?.intValue ?? -1, failed = stored["failed"]?.intValue ?? -1
        #expect(done > 0 && failed == 1 && done + failed < n, "\(stored)")
        let after = try json("validate", scratch)
        #expect(after["already_done"]?.intValue == done && after["already_failed"]?.intValue == failed, "\(after)")
        #expect(after["to_send"]?.intValue == n - done - failed, "\(after)")
        // A store that refuses the password: said, and every line counted; the password nowhere.
        let refused = try json("validate", scratch, environment: ["PGPASSWORD": "Wrong-Secret-456"])
        #expect(refused["to_send"]?.intValue == n, "\(refused)")
        let problems = refused["problems"]?.serialized() ?? ""
        #expect(problems.contains("could not be read") && !problems.contains("Wrong-Secret-456"), "\(problems)")
    }

    /// `--retry-failed` on a store: the job's failed lines go back to the queue and are sent once more, whichever
    /// worker has the flag; the outputs written from the store then have them among the results. `--force` is
    /// refused with the reason (a changed input is another job).
    @Test func retryFailedSendsTheJobsFailedLinesAgainOnce() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start {
            $0.latencyMilliseconds = 10
            $0.script = ["p0005": [.badRequest], "p0031": [.badRequest]]
        }
        defer { g.shutdown() }
        let n = 60
        scratch.write("in.jsonl", lines: promptLines(n))
        try writeJob(scratch, g, job: "retry-\(UUID().uuidString.prefix(8))")
        let first = try worker(scratch, log: "w1.log")
        first.waitUntilExit()
        #expect(first.terminationStatus == 1, "\(scratch.text("w1.log"))")
        #expect(scratch.lines("out.errors.jsonl").count == 2 && scratch.lines("out.jsonl").count == n - 2)
        let (code, text) = try runToEnd(
            chatbatchBinary(), ["run", scratch.file("job.yaml"), "--retry-failed", "--quiet"],
            environment: try environment)
        #expect(code == 0, "\(text)")
        #expect(text.contains("2 failed lines of job"), "\(text)")
        #expect(scratch.lines("out.errors.jsonl").isEmpty)
        let results = scratch.lines("out.jsonl").compactMap { $0["custom_id"]?.stringValue }
        #expect(results.count == n && Set(results).count == n)
        let sent = g.ledger.snapshot().map(\.clientRequestID)
        #expect(sent.filter { $0 == "p0005" }.count == 2 && sent.filter { $0 == "p0031" }.count == 2)
        #expect(sent.count == n + 2, "every other line once")
        // Nothing failed is left: the flag again sends nothing.
        let (again, againText) = try runToEnd(
            chatbatchBinary(), ["run", scratch.file("job.yaml"), "--retry-failed", "--quiet"],
            environment: try environment)
        #expect(again == 0 && g.ledger.count == n + 2, "\(againText)")
        let (forced, forcedText) = try runToEnd(
            chatbatchBinary(), ["run", scratch.file("job.yaml"), "--force"], environment: try environment)
        #expect(forced == 2 && forcedText.contains("--force and --store do not go together"), "\(forcedText)")
    }
}
