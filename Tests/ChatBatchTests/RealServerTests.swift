import ChatBatchCore
import Foundation
import TestSupport
import Testing

@testable import ChatBatch

/// Against a model server nobody here wrote: llama.cpp's `llama-server` with a tiny model (answers are token soup,
/// but usage, finish_reason, SSE framing, slots, grammar-constrained json_schema, tool-call parsing, its error bodies
/// and its 503 "Loading model" are the real server's). Skips, saying so, when `../shared/real-servers` is absent.
@Suite(
    "A real model server: llama.cpp's llama-server", .serialized,
    needs("no llama-server in ../shared/real-servers (or CHATBATCH_REAL_SERVERS)") { LlamaServer.unavailable == nil })
struct RealServerTests {
    func writeJob(_ scratch: Scratch, _ server: LlamaServer, concurrency: Int = 8, extra: [String] = []) {
        let yaml =
            [
                "input: in.jsonl", "output: out.jsonl", "provider: openai-compatible", "model: tiny",
                "base_url: \(server.baseURL)",
                "api_key_env: CB_TEST_KEY", "concurrency: \(concurrency)", "timeout: 60"
            ] + extra
        _ = FileManager.default.createFile(
            atPath: scratch.file("job.yaml"), contents: Data(yaml.joined(separator: "\n").utf8))
    }

    func run(_ scratch: Scratch, _ arguments: [String] = [], key: String = "sk-fake") throws -> (Int32, String) {
        try runToEnd(
            chatbatchBinary(),
            ["run", scratch.file("job.yaml"), "--summary-json", scratch.file("summary.json")] + arguments,
            environment: ["CB_TEST_KEY": key])
    }

    func summary(_ scratch: Scratch) throws -> JSON {
        try JSON.parse(String(contentsOfFile: scratch.file("summary.json"), encoding: .utf8))
    }

    static func prompts(_ n: Int, maxTokens: Int, extra: String = "") -> [String] {
        (1...n).map {
            #"{"custom_id":"r\#($0)","prompt":"Say something about number \#($0).","max_tokens":\#(maxTokens)\#(extra)}"#
        }
    }

    @Test func plainLinesAtEightSlotsAreAnsweredOnceWithTheServersUsage() throws {
        guard let server = try LlamaServer.start() else { return }
        let scratch = Scratch()
        scratch.write("in.jsonl", lines: Self.prompts(40, maxTokens: 16))
        writeJob(scratch, server)
        let (code, stderr) = try run(scratch)
        #expect(code == 0, "\(stderr)")
        let results = scratch.lines("out.jsonl")
        #expect(Set(results.compactMap { $0["custom_id"]?.stringValue }).count == 40 && results.count == 40)
        var prompt = 0, completion = 0
        for r in results {
            let body = r["response"]?["body"] ?? .null
            prompt += body["usage"]?["prompt_tokens"]?.intValue ?? -1000
            completion += body["usage"]?["completion_tokens"]?.intValue ?? -1000
            // from the body's id: llama sends no header
            #expect(r["response"]?["request_id"]?.stringValue?.hasPrefix("chatcmpl-") == true)
            #expect(
                ["stop", "length"].contains(body["choices"]?.arrayValue?.first?["finish_reason"]?.stringValue ?? ""))
        }
        let s = try summary(scratch)
        #expect(
            s["prompt_tokens"]?.intValue == prompt && s["completion_tokens"]?.intValue == completion
                && s["usage_estimated"] == 0)
    }

    @Test func jsonSchemaAnswersAreParsedAndValidAndStreamsAreReassembled() throws {
        guard let server = try LlamaServer.start() else { return }
        let scratch = Scratch()
        let format =
            #","response_format":{"type":"json_schema","json_schema":{"name":"n","strict":true,"schema":{"type":"object","properties":{"a":{"type":"integer"}},"required":["a"],"additionalProperties":false}}}"#
        scratch.write(
            "in.jsonl",
            lines: Self.prompts(4, maxTokens: 40, extra: format)
                + Self.prompts(8, maxTokens: 12).map { $0.replacingOccurrences(of: "\"r", with: "\"s") })
        writeJob(scratch, server, extra: ["format: flat", "stream: true"])
        let (code, stderr) = try run(scratch)
        #expect(code == 0, "\(stderr)")
        let lines = Dictionary(
            uniqueKeysWithValues: scratch.lines("out.jsonl").map { ($0["custom_id"]?.stringValue ?? "", $0) })
        #expect(lines.count == 12)
        for i in 1...4 {
            #expect(lines["r\(i)"]?["parsed"]?["a"]?.intValue != nil, "r\(i): \(String(describing: lines["r\(i)"]))")
        }
        // Streamed: usage asked for with stream_options and reassembled, time to first token measured.
        for i in 1...8 {
            #expect((lines["s\(i)"]?["usage"]?["completion_tokens"]?.intValue ?? 0) > 0)
            #expect(lines["s\(i)"]?["ttft_ms"]?.doubleValue != nil)
        }
    }

    @Test func parallelToolCallsJoinByIndexAndACutCallIsTruncated() throws {
        guard let server = try LlamaServer.start() else { return }
        // With this seed the server writes two tool calls and max_tokens cuts the second (found by trying seeds).
        let tools =
            #"{"custom_id":"tools","seed":10,"temperature":1.0,"max_tokens":64,"tool_choice":"required","parallel_tool_calls":true,"messages":[{"role":"user","content":"weather in Paris and time in Tokyo"}],"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}},{"type":"function","function":{"name":"get_time","parameters":{"type":"object","properties":{"zone":{"type":"string"}},"required":["zone"]}}}]}"#
        var calls: [[JSON]] = []
        for stream in [false, true] {
            let scratch = Scratch()
            scratch.write("in.jsonl", lines: [tools])
            writeJob(scratch, server, concurrency: 1, extra: stream ? ["stream: true"] : [])
            let (code, stderr) = try run(scratch)
            #expect(code == 1, "\(stderr)")
            let failure = try #require(scratch.lines("out.errors.jsonl").first)
            #expect(failure["error"]?["code"] == "truncated", "\(failure)")
            let message = failure["response"]?["body"]?["choices"]?.arrayValue?.first?["message"] ?? .null
            calls.append(
                (message["tool_calls"]?.arrayValue ?? []).map {
                    ["name": $0["function"]?["name"] ?? .null, "arguments": $0["function"]?["arguments"] ?? .null]
                })
        }
        #expect(calls[0].count == 2, "\(calls[0])")
        #expect(calls[0] == calls[1], "streamed \(calls[1]) vs plain \(calls[0])")
    }

    @Test func reasoningContentFromTheR1TemplateReachesTheFlatReasoning() throws {
        guard
            let server = try LlamaServer.start(extra: [
                "--chat-template-file", LlamaServer.folder + "/deepseek-r1.jinja"
            ])
        else { return }
        let scratch = Scratch()
        scratch.write("in.jsonl", lines: Self.prompts(6, maxTokens: 16))
        writeJob(scratch, server)
        let (code, stderr) = try run(scratch)
        #expect(code == 0, "\(stderr)")
        // The server's own field is reasoning_content; the flat shape reads it as reasoning.
        let bodies = Dictionary(
            uniqueKeysWithValues: scratch.lines("out.jsonl").map {
                (
                    $0["custom_id"]?.stringValue ?? "",
                    $0["response"]?["body"]?["choices"]?.arrayValue?.first?["message"]?["reasoning_content"]?
                        .stringValue
                )
            })
        #expect(bodies.values.contains { !($0 ?? "").isEmpty }, "\(bodies)")
        let (exported, text) = try runToEnd(
            chatbatchBinary(),
            [
                "export", scratch.file("out.jsonl.checkpoint"), "--output", scratch.file("flat.jsonl"), "--format",
                "flat"
            ],
            captureStdout: true)
        #expect(exported == 0, "\(text)")
        for line in scratch.lines("flat.jsonl") {
            let id = line["custom_id"]?.stringValue ?? ""
            if let reasoning = bodies[id] ?? nil { #expect(line["reasoning"]?.stringValue == reasoning, "\(id)") }
        }
    }

    @Test func aWrongKeyStopsAfterOneRequestAndAWrongPathSaysSo() throws {
        let right = "sk-right-\(UUID().uuidString)"
        guard let server = try LlamaServer.start(extra: ["--api-key", right]) else { return }
        let scratch = Scratch()
        scratch.write("in.jsonl", lines: Self.prompts(30, maxTokens: 8))
        writeJob(scratch, server)
        let (code, stderr) = try run(scratch, key: "sk-wrong-key")
        #expect(
            code == 3 && stderr.contains("the API key was refused") && stderr.contains("30 left pending"), "\(stderr)")
        #expect(try summary(scratch)["attempts"] == 1)
        let (path, said) = try run(
            scratch, ["--base-url", "http://127.0.0.1:\(server.port)/api", "--output", scratch.file("path.jsonl")],
            key: right)
        #expect(path == 3 && said.contains("does the base URL end in /v1"), "\(said)")
    }

    @Test func aServerKilledAndRestartedMidRunLosesNothing() throws {
        guard let server = try LlamaServer.start() else { return }
        let scratch = Scratch()
        let n = 60
        scratch.write("in.jsonl", lines: Self.prompts(n, maxTokens: 24))
        writeJob(scratch, server, extra: ["retry: {max_attempts: 10, base_delay: 0.2, max_delay: 2}"])
        let err = Pipe()
        let p = try launch(
            chatbatchBinary(), ["run", scratch.file("job.yaml"), "--summary-json", scratch.file("summary.json")],
            stderr: err)
        #expect(eventually(timeout: 60) { (try? doneRows(scratch.file("out.jsonl.checkpoint"))) ?? 0 >= 12 })
        kill(server.process.processIdentifier, SIGKILL)
        server.process.waitUntilExit()
        let again = try server.restart()  // answers 503 "Loading model" while it starts
        defer { stopProcess(again) }
        let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        #expect(p.terminationStatus == 0, "\(stderr)")
        let results = scratch.lines("out.jsonl").compactMap { $0["custom_id"]?.stringValue }
        #expect(results.count == n && Set(results).count == n && scratch.lines("out.errors.jsonl").isEmpty, "\(stderr)")
        #expect(try summary(scratch)["failed"] == 0)
    }

    @Test func aKilledRunResumesAndResendsExactlyWhatWasInFlight() throws {
        guard let server = try LlamaServer.start() else { return }
        let scratch = Scratch()
        let n = 60
        scratch.write("in.jsonl", lines: Self.prompts(n, maxTokens: 24))
        writeJob(scratch, server)
        let checkpoint = scratch.file("out.jsonl.checkpoint")
        let p = try launch(chatbatchBinary(), ["run", scratch.file("job.yaml")])
        #expect(eventually(timeout: 60) { (try? doneRows(checkpoint)) ?? 0 >= 12 })
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        let inflight =
            try SQLiteDatabase(path: checkpoint, readOnly: true).query(
                "SELECT count(*) FROM requests WHERE state='inflight'"
            ).first?.first?.int ?? -1
        #expect(inflight > 0)
        let (code, stderr) = try run(scratch)
        #expect(code == 0, "\(stderr)")
        let results = scratch.lines("out.jsonl").compactMap { $0["custom_id"]?.stringValue }
        #expect(results.count == n && Set(results).count == n)
        #expect(try summary(scratch)["resent_after_crash"]?.intValue == inflight)
    }
}

/// Rows a checkpoint holds as done (read while a run writes it).
func doneRows(_ checkpoint: String) throws -> Int {
    try SQLiteDatabase(path: checkpoint, readOnly: true).query("SELECT count(*) FROM requests WHERE state='done'")
        .first?.first?.int ?? 0
}
