import ChatBatchCore
import FakeGateway
import Foundation
import Testing

@testable import ChatBatch

/// The fake gateway's embeddings, completions and Responses API beside llama.cpp's server: the same request to
/// both, and the fields a batch runner reads are where the real server puts them. (Where the two differ by design
/// it says so: llama.cpp puts a completion stream's usage on its last text chunk, OpenAI and the fake on a chunk of
/// their own; llama.cpp answers a response cut by `max_output_tokens` as `completed`, OpenAI and the fake as
/// `incomplete`.)
@Suite(
    "The fake gateway's other endpoints beside llama.cpp's server", .serialized,
    needs("no llama-server in ../shared/real-servers (or CHATBATCH_REAL_SERVERS)") { LlamaServer.unavailable == nil })
struct RealServerEndpointsTests {
    static let transport = CurlTransport(maxConnections: 8)

    /// One request on a connection of its own: a kept-alive connection the server closed meanwhile would need the
    /// body sent again, which chatbatch's transport never does silently (curl 65), and this suite is not about that.
    static func post(_ base: String, _ path: String, _ body: JSON) -> HTTPResponse {
        transport.send(
            HTTPRequest(
                url: base + path,
                headers: ["Content-Type: application/json", "Authorization: Bearer sk-fake", "Connection: close"],
                body: Array(body.serialized().utf8), timeout: 60))
    }

    static func payloads(_ r: HTTPResponse) -> [JSON] {
        String(decoding: r.body, as: UTF8.self).components(separatedBy: "\n").filter { $0.hasPrefix("data: ") }
            .compactMap { try? JSON.parse(String($0.dropFirst(6))) }
    }

    /// What a runner reads of each answer, as `name: value kind` lines (values that vary are reduced to kinds).
    static func shape(_ path: String, _ r: HTTPResponse) -> [String] {
        let body = (try? JSON.parse(r.body)) ?? .null
        let usage = { (a: String, b: String) in
            body["usage"]?[a]?.intValue != nil && body["usage"]?[b]?.intValue != nil
        }
        switch path {
        case "/embeddings":
            let first = body["data"]?.arrayValue?.first
            return [
                "status \(r.status)", "object \(body["object"]?.stringValue ?? "-")",
                "data \(body["data"]?.arrayValue?.count ?? -1)", "index \(first?["index"]?.intValue ?? -1)",
                "vector \(first?["embedding"]?.arrayValue?.allSatisfy { $0.doubleValue != nil } == true)",
                "prompt_tokens \(body["usage"]?["prompt_tokens"]?.intValue != nil)",
                "completion_tokens \(body["usage"]?["completion_tokens"] != nil)"
            ]
        case "/completions":
            let choice = body["choices"]?.arrayValue?.first
            return [
                "status \(r.status)", "object \(body["object"]?.stringValue ?? "-")",
                "text \(choice?["text"]?.stringValue != nil)", "finish \(choice?["finish_reason"]?.stringValue != nil)",
                "usage \(usage("prompt_tokens", "completion_tokens"))"
            ]
        default:
            let message = body["output"]?.arrayValue?.first { $0["type"] == "message" }
            return [
                "status \(r.status)", "object \(body["object"]?.stringValue ?? "-")",
                "message \(message?["content"]?.arrayValue?.first?["type"]?.stringValue ?? "-")",
                "text \(message?["content"]?.arrayValue?.first?["text"]?.stringValue != nil)",
                "usage \(usage("input_tokens", "output_tokens"))"
            ]
        }
    }

    @Test func theFakesAnswersHaveTheRealServersShape() throws {
        guard let server = try LlamaServer.start(slots: 2, extra: ["--embeddings", "--pooling", "mean"]) else { return }
        defer { server.stop() }
        let fake = try FakeGateway.start { $0.models.append("tiny") }
        defer { fake.shutdown() }
        let requests: [(String, JSON)] = [
            ("/embeddings", ["model": "tiny", "input": ["hello", "world"]]),
            ("/completions", ["model": "tiny", "prompt": "hello", "max_tokens": 4, "temperature": 0]),
            ("/responses", ["model": "tiny", "input": "hello", "max_output_tokens": 4, "temperature": 0])
        ]
        for (path, body) in requests {
            let real = Self.shape(path, Self.post(server.baseURL, path, body))
            #expect(Self.shape(path, Self.post(fake.baseURL, path, body)) == real, "\(path): llama.cpp says \(real)")
        }
        // Streamed: the text comes in pieces, and the whole answer (with usage) is there by the end. (With room for
        // text past the fake's reasoning: a response cut inside its reasoning has no text to stream.)
        let streamedCompletion: JSON = [
            "model": "tiny", "prompt": "hello", "max_tokens": 4, "stream": true, "temperature": 0,
            "stream_options": ["include_usage": true]
        ]
        for base in [server.baseURL, fake.baseURL] {
            let events = Self.payloads(Self.post(base, "/completions", streamedCompletion))
            #expect(events.contains { $0["choices"]?.arrayValue?.first?["text"]?.stringValue != nil }, "\(base)")
            #expect(events.contains { $0["usage"]?["completion_tokens"]?.intValue != nil }, "\(base)")
            let response = Self.post(
                base, "/responses",
                ["model": "tiny", "input": "hello", "max_output_tokens": 48, "stream": true, "temperature": 0])
            let typed = Self.payloads(response)
            let seen =
                "\(base): \(response.status) \(response.failure.map { "\($0)" } ?? "") "
                + String(decoding: response.body.suffix(400), as: UTF8.self)
            #expect(typed.first?["type"] == "response.created", "\(seen)")
            #expect(typed.contains { $0["type"] == "response.output_text.delta" }, "\(seen)")
            #expect(
                typed.last?["type"] == "response.completed" || typed.last?["type"] == "response.incomplete", "\(seen)")
            #expect(typed.last?["response"]?["usage"]?["output_tokens"]?.intValue != nil, "\(base)")
        }
    }

    /// `chatbatch run` on a mixed file against llama.cpp: every endpoint plain and streamed, with the server's own
    /// usage; then against a server started without `--embeddings`, which answers those lines 501: one request, the
    /// lines in the errors file, the others answered.
    @Test func chatbatchRunsEveryEndpointAgainstLlamaCppAndOneWithoutEmbeddingsRefusesThem() throws {
        let lines = [0].flatMap { _ -> [String] in
            (1...3).flatMap { i -> [String] in
                [
                    EndpointRunTests.line("e\(i)", "/v1/embeddings", ["model": "tiny", "input": .string("words \(i)")]),
                    EndpointRunTests.line(
                        "t\(i)", "/v1/completions",
                        ["model": "tiny", "prompt": .string("count \(i)"), "max_tokens": 6, "temperature": 0]),
                    EndpointRunTests.line(
                        "ts\(i)", "/v1/completions",
                        ["model": "tiny", "prompt": .string("again \(i)"), "max_tokens": 6, "stream": true]),
                    EndpointRunTests.line(
                        "r\(i)", "/v1/responses",
                        ["model": "tiny", "input": .string("hello \(i)"), "max_output_tokens": 6, "temperature": 0]),
                    EndpointRunTests.line(
                        "rs\(i)", "/v1/responses",
                        ["model": "tiny", "input": .string("there \(i)"), "max_output_tokens": 6, "stream": true])
                ]
            }
        }
        let ids = lines.compactMap { try? JSON.parse($0)["custom_id"]?.stringValue }
        for embeddings in [true, false] {
            guard
                let server = try LlamaServer.start(
                    slots: 4, extra: embeddings ? ["--embeddings", "--pooling", "mean"] : [])
            else { return }
            defer { server.stop() }
            let scratch = Scratch()
            scratch.write("in.jsonl", lines: lines)
            var s = JobSettings()
            s.input = scratch.file("in.jsonl")
            s.output = scratch.file("out.jsonl")
            s.provider = .openAICompatible
            s.baseURL = server.baseURL
            s.concurrency = 4
            s.timeout = 60
            s.prices = Prices(inputPerMillion: 1, outputPerMillion: 2, embeddingsPerMillion: 0.5)
            let (summary, messages) = try runJob(s, key: nil)
            let results = Dictionary(
                uniqueKeysWithValues: scratch.lines("out.jsonl").map { ($0["custom_id"]?.stringValue ?? "", $0) })
            let errors = scratch.lines("out.errors.jsonl").compactMap { $0["custom_id"]?.stringValue }
            #expect(Set(results.keys).union(errors) == Set(ids) && results.count + errors.count == ids.count)
            #expect(summary.usageEstimated == 0, "\(summary.text)")
            for id in ids where !id.hasPrefix("e") {
                let body = results[id]?["response"]?["body"]
                #expect(
                    body?["object"] == (id.hasPrefix("t") ? "text_completion" : "response"), "\(id) \(body ?? .null)")
            }
            if embeddings {
                #expect(summary.exit == .allDone && errors.isEmpty, "\(summary.text)\n\(messages)")
                #expect(
                    results["e1"]?["response"]?["body"]?["data"]?.arrayValue?.first?["embedding"]?.arrayValue?.count
                        == 64)
            } else {
                #expect(summary.exit == .doneWithFailures && errors.sorted() == ["e1", "e2", "e3"], "\(summary.text)")
                let sent = try SQLiteDatabase(path: scratch.file("out.jsonl.checkpoint"), readOnly: true).query(
                    "SELECT count(*) FROM attempts WHERE custom_id IN ('e1', 'e2', 'e3')")
                #expect(sent.first?.first?.int == 1, "one request for the three embeddings lines")
                #expect(messages.contains { $0.contains("/v1/embeddings (model tiny) refused") }, "\(messages)")
            }
        }
    }
}
