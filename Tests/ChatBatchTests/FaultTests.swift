import ChatBatchCore
import FakeGateway
import Foundation
import Testing

@testable import ChatBatch

/// Money and data under faults, with the real binary: what a misbehaving server, a full disk or a hostile input
/// line must not do (crash, pay twice uncounted, lose or destroy a file).
@Suite("Faults: headers, bad 200s, full disks, keys, files", .serialized)
struct FaultTests {
    /// Runs the binary on `job.yaml` (written by `writeJob`) with `arguments` added; returns the exit code and stderr.
    func run(_ scratch: Scratch, _ arguments: [String] = [], environment: [String: String] = [:]) throws -> (
        Int32, String
    ) {
        try runToEnd(chatbatchBinary(), ["run", scratch.file("job.yaml")] + arguments, environment: environment)
    }

    @Test func noRetryAfterValueCrashesTheRunAndALongOneIsSaidOrStopsIt() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start {
            $0.script = ["p0002": [.rateLimited, .ok]]
            $0.retryAfterText = "inf"
        }
        defer { g.shutdown() }
        scratch.write("in.jsonl", lines: promptLines(4))
        writeJob(scratch, g, concurrency: 1, extra: ["warmup: false"])
        let (code, stderr) = try run(scratch, ["--summary-json", scratch.file("s.json")])
        #expect(code == 3, "\(stderr)")  // stopped, resumable; not a crash (SIGILL would be 132)
        #expect(stderr.contains("--max-wait"), "\(stderr)")
        #expect(g.ledger.snapshot().filter { $0.clientRequestID == "p0002" }.count == 1)
        // A wait longer than --retry-max-delay (but within --max-wait) is said, with when sending resumes.
        let second = Scratch()
        let h = try FakeGateway.start {
            $0.script = ["p0002": [.rateLimited, .ok]]
            $0.retryAfterText = "1.5"
        }
        defer { h.shutdown() }
        second.write("in.jsonl", lines: promptLines(4))
        writeJob(second, h, concurrency: 1, extra: ["warmup: false", "retry: {max_delay: 0.5}"])
        let (ok, said) = try run(second)
        #expect(ok == 0, "\(said)")
        #expect(said.contains("the key asked to wait 2 s") && said.contains("sending resumes at"), "\(said)")
        let tries = h.ledger.snapshot().filter { $0.clientRequestID == "p0002" }
        #expect(tries.count == 2)
        if tries.count == 2 { #expect(tries[1].receivedAt - tries[0].respondedAt >= 1.45) }
    }

    @Test func aLineBreakInACustomIDOrAHeaderIsRefusedNeverSentAsASecondRequest() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start()
        defer { g.shutdown() }
        let smuggler = JSON.object(
            JSONObject([
                (
                    "custom_id",
                    .string(
                        "a\r\nContent-Length: 0\r\n\r\nPOST /v1/chat/completions HTTP/1.1\r\nX-Client-Request-Id: b\r\n"
                    )
                ),
                ("prompt", "hello")
            ])
        ).serialized()
        scratch.write("in.jsonl", lines: promptLines(3) + [smuggler])
        writeJob(scratch, g)
        let (code, stderr) = try run(scratch)
        #expect(code == 1, "\(stderr)")
        #expect(stderr.contains("in.jsonl:4: custom_id holds a control character"), "\(stderr)")
        let errors = scratch.lines("out.errors.jsonl")
        #expect(errors.count == 1 && errors.first?["error"]?["code"] == "invalid_line")
        // the id itself stays in the output
        #expect(errors.first?["custom_id"]?.stringValue?.hasPrefix("a\r\n") == true)
        #expect(g.ledger.snapshot().count == 3)
        #expect(!g.ledger.snapshot().contains { $0.clientRequestID == "b" })
        // A header value with a line break is refused before anything is sent.
        let before = g.ledger.count
        let (refused, message) = try run(
            scratch, ["--header", "X-Team: a\r\nX-Injected: 1", "--output", scratch.file("h.jsonl")])
        #expect(refused == 2 && message.contains("header X-Team"), "\(message)")
        #expect(g.ledger.count == before)
    }

    @Test func twoHundredsThatAreNotAnswersAreRetriedCountedAndSayWhatCameBack() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start {
            $0.script = [
                "p0001": [.noChoices, .ok], "p0002": [.errorIn200, .ok], "p0003": [.errorInStream, .ok],
                "p0004": [.html, .html],
                "p0005": [.plainJSON], "p0006": [.requestTimeout, .ok], "p0007": [.overloaded, .ok], "p0008": [.gzip],
                "p0009": [.gzip]
            ]
        }
        defer { g.shutdown() }
        var lines = promptLines(9)
        // p0003, p0005, p0009 stream
        for i in [2, 4, 8] { lines[i] = lines[i].replacingOccurrences(of: "}", with: #","stream":true}"#) }
        scratch.write("in.jsonl", lines: lines)
        writeJob(scratch, g, extra: ["retry: {max_attempts: 2, base_delay: 0.01, max_delay: 0.05}", "warmup: false"])
        let (code, stderr) = try run(scratch, ["--summary-json", scratch.file("s.json")])
        #expect(code == 1, "\(stderr)")
        let summary = try JSON.parse(String(contentsOfFile: scratch.file("s.json"), encoding: .utf8))
        #expect(summary["done"] == 8 && summary["failed"] == 1, "\(summary)")
        // The bad 200s were paid for and asked again, each counted as possibly billed twice.
        #expect(summary["possibly_billed_twice"] == 5, "\(summary)")
        let bad = try #require(scratch.lines("out.errors.jsonl").first)
        #expect(bad["custom_id"] == "p0004" && bad["error"]?["code"] == "bad_response")
        #expect(bad["response"]?["body"]?.stringValue?.contains("<h1>Moved</h1>") == true, "\(bad)")
        let results = Dictionary(
            uniqueKeysWithValues: scratch.lines("out.jsonl").map { ($0["custom_id"]?.stringValue ?? "", $0) })
        for id in ["p0001", "p0002", "p0003", "p0005", "p0008", "p0009"] {
            #expect(
                results[id]?["response"]?["body"]?["choices"]?.arrayValue?.first?["message"]?["content"]?.stringValue?
                    .isEmpty == false, "\(id)")
        }
        // A server that ignored stream: true was taken at its word, once; gzip answers were decoded.
        #expect(
            g.ledger.billedCounts()["p0005"] == 1 && g.ledger.billedCounts()["p0008"] == 1
                && g.ledger.billedCounts()["p0009"] == 1)
        #expect(summary["status_counts"]?["408"] == 1 && summary["status_counts"]?["529"] == 1)
        try expectExactlyOnce(scratch, ids: (1...9).map { String(format: "p%04d", $0) }, gateway: g)
    }

    @Test func textThatCannotBeDecodedIsKeptNotThrownAway() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start { $0.script = ["p0001": [.badUTF8], "p0002": [.loneSurrogate]] }
        defer { g.shutdown() }
        scratch.write("in.jsonl", lines: promptLines(3))
        writeJob(scratch, g, extra: ["format: flat"])
        let (code, stderr) = try run(scratch, ["--summary-json", scratch.file("s.json")])
        #expect(code == 0, "\(stderr)")
        let raw = try Data(contentsOf: URL(fileURLWithPath: scratch.file("out.jsonl")))
        #expect(String(data: raw, encoding: .utf8) != nil)  // the file stays UTF-8
        let lines = Dictionary(
            uniqueKeysWithValues: scratch.lines("out.jsonl").map { ($0["custom_id"]?.stringValue ?? "", $0) })
        for id in ["p0001", "p0002"] {
            #expect(lines[id]?["content"]?.stringValue?.contains("\u{FFFD}") == true, "\(id)")
            #expect(lines[id]?["text_repaired"] == true)
        }
        #expect(lines["p0003"]?["text_repaired"] == nil)
        #expect(g.ledger.billedCounts().values.allSatisfy { $0 == 1 })
        let summary = try JSON.parse(String(contentsOfFile: scratch.file("s.json"), encoding: .utf8))
        #expect(summary["text_repaired"] == 2)
    }

    @Test func answersWithoutUsageAreEstimatedMarkedCountedAndBudgeted() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start { $0.omitUsage = true }
        defer { g.shutdown() }
        scratch.write("in.jsonl", lines: promptLines(6))
        writeJob(scratch, g, extra: ["format: flat", "prices: {input: 0.09, output: 0.36}"])
        let (code, stderr) = try run(scratch, ["--summary-json", scratch.file("s.json")])
        #expect(code == 0, "\(stderr)")
        #expect(stderr.components(separatedBy: "sent no usage").count == 2, "\(stderr)")  // warned once
        let summary = try JSON.parse(String(contentsOfFile: scratch.file("s.json"), encoding: .utf8))
        #expect(
            summary["usage_estimated"] == 6 && (summary["completion_tokens"]?.intValue ?? 0) > 0
                && (summary["cost_usd"]?.doubleValue ?? 0) > 0)
        #expect(scratch.lines("out.jsonl").allSatisfy { $0["usage_estimated"] == true })
        let estimated = try SQLiteDatabase(path: scratch.file("out.jsonl.checkpoint"), readOnly: true)
            .query("SELECT count(*) FROM requests WHERE usage_estimated=1").first?.first?.int
        #expect(estimated == 6)
    }

    @Test func aLogFileOnAFullDiskNeverStopsOrCrashesTheRun() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start()
        defer { g.shutdown() }
        scratch.write("in.jsonl", lines: promptLines(30) + ["{broken"])
        writeJob(scratch, g)
        let (code, stderr) = try run(scratch, ["--log-file", "/dev/full", "--progress-interval", "0.05"])
        #expect(code == 1, "\(stderr)")  // the invalid line; every other line done
        #expect(scratch.lines("out.jsonl").count == 30)
        #expect(g.ledger.billedCounts().values.allSatisfy { $0 == 1 })
    }

    @Test func aFullDiskUnderTheOutputsLetsWhatIsInFlightFinishIntoTheCheckpoint() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start { $0.latencyMilliseconds = 60 }
        defer { g.shutdown() }
        scratch.write("in.jsonl", lines: promptLines(200))
        writeJob(
            scratch, g, concurrency: 16, extra: ["checkpoint: out.ckpt", "warmup: false", "adaptive_concurrency: false"]
        )
        let (code, stderr) = try run(scratch, ["--output", "/dev/full", "--errors", scratch.file("out.errors.jsonl")])
        #expect(code == 4, "\(stderr)")
        #expect(stderr.contains("finish into the checkpoint"), "\(stderr)")
        // Every request the gateway billed has its answer in the checkpoint: none was cancelled, none is in flight.
        let db = try SQLiteDatabase(path: scratch.file("out.ckpt"), readOnly: true)
        let done = try db.query("SELECT count(*) FROM requests WHERE state='done'").first?.first?.int ?? 0
        #expect(try db.query("SELECT count(*) FROM requests WHERE state='inflight'").first?.first?.int == 0)
        #expect(done == g.ledger.snapshot().filter(\.billed).count && done > 0 && done < 200)
        #expect(g.ledger.snapshot().allSatisfy { $0.outcome == "ok" })
        // Space again: the resume writes every line once and pays for nothing twice.
        let (resumed, more) = try run(scratch, ["--output", scratch.file("out.jsonl")])
        #expect(resumed == 0, "\(more)")
        try expectExactlyOnce(
            scratch, ids: (1...200).map { String(format: "p%04d", $0) }, gateway: g,
            checkpoints: [scratch.file("out.ckpt")])
        #expect(g.ledger.billedCounts().values.allSatisfy { $0 == 1 })
    }

    @Test(needs("no prlimit (util-linux)") { installed("prlimit") != nil })
    func aCheckpointLeftByAFullDiskIsResumedFromItsWriteAheadLog() throws {
        guard let prlimit = installed("prlimit") else {
            Issue.record("no prlimit (util-linux)")
            return
        }
        let scratch = Scratch()
        // Long answers fill the checkpoint file past the limit before the log, which is folded back from 16 MB on
        // (`WALCheckpointer.backstopPages`), does.
        let g = try FakeGateway.start { $0.answerTokens = 700 }
        defer { g.shutdown() }
        let n = 9000
        scratch.write(
            "in.jsonl",
            lines: (1...n).map {
                #"{"custom_id":"p\#($0)","prompt":"Question \#($0)? \#(String(repeating: "x", count: 200))"}"#
            })
        let yaml = [
            "input: in.jsonl", "output: out/out.jsonl", "checkpoint: ck/out.ckpt", "provider: openai-compatible",
            "model: openai/gpt-oss-120b",
            "base_url: \(g.baseURL)", "api_key_env: CB_TEST_KEY", "concurrency: 32", "warmup: false"
        ]
        try yaml.joined(separator: "\n").write(toFile: scratch.file("job.yaml"), atomically: true, encoding: .utf8)
        // A file size limit stands in for a full disk: the write-ahead log can be rewritten in place, the checkpoint
        // file cannot grow, so folding the log back into it stops half way.
        let limited = try runToEnd(
            prlimit, ["--fsize=\(20 << 20)", chatbatchBinary(), "run", scratch.file("job.yaml"), "--quiet"])
        guard limited.0 == 4 else {
            Issue.record("the limited run: \(limited)")
            return
        }
        #expect(limited.0 == 4, "\(limited.1)")
        let checkpoint = scratch.file("ck/out.ckpt")
        #expect(FileManager.default.fileExists(atPath: checkpoint + "-wal"))
        for args in [["status", checkpoint], ["export", checkpoint, "--output", scratch.file("exported.jsonl")]] {
            let (code, text) = try runToEnd(chatbatchBinary(), args, captureStdout: true)
            #expect(code == 0 && !text.contains("damaged"), "\(args[0]): \(text)")
        }
        let (code, stderr) = try run(scratch, ["--quiet"])
        #expect(code == 0, "\(stderr)")
        let results = scratch.lines("out/out.jsonl")
        #expect(results.count == n && Set(results.compactMap { $0["custom_id"]?.stringValue }).count == n)
        let ambiguous = try ambiguousCounts(checkpoint)
        for (id, billed) in g.ledger.billedCounts() where billed > 1 + (ambiguous[id] ?? 0) {
            Issue.record("\(id) billed \(billed) times, \(ambiguous[id] ?? 0) counted")
        }
    }

    @Test func aRunNeverDestroysAFileItDidNotWrite() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start()
        defer { g.shutdown() }
        let input = scratch.write("in.jsonl", lines: promptLines(20))
        let original = try Data(contentsOf: URL(fileURLWithPath: input))
        writeJob(scratch, g)
        let (same, said) = try run(scratch, ["--output", input])
        #expect(same == 2 && said.contains("is the input file"), "\(said)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: input)) == original)
        let notes = scratch.file("notes.txt")
        try "my notes\n".write(toFile: notes, atomically: true, encoding: .utf8)
        let (other, message) = try run(scratch, ["--output", notes])
        #expect(other == 2 && message.contains("--overwrite"), "\(message)")
        #expect(try String(contentsOfFile: notes, encoding: .utf8) == "my notes\n")
        #expect(g.ledger.count == 0)  // refused before anything was sent
        // With --overwrite the file is replaced.
        let (replaced, _) = try run(scratch, ["--output", notes, "--overwrite"])
        #expect(replaced == 0 && scratch.lines("notes.txt").count == 20)
        // A normal run, then an export elsewhere leaves the run's own errors file alone.
        scratch.write("in.jsonl", lines: promptLines(20) + ["{broken"])
        let (ran, _) = try run(scratch)
        #expect(ran == 1)
        let errors = try Data(contentsOf: URL(fileURLWithPath: scratch.file("out.errors.jsonl")))
        let exported = scratch.file("exports/copy.jsonl")  // a folder that does not exist yet
        let (code, text) = try runToEnd(
            chatbatchBinary(), ["export", scratch.file("out.jsonl.checkpoint"), "--output", exported],
            captureStdout: true)
        #expect(code == 0, "\(text)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: scratch.file("out.errors.jsonl"))) == errors)
        #expect(
            scratch.lines("exports/copy.jsonl").count == 20 && scratch.lines("exports/copy.errors.jsonl").count == 1)
        // Exporting over a file the checkpoint did not write is refused too.
        let (refused, why) = try runToEnd(
            chatbatchBinary(), ["export", scratch.file("out.jsonl.checkpoint"), "--output", notes], captureStdout: true)
        #expect(refused == 2 && why.contains("--overwrite"), "\(why)")
    }

    @Test func aKeyEchoedByTheServerIsWrittenNowhere() throws {
        let scratch = Scratch()
        let key = "sk-tera-ECHOED-\(UUID().uuidString)"
        let g = try FakeGateway.start { $0.echoKeyInErrors = true }
        defer { g.shutdown() }
        scratch.write("in.jsonl", lines: promptLines(10))
        writeJob(scratch, g)
        let (code, stderr) = try run(
            scratch, ["--summary-json", scratch.file("s.json"), "--log-file", scratch.file("run.log")],
            environment: ["CB_TEST_KEY": key])
        #expect(code == 3, "\(stderr)")
        #expect(stderr.contains("[redacted]"), "\(stderr)")
        for name in [
            "s.json", "run.log", "out.jsonl", "out.errors.jsonl", "out.jsonl.checkpoint", "out.jsonl.checkpoint-wal"
        ] {
            let bytes = (try? Data(contentsOf: URL(fileURLWithPath: scratch.file(name)))) ?? Data()
            #expect(bytes.range(of: Data(key.utf8)) == nil, "\(name) holds the key")
        }
        #expect(!stderr.contains(key))
    }

    @Test func theKeyIsNeverSentInClearToAnotherHost() throws {
        let scratch = Scratch()
        scratch.write("in.jsonl", lines: promptLines(2))
        let yaml = [
            "input: in.jsonl", "provider: tera", "base_url: http://gateway.example.invalid/v1",
            "api_key_env: CB_TEST_KEY"
        ]
        try yaml.joined(separator: "\n").write(toFile: scratch.file("job.yaml"), atomically: true, encoding: .utf8)
        let (code, stderr) = try run(scratch)
        #expect(code == 2 && stderr.contains("--allow-http") && stderr.contains("gateway.example.invalid"), "\(stderr)")
        #expect(!FileManager.default.fileExists(atPath: scratch.file("in.results.jsonl.checkpoint")))
    }

    @Test func aSummaryThatCannotBeWrittenIsRefusedFirstAndNeverMisstatesTheRun() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start()
        defer { g.shutdown() }
        scratch.write("in.jsonl", lines: promptLines(10))
        writeJob(scratch, g)
        try "".write(toFile: scratch.file("a-file"), atomically: true, encoding: .utf8)
        let (refused, why) = try run(scratch, ["--summary-json", scratch.file("a-file/summary.json")])
        #expect(refused == 2 && why.contains("nothing was sent"), "\(why)")
        #expect(g.ledger.count == 0)
        // When writing it fails at the end, the run's own result stands and the message says what happened.
        let (code, stderr) = try run(scratch, ["--summary-json", "/dev/full"])
        #expect(code == 0, "\(stderr)")
        #expect(
            stderr.contains("could not write the summary") && stderr.contains("all 10 lines done")
                && !stderr.contains("nothing was sent"), "\(stderr)")
        #expect(scratch.lines("out.jsonl").count == 10)
    }
}
