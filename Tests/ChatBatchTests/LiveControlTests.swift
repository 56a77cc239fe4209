import ChatBatchCore
import FakeGateway
import Foundation
import TestSupport
import Testing

@testable import ChatBatch

/// `chatbatch control` steers a running `chatbatch run` (the real binary, against the fake gateway, whose ledger says
/// what reached it and when): pause, resume, drain and new limits, each applied within a second and recorded.
@Suite("Steering a running job")
struct LiveControlTests {
    /// `chatbatch control job.yaml WORDS…`: its exit status and what it printed.
    func control(_ scratch: Scratch, _ words: [String]) throws -> (Int32, String) {
        try runToEnd(chatbatchBinary(), ["control", scratch.file("job.yaml")] + words, captureStdout: true)
    }

    /// The most requests the gateway had in flight at once from `from` (wall clock) on, by its ledger.
    func peakInFlight(_ ledger: [LedgerEntry], from: Double = 0) -> Int {
        var edges: [(Double, Int)] = []
        for e in ledger where e.respondedAt > from {
            edges.append((max(e.receivedAt, from), 1))
            edges.append((e.respondedAt, -1))
        }
        var level = 0
        var peak = 0
        for edge in edges.sorted(by: { $0.0 != $1.0 ? $0.0 < $1.0 : $0.1 < $1.1 }) {
            level += edge.1
            peak = max(peak, level)
        }
        return peak
    }

    /// Starts `chatbatch run job.yaml` on `lines` prompts; returns the process and its stderr pipe.
    func start(_ scratch: Scratch, _ g: FakeGateway, lines: Int, concurrency: Int, extra: [String] = []) throws -> (
        Process, Pipe
    ) {
        scratch.write("in.jsonl", lines: promptLines(lines))
        writeJob(scratch, g, concurrency: concurrency, extra: ["adaptive_concurrency: false"] + extra)
        let err = Pipe()
        return (try launch(chatbatchBinary(), ["run", scratch.file("job.yaml")], stderr: err), err)
    }

    func finish(_ run: (Process, Pipe)) -> (Int32, String) {
        let text = String(decoding: run.1.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        run.0.waitUntilExit()
        return (run.0.terminationStatus, text)
    }

    func controlRows(_ scratch: Scratch) throws -> Int {
        try SQLiteDatabase(path: scratch.file("out.jsonl.checkpoint"), readOnly: true)
            .query("SELECT count(*) FROM controls").first?.first?.int ?? -1
    }

    @Test func setConcurrencyUnderThirtyTwoInFlightHoldsAtMostFourWithinTwoSeconds() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start { $0.latencyMilliseconds = 100 }
        defer { g.shutdown() }
        let run = try start(scratch, g, lines: 400, concurrency: 32)
        #expect(eventually(timeout: 20) { g.ledger.count >= 64 })
        let (code, text) = try control(scratch, ["set", "concurrency=4"])
        let applied = Date().timeIntervalSince1970
        #expect(code == 0 && text.contains("applied by run #1"), "\(text)")
        // A control that makes no sense, or names no provider of the run, is refused and changes nothing.
        let (bad, badText) = try runToEnd(
            chatbatchBinary(), ["control", scratch.file("job.yaml"), "set", "concurrency=4", "--provider", "nosuch"],
            captureStdout: true)
        #expect(bad == 2 && badText.contains("no provider named nosuch"), "\(badText)")
        #expect(eventually(timeout: 30) { g.ledger.snapshot().filter { $0.receivedAt > applied + 3 }.count >= 20 })
        let (drained, _) = try control(scratch, ["drain"])
        #expect(drained == 0)
        let (exit, log) = finish(run)
        #expect(exit == 4 && log.contains("control set concurrency=4"), "\(log)")
        let ledger = g.ledger.snapshot()
        #expect(peakInFlight(ledger.filter { $0.respondedAt < applied }) >= 16)
        #expect(peakInFlight(ledger, from: applied + 2) <= 4)
        #expect(g.ledger.billedCounts().values.allSatisfy { $0 == 1 })
    }

    @Test func pauseSendsNothingAndResumeFinishesEveryLineOnce() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start { $0.latencyMilliseconds = 100 }
        defer { g.shutdown() }
        let run = try start(
            scratch, g, lines: 300, concurrency: 16, extra: ["metrics_file: m.prom", "metrics_interval: 0.2"])
        #expect(eventually(timeout: 20) { g.ledger.count >= 30 })
        let (code, text) = try control(scratch, ["pause"])
        let applied = Date().timeIntervalSince1970
        #expect(code == 0 && text.contains("nothing new is sent"), "\(text)")
        // Watched for 3 s (an observation window, not a synchronisation): what was in flight finished (100 ms),
        // and nothing new arrived.
        let quiet = !eventually(timeout: 3) { g.ledger.snapshot().contains { $0.receivedAt > applied + 0.5 } }
        #expect(quiet)
        #expect(g.ledger.count < 300)
        // The metrics file says so (rewritten every 0.2 s here).
        #expect(
            eventually(timeout: 5) {
                let text = (try? String(contentsOfFile: scratch.file("m.prom"), encoding: .utf8)) ?? ""
                return text.contains("chatbatch_paused{chatbatch_job=\"job\"} 1")
            })
        let (_, status) = try runToEnd(chatbatchBinary(), ["status", scratch.file("job.yaml")], captureStdout: true)
        #expect(status.contains("paused     since") && status.contains("#1 pause"), "\(status)")
        let resumedAt = Date().timeIntervalSince1970
        let (resumed, resumeText) = try control(scratch, ["resume"])
        #expect(resumed == 0 && resumeText.contains("sending again"), "\(resumeText)")
        let (exit, log) = finish(run)
        #expect(exit == 0 && log.contains("control pause") && log.contains("control resume"), "\(log)")
        #expect(g.ledger.count == 300)
        // Nothing reached the gateway between the pause (and what was in flight then) and the resume.
        #expect(!g.ledger.snapshot().contains { $0.receivedAt > applied + 0.5 && $0.receivedAt < resumedAt })
        try expectExactlyOnce(scratch, ids: (1...300).map { String(format: "p%04d", $0) }, gateway: g)
        let metrics = try String(contentsOfFile: scratch.file("m.prom"), encoding: .utf8)
        #expect(metrics.contains("chatbatch_controls_applied_total{chatbatch_job=\"job\"} 2"), "\(metrics)")
        let (_, html) = try runToEnd(
            chatbatchBinary(), ["report", scratch.file("job.yaml"), "--html", scratch.file("r.html")],
            captureStdout: true)
        let page = try String(contentsOfFile: scratch.file("r.html"), encoding: .utf8)
        #expect(page.contains("class=\"s-control\"") && page.contains(">pause<"), "\(html)")
    }

    @Test func aMaxCostBelowWhatIsSpentStopsSendingResumably() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start { $0.latencyMilliseconds = 100 }
        defer { g.shutdown() }
        let run = try start(scratch, g, lines: 300, concurrency: 8, extra: ["prices: {input: 0.09, output: 0.36}"])
        #expect(eventually(timeout: 20) { g.ledger.count >= 20 })
        let (code, text) = try control(scratch, ["set", "max_cost=0.000001"])
        #expect(code == 0 && text.contains("max_cost is 0.000001"), "\(text)")
        let (exit, log) = finish(run)
        #expect(exit == 3 && log.contains("stopped at the budget"), "\(log)")
        #expect(g.ledger.count < 300)
        // The next run takes the job's own settings (no cap) and finishes the rest, each line once.
        let (again, againText) = try runToEnd(chatbatchBinary(), ["run", scratch.file("job.yaml")])
        #expect(again == 0, "\(againText)")
        try expectExactlyOnce(scratch, ids: (1...300).map { String(format: "p%04d", $0) }, gateway: g)
    }

    @Test func drainExitsFourWithNothingLostAndNextRunControlsApplyBeforeSending() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start { $0.latencyMilliseconds = 100 }
        defer { g.shutdown() }
        let run = try start(scratch, g, lines: 300, concurrency: 16)
        #expect(eventually(timeout: 20) { g.ledger.count >= 30 })
        let (code, text) = try control(scratch, ["drain"])
        #expect(code == 0 && text.contains("exit 4"), "\(text)")
        let (exit, log) = finish(run)
        #expect(exit == 4 && log.contains("drained"), "\(log)")
        let inflight = try checkpointRows(scratch.file("out.jsonl.checkpoint"), where: "state='inflight'")
        #expect(inflight.isEmpty)
        let before = g.ledger.count
        // No run holds the checkpoint: refused, nothing recorded; bad words refused before anything.
        let rows = try controlRows(scratch)
        let (idle, idleText) = try control(scratch, ["pause"])
        #expect(idle == 2 && idleText.contains("no run holds") && idleText.contains("--next-run"), "\(idleText)")
        for words in [
            ["set", "concurrency=0"], ["set", "concurrency=lots"], ["set", "max_cost=-1"], ["set", "rpm=0"],
            ["set", "speed=3"], ["frobnicate"], []
        ] {
            let (refused, refusedText) = try control(scratch, words)
            #expect(refused == 2 && refusedText.contains("chatbatch:"), "\(words): \(refusedText)")
        }
        #expect(try controlRows(scratch) == rows)
        // Kept for the next run with --next-run: that run sends at most 2 at once from its first request.
        let (kept, keptText) = try control(scratch, ["set", "concurrency=2", "--next-run"])
        #expect(kept == 0 && keptText.contains("kept for the next run"), "\(keptText)")
        let (again, againText) = try runToEnd(chatbatchBinary(), ["run", scratch.file("job.yaml")])
        #expect(again == 0, "\(againText)")
        #expect(peakInFlight(Array(g.ledger.snapshot().dropFirst(before))) <= 2)
        try expectExactlyOnce(scratch, ids: (1...300).map { String(format: "p%04d", $0) }, gateway: g)
        let (_, status) = try runToEnd(chatbatchBinary(), ["status", scratch.file("job.yaml")], captureStdout: true)
        #expect(status.contains("set concurrency=2") && status.contains("run #2: applied"), "\(status)")
    }

    @Test func aPausedRunStillStopsOnSIGTERM() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start { $0.latencyMilliseconds = 50 }
        defer { g.shutdown() }
        let run = try start(scratch, g, lines: 200, concurrency: 8)
        #expect(eventually(timeout: 20) { g.ledger.count >= 10 })
        let (code, _) = try control(scratch, ["pause"])
        #expect(code == 0)
        kill(run.0.processIdentifier, SIGTERM)
        let (exit, log) = finish(run)
        #expect(exit == 4 && log.contains("interrupted"), "\(log)")
        let (again, againText) = try runToEnd(chatbatchBinary(), ["run", scratch.file("job.yaml")])
        #expect(again == 0, "\(againText)")
        try expectExactlyOnce(scratch, ids: (1...200).map { String(format: "p%04d", $0) }, gateway: g)
    }
}

extension LiveControlTests {
    @Test func aControlForOneProviderLeavesTheOtherAlone() throws {
        let scratch = Scratch()
        let a = try FakeGateway.start { $0.latencyMilliseconds = 50 }
        let b = try FakeGateway.start { $0.latencyMilliseconds = 50 }
        defer {
            a.shutdown()
            b.shutdown()
        }
        scratch.write("in.jsonl", lines: promptLines(400))
        let yaml =
            [
                "input: in.jsonl", "output: out.jsonl", "model: openai/gpt-oss-120b", "adaptive_concurrency: false",
                "providers:"
            ]
            + [
                "  - name: a", "    provider: openai-compatible", "    base_url: \(a.baseURL)", "    concurrency: 4",
                "  - name: b", "    provider: openai-compatible", "    base_url: \(b.baseURL)", "    concurrency: 4"
            ]
        try yaml.joined(separator: "\n").write(toFile: scratch.file("job.yaml"), atomically: true, encoding: .utf8)
        let err = Pipe()
        let run = (
            try launch(
                chatbatchBinary(), ["run", scratch.file("job.yaml")], environment: ["OPENAI_API_KEY": "sk-fake"],
                stderr: err), err
        )
        #expect(eventually(timeout: 20) { a.ledger.count >= 10 && b.ledger.count >= 10 })
        let (paused, pausedText) = try control(scratch, ["pause", "--provider", "a"])
        let pausedAt = Date().timeIntervalSince1970
        #expect(paused == 0 && pausedText.contains("nothing new is sent to a"), "\(pausedText)")
        let (limited, limitedText) = try control(scratch, ["set", "rpm=120", "--provider", "b"])
        let limitedAt = Date().timeIntervalSince1970
        #expect(limited == 0 && limitedText.contains("rpm is 120"), "\(limitedText)")
        // b goes on, at most 2 a second (a bucket of one, refilled continuously), while a takes nothing new.
        #expect(eventually(timeout: 20) { b.ledger.snapshot().filter { $0.receivedAt > limitedAt + 4 }.count >= 2 })
        let resumedAt = Date().timeIntervalSince1970
        let (resumed, _) = try control(scratch, ["resume"])
        #expect(resumed == 0)
        let (drained, _) = try control(scratch, ["drain"])
        #expect(drained == 0)
        let (exit, log) = finish(run)
        #expect(exit == 4, "\(log)")
        #expect(!a.ledger.snapshot().contains { $0.receivedAt > pausedAt + 0.5 && $0.receivedAt < resumedAt })
        let paced = b.ledger.snapshot().filter { $0.receivedAt > limitedAt + 1 && $0.receivedAt < limitedAt + 4 }
        #expect(paced.count >= 2 && paced.count <= 8, "\(paced.count) requests in 3 s at 120 a minute")
        let billed = a.ledger.billedCounts().merging(b.ledger.billedCounts(), uniquingKeysWith: +)
        #expect(billed.values.allSatisfy { $0 == 1 })
    }
}
