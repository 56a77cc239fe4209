import ChatBatchCore
import FakeGateway
import Foundation
import Testing

@testable import ChatBatch

/// A new user's first hour, with the real binary: what they see when they try it, make a mistake, and put it under
/// cron.
@Suite("A new user's first hour", .serialized)
struct FirstHourTests {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    func run(_ scratch: Scratch, _ arguments: [String] = [], command: String = "run") throws -> (Int32, String) {
        try runToEnd(
            chatbatchBinary(), [command, scratch.file("job.yaml")] + arguments, captureStdout: command != "run")
    }

    @Test func theProgressLineFitsANarrowTerminalAndNeverWraps() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start { $0.latencyMilliseconds = 30 }
        defer { g.shutdown() }
        scratch.write("in.jsonl", lines: promptLines(120))
        writeJob(scratch, g)
        // A 50-column pseudo-terminal: Python opens it, sets its size, and runs the binary on it.
        let script = """
            import fcntl, os, pty, struct, sys, termios
            pid, fd = pty.fork()
            if pid == 0:
                os.execv(sys.argv[1], sys.argv[1:])
            fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 50, 0, 0))
            out = b""
            while True:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                out += chunk
            os.waitpid(pid, 0)
            sys.stdout.buffer.write(out)
            """
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", "-c", script, chatbatchBinary(), "run", scratch.file("job.yaml")]
        var env = ProcessInfo.processInfo.environment
        env["CB_TEST_KEY"] = "sk-fake"
        p.environment = env
        let pipe = Pipe()
        p.standardOutput = pipe
        try p.run()
        let text = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        // A terminal turns "\n" into "\r\n"; Swift reads "\r\n" as one character, so split on the scalars.
        let plain = text.replacingOccurrences(of: "\r\n", with: "\n")
        let redraws = plain.components(separatedBy: "\r\u{1B}[2K").dropFirst().map {
            $0.components(separatedBy: "\n")[0]
        }
        #expect(redraws.count >= 2, "\(text)")
        #expect(redraws.allSatisfy { $0.count < 50 }, "\(redraws.filter { $0.count >= 50 })")
        #expect(redraws.contains { $0.hasPrefix("120/120 (100.0%)") })
    }

    @Test func theNightlyWrapperRunsUnderCronsBareEnvironmentWithTheInstalledBinary() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start()
        defer { g.shutdown() }
        try FileManager.default.createDirectory(atPath: scratch.file("data"), withIntermediateDirectories: true)
        scratch.write("data/2026-11-30.jsonl", lines: promptLines(5))
        let yaml = """
            input: data/{date}.jsonl
            output: out/{date}/results.jsonl
            provider: openai-compatible
            model: openai/gpt-oss-120b
            base_url: \(g.baseURL)
            api_key_env: NIGHTLY_KEY
            """
        try yaml.write(toFile: scratch.file("nightly.yaml"), atomically: true, encoding: .utf8)
        let prefix = scratch.file("prefix")
        func cron(_ extra: [String] = []) throws -> (Int32, String) {
            try runToEnd(
                "/usr/bin/env",
                [
                    "-i", "PATH=/usr/bin:/bin", "HOME=\(scratch.path)", "PREFIX=\(prefix)", "NIGHTLY_KEY=sk-fake",
                    "JOB=\(scratch.file("nightly.yaml"))",
                    "DATE=2026-11-30", "LOCK=\(scratch.file("nightly.lock"))"
                ] + extra + [Self.repository.appendingPathComponent("scripts/nightly").path])
        }
        // Nothing installed: one line that says what to do, and no build.
        let (missing, said) = try cron()
        #expect(missing == 2 && said.contains("scripts/install") && said.split(separator: "\n").count == 1, "\(said)")
        // Installed under PREFIX (as scripts/install does): the run goes through.
        try FileManager.default.createDirectory(atPath: prefix + "/bin", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: chatbatchBinary(), toPath: prefix + "/bin/chatbatch")
        let (code, text) = try cron(["METRICS_DIR=\(scratch.file("textfile"))"])
        #expect(code == 0, "\(text)")
        #expect(scratch.lines("out/2026-11-30/results.jsonl").count == 5)
        // METRICS_DIR: the file node_exporter's textfile collector reads, named after the job.
        let metrics = try String(contentsOfFile: scratch.file("textfile/nightly.prom"), encoding: .utf8)
        #expect(metrics.contains(#"chatbatch_prompts{chatbatch_job="nightly",state="answered"} 5"#), "\(metrics)")
        #expect(metrics.contains("chatbatch_last_exit_code{chatbatch_job=\"nightly\"} 0"), "\(metrics)")
    }

    @Test func aTemplateNamingAMissingFieldOrARecordWithoutItsIdIsAnInvalidLineNotAnEmptyPrompt() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start()
        defer { g.shutdown() }
        scratch.write(
            "in.jsonl",
            lines: [
                #"{"id":1,"text":"a"}"#, #"{"id":2,"txt":"b"}"#, #"{"text":"c","n":{"x":3}}"#,
                #"{"id":4,"text":"d","n":{"x":1}}"#
            ])
        writeJob(
            scratch, g, extra: ["template: \"Extract: {{text}} {{n.x}}\"", "request: {max_token: 20, temperature: 0}"])
        let (code, report) = try run(scratch, [], command: "validate")
        #expect(code == 2, "\(report)")
        #expect(report.contains("in.jsonl:2: the template names {{text}}, {{n}}"), "\(report)")
        #expect(report.contains("in.jsonl:3: the record has no `id` field"), "\(report)")
        #expect(report.contains("in.jsonl:1: the template names {{n}}"), "\(report)")
        #expect(
            report.contains("`max_token`, which is not a Chat Completions field (did you mean max_tokens?)"),
            "\(report)")
        let (ran, said) = try run(scratch)
        #expect(ran == 1 && said.contains("did you mean max_tokens?"), "\(said)")
        #expect(g.ledger.count == 1)  // only line 4 is whole
    }

    @Test func leftoversStatusAndMergeTellTheTruth() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start()
        defer { g.shutdown() }
        // A line invalid at first and fixed later leaves no pending row behind.
        scratch.write("in.jsonl", lines: promptLines(4) + ["{broken"])
        writeJob(scratch, g, extra: ["summary_json: summary.json"])
        _ = try run(scratch)
        scratch.write("in.jsonl", lines: promptLines(4) + [#"{"custom_id":"fixed","prompt":"now whole"}"#])
        let (fixed, _) = try run(scratch)
        #expect(fixed == 0)
        let (_, status) = try runToEnd(chatbatchBinary(), ["status", scratch.file("job.yaml")], captureStdout: true)
        #expect(
            status.contains("5 done, 0 failed, 0 pending, 0 in flight") && status.contains("the input has 5 lines"),
            "\(status)")
        #expect(status.contains("ended ") && !status.contains("ended not ended"), "\(status)")
        // A rerun with nothing to do keeps the last real summary.
        let real = try String(contentsOfFile: scratch.file("summary.json"), encoding: .utf8)
        let (noop, noopText) = try run(scratch)
        #expect(noop == 0 && noopText.contains("nothing to do"), "\(noopText)")
        #expect(try String(contentsOfFile: scratch.file("summary.json"), encoding: .utf8) == real)
        // merge refuses a shard file that is not there.
        let (merge, why) = try runToEnd(
            chatbatchBinary(),
            ["merge", scratch.file("out.jsonl"), scratch.file("missing.jsonl"), "--output", scratch.file("m.jsonl")],
            captureStdout: true)
        #expect(
            merge == 2 && why.contains("missing.jsonl")
                && !FileManager.default.fileExists(atPath: scratch.file("m.jsonl")), "\(why)")
    }

    @Test func aProblemOnEveryLineIsSaidOnceWithACountAndACSVIsOneMessage() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start()
        defer { g.shutdown() }
        scratch.write("in.jsonl", lines: (1...30).map { #"{"custom_id":"n\#($0)","prompt":"no model"}"# })
        let yaml = [
            "input: in.jsonl", "provider: openai-compatible", "base_url: \(g.baseURL)", "api_key_env: CB_TEST_KEY"
        ]
        try yaml.joined(separator: "\n").write(toFile: scratch.file("job.yaml"), atomically: true, encoding: .utf8)
        let (code, said) = try run(scratch)
        #expect(code == 1)
        // three lines, then the count
        #expect(said.components(separatedBy: "no model: the line names none").count - 1 == 4, "\(said)")
        #expect(said.contains("and 27 more lines with the same problem"), "\(said)")
        scratch.write("in.csv", lines: ["id,text", "1,hello", "2,world", "3,again"])
        let (csv, csvText) = try runToEnd(
            chatbatchBinary(),
            ["run", scratch.file("in.csv"), "--provider", "openai-compatible", "--base-url", g.baseURL])
        #expect(csv == 2 && csvText.contains("is not JSONL") && csvText.split(separator: "\n").count <= 2, "\(csvText)")
    }

    @Test func whatAnyCommandLineToolIsExpectedToDo() throws {
        let (code, version) = try runToEnd(chatbatchBinary(), ["--version"], captureStdout: true)
        #expect(code == 0 && version.trimmingCharacters(in: .whitespacesAndNewlines) == ChatBatchVersion.current)
        // - reads the input from standard input.
        let scratch = Scratch()
        let g = try FakeGateway.start()
        defer { g.shutdown() }
        let input = scratch.write("in.jsonl", lines: promptLines(7))
        let p = Process()
        p.executableURL = URL(fileURLWithPath: chatbatchBinary())
        p.arguments = [
            "run", "-", "--output", scratch.file("piped.jsonl"), "--provider", "openai-compatible", "--base-url",
            g.baseURL,
            "--model", "openai/gpt-oss-120b", "--quiet"
        ]
        p.standardInput = FileHandle(forReadingAtPath: input)
        p.environment = ProcessInfo.processInfo.environment.merging(["OPENAI_API_KEY": "sk-fake"]) { $1 }
        p.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try p.run()
        p.waitUntilExit()
        #expect(p.terminationStatus == 0 && scratch.lines("piped.jsonl").count == 7)
        // run --help: what it is, how to call it and the exit codes fit one screen before the arguments and the
        // options, which come in titled sections.
        let (_, help) = try runToEnd(chatbatchBinary(), ["run", "--help"], captureStdout: true)
        let head = help.components(separatedBy: "ARGUMENTS:")[0]
        #expect(
            [
                "FILES:", "PROVIDER:", "REQUESTS:", "CONCURRENCY, RETRIES AND WAITING:",
                "SPENDING AND EARLIER ANSWERS:", "OPTIONS:"
            ]
            .allSatisfy { help.contains("\n\($0)\n") }, "\(help)")
        #expect(head.components(separatedBy: "\n").count - 1 <= 24, "\(head)")
        #expect(head.contains("EXIT CODES") && head.contains("USAGE"))
        let usage = head.components(separatedBy: "USAGE:")[1]
        #expect(usage.contains("EXIT CODES"))  // the exit codes come after USAGE
    }
}

extension FirstHourTests {
    @Test func theDemoInTheBinaryIsTheDemoInTheRepository() throws {
        let jobs = Self.repository.appendingPathComponent("jobs")
        #expect(try String(contentsOf: jobs.appendingPathComponent("demo.yaml"), encoding: .utf8) == DemoJob.yaml)
        #expect(
            try String(contentsOf: jobs.appendingPathComponent("data/demo-questions.jsonl"), encoding: .utf8)
                == DemoJob.questions)
        // `chatbatch demo` runs it with nothing but the binary, and a second time sends nothing.
        let scratch = Scratch()
        let (code, text) = try runToEnd(chatbatchBinary(), ["demo", scratch.file("demo")])
        #expect(code == 0 && text.contains("all 200 lines done"), "\(text)")
        let (again, againText) = try runToEnd(chatbatchBinary(), ["demo", scratch.file("demo")])
        #expect(again == 0 && againText.contains("nothing to do"), "\(againText)")
    }
}
