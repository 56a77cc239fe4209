import ChatBatchCore
import FakeGateway
import Foundation
import TestSupport
import Testing

@testable import ChatBatch

/// Operating it for real, the first items: the nightly wrapper's lock, a validate gate, messages said once.
@Suite("Operating it: the nightly lock, the validate gate", .serialized)
struct OperatingNightsTests {
    static let nightly = FirstHourTests.repository.appendingPathComponent("scripts/nightly").path

    @Test func validateKeepsAnInvalidLineInvalidAfterARunRecordedIt() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start()
        defer { g.shutdown() }
        scratch.write("in.jsonl", lines: promptLines(40) + ["{broken"])
        writeJob(scratch, g)
        let (fresh, freshText) = try runToEnd(
            chatbatchBinary(), ["validate", scratch.file("job.yaml")], captureStdout: true)
        #expect(fresh == 2 && freshText.contains("1 invalid"), "\(freshText)")
        _ = try runToEnd(chatbatchBinary(), ["run", scratch.file("job.yaml")])
        let (again, againText) = try runToEnd(
            chatbatchBinary(), ["validate", scratch.file("job.yaml")], captureStdout: true)
        #expect(
            again == 2 && againText.contains("1 invalid"),
            "a gate before the nightly run must not pass a broken file: \(againText)")
    }

    @Test func aWrongChoiceIsRefusedWithTheChoicesItHasAndExit2() throws {
        for (arguments, choices) in [
            (["run", "in.jsonl", "--provider", "foo"], "'tera', 'tir' or 'openai-compatible'"),
            (["run", "in.jsonl", "--format", "csv"], "'batch' and 'flat'"),
            (["run", "in.jsonl", "--cache-mode", "sometimes"], "'read-write', 'read-only' or 'refresh'"),
            (["export", "x.checkpoint", "--order", "sideways"], "'input' and 'completion'")
        ] {
            let (code, text) = try runToEnd(chatbatchBinary(), arguments)
            #expect(code == 2 && text.contains(choices), "\(arguments): \(text)")
        }
    }

    @Test func aRefusedRunSaysNothingWasSentOnce() throws {
        let scratch = Scratch()
        scratch.write("in.jsonl", lines: promptLines(2))
        let (code, text) = try runToEnd(
            chatbatchBinary(),
            [
                "run", scratch.file("in.jsonl"), "--fake-gateway", "--provider", "tera",
                "--summary-json", "/proc/self/none/summary.json"
            ])
        #expect(code == 2 && text.components(separatedBy: "nothing was sent").count - 1 == 1, "\(text)")
    }

    @Test func logsAreOneEventALineAsTextOrJSON() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start()
        defer { g.shutdown() }
        scratch.write("in.jsonl", lines: promptLines(20) + ["{broken"])
        writeJob(scratch, g)
        let levels = Set(["trace", "debug", "info", "notice", "warning", "error", "critical"])
        let (code, _) = try runToEnd(
            chatbatchBinary(),
            [
                "run", scratch.file("job.yaml"), "--log-file", scratch.file("text.log"),
                "--progress-interval", "0.05"
            ])
        #expect(code == 1)
        let text = try String(contentsOfFile: scratch.file("text.log"), encoding: .utf8).split(separator: "\n")
        #expect(
            text.count > 5
                && text.allSatisfy { line in
                    let parts = line.split(separator: " ", maxSplits: 3)
                    return parts.count == 4 && parts[0].hasSuffix("Z") && parts[1] == "chatbatch"
                        && levels.contains(String(parts[2].dropLast()))
                }, "\(text)")
        #expect(text.contains { $0.contains(" warning: done: 20 of 21 lines answered") })
        // JSON lines: to the log file, and to stderr with nothing else on it (a shipper reading stderr gets JSON only).
        let (again, stderr) = try runToEnd(
            chatbatchBinary(), ["run", scratch.file("job.yaml"), "--log-format", "json", "--force"])
        let (_, _) = try runToEnd(
            chatbatchBinary(),
            [
                "run", scratch.file("job.yaml"), "--log-format", "json", "--log-file",
                scratch.file("json.log")
            ])
        #expect(again == 1)
        let file = try String(contentsOfFile: scratch.file("json.log"), encoding: .utf8).split(separator: "\n")
        for line in file + stderr.split(separator: "\n") {
            let event = try? JSON.parse(String(line))
            #expect(
                event?["time"]?.stringValue != nil && levels.contains(event?["level"]?.stringValue ?? "")
                    && event?["message"]?.stringValue != nil, "not a JSON event: \(line)")
        }
        #expect(stderr.contains("\"level\":\"warning\"") && stderr.contains("done: "))
    }

    @Test func theNightlyLockIsThisUsersAndThisJobsOwn() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start()
        defer { g.shutdown() }
        let prefix = scratch.file("prefix")
        try FileManager.default.createDirectory(atPath: prefix + "/bin", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: chatbatchBinary(), toPath: prefix + "/bin/chatbatch")
        // Two jobs named nightly.yaml in two folders.
        for folder in ["a", "b"] {
            try FileManager.default.createDirectory(atPath: scratch.file(folder), withIntermediateDirectories: true)
            scratch.write("\(folder)/in.jsonl", lines: promptLines(3, prefix: folder))
            let yaml = [
                "input: in.jsonl", "output: out/{date}.jsonl", "provider: openai-compatible",
                "model: openai/gpt-oss-120b",
                "base_url: \(g.baseURL)", "api_key_env: NIGHTLY_KEY"
            ].joined(separator: "\n")
            try yaml.write(toFile: scratch.file("\(folder)/nightly.yaml"), atomically: true, encoding: .utf8)
        }
        let runtime = scratch.file("runtime")
        func night(_ folder: String) throws -> (Int32, String) {
            try runToEnd(
                "/usr/bin/env",
                [
                    "-i", "PATH=/usr/bin:/bin", "HOME=\(scratch.path)", "PREFIX=\(prefix)", "NIGHTLY_KEY=sk-fake",
                    "XDG_RUNTIME_DIR=\(runtime)", "JOB=\(scratch.file("\(folder)/nightly.yaml"))", "DATE=2026-12-01",
                    Self.nightly
                ])
        }
        // A lock another user left at the old shared place holds nothing.
        _ = FileManager.default.createFile(atPath: "/tmp/chatbatch-nightly-nightly.lock", contents: nil)
        defer { unlink("/tmp/chatbatch-nightly-nightly.lock") }  // the suite leaves nothing outside its scratch folders
        let holder = Process()
        holder.executableURL = URL(fileURLWithPath: "/usr/bin/flock")
        // holds it until its stdin closes
        holder.arguments = ["/tmp/chatbatch-nightly-nightly.lock", "/bin/sh", "-c", "read x"]
        let hold = Pipe()
        holder.standardInput = hold
        try holder.run()
        defer {
            try? hold.fileHandleForWriting.close()
            holder.waitUntilExit()
        }
        let (first, firstText) = try night("a")
        #expect(first == 0, "\(firstText)")
        // Job a's own lock, held: a waits (exit 5), b (same name, another folder) runs.
        let locks = (try? FileManager.default.contentsOfDirectory(atPath: runtime + "/chatbatch-\(getuid())")) ?? []
        #expect(locks.count == 1 && locks[0].hasPrefix("nightly-nightly-"), "\(locks)")
        let own = Process()
        own.executableURL = URL(fileURLWithPath: "/usr/bin/flock")
        own.arguments = [runtime + "/chatbatch-\(getuid())/" + (locks.first ?? "x"), "/bin/sh", "-c", "read x"]
        let ownHold = Pipe()
        own.standardInput = ownHold
        try own.run()
        defer {
            try? ownHold.fileHandleForWriting.close()
            own.waitUntilExit()
        }
        #expect(
            eventually {
                (try? runToEnd(
                    "/usr/bin/env", ["flock", "-n", runtime + "/chatbatch-\(getuid())/" + (locks.first ?? "x"), "true"]
                ).0) == 1
            })
        let (held, heldText) = try night("a")
        #expect(held == 5 && heldText.contains("still holds"), "\(heldText)")
        let (other, otherText) = try night("b")
        #expect(other == 0, "\(otherText)")
    }
}
