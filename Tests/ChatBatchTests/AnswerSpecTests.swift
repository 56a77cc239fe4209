import ChatBatchCore
import Testing

@testable import ChatBatch

/// What real servers send and what the specifications say, checked without HTTP.
@Suite("Answers as real servers send them, schemas as the spec counts")
struct AnswerSpecTests {
    func violation(_ value: String, _ schema: String) throws -> String? {
        SchemaValidator.firstViolation(try JSON.parse(value), try JSON.parse(schema))
    }

    @Test func lengthsCountCodePointsNotGraphemeClusters() throws {
        // "e\u0301e\u0301" is two grapheme clusters and four code points; "a\r\nb" likewise.
        #expect(try violation(#""e\u0301e\u0301""#, #"{"type":"string","minLength":4}"#) == nil)
        #expect(try violation(#""a\r\nb""#, #"{"type":"string","minLength":4,"maxLength":4}"#) == nil)
        // two code points (four UTF-16 units)
        #expect(try violation(#""😀😀""#, #"{"type":"string","maxLength":2}"#) == nil)
        #expect(try violation(#""abc""#, #"{"type":"string","maxLength":2}"#) != nil)
    }

    @Test func theOtherKeywordsFollowTheSpec() throws {
        #expect(try violation("1.0", #"{"type":"integer"}"#) == nil)  // 1.0 is an integer
        #expect(try violation("1", #"{"enum":[1.0, 2]}"#) == nil)  // numbers equal by value
        #expect(try violation("1", #"{"const":1.0}"#) == nil)
        #expect(try violation(#"{"b":1,"a":2}"#, #"{"const":{"a":2,"b":1}}"#) == nil)  // objects regardless of order
        #expect(try violation("5", #"{"oneOf":[{"minimum":0},{"maximum":10}]}"#) != nil)  // both match: not exactly one
        #expect(try violation("5", #"{"allOf":[{"minimum":0},{"maximum":4}]}"#) != nil)
        #expect(try violation("5", #"{"not":{"type":"integer"}}"#) != nil)
        #expect(try violation(#""ab1""#, #"{"pattern":"^[a-z]+$"}"#) != nil)
        #expect(try violation(#""x-12""#, #"{"pattern":"[0-9]+"}"#) == nil)  // unanchored search
        #expect(try violation("0.3", #"{"multipleOf":0.1}"#) == nil)
        #expect(try violation("0.35", #"{"multipleOf":0.1}"#) != nil)
        #expect(try violation("[1,1]", #"{"uniqueItems":true}"#) != nil)
        #expect(
            try violation("[1,\"a\"]", #"{"prefixItems":[{"type":"integer"},{"type":"string"}],"items":false}"#) == nil)
        #expect(
            try violation("[1,\"a\",3]", #"{"prefixItems":[{"type":"integer"},{"type":"string"}],"items":false}"#)
                != nil)
        #expect(try violation("[1,2]", #"{"contains":{"type":"string"}}"#) != nil)
        #expect(try violation(#"{"a":1}"#, #"{"minProperties":2}"#) != nil)
        #expect(
            try violation(
                #"{"x_1":1,"y":2}"#, #"{"patternProperties":{"^x_":{"type":"integer"}},"additionalProperties":false}"#)
                != nil)
        let defs =
            ##"{"$defs":{"p":{"type":"object","required":["name"]}},"type":"array","items":{"$ref":"#/$defs/p"}}"##
        #expect(try violation(#"[{"name":"a"},{}]"#, defs)?.contains("$[1]") == true)
        #expect(try violation("5", #"{"if":{"minimum":3},"then":{"maximum":4}}"#) != nil)
        #expect(try violation("5", #"{"exclusiveMinimum":5}"#) != nil)
        #expect(try violation("5", #"{"minimum":5,"exclusiveMinimum":true}"#) != nil)  // draft 4's boolean form
        #expect(try violation(#""not-an-email""#, #"{"format":"email"}"#) == nil)  // format is an annotation
    }

    @Test func errorCodesPreferTheCodeThenAMeaningfulTypeThenTheStatus() {
        func id(_ body: String, _ status: Int = 400) -> String {
            ServerError(status: status, body: Array(body.utf8)).identifier
        }
        #expect(
            id(#"{"error":{"message":"m","type":"invalid_request_error","code":"model_not_found"}}"#)
                == "model_not_found")
        // LiteLLM's placeholders
        #expect(id(#"{"error":{"message":"m","type":"None","code":"None"}}"#, 401) == "http_401")
        #expect(id(#"{"error":{"message":"m","type":"None","code":"no_db_connection"}}"#) == "no_db_connection")
        #expect(
            // llama.cpp
            id(#"{"error":{"code":400,"message":"bad","type":"invalid_request_error"}}"#) == "invalid_request_error")
        #expect(id("<html>bad gateway</html>", 502) == "http_502")
    }

    @Test func requestIDsComeFromTheProfilesHeaderThenOthersThenTheBody() {
        let body: JSON = ["id": "chatcmpl-1"]
        #expect(
            AnswerReading.requestID(
                headers: ["x-tera-request-id": "t", "x-request-id": "r"], body: body,
                profileHeaders: ["x-tera-request-id"]) == "t")
        // The run's own profile's header comes first, whatever the others' order.
        #expect(
            AnswerReading.requestID(
                headers: ["x-tera-request-id": "t", "x-request-id": "r"], body: body, profileHeaders: ["x-request-id"])
                == "r")
        #expect(AnswerReading.requestID(headers: ["x-request-id": "r"], body: body, profileHeaders: []) == "r")
        #expect(AnswerReading.requestID(headers: ["x-litellm-call-id": "l"], body: body, profileHeaders: []) == "l")
        #expect(AnswerReading.requestID(headers: [:], body: body, profileHeaders: []) == "chatcmpl-1")
    }

    @Test func onlyAColdBackendsServiceUnavailableEarnsTheWarmUpsPatience() throws {
        let config = try SchedulingTests.config { $0.maxAttempts = 3 }
        let job = SchedulingTests.job(SchedulingTests.request("x"), attempt: 3)
        guard
            case .retry(_, _, _, let warming) = SchedulingTests.effect(
                SchedulingTests.response(503), job, config: config, warmingUp: true
            ).outcome
        else {
            Issue.record("a 503 on the warm-up probe is waited out")
            return
        }
        #expect(warming)
        guard
            case .failed = SchedulingTests.effect(SchedulingTests.response(500), job, config: config, warmingUp: true)
                .outcome
        else {
            Issue.record("a 500 uses up the probe's attempts like any other line's")
            return
        }
    }

    @Test func aReadingSaysWhatA200HoldsWhenItIsNotAnAnswer() {
        func problem(_ body: String, stream: Bool = false, type: String? = nil) -> String? {
            AnswerReading(
                status: 200, headers: type.map { ["content-type": $0] } ?? [:], bytes: Array(body.utf8),
                askedToStream: stream
            ).problem?.code
        }
        #expect(problem(#"{"choices":[]}"#) == "no_choices")
        #expect(problem(#"{"error":{"message":"boom"}}"#) == "error_in_answer")
        #expect(problem("<html></html>", type: "text/html") == "bad_response")
        #expect(
            problem(
                "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: {\"error\":{\"message\":\"x\"}}\n\ndata: [DONE]\n\n",
                stream: true) == "error_in_answer")
        #expect(problem("data: [DONE]\n\n", stream: true) == "no_choices")
        #expect(
            // stream ignored: taken
            problem(#"{"choices":[{"message":{"content":"plain"}}]}"#, stream: true, type: "application/json") == nil)
        let repaired = AnswerReading(
            status: 200, headers: [:], bytes: Array(#"{"choices":[{"message":{"content":"a\ud800b"}}]}"#.utf8),
            askedToStream: false)
        #expect(repaired.problem == nil && repaired.repaired)
    }
}
