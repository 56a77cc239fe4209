import ChatBatchCore
import FakeGateway
import Foundation
import TestSupport
import Testing

@testable import ChatBatch

/// Lines of `/v1/embeddings`, `/v1/completions`, `/v1/responses` and `/v1/moderations` run through the same machine as
/// chat lines, against the fake gateway: each endpoint plain and streamed, mixed in one file, priced per endpoint,
/// answered byte for byte, refused by a provider that lacks one, killed and resumed, cached.
@Suite("Every endpoint of the Batch file", .serialized)
struct EndpointRunTests {
    static func line(_ id: String, _ url: String, _ body: JSON) -> String {
        JSON.object(JSONObject([("custom_id", .string(id)), ("method", "POST"), ("url", .string(url)), ("body", body)]))
            .serialized()
    }

    /// A mixed file: chat, embeddings (one input and three), completions and responses plain and streamed, and a
    /// response asking for a JSON schema.
    static func mixedLines(_ n: Int = 1) -> [String] {
        let model: JSON = "openai/gpt-oss-120b"
        return (1...n).flatMap { i -> [String] in
            [
                line(
                    "chat\(i)", "/v1/chat/completions",
                    ["model": model, "messages": [["role": "user", "content": .string("hi \(i)")]], "max_tokens": 40]),
                line("emb\(i)", "/v1/embeddings", ["model": "e5", "input": .string("text \(i)"), "dimensions": 8]),
                line(
                    "embs\(i)", "/v1/embeddings",
                    ["model": "e5", "input": [.string("a \(i)"), "b", "c"], "dimensions": 4]),
                line("text\(i)", "/v1/completions", ["model": model, "prompt": .string("Once \(i)"), "max_tokens": 40]),
                line(
                    "textS\(i)", "/v1/completions",
                    ["model": model, "prompt": .string("Twice \(i)"), "max_tokens": 40, "stream": true]),
                line("resp\(i)", "/v1/responses", ["model": model, "input": .string("hello \(i)")]),
                line("respS\(i)", "/v1/responses", ["model": model, "input": .string("again \(i)"), "stream": true]),
                line(
                    "json\(i)", "/v1/responses",
                    [
                        "model": model, "input": .string("give json \(i)"),
                        "text": [
                            "format": [
                                "type": "json_schema", "name": "x",
                                "schema": [
                                    "type": "object", "properties": ["a": ["type": "integer"]], "required": ["a"]
                                ]
                            ]
                        ]
                    ])
            ]
        }
    }

    /// The fake gateway, serving the embedding model `e5` too.
    static func gateway(_ configure: (inout FakeGatewayConfiguration) -> Void = { _ in }) throws -> FakeGateway {
        try FakeGateway.start {
            $0.models.append("e5")
            configure(&$0)
        }
    }

    static func pricedSettings(_ scratch: Scratch, _ g: FakeGateway) -> JobSettings {
        var s = settings(scratch, g)
        s.prices = Prices(inputPerMillion: 1, outputPerMillion: 2, embeddingsPerMillion: 0.5)
        return s
    }

    @Test func aMixedFileRunsEveryEndpointPlainAndStreamedEachAtItsOwnURLAndPrice() throws {
        let scratch = Scratch()
        let g = try Self.gateway { $0.latencyMilliseconds = 2 }
        defer { g.shutdown() }
        scratch.write("in.jsonl", lines: Self.mixedLines(5))
        let ids = Self.mixedLines(5).compactMap { try? JSON.parse($0)["custom_id"]?.stringValue }
        let (summary, messages) = try runJob(Self.pricedSettings(scratch, g))
        #expect(summary.exit == .allDone && summary.done == 40, "\(summary.text)\n\(messages)")
        try expectExactlyOnce(scratch, ids: ids, gateway: g)
        // Each line went to its own endpoint, once.
        var paths: [String: String] = [:]
        for e in g.ledger.snapshot() { paths[e.clientRequestID ?? ""] = e.path }
        #expect(paths["emb1"] == "/v1/embeddings" && paths["text2"] == "/v1/completions")
        #expect(paths["respS3"] == "/v1/responses" && paths["chat4"] == "/v1/chat/completions")
        // Plain answers are written byte for byte as the server sent them (embeddings are the same for the same body).
        let raw = try String(contentsOfFile: scratch.file("out.jsonl"), encoding: .utf8).split(separator: "\n")
        let direct = CurlTransport(maxConnections: 1).send(
            HTTPRequest(
                url: g.baseURL + "/embeddings",
                headers: ["Content-Type: application/json", "Authorization: Bearer sk-fake"],
                body: Array(#"{"model":"e5","input":"text 1","dimensions":8}"#.utf8), timeout: 10))
        let emb1 = raw.first { $0.contains(#""custom_id":"emb1""#) } ?? ""
        #expect(emb1.contains(#""body":"# + String(decoding: direct.body, as: UTF8.self) + "},"), "\(emb1)")
        // Streamed answers are put back together in their endpoint's shape.
        let results = Dictionary(
            uniqueKeysWithValues: scratch.lines("out.jsonl").map { ($0["custom_id"]?.stringValue ?? "", $0) })
        let textS = results["textS1"]?["response"]?["body"]
        #expect(textS?["object"] == "text_completion" && textS?["choices"]?.arrayValue?.first?["text"] != nil)
        let respS = results["respS1"]?["response"]?["body"]
        #expect(respS?["object"] == "response" && respS?["usage"]?["output_tokens"]?.intValue != nil, "\(respS!)")
        #expect(results["json1"]?["response"]?["body"]?["status"] == "completed")
        // Usage and cost per endpoint: embeddings bill their input at the embeddings price, responses in and out.
        let rows = try SQLiteDatabase(path: scratch.file("out.jsonl.checkpoint"), readOnly: true).query(
            "SELECT custom_id, prompt_tokens, completion_tokens, cost FROM requests")
        for row in rows {
            let (id, prompt, completion, cost) = (
                row[0].text ?? "", row[1].int ?? 0, row[2].int ?? 0, row[3].double ?? -1
            )
            #expect(prompt > 0, "\(id)")
            if id.hasPrefix("emb") {
                #expect(completion == 0 && abs(cost - Double(prompt) * 0.5 / 1e6) < 1e-12, "\(id) \(cost)")
            } else {
                #expect(abs(cost - Double(prompt + 2 * completion) / 1e6) < 1e-12, "\(id) \(cost)")
            }
        }
        #expect(!messages.contains { $0.contains("warning") }, "\(messages)")
        #expect(summary.promptTokens == rows.reduce(0) { $0 + ($1[1].int ?? 0) })
        // The report, its page and the metrics file read a mixed checkpoint as any other.
        let report = try CheckpointReport.report(checkpoint: scratch.file("out.jsonl.checkpoint"))
        #expect(report["prompt_tokens"]?.intValue == summary.promptTokens)
        #expect(report["answers_by_status"]?["200"]?.intValue == 40, "\(report)")
        let page = try HTMLReport.render(checkpoint: scratch.file("out.jsonl.checkpoint"))
        #expect(page.contains("<svg") && page.contains("40"))
    }

    @Test func theFlatFormatGivesVectorsAndTextsPerEndpoint() throws {
        let scratch = Scratch()
        let g = try Self.gateway()
        defer { g.shutdown() }
        scratch.write("in.jsonl", lines: Self.mixedLines(1))
        var s = Self.pricedSettings(scratch, g)
        s.format = .flat
        let (summary, _) = try runJob(s)
        #expect(summary.exit == .allDone)
        let flat = Dictionary(
            uniqueKeysWithValues: scratch.lines("out.jsonl").map { ($0["custom_id"]?.stringValue ?? "", $0) })
        #expect(flat["emb1"]?["embedding"]?.arrayValue?.count == 8 && flat["emb1"]?["content"] == nil)
        #expect(flat["embs1"]?["embeddings"]?.arrayValue?.map { $0.arrayValue?.count ?? 0 } == [4, 4, 4])
        #expect(flat["text1"]?["content"]?.stringValue != nil && flat["text1"]?["finish_reason"]?.stringValue != nil)
        #expect(flat["json1"]?["parsed"]?["a"]?.intValue != nil && flat["json1"]?["finish_reason"] == "completed")
        #expect(flat["resp1"]?["reasoning"]?.stringValue?.isEmpty == false)
        #expect(flat["emb1"]?["cost"]?.doubleValue ?? 0 > 0)
    }

    @Test func aProviderWithoutAnEndpointRefusesItsLinesAfterOneRequestAndTheOthersGoOn() throws {
        let scratch = Scratch()
        let g = try Self.gateway()
        defer { g.shutdown() }
        let lines =
            (1...6).map { Self.line("mod\($0)", "/v1/moderations", ["model": "omni", "input": .string("x \($0)")]) }
            + promptLines(6)
        scratch.write("in.jsonl", lines: lines)
        var s = settings(scratch, g)
        s.concurrency = 16
        let (summary, messages) = try runJob(s)
        #expect(summary.exit == .doneWithFailures && summary.done == 6 && summary.failed == 6, "\(summary.text)")
        #expect(g.ledger.snapshot().filter { $0.path == "/v1/moderations" }.count == 1)
        #expect(messages.filter { $0.contains("/v1/moderations (model omni) refused") }.count == 1, "\(messages)")
        let errors = scratch.lines("out.errors.jsonl")
        #expect(errors.count == 6 && errors.allSatisfy { $0["error"]?["code"] == "not_found" })
        try expectExactlyOnce(
            scratch, ids: (1...6).map { "mod\($0)" } + (1...6).map { String(format: "p%04d", $0) }, gateway: g)
    }

    @Test func embeddingsWithoutAPriceAreSaidOnceAndRefusedUnderABudget() throws {
        let scratch = Scratch()
        let g = try Self.gateway()
        defer { g.shutdown() }
        scratch.write("in.jsonl", lines: Self.mixedLines(2))
        var s = settings(scratch, g)
        let (summary, messages) = try runJob(s)
        #expect(summary.exit == .allDone)
        #expect(messages.filter { $0.contains("/v1/embeddings lines are counted at $0") }.count == 1, "\(messages)")
        let other = Scratch()
        other.write("in.jsonl", lines: Self.mixedLines(2))
        s = settings(other, g)
        s.maxCost = 5
        let (capped, _) = try runJob(s)
        #expect(capped.exit == .doneWithFailures && capped.invalid == 4, "\(capped.text)")
        #expect(
            other.lines("out.errors.jsonl").allSatisfy {
                $0["error"]?["message"]?.stringValue?.contains("no embeddings price is known") == true
            })
    }

    @Test func sigkillMidRunThenResumeAnswersEveryLineOfEveryEndpointOnce() throws {
        let scratch = Scratch()
        let g = try Self.gateway {
            $0.latencyMilliseconds = 15
            $0.jitterMilliseconds = 30
            $0.fail429Rate = 0.03
            $0.fail500Rate = 0.03
            $0.resetRate = 0.03
            $0.retryAfterSeconds = nil
            $0.randomSeed = 5
        }
        defer { g.shutdown() }
        let lines = Self.mixedLines(40)
        scratch.write("in.jsonl", lines: lines)
        writeJob(scratch, g, concurrency: 8, extra: ["prices: {input: 1, output: 2, embeddings: 0.5}"])
        var kills = 0
        for step in [20, 50, 35] {
            let before = g.ledger.snapshot().count
            let p = try launch(chatbatchBinary(), ["run", scratch.file("job.yaml")])
            _ = eventually(timeout: 20) { g.ledger.snapshot().count >= before + step || !p.isRunning }
            guard p.isRunning else { break }
            kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
            kills += 1
        }
        #expect(kills >= 2)
        let (code, stderr) = try runToEnd(chatbatchBinary(), ["run", scratch.file("job.yaml")])
        #expect(code == 0, "\(stderr)")
        let ids = lines.compactMap { try? JSON.parse($0)["custom_id"]?.stringValue }
        try expectExactlyOnce(scratch, ids: ids, gateway: g)
        #expect(try ambiguousCounts(scratch.file("out.jsonl.checkpoint")).values.reduce(0, +) >= kills)
        // A run on the finished checkpoint sends nothing.
        let seen = g.ledger.snapshot().count
        let (again, _) = try runToEnd(chatbatchBinary(), ["run", scratch.file("job.yaml")])
        #expect(again == 0 && g.ledger.snapshot().count == seen)
    }

    @Test func theCacheAnswersEveryEndpointAndKeysThemApart() throws {
        let scratch = Scratch()
        let g = try Self.gateway()
        defer { g.shutdown() }
        // The same body on two endpoints must be two answers, not one.
        let same: JSON = ["model": "openai/gpt-oss-120b", "input": "same words"]
        let lines =
            Self.mixedLines(2) + [Self.line("sameE", "/v1/embeddings", same), Self.line("sameR", "/v1/responses", same)]
        scratch.write("in.jsonl", lines: lines)
        var s = Self.pricedSettings(scratch, g)
        s.cache = scratch.file("answers.cache")
        let (first, _) = try runJob(s)
        #expect(first.exit == .allDone && first.done == lines.count)
        #expect(try CacheMaintenance.stats(path: scratch.file("answers.cache")).entries == lines.count)
        let sent = g.ledger.snapshot().count
        s.output = scratch.file("again.jsonl")
        let (second, _) = try runJob(s)
        #expect(second.exit == .allDone && second.cacheHits == lines.count && g.ledger.snapshot().count == sent)
        let byID = { (name: String) in
            Dictionary(uniqueKeysWithValues: scratch.lines(name).map { ($0["custom_id"]?.stringValue ?? "", $0) })
        }
        let (a, b) = (byID("out.jsonl"), byID("again.jsonl"))
        #expect(b["sameE"]?["response"]?["body"]?["object"] == "list")
        #expect(b["sameR"]?["response"]?["body"]?["object"] == "response")
        for id in ["emb1", "textS2", "respS1", "sameE"] {
            #expect(a[id]?["response"]?["body"] == b[id]?["response"]?["body"], "\(id)")
        }
    }
}
