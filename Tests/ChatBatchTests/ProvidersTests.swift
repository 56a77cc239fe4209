import ChatBatchCore
import FakeGateway
import Foundation
import TestSupport
import Testing

@testable import ChatBatch

/// Several providers of one model in one run, with the real binary and two gateways, each with its own key and ledger.
@Suite("Several providers in one run", .serialized)
struct ProvidersTests {
    /// A job with two providers (`a` and `b`, openai-compatible), keys in A_KEY and B_KEY.
    func writeJob(
        _ scratch: Scratch, _ a: FakeGateway, _ b: FakeGateway, route: String = "fill", a extraA: [String] = [],
        b extraB: [String] = [],
        extra: [String] = []
    ) {
        var yaml = [
            "input: in.jsonl", "output: out.jsonl", "model: openai/gpt-oss-120b", "route: \(route)", "format: flat",
            "retry: {max_attempts: 8, base_delay: 0.02, max_delay: 0.3}", "providers:"
        ]
        yaml +=
            ["  - name: a", "    provider: openai-compatible", "    base_url: \(a.baseURL)", "    api_key_env: A_KEY"]
            + extraA.map { "    " + $0 }
        yaml +=
            ["  - name: b", "    provider: openai-compatible", "    base_url: \(b.baseURL)", "    api_key_env: B_KEY"]
            + extraB.map { "    " + $0 }
        yaml += extra
        _ = FileManager.default.createFile(
            atPath: scratch.file("job.yaml"), contents: Data(yaml.joined(separator: "\n").utf8))
    }

    func run(_ scratch: Scratch, _ arguments: [String] = [], aKey: String = "sk-a", bKey: String = "sk-b") throws -> (
        Int32, String
    ) {
        try runToEnd(
            chatbatchBinary(), ["run", scratch.file("job.yaml"), "--summary-json", scratch.file("s.json")] + arguments,
            environment: ["A_KEY": aKey, "B_KEY": bKey])
    }

    func summary(_ scratch: Scratch) throws -> JSON {
        try JSON.parse(String(contentsOfFile: scratch.file("s.json"), encoding: .utf8))
    }

    func gateways(
        _ changeA: (inout FakeGatewayConfiguration) -> Void = { _ in },
        _ changeB: (inout FakeGatewayConfiguration) -> Void = { _ in }
    )
        throws -> (FakeGateway, FakeGateway)
    {
        let a = try FakeGateway.start {
            $0.apiKeys = ["sk-a"]
            $0.latencyMilliseconds = 40
            changeA(&$0)
        }
        let b = try FakeGateway.start {
            $0.apiKeys = ["sk-b"]
            $0.latencyMilliseconds = 40
            changeB(&$0)
        }
        return (a, b)
    }

    /// Every id in exactly one file once, and no id billed (over both ledgers) more than once beyond what was counted.
    func expectOnce(
        _ scratch: Scratch, _ n: Int, _ gateways: [FakeGateway], sourceLocation: SourceLocation = #_sourceLocation
    ) throws {
        let ids = (scratch.lines("out.jsonl") + scratch.lines("out.errors.jsonl")).compactMap {
            $0["custom_id"]?.stringValue
        }
        #expect(
            ids.count == n && Set(ids).count == n, "\(ids.count) lines, \(Set(ids).count) ids",
            sourceLocation: sourceLocation)
        var billed: [String: Int] = [:]
        for g in gateways { billed.merge(g.ledger.billedCounts()) { $0 + $1 } }
        let counted = try ambiguousCounts(scratch.file("out.jsonl.checkpoint"))
        for (id, count) in billed where count > 1 + (counted[id] ?? 0) {
            Issue.record("\(id) billed \(count) times, \(counted[id] ?? 0) counted", sourceLocation: sourceLocation)
        }
    }

    @Test func fillUsesBothProvidersEachWithinItsOwnLimit() throws {
        let (a, b) = try gateways({ $0.maxInflightPerKey = 6 }, { $0.maxInflightPerKey = 3 })
        defer {
            a.shutdown()
            b.shutdown()
        }
        let n = 300
        scratch.write("in.jsonl", lines: promptLines(n))
        writeJob(scratch, a, b, a: ["concurrency: 6"], b: ["concurrency: 3"])
        let (code, stderr) = try run(scratch)
        #expect(code == 0, "\(stderr)")
        try expectOnce(scratch, n, [a, b])
        let byProvider = Dictionary(grouping: scratch.lines("out.jsonl"), by: { $0["provider"]?.stringValue ?? "?" })
            .mapValues(\.count)
        #expect((byProvider["a"] ?? 0) > (byProvider["b"] ?? 0) && (byProvider["b"] ?? 0) > 30, "\(byProvider)")
        #expect(
            a.ledger.snapshot().allSatisfy { $0.status != 429 } && b.ledger.snapshot().allSatisfy { $0.status != 429 })
        let rows = try summary(scratch)["providers"]?.arrayValue ?? []
        #expect(
            rows.map { $0["name"]?.stringValue ?? "" } == ["a", "b"]
                && rows.allSatisfy { ($0["done"]?.intValue ?? 0) > 0 }, "\(rows)")
    }
    let scratch = Scratch()

    @Test func priorityOffersALineToTheSecondOnlyWhenTheFirstIsFull() throws {
        let (a, b) = try gateways({ $0.latencyMilliseconds = 120 }, { $0.latencyMilliseconds = 20 })
        defer {
            a.shutdown()
            b.shutdown()
        }
        scratch.write("in.jsonl", lines: promptLines(120))
        writeJob(
            scratch, a, b, route: "priority", a: ["concurrency: 4"], b: ["concurrency: 4"],
            extra: ["adaptive_concurrency: false"])
        let (code, stderr) = try run(scratch)
        #expect(code == 0, "\(stderr)")
        try expectOnce(scratch, 120, [a, b])
        // Every request the second provider got left while the first had its 4 in flight.
        let db = try SQLiteDatabase(path: scratch.file("out.jsonl.checkpoint"), readOnly: true)
        let second = try db.query(
            "SELECT a.inflight FROM attempts a JOIN endpoints e ON e.id=a.endpoint_id WHERE e.label LIKE 'b (%'"
        ).compactMap { $0[0].int }
        #expect(!second.isEmpty && second.allSatisfy { $0 >= 5 }, "\(second.prefix(20))")
        #expect(b.ledger.count > 0 && a.ledger.count > 0)
    }

    @Test func oneProviderGoingAwayMovesItsWorkToTheOther() throws {
        let (a, b) = try gateways()
        defer {
            a.shutdown()
            b.shutdown()
        }
        let n = 400
        scratch.write("in.jsonl", lines: promptLines(n))
        writeJob(scratch, a, b, a: ["concurrency: 8"], b: ["concurrency: 8"], extra: ["outage_budget: 600"])
        let err = Pipe()
        let p = try launch(
            chatbatchBinary(), ["run", scratch.file("job.yaml"), "--summary-json", scratch.file("s.json")],
            environment: ["A_KEY": "sk-a", "B_KEY": "sk-b"], stderr: err)
        #expect(eventually(timeout: 20) { b.ledger.count >= 40 })
        b.shutdown()  // b is gone for good
        let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        #expect(p.terminationStatus == 0, "\(stderr)")
        #expect(stderr.contains("is unreachable") && stderr.contains("the other providers carry on"), "\(stderr)")
        try expectOnce(scratch, n, [a, b])
        #expect(try summary(scratch)["failed"] == 0)
    }

    @Test func aBadKeyOrARefusedModelAtOneProviderLeavesTheOtherToDoEverything() throws {
        // b's key is wrong: b stops with its one-line message after one request, a does every line.
        let (a, b) = try gateways()
        defer {
            a.shutdown()
            b.shutdown()
        }
        scratch.write("in.jsonl", lines: promptLines(60))
        writeJob(scratch, a, b)
        let (code, stderr) = try run(scratch, bKey: "sk-wrong")
        #expect(code == 0, "\(stderr)")
        #expect(stderr.contains("provider b stopped") && stderr.contains("the API key was refused"), "\(stderr)")
        #expect(b.ledger.count == 1 && scratch.lines("out.jsonl").allSatisfy { $0["provider"] == "a" })
        try expectOnce(scratch, 60, [a, b])
        let rows = try summary(scratch)["providers"]?.arrayValue ?? []
        #expect(rows.last?["stopped"]?.stringValue?.contains("refused") == true, "\(rows)")

        // The model is refused at b only: its lines go to a; nothing reaches the errors file.
        let second = Scratch()
        let (c, d) = try gateways({ _ in }, { $0.models = ["some-other-model"] })
        defer {
            c.shutdown()
            d.shutdown()
        }
        second.write("in.jsonl", lines: promptLines(40))
        writeJob(second, c, d)
        let (ok, said) = try run(second)
        #expect(ok == 0 && said.contains("refused at b"), "\(said)")
        #expect(
            d.ledger.count == 1 && second.lines("out.errors.jsonl").isEmpty && second.lines("out.jsonl").count == 40)
    }

    @Test func aKilledRunWithBothProvidersResumesWithEveryLineOnce() throws {
        let (a, b) = try gateways({ $0.latencyMilliseconds = 60 }, { $0.latencyMilliseconds = 90 })
        defer {
            a.shutdown()
            b.shutdown()
        }
        let n = 300
        scratch.write("in.jsonl", lines: promptLines(n))
        writeJob(scratch, a, b, a: ["concurrency: 8"], b: ["concurrency: 8"])
        let p = try launch(
            chatbatchBinary(), ["run", scratch.file("job.yaml")], environment: ["A_KEY": "sk-a", "B_KEY": "sk-b"])
        #expect(eventually(timeout: 20) { a.ledger.count + b.ledger.count >= 80 })
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        let (code, stderr) = try run(scratch)
        #expect(code == 0, "\(stderr)")
        try expectOnce(scratch, n, [a, b])
        #expect((try summary(scratch)["resent_after_crash"]?.intValue ?? 0) > 0)
        // The cache keys on the logical request: an answer from either provider answers the line again.
        let again = Scratch()
        again.write("in.jsonl", lines: promptLines(20))
        writeJob(again, a, b, extra: ["cache: \(scratch.file("cache.db"))"])
        _ = try run(again)
        let before = a.ledger.count + b.ledger.count
        try FileManager.default.removeItem(atPath: again.file("out.jsonl.checkpoint"))
        try FileManager.default.removeItem(atPath: again.file("out.jsonl"))
        let (cached, text) = try run(again, ["--overwrite"])
        #expect(cached == 0 && a.ledger.count + b.ledger.count == before, "\(text)")
    }
}

extension ProvidersTests {
    @Test func theTwoProviderExampleRunsForFreeAndStatusAndValidateGiveARowPerProvider() throws {
        let jobs = FirstHourTests.repository.appendingPathComponent("jobs")
        try FileManager.default.createDirectory(atPath: scratch.file("data"), withIntermediateDirectories: true)
        try FileManager.default.copyItem(
            atPath: jobs.appendingPathComponent("two-providers.yaml").path, toPath: scratch.file("two.yaml"))
        try FileManager.default.copyItem(
            atPath: jobs.appendingPathComponent("data/demo-questions.jsonl").path,
            toPath: scratch.file("data/demo-questions.jsonl"))
        let (validated, report) = try runToEnd(
            chatbatchBinary(), ["validate", scratch.file("two.yaml")], captureStdout: true)
        #expect(
            validated == 0 && report.contains("if every line went to tera")
                && report.contains("if every line went to tir"), "\(report)")
        let (code, text) = try runToEnd(
            chatbatchBinary(), ["run", scratch.file("two.yaml"), "--fake-gateway", "--format", "flat"])
        #expect(code == 0 && text.contains("all 200 lines done"), "\(text)")
        let byProvider = Dictionary(
            grouping: scratch.lines("out/two-providers.results.jsonl"), by: { $0["provider"]?.stringValue ?? "?" })
        #expect(Set(byProvider.keys) == ["tera", "tir"], "\(byProvider.keys)")
        let (_, status) = try runToEnd(chatbatchBinary(), ["status", scratch.file("two.yaml")], captureStdout: true)
        #expect(status.contains("provider   tera (") && status.contains("provider   tir ("), "\(status)")
    }
}
