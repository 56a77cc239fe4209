import ChatBatchCore
import FakeGateway
import Foundation
import Testing

@testable import ChatBatch

/// `/v1/completions` on the fake gateway, over real HTTP: a `text_completion`, streamed or not, with usage.
@Suite("Fake gateway: text completions")
struct GatewayCompletionsTests {
    static func complete(_ prompt: JSON, _ extra: [(String, JSON)] = []) -> JSON {
        requestBody([("prompt", prompt)] + extra)
    }

    @Test func aTextCompletionStreamedOrNotSaysTheSame() throws {
        let g = try FakeGateway.start()
        defer { g.shutdown() }
        let plain = json(post(g, path: "/v1/completions", body: Self.complete("Name three rivers.")))
        #expect(plain["object"] == "text_completion")
        let choice = try #require(plain["choices"]?.arrayValue?.first)
        let text = try #require(choice["text"]?.stringValue)
        #expect(!text.isEmpty && choice["finish_reason"] == "stop")
        #expect(plain["usage"]?["prompt_tokens"]?.intValue == TokenEstimate.tokens("Name three rivers."))
        #expect(plain["usage"]?["completion_tokens"]?.intValue == TokenEstimate.tokens(text))
        let streamed = post(
            g, path: "/v1/completions",
            body: Self.complete("Name three rivers.", [("stream", true), ("stream_options", ["include_usage": true])]))
        #expect(streamed.headers["content-type"]?.hasPrefix("text/event-stream") == true)
        let payloads = events(streamed)
        #expect(payloads.last == "[DONE]")
        let chunks = payloads.dropLast().compactMap { try? JSON.parse($0) }
        let pieces = chunks.compactMap { $0["choices"]?.arrayValue?.first?["text"]?.stringValue }
        #expect(pieces.joined() == text)
        #expect(chunks.contains { $0["choices"]?.arrayValue?.first?["finish_reason"] == "stop" })
        #expect(chunks.last?["usage"] == plain["usage"])
        let cut = json(post(g, path: "/v1/completions", body: Self.complete("Name three rivers.", [("max_tokens", 2)])))
        #expect(cut["choices"]?.arrayValue?.first?["finish_reason"] == "length")
    }

    @Test func whatOpenAIRefusesIsRefusedAndFaultsApply() throws {
        let g = try FakeGateway.start { $0.script = try! ScriptedAction.parseScript("c=500,reset,ok") }
        defer { g.shutdown() }
        for bad in [["model": "openai/gpt-oss-120b"], Self.complete(3), Self.complete("x", [("max_tokens", 0)])]
            as [JSON]
        {
            #expect(post(g, path: "/v1/completions", body: bad).status == 400, "\(bad.serialized())")
        }
        let answers = (0..<3).map { _ in post(g, path: "/v1/completions", body: Self.complete("x"), clientID: "c") }
        #expect(answers.map(\.status) == [500, 0, 200])
    }
}
