import ChatBatchCore
import Testing

@testable import ChatBatch

/// The rules that differ by endpoint, on their own: what a line of each endpoint must hold, where it is sent, what
/// the job merges into it, how its streamed answer is put back together and what its answer must hold.
@Suite("Endpoints besides chat, directly")
struct EndpointRequestTests {
    static func parse(_ text: String, _ change: (inout JobSettings) -> Void = { _ in }) throws -> ParsedLine {
        let b = try RequestBuilderTests.builder {
            $0.system = "Be brief."
            $0.request = JSONObject([("temperature", .double(0.5))])
            $0.stream = true
            change(&$0)
        }
        return RequestBuilderTests.parse(b, text)
    }

    static func request(_ text: String, _ change: (inout JobSettings) -> Void = { _ in }) throws -> PreparedRequest? {
        guard case .request(let r) = try parse(text, change) else { return nil }
        return r
    }

    static func reason(_ text: String, _ change: (inout JobSettings) -> Void = { _ in }) throws -> String? {
        guard case .invalid(_, _, _, let reason) = try parse(text, change) else { return nil }
        return reason
    }

    @Test func anEmbeddingsLineKeepsItsModelAndGetsNoChatDefaultsNorStream() throws {
        let r = try #require(
            try Self.request(#"{"custom_id":"e","url":"/v1/embeddings","body":{"model":"e5","input":["a","b"]}}"#))
        let body = try JSON.parse(r.body)
        #expect(r.endpoint == .embeddings && r.model == "e5" && r.maxTokens == 0 && !r.stream)
        #expect(body == ["model": "e5", "input": ["a", "b"]])
        #expect(r.refusalKey == "/v1/embeddings e5")
        // A line that names no model gets the job's.
        let bare = try #require(try Self.request(#"{"custom_id":"e","url":"/embeddings","body":{"input":"a"}}"#))
        #expect(bare.model == "m" && bare.endpoint == .embeddings)
    }

    @Test func generatingEndpointsTakeTheJobsModelAndStreamButNotChatsDefaults() throws {
        let text = try #require(
            try Self.request(
                #"{"custom_id":"t","url":"/v1/completions","body":{"model":"x","prompt":"Hi","max_tokens":9}}"#))
        let textBody = try JSON.parse(text.body)
        #expect(text.model == "m" && text.maxTokens == 9 && text.stream)
        #expect(textBody["stream_options"]?["include_usage"] == true && textBody["temperature"] == nil)
        #expect(textBody["messages"] == nil)
        let resp = try #require(
            try Self.request(
                #"{"custom_id":"r","url":"/v1/responses","body":{"input":"Hi","max_output_tokens":7,"text":{"format":{"type":"json_schema","name":"n","schema":{"type":"object"}}}}}"#
            ))
        let respBody = try JSON.parse(resp.body)
        #expect(resp.maxTokens == 7 && resp.stream && respBody["stream_options"] == nil)
        #expect(resp.responseFormat == ["type": "json_schema", "json_schema": ["schema": ["type": "object"]]])
        #expect(resp.refusalKey == "/v1/responses m")
    }

    @Test func theSameBodyOnTwoEndpointsHashesAndCachesApartAndChatKeepsItsOldHash() throws {
        let body = #"{"model":"m","input":"same"}"#
        let e = try #require(
            try Self.request(#"{"custom_id":"a","url":"/v1/embeddings","body":\#(body)}"#) { $0.cache = "/tmp/c" })
        let m = try #require(
            try Self.request(#"{"custom_id":"a","url":"/v1/moderations","body":\#(body)}"#) { $0.cache = "/tmp/c" })
        #expect(e.bodyHash != m.bodyHash && e.cacheKey != m.cacheKey)
        let chat = try #require(try Self.request(#"{"custom_id":"a","messages":[{"role":"user","content":"x"}]}"#))
        #expect(chat.bodyHash == StableHash.hex(StableHash.of(chat.body)))
    }

    @Test func eachEndpointRefusesABodyItCannotTake() throws {
        let cases: [(String, String)] = [
            (#"{"url":"/v1/embeddings","body":{"model":"e"}}"#, "needs `input`"),
            (#"{"url":"/v1/embeddings","body":{"input":""}}"#, "empty string"),
            (#"{"url":"/v1/embeddings","body":{"input":[]}}"#, "empty array"),
            (#"{"url":"/v1/embeddings","body":{"input":["a",""]}}"#, "input[1] is an empty string"),
            (#"{"url":"/v1/completions","body":{"prompt":7}}"#, "`prompt` must be"),
            (#"{"url":"/v1/completions","body":{"prompt":"x","max_tokens":0}}"#, "`max_tokens` must be a positive"),
            (#"{"url":"/v1/responses","body":{"input":[]}}"#, "needs `input`"),
            (#"{"url":"/v1/responses","body":{"input":"x","max_output_tokens":999999}}"#, "maximum output"),
            (#"{"url":"/v1/responses","body":{"input":"x","text":{"format":{"type":"json_schema"}}}}"#, "schema"),
            (#"{"url":"/v1/audio/speech","body":{"input":"x"}}"#, "unsupported url '/v1/audio/speech'")
        ]
        for (text, expected) in cases {
            let reason = try Self.reason(text) ?? "(a request)"
            #expect(reason.hasPrefix("in.jsonl:7: ") && reason.contains(expected), "\(text): \(reason)")
        }
        let many = JSON.array((0...APIEndpoint.maxEmbeddingInputs).map { .string("w\($0)") })
        let over = #"{"url":"/v1/embeddings","body":{"input":\#(many.serialized())}}"#
        #expect(try Self.reason(over)?.contains("at most 2048") == true)
        let budget = try Self.reason(#"{"url":"/v1/embeddings","body":{"input":"x"}}"#) {
            $0.maxCost = 1
            $0.prices = Prices(inputPerMillion: 1, outputPerMillion: 1)
        }
        #expect(budget?.contains("no embeddings price is known") == true)
        do {
            let priced = try Self.request(#"{"url":"/v1/embeddings","body":{"input":"x"}}"#) {
                $0.maxCost = 1
                $0.prices = Prices(inputPerMillion: 1, outputPerMillion: 1, embeddingsPerMillion: 0.1)
            }
            #expect(priced != nil)
        }
    }

    @Test func everyEndpointsURLFollowsTheProvidersChatURL() {
        let tir = "https://infer.e2enetworks.net/project/p-7/genai/gpt_oss_120b/v1/chat/completions?project_id=7"
        #expect(
            APIEndpoint.embeddings.url(chatURL: tir)
                == "https://infer.e2enetworks.net/project/p-7/genai/gpt_oss_120b/v1/embeddings?project_id=7")
        #expect(APIEndpoint.responses.url(chatURL: "http://h:1/v1/chat/completions") == "http://h:1/v1/responses")
        #expect(APIEndpoint.chat.url(chatURL: tir) == tir)
        #expect(APIEndpoint.completions.url(chatURL: "http://h/api?key=1") == "http://h/api/completions?key=1")
    }

    @Test func aStreamedResponseIsItsLastEventAndAStreamWithoutItWasCut() {
        let done: JSON = [
            "type": "response.completed",
            "response": [
                "object": "response", "status": "completed",
                "output": [["type": "message", "content": [["type": "output_text", "text": "Hi"]]]],
                "usage": ["input_tokens": 3, "output_tokens": 1]
            ]
        ]
        let head =
            "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"status\":\"in_progress\"}}\n\n"
            + "data: {\"type\":\"response.output_text.delta\",\"delta\":\"Hi\"}\n\n"
        let whole = AnswerReading(
            status: 200, headers: ["content-type": "text/event-stream"],
            bytes: Array((head + "data: \(done.serialized())\n\n").utf8), askedToStream: true, endpoint: .responses)
        #expect(whole.problem == nil && whole.body?["usage"]?["input_tokens"] == 3)
        #expect(AnswerReading.usage(whole.body!, promptEstimate: 99, endpoint: .responses) == (3, 1, false))
        let cut = AnswerReading(
            status: 200, headers: ["content-type": "text/event-stream"], bytes: Array(head.utf8), askedToStream: true,
            endpoint: .responses)
        #expect(cut.problem?.code == "stream_cut" && cut.problem?.message.contains("response.completed") == true)
        let failed = AnswerReading(
            status: 200, headers: ["content-type": "text/event-stream"],
            bytes: Array(
                (head + #"data: {"type":"response.failed","response":{"error":{"message":"boom"}}}"# + "\n\n").utf8),
            askedToStream: true, endpoint: .responses)
        #expect(failed.problem?.code == "error_in_answer" && failed.problem?.message.contains("boom") == true)
    }

    @Test func eachEndpointsAnswerIsCheckedWhereItKeepsIt() {
        let empty: JSON = ["object": "list", "data": []]
        #expect(
            AnswerReading(
                status: 200, headers: [:], bytes: Array(empty.serialized().utf8), askedToStream: false,
                endpoint: .embeddings
            ).problem?.code == "no_choices")
        let schema: JSON = ["type": "json_schema", "json_schema": ["schema": ["type": "object", "required": ["a"]]]]
        func response(_ text: String, status: String = "completed") -> JSON {
            var r: JSON = [
                "object": "response", "status": .string(status),
                "output": [
                    ["type": "reasoning", "content": [["type": "reasoning_text", "text": "think"]]],
                    ["type": "message", "content": [["type": "output_text", "text": .string(text)]]]
                ]
            ]
            if status == "incomplete" { r["incomplete_details"] = ["reason": "max_output_tokens"] }
            return r
        }
        #expect(AnswerCheck.problem(responseFormat: schema, body: response(#"{"a":1}"#), endpoint: .responses) == nil)
        #expect(
            AnswerCheck.problem(responseFormat: schema, body: response("{}"), endpoint: .responses)?.code
                == "schema_mismatch")
        #expect(
            AnswerCheck.problem(
                responseFormat: schema, body: response(#"{"a"#, status: "incomplete"), endpoint: .responses)?
                .code == "truncated")
        let dropped = APIEndpoint.responses.droppingReasoning(response("x"))
        #expect(dropped["output"]?.arrayValue?.map { $0["type"] } == ["message"])
        let text: JSON = ["object": "text_completion", "choices": [["text": "ab", "finish_reason": "stop"]]]
        #expect(AnswerReading.usage(text, promptEstimate: 5, endpoint: .completions) == (5, 1, true))
    }
}
