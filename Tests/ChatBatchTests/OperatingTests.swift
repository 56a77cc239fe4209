import ChatBatchCore
import FakeGateway
import Foundation
import Testing

@testable import ChatBatch

@Suite("Operating it: progress, status, report, shards, nightly")
struct OperatingTests {
    func binary(_ arguments: [String], stderr: Any? = nil) throws -> Process {
        try launch(chatbatchBinary(), arguments, stderr: stderr)
    }

    @Test func progressIsRedrawnOnATerminal() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start { $0.latencyMilliseconds = 40 }
        defer { g.shutdown() }
        scratch.write("in.jsonl", lines: promptLines(150))
        writeJob(scratch, g, extra: ["prices: {input: 0.09, output: 0.36}"])  // a known price: the line shows dollars
        // A pseudo-terminal as stderr: Python's pty.spawn runs the binary on one and copies what it shows.
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = [
            "python3", "-c", "import pty, sys; sys.exit(pty.spawn(sys.argv[1:]) >> 8)", chatbatchBinary(), "run",
            scratch.file("job.yaml")
        ]
        var env = ProcessInfo.processInfo.environment
        env["CB_TEST_KEY"] = "sk-fake"
        p.environment = env
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardInput = FileHandle(forReadingAtPath: "/dev/null")
        try p.run()
        let captured = [UInt8](pipe.fileHandleForReading.readDataToEndOfFile())
        p.waitUntilExit()
        let text = String(decoding: captured, as: UTF8.self)
        #expect(p.terminationStatus == 0)
        #expect(text.contains("\r\u{1B}[2K"))
        #expect(text.contains("/150 ("))
        #expect(text.contains("req/s") && text.contains("in flight") && text.contains("$"))
        #expect(text.contains("150/150 (100.0%)"))
        #expect(!text.contains("progress:"))  // no log lines on a terminal
    }

    @Test func progressIsALogLinePerIntervalWhenNotATerminalAndQuietSilencesIt() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start { $0.latencyMilliseconds = 40 }
        defer { g.shutdown() }
        scratch.write("in.jsonl", lines: promptLines(150))
        writeJob(scratch, g)
        let pipe = Pipe()
        let p = try binary(["run", scratch.file("job.yaml"), "--progress-interval", "0.2"], stderr: pipe)
        let text = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        let progressLines = text.split(separator: "\n").filter { $0.contains("progress: ") }
        #expect(progressLines.count >= 2)
        #expect(progressLines.allSatisfy { $0.contains(" chatbatch info: progress: ") && $0.contains("req/s") })
        #expect(!text.contains("chatbatch: chatbatch") && !text.contains("[chatbatch]"))  // one prefix per line
        #expect(!text.contains("\u{1B}["))
        // --quiet and --log-file.
        let again = Scratch()
        again.write("in.jsonl", lines: promptLines(20) + ["{broken"])
        writeJob(again, g)
        let quietPipe = Pipe()
        let q = try binary(
            [
                "run", again.file("job.yaml"), "--quiet", "--log-file", again.file("run.log"), "--progress-interval",
                "0.05"
            ], stderr: quietPipe)
        let quietText = String(decoding: quietPipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        q.waitUntilExit()
        #expect(!quietText.contains("progress:"))
        let log = try String(contentsOfFile: again.file("run.log"), encoding: .utf8)
        #expect(log.contains("in.jsonl:21: not valid JSON"))
        // Some lines not answered: the summary is logged as warnings, a line an event, in the detail line's words.
        #expect(
            log.contains("chatbatch warning: done: 20 of 21 lines answered, 1 invalid (see the errors file)"), "\(log)")
        #expect(log.contains("chatbatch warning:   lines      21 read: 20 done, 0 failed, 1 invalid"), "\(log)")
    }

    @Test func shardsCoverEveryLineOnceAndMergeEqualsOneRun() throws {
        let g = try FakeGateway.start { $0.script = ["p0007": [.badRequest]] }
        defer { g.shutdown() }
        let lines = promptLines(120) + ["{not json"]
        let whole = Scratch()
        whole.write("in.jsonl", lines: lines)
        _ = try runJob(settings(whole, g))
        let sharded = Scratch()
        sharded.write("in.jsonl", lines: lines)
        let h = try FakeGateway.start { $0.script = ["p0007": [.badRequest]] }  // scripts count attempts per gateway
        defer { h.shutdown() }
        var outputs: [String] = []
        var summaries: [String] = []
        var perShard: [Int] = []
        for i in 0..<3 {
            var s = settings(sharded, h)
            s.output = sharded.file("shard\(i).jsonl")
            s.shard = try Shard(parsing: "\(i)/3")
            s.summaryJSON = sharded.file("summary\(i).json")
            let (summary, _) = try runJob(s)
            perShard.append(summary.inputLines)
            outputs.append(s.output!)
            summaries.append(s.summaryJSON!)
        }
        #expect(perShard.reduce(0, +) == 121)
        #expect(perShard.allSatisfy { $0 > 20 })
        let report = try OutputMerge.merge(
            results: outputs, output: sharded.file("out.jsonl"), errors: nil, summaries: summaries,
            summaryOutput: sharded.file("summary.json"))
        #expect(report.results == 119 && report.errors == 2)
        func ids(_ s: Scratch, _ name: String) -> [String] {
            s.lines(name).compactMap { $0["custom_id"]?.stringValue }.sorted()
        }
        #expect(ids(sharded, "out.jsonl") == ids(whole, "out.jsonl"))
        #expect(ids(sharded, "out.errors.jsonl") == ids(whole, "out.errors.jsonl"))
        let merged = try JSON.parse(String(contentsOfFile: sharded.file("summary.json"), encoding: .utf8))
        #expect(merged["done"] == 119 && merged["input_lines"] == 121 && merged["shards"] == 3)
        // A custom_id in two shards' outputs is refused.
        #expect(throws: ChatBatchError.self) {
            try OutputMerge.merge(
                results: [outputs[0], outputs[0]], output: sharded.file("dup.jsonl"), errors: nil, summaries: [],
                summaryOutput: nil)
        }
    }

    @Test func statusAndReportDescribeARunWithFailuresAndRetries() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start {
            $0.script = ["p0003": [.serverError, .ok], "p0004": [.badRequest], "p0005": [.reset, .ok]]
            $0.latencyMilliseconds = 5
        }
        defer { g.shutdown() }
        scratch.write("in.jsonl", lines: promptLines(30))
        _ = try runJob(settings(scratch, g))
        let checkpoint = scratch.file("out.jsonl.checkpoint")
        let status = try CheckpointReport.status(checkpoint: checkpoint)
        #expect(
            status["prompts"]?["done"] == 29 && status["prompts"]?["failed"] == 1 && status["prompts"]?["pending"] == 0)
        #expect(status["held_by_a_run"] == false)
        #expect(status["last_run"]?["exit_code"] == 1)
        #expect((status["cost_usd"]?.doubleValue ?? 0) > 0)
        let held = try CheckpointStore(path: checkpoint)
        #expect(try CheckpointReport.status(checkpoint: checkpoint)["held_by_a_run"] == true)
        held.releaseLock()
        let report = try CheckpointReport.report(checkpoint: checkpoint)
        #expect(report["attempts"] == 32 && report["retries"] == 2)
        #expect(report["answers_by_status"]?["200"] == 29 && report["answers_by_status"]?["500"] == 1)
        #expect(report["answers_by_status"]?["400"] == 1 && report["answers_by_status"]?["no_answer"] == 1)
        #expect(report["possibly_billed_twice"] == 1)
        #expect(report["failures_by_code"]?["invalid_request"] == 1)
        let p50 = report["latency_ms"]?["p50"]?.doubleValue ?? 0, p99 = report["latency_ms"]?["p99"]?.doubleValue ?? 0
        #expect(p50 >= 5 && p99 >= p50)
        let text = CheckpointReport.reportText(report)
        #expect(text.contains("p50") && text.contains("throughput   |"))
    }

    @Test func nightlyDatesThePathsAndNeverOverlaps() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start()
        defer { g.shutdown() }
        try FileManager.default.createDirectory(atPath: scratch.file("data"), withIntermediateDirectories: true)
        scratch.write("data/2026-11-21.jsonl", lines: promptLines(5))
        let yaml = """
            input: data/{date}.jsonl
            output: out/{date}/results.jsonl
            provider: openai-compatible
            model: openai/gpt-oss-120b
            base_url: \(g.baseURL)
            api_key_env: CB_TEST_KEY
            """
        _ = FileManager.default.createFile(atPath: scratch.file("nightly.yaml"), contents: Data(yaml.utf8))
        let s = try JobFile.load(path: scratch.file("nightly.yaml"), date: "2026-11-21")
        #expect(
            s.input == scratch.file("data/2026-11-21.jsonl") && s.output == scratch.file("out/2026-11-21/results.jsonl")
        )
        // The wrapper: a run still holding the lock makes tonight's exit 5 with one line.
        let scripts = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
            .appendingPathComponent("scripts/nightly").path
        let lockPath = scratch.file("nightly.lock")
        let fd = open(lockPath, O_CREAT | O_RDWR, 0o600)
        defer { close(fd) }
        #expect(flock(fd, LOCK_EX | LOCK_NB) == 0)
        func wrapper() throws -> (Int32, String) {
            try runToEnd(
                scripts, [],
                environment: [
                    "JOB": scratch.file("nightly.yaml"), "DATE": "2026-11-21", "LOCK": lockPath,
                    "CHATBATCH": chatbatchBinary()
                ])
        }
        let (busy, message) = try wrapper()
        #expect(busy == 5)
        #expect(message.split(separator: "\n").count == 1 && message.contains("still holds"))
        flock(fd, LOCK_UN)
        let (code, _) = try wrapper()
        #expect(code == 0)
        #expect(scratch.lines("out/2026-11-21/results.jsonl").count == 5)
    }
}
