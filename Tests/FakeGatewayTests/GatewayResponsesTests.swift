import ChatBatchCore
import FakeGateway
import Foundation
import Testing

@testable import ChatBatch

/// `/v1/responses` on the fake gateway, over real HTTP: output items, typed stream events, structured text.
@Suite("Fake gateway: the Responses API")
struct GatewayResponsesTests {
    static func respond(_ input: JSON, _ extra: [(String, JSON)] = []) -> JSON {
        requestBody([("input", input)] + extra)
    }

    /// The text of a response's message item.
    static func text(_ response: JSON) -> String? {
        response["output"]?.arrayValue?.first { $0["type"] == "message" }?["content"]?.arrayValue?.first?["text"]?
            .stringValue
    }

    @Test func aResponseStreamedOrNotSaysTheSame() throws {
        let g = try FakeGateway.start()
        defer { g.shutdown() }
        let input: JSON = [["role": "user", "content": "Name three rivers."]]
        let plain = json(post(g, path: "/v1/responses", body: Self.respond(input, [("instructions", "Be brief.")])))
        #expect(plain["object"] == "response" && plain["status"] == "completed")
        #expect(plain["output"]?.arrayValue?.map { $0["type"]?.stringValue ?? "" } == ["reasoning", "message"])
        let text = try #require(Self.text(plain))
        #expect(!text.isEmpty)
        let usage = try #require(plain["usage"])
        #expect(
            (usage["input_tokens"]?.intValue ?? 0) > 0 && usage["output_tokens_details"]?["reasoning_tokens"] != nil)
        let streamed = post(
            g, path: "/v1/responses",
            body: Self.respond(input, [("instructions", "Be brief."), ("stream", true)]))
        let typed = events(streamed).compactMap { try? JSON.parse($0) }
        #expect(typed.first?["type"] == "response.created" && typed.last?["type"] == "response.completed")
        let deltas = typed.filter { $0["type"] == "response.output_text.delta" }.compactMap { $0["delta"]?.stringValue }
        #expect(deltas.joined() == text)
        #expect(typed.last?["response"]?["usage"] == usage)
        #expect(typed.map { $0["sequence_number"]?.intValue ?? -1 } == Array(0..<typed.count))
        let cut = json(
            post(g, path: "/v1/responses", body: Self.respond("Name three rivers.", [("max_output_tokens", 2)])))
        #expect(cut["status"] == "incomplete" && cut["incomplete_details"]?["reason"] == "max_output_tokens")
    }

    @Test func aJSONSchemaFormatGetsTextThatSatisfiesIt() throws {
        let g = try FakeGateway.start()
        defer { g.shutdown() }
        let schema: JSON = [
            "type": "object", "properties": ["city": ["type": "string"], "people": ["type": "integer"]],
            "required": ["city", "people"], "additionalProperties": false
        ]
        let format: JSON = ["format": ["type": "json_schema", "name": "place", "schema": schema, "strict": true]]
        let answer = json(post(g, path: "/v1/responses", body: Self.respond("Where?", [("text", format)])))
        let text = try #require(Self.text(answer))
        #expect(satisfies(try JSON.parse(text), schema), "\(text)")
    }

    @Test func whatOpenAIRefusesIsRefused() throws {
        let g = try FakeGateway.start()
        defer { g.shutdown() }
        let bad: [JSON] = [
            ["model": "openai/gpt-oss-120b"], Self.respond([]), Self.respond("x", [("max_output_tokens", 0)]),
            Self.respond("x", [("text", ["format": ["type": "json_schema", "name": "n"]])])
        ]
        for body in bad { #expect(post(g, path: "/v1/responses", body: body).status == 400, "\(body.serialized())") }
    }
}
