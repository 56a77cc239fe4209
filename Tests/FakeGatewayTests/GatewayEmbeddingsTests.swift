import ChatBatchCore
import FakeGateway
import Foundation
import TestSupport
import Testing

@testable import ChatBatch

/// `/v1/embeddings` on the fake gateway, over real HTTP: OpenAI's shape, its limits, and the same faults as chat.
@Suite("Fake gateway: embeddings")
struct GatewayEmbeddingsTests {
    static func embed(_ input: JSON, _ extra: [(String, JSON)] = []) -> JSON {
        requestBody([("input", input)] + extra)
    }

    @Test func oneUnitVectorPerInputTheSameForTheSameText() throws {
        let g = try FakeGateway.start()
        defer { g.shutdown() }
        let one = post(g, path: "/v1/embeddings", body: Self.embed("hello world"))
        #expect(one.status == 200)
        let answer = json(one)
        #expect(answer["object"] == "list" && answer["data"]?.arrayValue?.count == 1)
        #expect(answer["data"]?.arrayValue?[0]["embedding"]?.arrayValue?.count == 1_536)
        #expect(answer["usage"]?["prompt_tokens"]?.intValue == TokenEstimate.tokens("hello world"))
        #expect(answer["usage"]?["completion_tokens"] == nil, "embeddings bill input tokens only")
        let three = json(
            post(g, path: "/v1/embeddings", body: Self.embed(["a", "hello world", "b"], [("dimensions", 8)])))
        let vectors = try #require(three["data"]?.arrayValue).map {
            $0["embedding"]?.arrayValue?.compactMap(\.doubleValue) ?? []
        }
        #expect(vectors.count == 3 && vectors.allSatisfy { $0.count == 8 })
        #expect(three["data"]?.arrayValue?[2]["index"]?.intValue == 2)
        for v in vectors { #expect(abs(v.reduce(0) { $0 + $1 * $1 } - 1) < 1e-4) }
        let again = json(post(g, path: "/v1/embeddings", body: Self.embed(["hello world"], [("dimensions", 8)])))
        #expect(again["data"]?.arrayValue?[0]["embedding"] == three["data"]?.arrayValue?[1]["embedding"])
    }

    @Test func whatOpenAIRefusesIsRefused() throws {
        let g = try FakeGateway.start()
        defer { g.shutdown() }
        let tooMany = post(g, path: "/v1/embeddings", body: Self.embed(.array((0...2_048).map { .string("t\($0)") })))
        #expect(tooMany.status == 400)
        #expect(json(tooMany)["error"]?["message"]?.stringValue?.contains("2048") == true)
        for bad in [Self.embed(""), Self.embed([]), Self.embed([1, 2]), Self.embed("x", [("dimensions", 0)])] {
            #expect(post(g, path: "/v1/embeddings", body: bad).status == 400, "\(bad.serialized())")
        }
        #expect(post(g, path: "/v1/embeddings", key: "sk-wrong", body: Self.embed("x")).status == 401)
        #expect(post(g, path: "/v1/embeddings", body: ["model": "nope", "input": "x"]).status == 404)
    }

    @Test func theScriptedFaultsApplyAsForChat() throws {
        let g = try FakeGateway.start { $0.script = try! ScriptedAction.parseScript("e=429,badjson,nousage,ok") }
        defer { g.shutdown() }
        let answers = (0..<4).map { _ in post(g, path: "/v1/embeddings", body: Self.embed("x"), clientID: "e") }
        #expect(answers.map(\.status) == [429, 200, 200, 200])
        #expect((try? JSON.parse(answers[1].body)) == nil, "a corrupt answer is not JSON")
        #expect(json(answers[2])["usage"] == nil && json(answers[2])["data"] != nil)
        #expect(json(answers[3])["usage"] != nil)
        #expect(eventually { g.ledger.snapshot().filter { $0.route == "embeddings" }.count == 4 })
        #expect(g.ledger.snapshot().filter { $0.route == "embeddings" && $0.billed }.count == 3)
    }
}
