import ChatBatchCore
import FakeGateway
import Foundation
import TestSupport
import Testing

@testable import ChatBatch

@Suite("Structured outputs, reasoning, tool calls and streaming, end to end")
struct StructuredOutputTests {
    static let schema: JSON = [
        "type": "object",
        "properties": [
            "name": ["type": "string"], "age": ["type": "integer", "minimum": 0, "maximum": 130],
            "tags": ["type": "array", "items": ["type": "string", "enum": ["a", "b"]], "maxItems": 2]
        ],
        "required": ["name", "age"], "additionalProperties": false
    ]
    static let format: JSON = [
        "type": "json_schema", "json_schema": ["name": "person", "strict": true, "schema": schema]
    ]
    static let tools: JSON = [
        [
            "type": "function",
            "function": [
                "name": "get_weather",
                "parameters": ["type": "object", "properties": ["city": ["type": "string"]], "required": ["city"]]
            ]
        ],
        [
            "type": "function",
            "function": [
                "name": "get_time",
                "parameters": ["type": "object", "properties": ["zone": ["type": "string"]], "required": ["zone"]]
            ]
        ]
    ]

    func structured(_ scratch: Scratch, _ g: FakeGateway, lines: Int = 6) -> JobSettings {
        scratch.write("in.jsonl", lines: promptLines(lines))
        var s = settings(scratch, g)
        s.request = JSONObject([("response_format", Self.format), ("max_tokens", 400)])
        return s
    }

    @Test func schemaValidatorNamesTheFirstViolation() {
        #expect(SchemaValidator.firstViolation(["name": "x", "age": 3], Self.schema) == nil)
        #expect(SchemaValidator.firstViolation(["name": "x"], Self.schema)?.contains("missing required 'age'") == true)
        #expect(
            SchemaValidator.firstViolation(["name": "x", "age": 3, "extra": 1], Self.schema)?.contains(
                "unexpected property 'extra'") == true)
        #expect(
            SchemaValidator.firstViolation(["name": "x", "age": "3"], Self.schema)?.contains(
                "$.age: expected integer, got string") == true)
        #expect(
            SchemaValidator.firstViolation(["name": "x", "age": 200], Self.schema)?.contains("more than 130") == true)
        #expect(
            SchemaValidator.firstViolation(["name": "x", "age": 1, "tags": ["c"]], Self.schema)?.contains("$.tags[0]")
                == true)
        #expect(
            SchemaValidator.firstViolation(["name": "x", "age": 1, "tags": ["a", "b", "a"]], Self.schema)?.contains(
                "more than 2 items") == true)
    }

    @Test func validAnswersAreParsedInFlatOutput() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start()
        defer { g.shutdown() }
        var s = structured(scratch, g)
        s.format = .flat
        let (summary, _) = try runJob(s)
        #expect(summary.exit == .allDone && summary.done == 6)
        for line in scratch.lines("out.jsonl") {
            let parsed = try #require(line["parsed"])
            #expect(SchemaValidator.firstViolation(parsed, Self.schema) == nil)
        }
    }

    @Test func mismatchAndInvalidJSONFailWithTheirCodesAndTheirUsageIsCounted() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start { $0.script = ["p0002": [.mismatch], "p0003": [.badJSON]] }
        defer { g.shutdown() }
        let (summary, _) = try runJob(structured(scratch, g))
        #expect(summary.exit == .doneWithFailures)
        #expect(summary.failuresByCode == ["schema_mismatch": 1, "invalid_json": 1])
        let errors = scratch.lines("out.errors.jsonl")
        let mismatch = try #require(errors.first { $0["custom_id"] == "p0002" })
        #expect(mismatch["error"]?["code"] == "schema_mismatch")
        #expect(mismatch["error"]?["message"]?.stringValue?.contains("missing required 'name'") == true)
        // The raw answer is kept, and it was paid for.
        #expect(mismatch["response"]?["body"]?["choices"]?.arrayValue?.first?["message"]?["content"] == "{}")
        let bad = try #require(errors.first { $0["custom_id"] == "p0003" })
        #expect(bad["error"]?["code"] == "invalid_json")
        let billed = g.ledger.snapshot().filter(\.billed).reduce(0) { $0 + $1.totalTokens }
        #expect(summary.totalTokens == billed)
        let rows = try SQLiteDatabase(path: scratch.file("out.jsonl.checkpoint"), readOnly: true)
            .query("SELECT sum(prompt_tokens + completion_tokens) FROM requests")
        #expect(rows.first?.first?.int == billed)
    }

    @Test func retryInvalidAsksAgainAndCountsTheExtraSpend() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start { $0.script = ["p0001": [.badJSON, .ok], "p0002": [.mismatch, .mismatch]] }
        defer { g.shutdown() }
        var s = structured(scratch, g, lines: 3)
        s.retryInvalid = 1
        let (summary, _) = try runJob(s)
        #expect(summary.done == 2 && summary.failed == 1 && summary.invalidRetries == 2)
        #expect(g.ledger.snapshot().filter { $0.clientRequestID == "p0001" }.count == 2)
        let db = try SQLiteDatabase(path: scratch.file("out.jsonl.checkpoint"), readOnly: true)
        let billedP1 = g.ledger.snapshot().filter { $0.clientRequestID == "p0001" }.reduce(0) { $0 + $1.totalTokens }
        #expect(
            try db.query("SELECT prompt_tokens + completion_tokens FROM requests WHERE custom_id='p0001'").first?.first?
                .int == billedP1)
        #expect(scratch.lines("out.errors.jsonl").first?["error"]?["code"] == "schema_mismatch")
    }

    @Test func truncatedStructuredAnswerFailsWithItsUsageKept() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start()
        defer { g.shutdown() }
        var s = structured(scratch, g, lines: 3)
        s.request?["max_tokens"] = 12
        s.retryInvalid = 2  // truncation is not retried: the same max_tokens would cut it again
        let (summary, _) = try runJob(s)
        #expect(summary.failuresByCode == ["truncated": 3])
        #expect(summary.completionTokens == 36)
        #expect(g.ledger.snapshot().count == 3)
    }

    @Test func reasoningContentFallbackAndDropReasoning() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start { $0.reasoningField = "reasoning_content" }
        defer { g.shutdown() }
        scratch.write("in.jsonl", lines: promptLines(3))
        var s = settings(scratch, g)
        s.format = .flat
        _ = try runJob(s)
        #expect(scratch.lines("out.jsonl").allSatisfy { $0["reasoning"]?.stringValue?.isEmpty == false })
        let dropped = Scratch()
        dropped.write("in.jsonl", lines: promptLines(3))
        var d = settings(dropped, g)
        d.dropReasoning = true
        _ = try runJob(d)
        let text = try String(contentsOfFile: dropped.file("out.jsonl"), encoding: .utf8)
        #expect(!text.contains("reasoning_content") && !text.contains("The user asks"))
        #expect(dropped.lines("out.jsonl").count == 3)
    }

    @Test func streamedAndPlainRunsGiveTheSameResultsWithParallelToolCalls() throws {
        let g = try FakeGateway.start()
        defer { g.shutdown() }
        func run(stream: Bool) throws -> [JSON] {
            let scratch = Scratch()
            var lines = promptLines(8)
            lines.append(
                #"{"custom_id":"tools-1","prompt":"Weather and time in Paris","tools":\#(Self.tools.serialized())}"#)
            lines.append(
                #"{"custom_id":"schema-1","prompt":"Extract Ada, 36","response_format":\#(Self.format.serialized())}"#)
            scratch.write("in.jsonl", lines: lines)
            var s = settings(scratch, g)
            s.format = .flat
            s.stream = stream
            let (summary, _) = try runJob(s)
            #expect(summary.exit == .allDone)
            return scratch.lines("out.jsonl").map { line in
                var l = line
                for key in ["latency_ms", "request_id", "ttft_ms"] { l[key] = nil }
                return l
            }.sorted { $0["custom_id"]?.stringValue ?? "" < $1["custom_id"]?.stringValue ?? "" }
        }
        let plain = try run(stream: false)
        let streamed = try run(stream: true)
        #expect(plain == streamed)
        let tools = try #require(streamed.first { $0["custom_id"] == "tools-1" })
        let calls = try #require(tools["tool_calls"]?.arrayValue)
        #expect(calls.count == 2)
        #expect(calls.map { $0["name"]?.stringValue ?? "" } == ["get_weather", "get_time"])
        #expect(calls.allSatisfy { $0["arguments"]?.objectValue != nil })
        #expect(tools["finish_reason"] == "tool_calls")
    }

    @Test func streamCutOffMidwayIsRetriedAndCountedAsPossiblyBilled() throws {
        let scratch = Scratch()
        // Chunks far apart against the 0.8 s timeout: even a short answer cannot end in time on a loaded machine (at
        // 150 ms a short one did, once, in CI).
        let g = try FakeGateway.start { $0.streamChunkDelayMilliseconds = 500 }
        defer { g.shutdown() }
        scratch.write("in.jsonl", lines: promptLines(2))
        var s = settings(scratch, g)
        s.stream = true
        s.timeout = 0.8
        s.maxAttempts = 2
        let (summary, _) = try runJob(s)
        #expect(summary.failed == 2)
        #expect(summary.possiblyBilledTwice == 4)
        #expect(scratch.lines("out.errors.jsonl").allSatisfy { $0["error"]?["code"] == "transport_error" })
        #expect(eventually { g.ledger.snapshot().count == 4 })
        #expect(g.ledger.snapshot().allSatisfy { $0.outcome == "cancelled" && $0.billed })
    }
}
