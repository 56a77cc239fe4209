import ChatBatchCore
import FakeGateway
import Foundation
import TestSupport
import Testing

@testable import ChatBatch

/// `chatbatch control` on a job in a store: every worker running the job takes the control and says what it made
/// of it; a drain ends them all resumable; with no worker running, nothing is recorded.
extension PostgresFleetTests {
    func control(_ scratch: Scratch, _ words: [String]) throws -> (Int32, String) {
        try runToEnd(
            chatbatchBinary(), ["control", scratch.file("job.yaml")] + words + ["--wait", "20"],
            environment: try environment, captureStdout: true)
    }

    @Test func aControlReachesEveryWorkerOfTheJobAndADrainEndsThemResumable() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start { $0.latencyMilliseconds = 200 }
        defer { g.shutdown() }
        let n = 400
        scratch.write("in.jsonl", lines: promptLines(n))
        let job = "control-\(UUID().uuidString.prefix(8))"
        try writeJob(scratch, g, job: job, concurrency: 2)
        let workers = try (1...2).map { try worker(scratch, log: "w\($0).log") }
        // Workers running the job, as `status` lists them (quietly: the store has no tables until one joins).
        let running = { () -> Int in
            guard
                let (code, text) = try? runToEnd(
                    chatbatchBinary(), ["status", scratch.file("job.yaml"), "--json"],
                    environment: try self.environment, captureStdout: true),
                code == 0, let status = try? JSON.parse(text)
            else { return 0 }
            return (status["workers"]?.arrayValue ?? []).filter { $0["stopped"]?.boolValue == false }.count
        }
        #expect(eventually(timeout: 30) { running() == 2 && g.ledger.count >= 4 })
        let (set, setText) = try control(scratch, ["set", "concurrency=1"])
        #expect(set == 0 && setText.contains("taken by 2 workers"), "\(setText)")
        #expect(setText.components(separatedBy: " pid ").count - 1 == 2, "each worker says what it made of it")
        let (drain, drainText) = try control(scratch, ["drain"])
        #expect(drain == 0 && drainText.contains("taken by 2 workers"), "\(drainText)")
        for w in workers { w.waitUntilExit() }
        for (i, w) in workers.enumerated() {
            #expect(w.terminationStatus == 4, "\(scratch.text("w\(i + 1).log"))")
        }
        let end = try status(scratch)
        #expect((end["queued"]?.intValue ?? 0) > 0 && (end["done"]?.intValue ?? 0) > 0, "\(end)")
        // Every request the gateway answered is one line once: nothing was sent twice by the drain.
        let sent = g.ledger.snapshot().map(\.clientRequestID)
        #expect(Set(sent).count == sent.count)
        // No worker runs the job now: nothing is recorded, and --next-run is a checkpoint's.
        let (none, noneText) = try control(scratch, ["pause"])
        #expect(none == 2 && noneText.contains("no worker runs job '\(job)'"), "\(noneText)")
        let (next, nextText) = try control(scratch, ["pause", "--next-run"])
        #expect(next == 2 && nextText.contains("--next-run is for a checkpoint file"), "\(nextText)")
        #expect(!(noneText + nextText + setText).contains(try Self.shared.get().password))
    }
}
