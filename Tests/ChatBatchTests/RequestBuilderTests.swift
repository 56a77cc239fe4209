import ChatBatchCore
import Testing

@testable import ChatBatch

/// The request builder on its own: a line in, the exact body that will be sent (or why the line is invalid) out.
@Suite("Request builder, directly")
struct RequestBuilderTests {
    static func builder(_ change: (inout JobSettings) -> Void = { _ in }) throws -> RequestBuilder {
        var s = JobSettings()
        s.input = "/dev/null"
        s.provider = .openAICompatible
        s.baseURL = "http://127.0.0.1:9/v1"
        s.model = "m"
        change(&s)
        return try RequestBuilder(config: try s.resolve())
    }

    static func parse(_ b: RequestBuilder, _ text: String, line: Int = 7) -> ParsedLine {
        b.parse(RawLine(number: line, bytes: Array(text.utf8)), file: "in.jsonl")
    }

    @Test func everyInputShapeBecomesAChatBody() throws {
        let b = try Self.builder { $0.system = "Be brief." }
        for text in [
            #"{"custom_id":"a","prompt":"Hi","max_tokens":20}"#,
            #"{"custom_id":"a","messages":[{"role":"user","content":"Hi"}],"max_tokens":20}"#,
            #"{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"messages":[{"role":"user","content":"Hi"}],"max_tokens":20}}"#
        ] {
            guard case .request(let r) = Self.parse(b, text) else {
                Issue.record("not a request: \(text)")
                continue
            }
            let body = try JSON.parse(r.body)
            #expect(r.customID == "a" && r.line == 7 && r.model == "m" && r.maxTokens == 20, "\(text)")
            #expect(body["model"]?.stringValue == "m")
            let messages = body["messages"]?.arrayValue ?? []
            #expect(messages.first?["role"]?.stringValue == "system" && messages.last?["content"]?.stringValue == "Hi")
            #expect(!r.bodyHash.isEmpty && r.promptTokens > 0)
        }
    }

    @Test func aBadLineIsInvalidWithItsFileLineAndReason() throws {
        let b = try Self.builder()
        for (text, words) in [
            ("{broken", "not valid JSON"), (#"{"custom_id":"a"}"#, "prompt"),
            (
                #"{"custom_id":"a","method":"POST","url":"/v1/embeddings","body":{"input":""}}"#,
                "`input` is an empty string"
            )
        ] {
            guard case .invalid(let key, _, let line, let reason) = Self.parse(b, text, line: 3) else {
                Issue.record("not invalid: \(text)")
                continue
            }
            #expect(line == 3 && reason.hasPrefix("in.jsonl:3: ") && reason.contains(words), "\(reason)")
            #expect(key == "line-3" || key == "a")
        }
    }
}
