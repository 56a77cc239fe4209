import ChatBatchCore
import FakeGateway
import Foundation
import TestSupport
import Testing

@testable import ChatBatch

/// Lines for a model the provider refuses (403/404): one request per model, every line in the errors file once.
@Suite("Refused models: one request, every line lands")
struct RefusedModelTests {
    /// 30 lines; every third asks for `gpt-4o`, which the gateway's catalog lacks.
    func mixedModelLines(_ n: Int = 30, refused: String = "gpt-4o", every: Int = 3) -> [String] {
        (1...n).map { i in
            let model = i % every == 0 ? refused : "openai/gpt-oss-120b"
            return
                #"{"custom_id":"m\#(i)","body":{"model":"\#(model)","messages":[{"role":"user","content":"hi \#(i)"}]},"url":"/v1/chat/completions","method":"POST"}"#
        }
    }

    @Test func refusedModelCostsOneRequestAndEveryLineLandsInTheErrorsFile() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start { $0.latencyMilliseconds = 5 }
        defer { g.shutdown() }
        scratch.write("in.jsonl", lines: mixedModelLines())
        var s = settings(scratch, g)
        s.concurrency = 16
        let (summary, messages) = try runJob(s)
        #expect(summary.exit == .doneWithFailures, "\(summary.text)")
        #expect(summary.done == 20 && summary.failed == 10 && summary.blocked == 9 && summary.leftPending == 0)
        #expect(summary.failuresByCode == ["model_not_found": 10])
        #expect(summary.blockedModels.keys.sorted() == ["gpt-4o"])
        #expect(summary.text.contains("not sent   9 lines for a refused model"))
        #expect(messages.filter { $0.contains("model gpt-4o refused") }.count == 1)
        try expectExactlyOnce(scratch, ids: (1...30).map { "m\($0)" }, gateway: g)
        // One request for the refused model, however many lines it has and however many could be in flight.
        let refusedIDs = Set((1...30).filter { $0 % 3 == 0 }.map { "m\($0)" })
        let ledger = g.ledger.snapshot()
        #expect(ledger.filter { $0.status == 404 }.count == 1)
        #expect(ledger.filter { refusedIDs.contains($0.clientRequestID ?? "") }.count == 1)
        // Each errors line has the answer's code, the server's message and its line number.
        let errors = scratch.lines("out.errors.jsonl")
        #expect(Set(errors.compactMap { $0["custom_id"]?.stringValue }) == refusedIDs)
        for e in errors {
            #expect(e["error"]?["code"] == "model_not_found")
            let message = e["error"]?["message"]?.stringValue ?? ""
            let line = Int((e["custom_id"]?.stringValue ?? "m0").dropFirst()) ?? 0
            #expect(message.hasPrefix("\(scratch.file("in.jsonl")):\(line): "), "\(message)")
            #expect(message.contains("gpt-4o") && message.contains("does not exist"), "\(message)")
        }
        #expect(errors.filter { $0["response"]?["status_code"] == 404 }.count == 1)
        // A plain rerun sends nothing and leaves both files byte for byte as they are.
        let before = try [
            Data(contentsOf: URL(fileURLWithPath: scratch.file("out.jsonl"))),
            Data(contentsOf: URL(fileURLWithPath: scratch.file("out.errors.jsonl")))
        ]
        let (again, _) = try runJob(s)
        #expect(
            again.attempts == 0 && again.alreadyDone == 20 && again.alreadyFailed == 10
                && again.exit == .doneWithFailures)
        let after = try [
            Data(contentsOf: URL(fileURLWithPath: scratch.file("out.jsonl"))),
            Data(contentsOf: URL(fileURLWithPath: scratch.file("out.errors.jsonl")))
        ]
        #expect(before == after)
        #expect(g.ledger.snapshot().count == ledger.count)
    }

    @Test func retryFailedSendsTheRefusedLinesAgainOnceTheModelIsServed() throws {
        let scratch = Scratch()
        let g = try startRestartableGateway()
        defer { g.shutdown() }
        scratch.write("in.jsonl", lines: mixedModelLines())
        var s = settings(scratch, g)
        _ = try runJob(s)
        // The provider now serves the model (say the key was given the scope): the same endpoint, on the same port.
        g.shutdown()
        let served = try FakeGateway.start {
            $0.models = ["openai/gpt-oss-120b", "gpt-4o"]
            $0.port = g.port
        }
        defer { served.shutdown() }
        #expect(served.baseURL == s.baseURL)
        let (plain, _) = try runJob(s)
        #expect(plain.attempts == 0 && served.ledger.snapshot().isEmpty)
        s.retryFailed = true
        let (retried, _) = try runJob(s)
        #expect(retried.exit == .allDone && retried.done == 10 && retried.attempts == 10, "\(retried.text)")
        #expect(
            Set(served.ledger.snapshot().compactMap(\.clientRequestID))
                == Set((1...30).filter { $0 % 3 == 0 }.map { "m\($0)" }))
        #expect(scratch.lines("out.jsonl").count == 30 && scratch.lines("out.errors.jsonl").isEmpty)
    }

    @Test func unscopedKeyGivesPermissionErrorForEveryLineAfterOneRequest() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start { $0.unscopedKeys = ["sk-unscoped"] }
        defer { g.shutdown() }
        scratch.write("in.jsonl", lines: promptLines(25))
        var s = settings(scratch, g)
        s.concurrency = 8
        let (summary, _) = try runJob(s, key: "sk-unscoped")
        #expect(summary.exit == .doneWithFailures && summary.failuresByCode == ["model_not_permitted": 25])
        #expect(g.ledger.snapshot().count == 1 && g.ledger.snapshot().first?.status == 403)
        #expect(scratch.lines("out.errors.jsonl").count == 25)
        #expect(scratch.lines("out.errors.jsonl").allSatisfy { $0["error"]?["code"] == "model_not_permitted" })
    }

    @Test func eachShardSpendsOneRequestPerRefusedModelAndMergeHasEveryLineOnce() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start {
            $0.fail500Rate = 0.05
            $0.fail503Rate = 0.05
            $0.retryAfterSeconds = nil
            $0.randomSeed = 3
        }
        defer { g.shutdown() }
        let n = 300
        scratch.write("in.jsonl", lines: mixedModelLines(n, refused: "openai/gpt-oss-999b", every: 100))
        var results: [String] = []
        for i in 0..<3 {
            var s = settings(scratch, g)
            s.shard = try Shard(parsing: "\(i)/3")
            s.maxAttempts = 20
            s.output = scratch.file("shard\(i).jsonl")
            let (summary, _) = try runJob(s)
            #expect(summary.leftPending == 0, "\(summary.text)")
            results.append(scratch.file("shard\(i).jsonl"))
        }
        _ = try OutputMerge.merge(
            results: results, output: scratch.file("out.jsonl"), errors: nil, summaries: [], summaryOutput: nil)
        let refusedIDs = Set([100, 200, 300].map { "m\($0)" })
        let ledger = g.ledger.snapshot()
        // At most one request per shard for the refused model (a shard without its lines sends none).
        #expect(ledger.filter { $0.status == 404 }.count <= 3)
        #expect(
            Set(ledger.filter { refusedIDs.contains($0.clientRequestID ?? "") }.compactMap(\.clientRequestID)).count
                == ledger.filter { $0.status == 404 }.count)
        try expectExactlyOnce(
            scratch, ids: (1...n).map { "m\($0)" }, gateway: g, checkpoints: results.map { $0 + ".checkpoint" })
        #expect(Set(scratch.lines("out.errors.jsonl").compactMap { $0["custom_id"]?.stringValue }) == refusedIDs)
    }

    @Test(arguments: [SIGINT, SIGTERM])
    func interruptedFaultMixRunWithRefusedModelsLandsEveryLineOnceAfterResume(signal: Int32) throws {
        let scratch = Scratch()
        let g = try FakeGateway.start {
            $0.latencyMilliseconds = 10
            $0.jitterMilliseconds = 20
            $0.fail429Rate = 0.02
            $0.fail500Rate = 0.03
            $0.fail503Rate = 0.03
            $0.resetRate = 0.02
            $0.retryAfterSeconds = nil
            $0.randomSeed = 5
        }
        defer { g.shutdown() }
        let n = 600
        // Two refused models, whose lines come early and late.
        let lines = (1...n).map { i -> String in
            let model = i % 150 == 7 ? "openai/gpt-oss-999b" : (i % 200 == 3 ? "gpt-4o" : "openai/gpt-oss-120b")
            return #"{"custom_id":"m\#(i)","messages":[{"role":"user","content":"q \#(i)"}],"model":"\#(model)"}"#
        }
        let refusedIDs = Set((1...n).filter { $0 % 150 == 7 || $0 % 200 == 3 }.map { "m\($0)" })
        scratch.write("in.jsonl", lines: lines)
        writeJob(scratch, g, concurrency: 16, extra: ["retry: {max_attempts: 40, base_delay: 0.01, max_delay: 0.1}"])
        // The job file sets `model:` for every line; this test needs each line's own model.
        let yaml = try String(contentsOfFile: scratch.file("job.yaml"), encoding: .utf8)
            .replacingOccurrences(of: "model: openai/gpt-oss-120b", with: "")
        try yaml.write(toFile: scratch.file("job.yaml"), atomically: true, encoding: .utf8)
        let p = try launch(chatbatchBinary(), ["run", scratch.file("job.yaml")])
        #expect(eventually(timeout: 30) { g.ledger.snapshot().count >= 200 })
        kill(p.processIdentifier, signal)
        p.waitUntilExit()
        #expect(p.terminationStatus == 4)
        let (code, stderr) = try runToEnd(chatbatchBinary(), ["run", scratch.file("job.yaml")])
        #expect(code == 1, "\(stderr)")
        try expectExactlyOnce(scratch, ids: (1...n).map { "m\($0)" }, gateway: g)
        #expect(Set(scratch.lines("out.errors.jsonl").compactMap { $0["custom_id"]?.stringValue }) == refusedIDs)
        // Across the signal and the resume: one request per refused model.
        let ledger = g.ledger.snapshot()
        #expect(ledger.filter { $0.status == 404 }.count == 2)
        #expect(
            Set(ledger.filter { refusedIDs.contains($0.clientRequestID ?? "") }.compactMap(\.clientRequestID)).count
                == 2)
    }
}
