import ChatBatchCore
import FakeGateway
import Foundation
import Testing

@testable import ChatBatch

@Suite("Bad input: clear messages with file and line, and the valid lines still run")
struct InputValidationTests {
    /// Each bad line, and a word its message must contain.
    static let corpus: [(line: String, reason: String)] = [
        (#"{"custom_id":"a","prompt":"x""#, "not valid JSON"),
        (#"[{"prompt":"x"}]"#, "must be a JSON object, not array"),
        (#""just a string""#, "not string"),
        (#"42"#, "not number"),
        (#"{"custom_id":"b"}"#, "expected `body`"),
        (#"{"custom_id":"c","messages":"hello"}"#, "`messages` must be an array"),
        (#"{"custom_id":"d","messages":[]}"#, "`messages` is empty"),
        (#"{"custom_id":"e","messages":[{"content":"no role"}]}"#, "role must be a string"),
        (#"{"custom_id":"f","messages":[{"role":"user","content":42}]}"#, "content must be a string"),
        (#"{"custom_id":"g","messages":["not an object"]}"#, "must be an object"),
        (#"{"custom_id":"h","prompt":17}"#, "`prompt` must be a string"),
        (#"{"custom_id":["x"],"prompt":"x"}"#, "custom_id must be"),
        (#"{"custom_id":"i","method":"GET","url":"/v1/chat/completions","body":{}}"#, "unsupported method"),
        (#"{"custom_id":"j","method":"POST","url":"/v1/images/generations","body":{"prompt":"x"}}"#, "unsupported url"),
        (
            #"{"custom_id":"k","method":"POST","url":"/v1/chat/completions","body":"text"}"#,
            "`body` must be a JSON object"
        ),
        (#"{"custom_id":"l","prompt":"x","max_tokens":9000}"#, "maximum output of 4096"),
        (#"{"custom_id":"m","prompt":"x","max_tokens":-3}"#, "positive whole number"),
        (#"{"custom_id":"n","prompt":"x","model":7}"#, "`model` must be a string"),
        (#"{"custom_id":"p0001","prompt":"duplicate of the first line"}"#, "duplicate custom_id"),
        (#"{"custom_id":"o","prompt":"x"} trailing"#, "unexpected text after"),
        (#"{"custom_id":"q","prompt":"\ud800"}"#, "surrogate"),
        (
            #"{"custom_id":"r","prompt":"x","max_tokens":4000,"messages":[{"role":"user","content":"\#(String(repeating: "w", count: 520_000))"}]}"#,
            "exceed the model's context"
        )
    ]

    @Test func everyKindOfBadLineIsReportedWithFileAndLineWhileValidLinesRun() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start()
        defer { g.shutdown() }
        var lines = promptLines(3)
        lines += Self.corpus.map(\.line)
        lines.append(#"{"custom_id":"last","prompt":"still runs"}"#)
        var data = Data(lines.map { $0 + "\n" }.joined().utf8)
        data.append(contentsOf: [0x7B, 0x22, 0x70, 0x22, 0x3A, 0x22, 0xFF, 0xFE, 0x22, 0x7D, 0x0A])  // invalid UTF-8
        data.append(
            Data(("{\"custom_id\":\"big\",\"prompt\":\"" + String(repeating: "x", count: 10 << 20) + "\"}\n").utf8))
        _ = FileManager.default.createFile(atPath: scratch.file("in.jsonl"), contents: data)
        let (summary, messages) = try runJob(settings(scratch, g))
        #expect(summary.done == 4)
        #expect(summary.invalid == Self.corpus.count + 2)
        #expect(summary.exit == .doneWithFailures)
        let errors = scratch.lines("out.errors.jsonl")
        #expect(errors.count == Self.corpus.count + 2)
        for (i, bad) in Self.corpus.enumerated() {
            let lineNumber = 4 + i
            let entry = errors.first {
                $0["error"]?["message"]?.stringValue?.contains("in.jsonl:\(lineNumber): ") == true
            }
            #expect(entry?["error"]?["code"] == "invalid_line", "line \(lineNumber)")
            #expect(
                entry?["error"]?["message"]?.stringValue?.contains(bad.reason) == true,
                "line \(lineNumber): \(entry?["error"]?["message"]?.stringValue ?? "none") lacks '\(bad.reason)'")
        }
        #expect(errors.contains { $0["error"]?["message"]?.stringValue?.contains("invalid UTF-8") == true })
        #expect(errors.contains { $0["error"]?["message"]?.stringValue?.contains("MiB a line may hold") == true })
        #expect(messages.contains { $0.contains("in.jsonl:4: ") })
        // Nothing invalid reached the gateway; a second run neither sends nor reports them again.
        #expect(g.ledger.snapshot().count == 4)
        let (again, _) = try runJob(settings(scratch, g))
        #expect(again.attempts == 0 && again.invalid == 0)
        #expect(scratch.lines("out.errors.jsonl").count == errors.count)
    }

    @Test func strictRefusesTheWholeRunBeforeSending() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start()
        defer { g.shutdown() }
        scratch.write("in.jsonl", lines: promptLines(5) + ["{broken"])
        var s = settings(scratch, g)
        s.strict = true
        let (summary, messages) = try runJob(s)
        #expect(summary.exit == .usageOrInput)
        #expect(messages.contains { $0.contains("in.jsonl:6: not valid JSON") })
        #expect(g.ledger.snapshot().isEmpty)
    }

    @Test func byteOrderMarkCRLFAndBlankLinesAreAccepted() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start()
        defer { g.shutdown() }
        let text =
            "\u{FEFF}{\"custom_id\":\"a\",\"prompt\":\"x\"}\r\n\r\n   \n{\"custom_id\":\"b\",\"prompt\":\"y\"}\r\n{\"custom_id\":\"c\",\"prompt\":\"no newline at the end\"}"
        _ = FileManager.default.createFile(atPath: scratch.file("in.jsonl"), contents: Data(text.utf8))
        let (summary, _) = try runJob(settings(scratch, g))
        #expect(summary.exit == .allDone && summary.done == 3 && summary.invalid == 0)
    }

    @Test func emptyMissingAndDirectoryInputs() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start()
        defer { g.shutdown() }
        scratch.write("in.jsonl", lines: [])
        let (empty, _) = try runJob(settings(scratch, g))
        #expect(empty.exit == .allDone && empty.inputLines == 0)
        let (missing, _) = try runJob(settings(scratch, g, input: "nope.jsonl"))
        #expect(missing.exit == .usageOrInput)
        #expect(missing.stopReason?.contains("nope.jsonl: no such input file") == true)
        try FileManager.default.createDirectory(atPath: scratch.file("dir.jsonl"), withIntermediateDirectories: false)
        let (directory, _) = try runJob(settings(scratch, g, input: "dir.jsonl"))
        #expect(directory.exit == .usageOrInput)
        #expect(directory.stopReason?.contains("is a directory") == true)
    }

    @Test func templatedRecordsFromAJobFile() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start()
        defer { g.shutdown() }
        scratch.write(
            "records.jsonl", lines: [#"{"id":17,"text":"Ada <Lovelace> & co"}"#, #"{"id":18,"text":"Grace Hopper"}"#])
        let yaml = """
            input: records.jsonl
            output: out.jsonl
            base_url: \(g.baseURL)
            template: "Extract people from: {{text}}"
            id_field: id
            system: Be brief.
            request:
              max_tokens: 300
              temperature: 0
            """
        _ = FileManager.default.createFile(atPath: scratch.file("job.yaml"), contents: Data(yaml.utf8))
        let s = try JobFile.load(path: scratch.file("job.yaml"))
        #expect(s.input == scratch.file("records.jsonl"))
        let (summary, _) = try runJob(s)
        #expect(summary.done == 2)
        let first = try #require(scratch.lines("out.jsonl").first { $0["custom_id"] == "17" })
        let content =
            first["response"]?["body"]?["choices"]?.arrayValue?.first?["message"]?["content"]?.stringValue ?? ""
        #expect(content.contains("Extract people from: Ada <Lovelace> &"))  // raw text: no HTML escaping
    }

    @Test func jobFileMistakesAreNamed() throws {
        let scratch = Scratch()
        _ = FileManager.default.createFile(
            atPath: scratch.file("job.yaml"), contents: Data("input: x.jsonl\nconcurency: 8\n".utf8))
        #expect { try JobFile.load(path: scratch.file("job.yaml")) } throws: {
            ($0 as? ChatBatchError)?.message.contains("unknown setting `concurency`") == true
        }
        _ = FileManager.default.createFile(atPath: scratch.file("bad.yaml"), contents: Data("input: [unclosed\n".utf8))
        #expect { try JobFile.load(path: scratch.file("bad.yaml")) } throws: {
            ($0 as? ChatBatchError)?.message.contains("not valid YAML") == true
        }
    }
}
