import ChatBatchCore
import FakeGateway
import Foundation
import TestSupport
import Testing

@testable import ChatBatch

/// Several `chatbatch run --store` processes on one job in a real PostgreSQL server, against one fake gateway that
/// bills every request it answers: every line answered once in the outputs, a worker killed with SIGKILL whose lines
/// the others take over (counted as possibly billed twice), the server restarted under running workers, and
/// `status` and `export` on the store.
@Suite(
    "PostgreSQL: workers on one job",
    .serialized,
    needs("PostgreSQL's initdb and pg_ctl (Debian: apt-get install postgresql)") { PostgresServer.binaries != nil })
struct PostgresFleetTests {
    static let shared = Result { try PostgresServer() }

    /// The job file every worker runs: the store's address without its password (that comes from PGPASSWORD, as a
    /// deployment gives it), a job name of the test's own, short timeouts.
    func writeJob(
        _ scratch: Scratch, _ g: FakeGateway, job: String, lease: Int = 60, concurrency: Int = 4, extra: [String] = []
    ) throws {
        let server = try Self.shared.get()
        ChatBatchTests.writeJob(
            scratch, g, concurrency: concurrency,
            extra: [
                "store: postgres://\(PostgresServer.user)@127.0.0.1:\(server.port)/postgres", "job_name: \(job)",
                "lease_seconds: \(lease)", "timeout: 10", "grace: 5",
                "retry: {max_attempts: 20, base_delay: 0.01, max_delay: 0.2}", "prices: {input: 0.09, output: 0.36}"
            ] + extra)
    }

    var environment: [String: String] {
        get throws { ["PGPASSWORD": try Self.shared.get().password] }
    }

    func worker(_ scratch: Scratch, log: String) throws -> Process {
        _ = FileManager.default.createFile(atPath: scratch.file(log), contents: nil)
        return try launch(
            chatbatchBinary(), ["run", scratch.file("job.yaml"), "--quiet"], environment: try environment,
            stderr: FileHandle(forWritingAtPath: scratch.file(log)))
    }

    /// `chatbatch COMMAND job.yaml --json` (status, report, validate) with the store's password, as JSON; it must
    /// exit 0.
    func json(_ command: String, _ scratch: Scratch, environment extra: [String: String]? = nil) throws -> JSON {
        let (code, text) = try runToEnd(
            chatbatchBinary(), [command, scratch.file("job.yaml"), "--json"], environment: try extra ?? environment,
            captureStdout: true)
        #expect(code == 0, "\(text)")
        return try JSON.parse(text.split(separator: "\n").first { $0.hasPrefix("{") }.map(String.init) ?? "")
    }

    func status(_ scratch: Scratch) throws -> JSON { try json("status", scratch) }

    /// Per custom_id, how often the store sent a line again after its holder died with it in flight.
    func resentCounts(_ job: String) throws -> [String: Int] {
        let db = try PostgresConnection(PostgresAddress(try Self.shared.get().url()))
        var out: [String: Int] = [:]
        for row in try db.rows(
            """
            SELECT l.custom_id, l.resent_after_crash FROM chatbatch_lines l JOIN chatbatch_jobs j ON j.id = l.job
            WHERE j.name = $1 AND l.resent_after_crash > 0
            """, [job])
        {
            out[row["custom_id"] ?? ""] = row.int("resent_after_crash")
        }
        return out
    }

    @Test func threeWorkersAnswerEveryLineOnceAndStatusShowsThemWhileTheyRun() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start { $0.latencyMilliseconds = 60 }
        defer { g.shutdown() }
        let n = 300
        scratch.write("in.jsonl", lines: promptLines(n))
        try writeJob(scratch, g, job: "three-\(UUID().uuidString.prefix(8))")
        let workers = try (1...3).map { try worker(scratch, log: "w\($0).log") }
        #expect(eventually(timeout: 30) { g.ledger.count >= 30 })
        let running = try status(scratch)
        #expect(running["workers"]?.arrayValue?.isEmpty == false, "\(running)")
        for w in workers { w.waitUntilExit() }
        for (i, w) in workers.enumerated() {
            #expect(w.terminationStatus == 0, "\(scratch.text("w\(i + 1).log"))")
        }
        try expectExactlyOnce(scratch, ids: (1...n).map { String(format: "p%04d", $0) }, gateway: g, checkpoints: [])
        let end = try status(scratch)
        #expect(end["done"]?.intValue == n && end["queued"]?.intValue == 0 && end["leased"]?.intValue == 0)
        #expect(end["workers"]?.arrayValue?.count == 3)
        #expect(end["workers"]?.arrayValue?.allSatisfy { $0["stopped"]?.boolValue == true } == true)
        // Every worker took part (claims are small), and export writes the same lines from the store alone.
        #expect(workers.indices.allSatisfy { scratch.text("w\($0 + 1).log").contains("lines ") })
        let (code, text) = try runToEnd(
            chatbatchBinary(),
            [
                "export", try Self.shared.get().url(), "--job-name", end["job"]?.stringValue ?? "", "--output",
                scratch.file("again.jsonl")
            ], captureStdout: true)
        #expect(code == 0, "\(text)")
        #expect(!text.contains(try Self.shared.get().password))
        #expect(Set(scratch.lines("again.jsonl").compactMap { $0["custom_id"]?.stringValue }).count == n)
    }

    @Test func aWorkerKilledMidRunLosesItsLinesToTheOtherAndTheirResendsAreCounted() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start { $0.latencyMilliseconds = 150 }
        defer { g.shutdown() }
        let n = 200
        scratch.write("in.jsonl", lines: promptLines(n))
        let job = "kill-\(UUID().uuidString.prefix(8))"
        try writeJob(scratch, g, job: job, lease: 2, concurrency: 8)
        let doomed = try worker(scratch, log: "w1.log")
        #expect(eventually(timeout: 30) { g.ledger.count >= 20 })
        let survivor = try worker(scratch, log: "w2.log")
        #expect(eventually(timeout: 30) { g.ledger.count >= 40 })
        kill(doomed.processIdentifier, SIGKILL)
        doomed.waitUntilExit()
        survivor.waitUntilExit()
        #expect(survivor.terminationStatus == 0, "\(scratch.text("w2.log"))")
        // Every line once in the outputs; every line the gateway billed twice is one the store counted as resent.
        let ids = (1...n).map { String(format: "p%04d", $0) }
        try expectExactlyOnce(scratch, ids: ids, gateway: g, checkpoints: [], resent: [try resentCounts(job)])
        let end = try status(scratch)
        #expect((end["resent_after_crash"]?.intValue ?? 0) >= 1, "\(end)")
        #expect(scratch.text("w2.log").contains("resent after a crash"))
    }

    /// A worker records a few of its lines ahead as about to leave, so that their requests leave at once: one stopped
    /// by SIGTERM gives back the lines it recorded so and never sent, and the worker that takes them over sends them
    /// once and counts none of them as resent after a crash.
    @Test func aStoppedWorkerGivesBackTheLinesItRecordedAheadAndNoneCountsAsResent() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start { $0.latencyMilliseconds = 200 }
        defer { g.shutdown() }
        let n = 600
        scratch.write("in.jsonl", lines: promptLines(n))
        let job = "ahead-\(UUID().uuidString.prefix(8))"
        try writeJob(scratch, g, job: job, lease: 2, concurrency: 64)
        let first = try worker(scratch, log: "w1.log")
        let db = try PostgresConnection(PostgresAddress(try Self.shared.get().url()))
        let inFlight = """
            SELECT count(*) AS n FROM chatbatch_lines l JOIN chatbatch_jobs j ON j.id = l.job
            WHERE j.name = $1 AND l.state = 'leased' AND l.in_flight
            """
        // More lines recorded as leaving than the gateway has: some were recorded ahead of their sends.
        #expect(
            eventually(timeout: 30) {
                let gateway = g.inFlight
                return (try? db.rows(inFlight, [job]))?.first?.int("n") ?? 0 > gateway + 2
            }, "no line was recorded ahead of its send")
        kill(first.processIdentifier, SIGTERM)
        first.waitUntilExit()
        #expect(first.terminationStatus == 4, "\(scratch.text("w1.log"))")
        #expect(try db.rows(inFlight, [job]).first?.int("n") == 0, "the stopped worker left lines recorded as leaving")
        let second = try worker(scratch, log: "w2.log")
        second.waitUntilExit()
        #expect(second.terminationStatus == 0, "\(scratch.text("w2.log"))")
        let ids = (1...n).map { String(format: "p%04d", $0) }
        try expectExactlyOnce(scratch, ids: ids, gateway: g, checkpoints: [])
        #expect(try resentCounts(job).isEmpty)
    }

    @Test func theStoreRestartedUnderARunningWorkerIsAnOutageNotAFailure() throws {
        let scratch = Scratch()
        let server = try Self.shared.get()
        let g = try FakeGateway.start { $0.latencyMilliseconds = 50 }
        defer { g.shutdown() }
        let n = 200
        scratch.write("in.jsonl", lines: promptLines(n))
        try writeJob(scratch, g, job: "restart-\(UUID().uuidString.prefix(8))", lease: 30)
        let w = try worker(scratch, log: "w1.log")
        #expect(eventually(timeout: 30) { g.ledger.count >= 20 })
        try server.stop()
        try server.start()
        w.waitUntilExit()
        #expect(w.terminationStatus == 0, "\(scratch.text("w1.log"))")
        #expect(FileManager.default.fileExists(atPath: scratch.file("out.jsonl")), "\(scratch.text("w1.log"))")
        try expectExactlyOnce(scratch, ids: (1...n).map { String(format: "p%04d", $0) }, gateway: g, checkpoints: [])
        #expect(scratch.lines("out.errors.jsonl").isEmpty)
        #expect(scratch.text("w1.log").contains("cannot be reached"), "\(scratch.text("w1.log"))")
    }

    @Test func a429AtOneWorkerPausesTheOtherForItsWait() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start {
            $0.latencyMilliseconds = 40
            $0.retryAfterSeconds = 3
            $0.script = ["p0150": [.rateLimited]]
        }
        defer { g.shutdown() }
        let n = 400
        scratch.write("in.jsonl", lines: promptLines(n))
        try writeJob(scratch, g, job: "pause-\(UUID().uuidString.prefix(8))")
        let workers = try (1...2).map { try worker(scratch, log: "w\($0).log") }
        for w in workers { w.waitUntilExit() }
        #expect(workers.allSatisfy { $0.terminationStatus == 0 })
        try expectExactlyOnce(scratch, ids: (1...n).map { String(format: "p%04d", $0) }, gateway: g, checkpoints: [])
        // Both workers were sending when the 429 came; from a second after it until its wait ends, neither sends.
        let entries = g.ledger.snapshot()
        let refused = try #require(entries.first { $0.status == 429 })
        let during = entries.filter {
            $0.receivedAt > refused.receivedAt + 1 && $0.receivedAt < refused.receivedAt + 2.7
        }
        #expect(during.count == 0, "requests arrived inside the pause")
        #expect(entries.contains { $0.receivedAt > refused.receivedAt + 2.7 })
    }

    @Test func maxCostHoldsForTheJobNotForEachWorker() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start { $0.latencyMilliseconds = 30 }
        defer { g.shutdown() }
        scratch.write("in.jsonl", lines: promptLines(600))
        // A request costs at most (12 × 0.09 + 100 × 0.36) / 1e6 ≈ $0.000037; the cap pays for about 55 of them.
        let cap = 0.002
        let job = "budget-\(UUID().uuidString.prefix(8))"
        try writeJob(scratch, g, job: job, extra: ["max_cost: \(cap)", "request: {max_tokens: 100}"])
        let workers = try (1...2).map { try worker(scratch, log: "w\($0).log") }
        for w in workers { w.waitUntilExit() }
        #expect(workers.allSatisfy { $0.terminationStatus == 3 }, "\(scratch.text("w1.log"))")
        // Each worker alone would spend up to the cap; together they stay within it, but for what the other had
        // in flight when the job's spend was last read (four requests at most, each worker).
        let spent = try status(scratch)["cost"]?.doubleValue ?? 0
        let worstRequest: Double = (12 * 0.09 + 100 * 0.36) / 1e6
        let worstInFlight = 8 * worstRequest
        #expect(spent > 0 && spent <= cap + worstInFlight, "spent \(spent)")
    }

    /// A worker holds what its window may send, not its concurrency's worth: on a key that allows 4 in flight, a
    /// worker set to 64 keeps few lines from the others (and, at the end of a job, does not sit on a queue of them).
    @Test func aWorkerOnASmallKeyHoldsWhatItsWindowMaySendNotItsConcurrency() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start {
            $0.latencyMilliseconds = 100
            $0.maxInflightPerKey = 4
        }
        defer { g.shutdown() }
        scratch.write("in.jsonl", lines: promptLines(400))
        try writeJob(scratch, g, job: "held-\(UUID().uuidString.prefix(8))", concurrency: 64)
        let w = try worker(scratch, log: "w1.log")
        defer { stopProcess(w) }
        #expect(eventually(timeout: 30) { g.ledger.count >= 80 })
        var most = 0
        for _ in 0..<5 {
            let held = try status(scratch)["workers"]?.arrayValue?.first?["held"]?.intValue ?? 0
            most = max(most, held)
        }
        // Its window on this key stays near 4 (a few more while it looks above it), plus a claim's few lines.
        #expect(most > 0 && most <= 40, "the worker held \(most) lines at once")
    }

    /// Lines repeating an earlier line's custom_id are refused by whichever worker claims them, as a run on a file
    /// refuses them: never sent, each in the errors file, the first line answered.
    @Test func aDuplicateCustomIDIsRefusedWhicheverWorkerClaimsIt() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start { $0.latencyMilliseconds = 20 }
        defer { g.shutdown() }
        var lines = promptLines(200)
        for (later, earlier) in [(150, 3), (181, 4), (199, 3)] {
            lines[later - 1] = promptLines(earlier)[earlier - 1]
        }
        scratch.write("in.jsonl", lines: lines)
        try writeJob(scratch, g, job: "dup-\(UUID().uuidString.prefix(8))")
        let workers = try (1...2).map { try worker(scratch, log: "w\($0).log") }
        for w in workers { w.waitUntilExit() }
        let results = scratch.lines("out.jsonl").compactMap { $0["custom_id"]?.stringValue }
        let errors = scratch.lines("out.errors.jsonl")
        #expect(results.count == 197 && Set(results).count == 197, "\(results.count)")
        #expect(errors.count == 3, "\(errors)")
        #expect(errors.allSatisfy { $0.serialized().contains("duplicate custom_id") }, "\(errors)")
        for id in ["p0003", "p0004"] {
            #expect(g.ledger.snapshot().filter { $0.clientRequestID == id }.count == 1, "\(id) sent more than once")
        }
    }

    @Test func aWrongPasswordOrAStoreThatIsNotChatbatchsIsRefusedWithoutThePassword() throws {
        let scratch = Scratch()
        let server = try Self.shared.get()
        let g = try FakeGateway.start { $0.latencyMilliseconds = 1 }
        defer { g.shutdown() }
        scratch.write("in.jsonl", lines: promptLines(3))
        let (code, text) = try runToEnd(
            chatbatchBinary(),
            [
                "run", scratch.file("in.jsonl"), "--base-url", g.baseURL, "--api-key-env", "CB_TEST_KEY", "--store",
                server.url(password: "Wrong-Secret-123")
            ])
        #expect(code == 2, "\(text)")
        #expect(text.contains("127.0.0.1") && !text.contains("Wrong-Secret-123"), "\(text)")
        #expect(g.ledger.count == 0)
        let (statusCode, statusText) = try runToEnd(
            chatbatchBinary(), ["status", server.url(database: "template1")], captureStdout: true)
        #expect(statusCode != 0 && statusText.contains("no chatbatch job"), "\(statusText)")
        #expect(!statusText.contains(server.password))
    }
}

extension Scratch {
    /// A file's text ("" when it cannot be read).
    func text(_ name: String) -> String { (try? String(contentsOfFile: file(name), encoding: .utf8)) ?? "" }
}
