import ChatBatchCore
import FakeGateway
import Foundation
import Testing

@testable import ChatBatch

/// What third-party fault servers and proxies still caught, with the real binary.
@Suite("Reliability round 4", .serialized)
struct ReliabilityRound4Tests {
    @Test func anUnreadableEventInsideAStreamIsABrokenStreamNeverASilentGap() throws {
        let scratch = Scratch()
        // Two lines broken on every attempt (they fail, keeping what came back), one broken once (retried, then whole).
        let g = try FakeGateway.start {
            $0.script = [
                "p0001": Array(repeating: .brokenEvent, count: 9), "p0002": [.brokenEvent],
                "p0003": Array(repeating: .brokenEvent, count: 9)
            ]
        }
        defer { g.shutdown() }
        scratch.write("in.jsonl", lines: promptLines(20))
        writeJob(scratch, g, extra: ["stream: true", "retry: {max_attempts: 3, base_delay: 0.01, max_delay: 0.05}"])
        let (code, text) = try runToEnd(chatbatchBinary(), ["run", scratch.file("job.yaml")])
        #expect(code == 1, "\(text)")
        let errors = scratch.lines("out.errors.jsonl")
        #expect(Set(errors.compactMap { $0["custom_id"]?.stringValue }) == ["p0001", "p0003"], "\(errors)")
        #expect(errors.allSatisfy { $0["error"]?["code"]?.stringValue == "broken_stream" }, "\(errors)")
        #expect(text.contains("possibly billed twice") && !text.contains(" 0 possibly billed twice"), "\(text)")
        // Every answer taken is whole: the same text as the gateway gives unstreamed.
        let results = scratch.lines("out.jsonl")
        #expect(results.count == 18)
        let direct = try FakeGateway.start()
        defer { direct.shutdown() }
        scratch.write("again.jsonl", lines: promptLines(20))
        let (plain, _) = try runToEnd(
            chatbatchBinary(),
            [
                "run", scratch.file("again.jsonl"), "--provider", "openai-compatible", "--base-url", direct.baseURL,
                "--model", "openai/gpt-oss-120b"
            ], environment: ["OPENAI_API_KEY": "sk-fake"])
        #expect(plain == 0)
        var expected: [String: String] = [:]
        for line in scratch.lines("again.results.jsonl") {
            expected[line["custom_id"]?.stringValue ?? ""] =
                line["response"]?["body"]?["choices"]?.arrayValue?.first?["message"]?["content"]?.stringValue
        }
        for line in results {
            let id = line["custom_id"]?.stringValue ?? ""
            #expect(
                line["response"]?["body"]?["choices"]?.arrayValue?.first?["message"]?["content"]?.stringValue
                    == expected[id], "\(id)")
        }
    }

    @Test func aModelA400NamesAsUnknownIsRefusedLikeA404AndTheOtherModelsGoOn() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start { $0.unknownModelAs400 = true }
        defer { g.shutdown() }
        let lines = (1...12).map { i in
            #"{"custom_id":"k\#(i)","prompt":"q\#(i)","model":"\#(i % 3 == 0 ? "no-such-model-1" : "openai/gpt-oss-120b")"}"#
        }
        scratch.write("in.jsonl", lines: lines)
        let (code, text) = try runToEnd(
            chatbatchBinary(),
            ["run", scratch.file("in.jsonl"), "--provider", "openai-compatible", "--base-url", g.baseURL],
            environment: ["OPENAI_API_KEY": "sk-fake"])
        #expect(code == 1 && text.contains("no-such-model-1") && text.contains("refused"), "\(text)")
        #expect(scratch.lines("in.results.jsonl").count == 8 && scratch.lines("in.results.errors.jsonl").count == 4)
        let refusedModelRequests = g.ledger.snapshot().filter { $0.status == 400 }.count
        #expect(refusedModelRequests == 1, "one request for the refused model, not one per line")
    }

    @Test func invalidLinesStreamToTheErrorsFileInBoundedMemory() throws {
        let scratch = Scratch()
        let n = 100_000
        let text = (1...n).map { #"{"custom_id":"n\#($0)","prompt":"no model given"}"# }.joined(separator: "\n") + "\n"
        _ = FileManager.default.createFile(atPath: scratch.file("in.jsonl"), contents: Data(text.utf8))
        let (code, said) = try runToEnd(
            "/usr/bin/env",
            [
                "time", "-f", "maxrss_kb=%M", chatbatchBinary(), "run", scratch.file("in.jsonl"),
                "--provider", "openai-compatible", "--fake-gateway", "--quiet"
            ])
        #expect(code == 1, "\(said)")
        let rss = peakRSSKilobytes(said)
        #expect(rss < 150_000, "\(rss) kB for \(n) invalid lines")  // a batch the size of the input took over 250 MB
        #expect(scratch.lines("in.results.errors.jsonl").count == n)
    }

    @Test(needs("no prlimit (util-linux)") { installed("prlimit") != nil })
    func moreInFlightThanOpenFilesAllowIsCappedAndSaidNeverAnOutage() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start { $0.latencyMilliseconds = 200 }
        defer { g.shutdown() }
        scratch.write("in.jsonl", lines: promptLines(600))
        writeJob(scratch, g, concurrency: 5000, extra: ["warmup: false", "adaptive_concurrency: false"])
        guard let prlimit = installed("prlimit") else {
            Issue.record("no prlimit")
            return
        }
        let (code, text) = try runToEnd(
            prlimit, ["--nofile=256:256", chatbatchBinary(), "run", scratch.file("job.yaml")])
        #expect(code == 0 && text.contains("ulimit -n") && text.contains("0 possibly billed twice"), "\(text)")
        #expect(!text.contains("unreachable") && !text.contains("Couldn't connect"), "\(text)")
        #expect(g.ledger.count == 600)
    }

    @Test func aJobFileWhoseAliasesNestIsRefusedAtOnce() throws {
        let scratch = Scratch()
        var yaml = [#"a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]"#]
        for i in 1...8 {
            yaml.append("a\(i): &a\(i) [" + Array(repeating: "*a\(i - 1)", count: 9).joined(separator: ",") + "]")
        }
        yaml.append("input: in.jsonl")
        try yaml.joined(separator: "\n").write(toFile: scratch.file("laughs.yaml"), atomically: true, encoding: .utf8)
        scratch.write("in.jsonl", lines: promptLines(1))
        let (code, text) = try runToEnd(
            chatbatchBinary(), ["validate", scratch.file("laughs.yaml")], captureStdout: true)
        #expect(code == 2 && text.contains("laughs.yaml") && text.contains("aliases"), "\(text)")
        // A job file with an ordinary alias still works.
        let plain = "input: &name in.jsonl\nprovider: tera\nsystem: *name\n"
        try plain.write(toFile: scratch.file("plain.yaml"), atomically: true, encoding: .utf8)
        let (ok, okText) = try runToEnd(
            chatbatchBinary(), ["validate", scratch.file("plain.yaml")], captureStdout: true)
        #expect(ok == 0, "\(okText)")
    }

    @Test func aProviderWithoutPricesIsPriceUnknownNeverFreeAndItsBudgetIsRefused() throws {
        let scratch = Scratch()
        scratch.write("in.jsonl", lines: promptLines(5))
        let tir = ["run", scratch.file("in.jsonl"), "--fake-gateway", "--provider", "tir", "--project-id", "7"]
        let (code, text) = try runToEnd(
            chatbatchBinary(),
            tir + ["--summary-json", scratch.file("s.json"), "--metrics-file", scratch.file("m.prom")])
        #expect(code == 0 && text.contains("price unknown") && !text.contains("$0.000000 this run"), "\(text)")
        let summary = try JSON.parse(String(contentsOfFile: scratch.file("s.json"), encoding: .utf8))
        #expect(summary["cost_usd"]?.isNull == true && summary["price_known"] == false, "\(summary)")
        let metrics = try String(contentsOfFile: scratch.file("m.prom"), encoding: .utf8)
        #expect(
            !metrics.contains("chatbatch_cost_usd_total") && metrics.contains("chatbatch_tokens_total"), "\(metrics)")
        let checkpoint = scratch.file("in.results.jsonl.checkpoint")
        let (_, status) = try runToEnd(chatbatchBinary(), ["status", checkpoint], captureStdout: true)
        let (_, report) = try runToEnd(chatbatchBinary(), ["report", checkpoint], captureStdout: true)
        #expect(status.contains("price unknown") && report.contains("price unknown"), "\(status)\n\(report)")
        let (_, validated) = try runToEnd(
            chatbatchBinary(), ["validate", scratch.file("in.jsonl"), "--provider", "tir", "--project-id", "7"],
            captureStdout: true)
        #expect(validated.contains("price unknown"), "\(validated)")
        // A budget with no price would never stop the run: refused, unless the job gives the prices.
        let (budget, budgetText) = try runToEnd(
            chatbatchBinary(), tir + ["--max-cost", "1", "--output", scratch.file("b.jsonl")])
        #expect(budget == 2 && budgetText.contains("publishes no prices"), "\(budgetText)")
        let (priced, pricedText) = try runToEnd(
            chatbatchBinary(),
            tir + [
                "--max-cost", "1", "--price-input", "0.1", "--price-output", "0.4",
                "--output", scratch.file("p.jsonl")
            ])
        #expect(
            priced == 0 && pricedText.contains(" this run, $") && !pricedText.contains("price unknown"), "\(pricedText)"
        )
    }
}
