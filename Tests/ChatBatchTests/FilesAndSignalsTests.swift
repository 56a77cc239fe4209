import ChatBatchCore
import FakeGateway
import Foundation
import TestSupport
import Testing

@testable import ChatBatch

/// What a careless or unlucky user does to a running job, with the real binary: flags pointed at the wrong file,
/// files changed under a run, signals at awkward moments, odd numbers.
@Suite("Files and signals", .serialized)
struct FilesAndSignalsTests {
    func run(_ scratch: Scratch, _ arguments: [String]) throws -> (Int32, String) {
        try runToEnd(chatbatchBinary(), ["run", scratch.file("job.yaml")] + arguments)
    }

    func bytes(_ path: String) -> [UInt8] { Array(FileManager.default.contents(atPath: path) ?? Data()) }

    @Test func theSummaryMetricsAndLogNeverWriteOverAFileTheRunDidNotWrite() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start()
        defer { g.shutdown() }
        scratch.write("in.jsonl", lines: promptLines(20))
        writeJob(scratch, g)
        let (first, _) = try run(scratch, [])
        #expect(first == 0)
        let kept = ["in.jsonl", "out.jsonl", "out.jsonl.checkpoint"].map { (name: $0, bytes: bytes(scratch.file($0))) }
        scratch.write("notes.txt", lines: ["my own notes"])
        let attempts: [([String], String)] = [
            (["--summary-json", scratch.file("in.jsonl")], "is the input"),
            (["--metrics-file", scratch.file("out.jsonl.checkpoint")], "is the checkpoint"),
            (["--metrics-file", scratch.file("out.errors.jsonl")], "is the errors file"),
            (["--log-file", scratch.file("out.jsonl")], "is the results file"),
            (
                ["--summary-json", scratch.file("s.json"), "--metrics-file", scratch.file("s.json")],
                "is the file given with --summary-json"
            ),
            (["--summary-json", scratch.file("notes.txt")], "chatbatch did not write it"),
            (["--log-file", scratch.file("notes.txt")], "chatbatch did not write it")
        ]
        for (flags, why) in attempts {
            let (code, text) = try run(scratch, flags + ["--force"])
            #expect(code == 2 && text.contains(why), "\(flags): \(text)")
        }
        for file in kept { #expect(bytes(scratch.file(file.name)) == file.bytes, "\(file.name) changed") }
        #expect(bytes(scratch.file("notes.txt")) == Array("my own notes\n".utf8))
        // The checkpoint still answers every line: nothing to do, nothing sent.
        let (again, againText) = try run(scratch, [])
        #expect(again == 0 && againText.contains("nothing to do") && g.ledger.count == 20, "\(againText)")
        // Files chatbatch wrote are replaced (summary, metrics) or appended to (the log) on the next runs.
        for _ in 0..<2 {
            let (code, text) = try run(
                scratch,
                [
                    "--summary-json", scratch.file("s.json"), "--metrics-file", scratch.file("m.prom"),
                    "--log-file", scratch.file("run.log")
                ])
            #expect(code == 0, "\(text)")
        }
    }

    @Test func exportWritesADeviceAsAStreamAndNeverReplacesASymlink() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start()
        defer { g.shutdown() }
        scratch.write("in.jsonl", lines: promptLines(5))
        writeJob(scratch, g)
        #expect(try run(scratch, []).0 == 0)
        let checkpoint = scratch.file("out.jsonl.checkpoint")
        // /dev/stdout is a symlink to a device: written through, and still a symlink afterwards.
        let (code, text) = try runToEnd(
            chatbatchBinary(), ["export", checkpoint, "--output", "/dev/stdout", "--errors", scratch.file("e.jsonl")],
            captureStdout: true)
        #expect(code == 0 && text.components(separatedBy: "\"custom_id\"").count - 1 == 5, "\(text)")
        var st = stat()
        #expect(lstat("/dev/stdout", &st) == 0 && (st.st_mode & S_IFMT) == S_IFLNK)
        // A device has no folder beside it for the errors file.
        let (noErrors, noErrorsText) = try runToEnd(
            chatbatchBinary(), ["export", checkpoint, "--output", "/dev/null"], captureStdout: true)
        #expect(noErrors == 2 && noErrorsText.contains("--errors"), "\(noErrorsText)")
        let (runToDevice, runText) = try run(scratch, ["--output", "/dev/null"])
        #expect(runToDevice == 2 && runText.contains("--errors and --checkpoint"), "\(runText)")
        #expect(
            !FileManager.default.fileExists(atPath: "/dev/null.errors.jsonl")
                && !FileManager.default.fileExists(atPath: "/dev/null.checkpoint"))
        // A symlink at the target is refused, and what it points to is untouched.
        scratch.write("precious.jsonl", lines: ["keep me"])
        try FileManager.default.createSymbolicLink(
            atPath: scratch.file("link.jsonl"), withDestinationPath: scratch.file("precious.jsonl"))
        let (linked, linkedText) = try runToEnd(
            chatbatchBinary(), ["export", checkpoint, "--output", scratch.file("link.jsonl"), "--overwrite"],
            captureStdout: true)
        #expect(linked == 2 && linkedText.contains("symbolic link"), "\(linkedText)")
        #expect(bytes(scratch.file("precious.jsonl")) == Array("keep me\n".utf8))
    }

    @Test func aResultsFileEmptiedOrDeletedUnderARunIsRebuiltAndAVanishedCheckpointIsSaid() throws {
        for damage in ["empty", "delete", "checkpoint"] {
            let scratch = Scratch()
            let g = try FakeGateway.start { $0.latencyMilliseconds = 30 }
            defer { g.shutdown() }
            scratch.write("in.jsonl", lines: promptLines(400))
            writeJob(scratch, g)
            let err = Pipe()
            let p = try launch(chatbatchBinary(), ["run", scratch.file("job.yaml")], stderr: err)
            #expect(eventually(timeout: 20) { scratch.lines("out.jsonl").count >= 40 })
            switch damage {
            case "empty": truncate(scratch.file("out.jsonl"), 0)
            case "delete": unlink(scratch.file("out.jsonl"))
            default: unlink(scratch.file("out.jsonl.checkpoint"))
            }
            let text = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            p.waitUntilExit()
            #expect(p.terminationStatus == 0, "\(damage): \(text)")
            if damage == "checkpoint" {
                #expect(text.contains("was deleted or replaced while the run used it"), "\(text)")
                continue
            }
            #expect(text.contains("was changed while the run wrote it"), "\(damage): \(text)")
            let results = bytes(scratch.file("out.jsonl"))
            #expect(!results.contains(0) && scratch.lines("out.jsonl").count == 400, "\(damage)")
        }
        // After the run: a file of the right size whose lines were overwritten with NUL bytes is rebuilt too.
        let scratch = Scratch()
        let g = try FakeGateway.start()
        defer { g.shutdown() }
        scratch.write("in.jsonl", lines: promptLines(30))
        writeJob(scratch, g)
        #expect(try run(scratch, []).0 == 0)
        let size = bytes(scratch.file("out.jsonl")).count
        _ = FileManager.default.createFile(atPath: scratch.file("out.jsonl"), contents: Data(count: size))
        let (again, text) = try run(scratch, [])
        #expect(
            again == 0 && text.contains("rebuilding it from the checkpoint") && scratch.lines("out.jsonl").count == 30,
            "\(text)")
        #expect(g.ledger.count == 30)
    }

    @Test func aCheckpointBelongsToOneInputAndOneShardPlan() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start()
        defer { g.shutdown() }
        scratch.write("a.jsonl", lines: promptLines(10, prefix: "a"))
        scratch.write("b.jsonl", lines: promptLines(8, prefix: "b"))
        let common = [
            "--provider", "openai-compatible", "--base-url", g.baseURL, "--model", "openai/gpt-oss-120b", "--output",
            scratch.file("out.jsonl")
        ]
        let (a, _) = try runToEnd(
            chatbatchBinary(), ["run", scratch.file("a.jsonl")] + common, environment: ["OPENAI_API_KEY": "sk-fake"])
        #expect(a == 0)
        let (b, bText) = try runToEnd(
            chatbatchBinary(), ["run", scratch.file("b.jsonl")] + common, environment: ["OPENAI_API_KEY": "sk-fake"])
        #expect(b == 2 && bText.contains("a.jsonl") && bText.contains("b.jsonl") && g.ledger.count == 10, "\(bText)")
        #expect(scratch.lines("out.jsonl").count == 10)
        let shard = [
            "run", scratch.file("a.jsonl"), "--fake-gateway", "--provider", "tera", "--output", scratch.file("s.jsonl")
        ]
        let (two, _) = try runToEnd(chatbatchBinary(), shard + ["--shard", "0/2"])
        let (three, threeText) = try runToEnd(chatbatchBinary(), shard + ["--shard", "0/3"])
        #expect(
            two == 0 && three == 2 && threeText.contains("shard 0/2") && threeText.contains("shard 0/3"), "\(threeText)"
        )
    }

    @Test func anInputReplacedBeforeAResumeIsSaidAndChangedLinesAreCounted() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start { $0.latencyMilliseconds = 300 }
        defer { g.shutdown() }
        scratch.write("in.jsonl", lines: promptLines(200))
        writeJob(scratch, g)
        let p = try launch(chatbatchBinary(), ["run", scratch.file("job.yaml")])
        #expect(eventually(timeout: 20) { g.ledger.count >= 20 })
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        let pending =
            try SQLiteDatabase(path: scratch.file("out.jsonl.checkpoint"), readOnly: true)
            .query("SELECT count(*) FROM requests WHERE state IN ('inflight', 'pending')").first?.first?.int ?? 0
        #expect(pending > 0)
        // The same ids with other bodies, and none of the lines that were in flight.
        let done = Set(
            try SQLiteDatabase(path: scratch.file("out.jsonl.checkpoint"), readOnly: true)
                .query("SELECT custom_id FROM requests WHERE state='done'").compactMap { $0[0].text })
        scratch.write("in.jsonl", lines: done.sorted().map { #"{"custom_id":"\#($0)","prompt":"another question"}"# })
        let (code, text) = try run(scratch, [])
        #expect(
            code == 2 && text.contains("\(pending) pending lines are not in the input")
                && text.contains("\(pending) left pending"), "\(text)")
        // three, then the count
        #expect(text.components(separatedBy: "with a different request body").count - 1 == 4, "\(text)")
        let (_, status) = try runToEnd(chatbatchBinary(), ["status", scratch.file("job.yaml")], captureStdout: true)
        #expect(status.contains("\(pending) pending"), "\(status)")
    }

    @Test func aSignalAtAnyMomentOfTheStartStopsTheRunResumableAndLeavesAWholeCheckpoint() throws {
        let g = try FakeGateway.start { $0.latencyMilliseconds = 20 }
        defer { g.shutdown() }
        for attempt in 0..<12 {
            let scratch = Scratch()
            scratch.write("in.jsonl", lines: promptLines(100))
            writeJob(scratch, g)
            let p = try launch(chatbatchBinary(), ["run", scratch.file("job.yaml")])
            // From the moment the process blocks its stop signals (its first instruction, before the Swift runtime
            // starts; only the dynamic loader runs before it), then a few moments later in some attempts.
            let blocked = eventually(timeout: 10) {
                let status = (try? String(contentsOfFile: "/proc/\(p.processIdentifier)/status", encoding: .utf8)) ?? ""
                let mask = status.split(separator: "\n").first { $0.hasPrefix("SigBlk:") }.flatMap {
                    UInt64($0.dropFirst(7).trimmingCharacters(in: .whitespaces), radix: 16)
                }
                return (mask ?? 0) & 0x4007 == 0x4007
            }
            #expect(blocked)
            if attempt % 3 == 1 { usleep(useconds_t(attempt * 3_000)) }  // varies the moment; not a synchronisation
            kill(p.processIdentifier, [SIGTERM, SIGINT, SIGHUP][attempt % 3])
            p.waitUntilExit()
            #expect(
                p.terminationReason == .exit && p.terminationStatus == 4,
                "attempt \(attempt): \(p.terminationReason) \(p.terminationStatus)")
            if FileManager.default.fileExists(atPath: scratch.file("out.jsonl.checkpoint")) {
                let (code, status) = try runToEnd(
                    chatbatchBinary(), ["status", scratch.file("job.yaml")], captureStdout: true)
                #expect(code == 0 && status.contains("done"), "\(status)")
            }
            let (resumed, _) = try run(scratch, [])
            #expect(resumed == 0)
        }
    }

    @Test func aClosedTerminalDrainsLikeSIGTERMAndNothingIsResent() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start { $0.latencyMilliseconds = 200 }
        defer { g.shutdown() }
        scratch.write("in.jsonl", lines: promptLines(300))
        writeJob(scratch, g, concurrency: 16)
        let err = Pipe()
        let p = try launch(chatbatchBinary(), ["run", scratch.file("job.yaml")], stderr: err)
        #expect(eventually(timeout: 20) { g.ledger.count >= 16 })
        kill(p.processIdentifier, SIGHUP)
        let text = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        #expect(p.terminationReason == .exit && p.terminationStatus == 4, "\(text)")
        let (resumed, again) = try run(scratch, [])
        #expect(resumed == 0 && again.contains("0 resent after a crash"), "\(again)")
        try expectExactlyOnce(scratch, ids: (1...300).map { String(format: "p%04d", $0) }, gateway: g)
        #expect(g.ledger.billedCounts().values.allSatisfy { $0 == 1 })
    }

    @Test func everyNumberIsCheckedBeforeAnythingIsClaimedOrSent() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start()
        defer { g.shutdown() }
        scratch.write("in.jsonl", lines: promptLines(3))
        writeJob(scratch, g)
        let bad: [([String], String)] = [
            (["--timeout", "inf"], "--timeout"), (["--timeout", "1e300"], "--timeout"),
            (["--timeout", "0.001"], "--timeout"),
            (["--connect-timeout", "nan"], "--connect-timeout"), (["--connect-timeout", "inf"], "--connect-timeout"),
            (["--price-input", "nan"], "--price-input"), (["--max-cost", "nan"], "--max-cost"),
            (["--rpm", "-5"], "--rpm"),
            (["--concurrency", "-1"], "concurrency must be from 1"), (["--grace", "inf"], "--grace"),
            (["--fake-gateway", "--fake-latency-ms", "nan"], "--fake-latency-ms"), (["--max-wait", "nan"], "--max-wait")
        ]
        for (flags, named) in bad {
            let (code, text) = try run(scratch, flags)
            #expect(code == 2 && text.contains(named) && !text.contains("Fatal error"), "\(flags): \(text)")
        }
        #expect(g.ledger.count == 0)
        #expect(!FileManager.default.fileExists(atPath: scratch.file("out.jsonl.checkpoint")))
        // A refused run leaves no checkpoint of its own behind.
        scratch.write("taken.jsonl", lines: ["not ours"])
        let (refused, _) = try run(scratch, ["--output", scratch.file("taken.jsonl")])
        #expect(refused == 2 && !FileManager.default.fileExists(atPath: scratch.file("taken.jsonl.checkpoint")))
    }

    @Test func statusCountsTheLinesNotYetReadAsPending() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start { $0.latencyMilliseconds = 300 }
        defer { g.shutdown() }
        scratch.write("in.jsonl", lines: promptLines(2000))
        writeJob(scratch, g, concurrency: 16)
        let p = try launch(
            chatbatchBinary(), ["run", scratch.file("job.yaml"), "--summary-json", scratch.file("s.json")])
        #expect(eventually(timeout: 20) { g.ledger.count >= 16 })
        let (_, during) = try runToEnd(
            chatbatchBinary(), ["status", scratch.file("job.yaml"), "--json"], captureStdout: true)
        let live = try JSON.parse(during)
        #expect(live["input_lines"]?.intValue == 2000 && (live["not_read"]?.intValue ?? 0) > 0, "\(during)")
        kill(p.processIdentifier, SIGINT)
        p.waitUntilExit()
        let summary = try JSON.parse(String(contentsOfFile: scratch.file("s.json"), encoding: .utf8))
        let (_, status) = try runToEnd(chatbatchBinary(), ["status", scratch.file("job.yaml")], captureStdout: true)
        #expect(status.contains("\(summary["left_pending"]?.intValue ?? -1) pending"), "\(status)\n\(summary)")
    }
}
