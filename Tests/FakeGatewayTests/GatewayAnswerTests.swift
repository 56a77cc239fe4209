import ChatBatchCore
import FakeGateway
import Foundation
import Testing

@testable import ChatBatch

@Suite("Fake gateway: deterministic answers, structured outputs, tools, streaming")
struct GatewayAnswerTests {
    static let personSchema: JSON = [
        "type": "object",
        "properties": [
            "name": ["type": "string"],
            "age": ["type": "integer", "minimum": 18, "maximum": 99],
            "role": ["type": "string", "enum": ["author", "editor"]],
            "tags": ["type": "array", "items": ["type": "string"], "minItems": 1, "maxItems": 3]
        ],
        "required": ["name", "age", "role", "tags"],
        "additionalProperties": false
    ]
    static let tools: JSON = [
        [
            "type": "function",
            "function": [
                "name": "get_weather",
                "parameters": [
                    "type": "object",
                    "properties": [
                        "city": ["type": "string"], "unit": ["type": "string", "enum": ["celsius", "fahrenheit"]]
                    ],
                    "required": ["city"]
                ]
            ]
        ],
        [
            "type": "function",
            "function": [
                "name": "get_time",
                "parameters": [
                    "type": "object", "properties": ["zone": ["type": "string"]], "required": ["zone"]
                ]
            ]
        ]
    ]

    @Test func seedChangesTheAnswerAndTheSameSeedRepeatsIt() throws {
        let g = try FakeGateway.start()
        defer { g.shutdown() }
        let a = json(post(g, body: chat("Tell me a story", [("seed", 1)])))["choices"]
        let b = json(post(g, body: chat("Tell me a story", [("seed", 1)])))["choices"]
        let c = json(post(g, body: chat("Tell me a story", [("seed", 2)])))["choices"]
        #expect(a == b)
        #expect(a != c)
    }

    @Test func jsonSchemaAnswersSatisfyTheSchema() throws {
        let g = try FakeGateway.start()
        defer { g.shutdown() }
        for i in 0..<20 {
            let format: JSON = [
                "type": "json_schema", "json_schema": ["name": "person", "strict": true, "schema": Self.personSchema]
            ]
            let r = post(g, body: chat("Extract person \(i)", [("response_format", format)]))
            let content = try #require(json(r)["choices"]?.arrayValue?.first?["message"]?["content"]?.stringValue)
            let value = try JSON.parse(content)
            #expect(satisfies(value, Self.personSchema), "\(content)")
        }
    }

    @Test func jsonObjectAnswersAreJSONObjects() throws {
        let g = try FakeGateway.start()
        defer { g.shutdown() }
        let r = post(g, body: chat("List colors", [("response_format", ["type": "json_object"])]))
        let content = try #require(json(r)["choices"]?.arrayValue?.first?["message"]?["content"]?.stringValue)
        #expect(try JSON.parse(content).objectValue != nil)
    }

    @Test func toolsGiveParallelCallsWhoseArgumentsSatisfyTheirSchemas() throws {
        let g = try FakeGateway.start()
        defer { g.shutdown() }
        let body = json(post(g, body: chat("Weather and time in Paris", [("tools", Self.tools)])))
        let choice = try #require(body["choices"]?.arrayValue?.first)
        #expect(choice["finish_reason"] == "tool_calls")
        let calls = try #require(choice["message"]?["tool_calls"]?.arrayValue)
        #expect(calls.count == 2)
        for call in calls {
            let name = try #require(call["function"]?["name"]?.stringValue)
            let schema = try #require(
                Self.tools.arrayValue?.first { $0["function"]?["name"]?.stringValue == name }?["function"]?[
                    "parameters"])
            let args = try JSON.parse(try #require(call["function"]?["arguments"]?.stringValue))
            #expect(satisfies(args, schema))
            #expect(call["id"]?.stringValue?.hasPrefix("call_") == true)
        }
        // One named tool: one call. tool_choice none: plain content.
        let named = json(
            post(
                g,
                body: chat(
                    "Weather",
                    [("tools", Self.tools), ("tool_choice", ["type": "function", "function": ["name": "get_time"]])])))
        #expect(named["choices"]?.arrayValue?.first?["message"]?["tool_calls"]?.arrayValue?.count == 1)
        let none = json(post(g, body: chat("Weather", [("tools", Self.tools), ("tool_choice", "none")])))
        #expect(none["choices"]?.arrayValue?.first?["message"]?["tool_calls"] == nil)
        #expect(none["choices"]?.arrayValue?.first?["finish_reason"] == "stop")
    }

    @Test func maxTokensCutsTheAnswerWithFinishReasonLength() throws {
        let g = try FakeGateway.start()
        defer { g.shutdown() }
        let full = json(post(g, body: chat("Explain the tides in detail")))
        let cut = json(post(g, body: chat("Explain the tides in detail", [("max_tokens", 30)])))
        #expect(cut["choices"]?.arrayValue?.first?["finish_reason"] == "length")
        #expect(cut["usage"]?["completion_tokens"]?.intValue == 30)
        let fullMessage = full["choices"]?.arrayValue?.first?["message"]
        let cutMessage = cut["choices"]?.arrayValue?.first?["message"]
        let fullText = (fullMessage?["reasoning"]?.stringValue ?? "") + (fullMessage?["content"]?.stringValue ?? "")
        let cutText = (cutMessage?["reasoning"]?.stringValue ?? "") + (cutMessage?["content"]?.stringValue ?? "")
        #expect(fullText.hasPrefix(cutText) && cutText.count < fullText.count)
    }

    @Test func reasoningFieldCanBeReasoningContent() throws {
        let g = try FakeGateway.start { $0.reasoningField = "reasoning_content" }
        defer { g.shutdown() }
        let message = json(post(g, body: chat("hi")))["choices"]?.arrayValue?.first?["message"]
        #expect(message?["reasoning"] == nil)
        #expect(message?["reasoning_content"]?.stringValue?.isEmpty == false)
    }

    @Test func streamingFollowsTheSeedsChunkShapeAndReassemblesToTheSameAnswer() throws {
        let g = try FakeGateway.start()
        defer { g.shutdown() }
        let request = chat("Weather and time in Paris", [("tools", Self.tools)])
        var streamed = request
        streamed["stream"] = true
        streamed["stream_options"] = ["include_usage": true]
        let r = post(g, body: streamed)
        #expect(r.status == 200)
        #expect(r.headers["content-type"] == "text/event-stream")
        let payloads = events(r)
        #expect(payloads.last == "[DONE]")
        let chunks = try payloads.dropLast().map { try JSON.parse($0) }
        #expect(chunks.allSatisfy { $0["object"] == "chat.completion.chunk" })
        #expect(chunks.first?["choices"]?.arrayValue?.first?["delta"] == ["role": "assistant", "content": ""])
        #expect(chunks.last?["choices"] == [] && chunks.last?["usage"] != nil)
        // Tool-call arguments arrive as several fragments per call index.
        var fragments: [Int: Int] = [:]
        for c in chunks {
            for call in c["choices"]?.arrayValue?.first?["delta"]?["tool_calls"]?.arrayValue ?? []
            where call["function"]?["arguments"]?.stringValue?.isEmpty == false {
                fragments[call["index"]?.intValue ?? -1, default: 0] += 1
            }
        }
        #expect(fragments.keys.sorted() == [0, 1])
        #expect(fragments.values.allSatisfy { $0 >= 2 })
        // Put back together, it is the non-streamed answer.
        let assembled = StreamAssembler.assemble(r.body)
        #expect(assembled.complete)
        let plain = json(post(g, body: request))
        #expect(assembled.body["choices"] == plain["choices"])
        #expect(assembled.body["usage"] == plain["usage"])
    }
}
