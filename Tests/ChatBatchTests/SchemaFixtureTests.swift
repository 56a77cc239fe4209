import ChatBatchCore
import FakeGateway
import Foundation
import Testing

@testable import ChatBatch

/// Checkpoints written by the binary of each released schema (Tests/ChatBatchTests/Fixtures: three answered lines and
/// one invalid, made by the chatbatch of that version against the fake gateway) are opened, resumed and exported by
/// today's binary. A shipped upgrade step edited in place would fail here.
///
/// Made with this repository's own commits: schema 1 by e8ca615, schema 2 by 409ae89, schema 3 as it shipped by
/// 32afe9f, schema 3 with the provider column added in place by 91b87a4, and schema 4 by 2129c41 (each built in a
/// `git worktree` with `swift build`, then run on `Fixtures/in.jsonl` against `chatbatch fake-gateway` with `--provider
/// openai-compatible --model openai/gpt-oss-120b`). A new schema adds its own file here, made the same way.
@Suite("Checkpoints of every released schema")
struct SchemaFixtureTests {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")
        .path
    static let names = ["v1", "v2", "v3early", "v3late", "v4"]

    @Test(arguments: SchemaFixtureTests.names)
    func todaysBinaryOpensResumesAndExportsIt(_ name: String) throws {
        let scratch = Scratch()
        let g = try FakeGateway.start()
        defer { g.shutdown() }
        try FileManager.default.copyItem(
            atPath: Self.fixtures + "/checkpoint-\(name).sqlite", toPath: scratch.file("out.jsonl.checkpoint"))
        let input = try String(contentsOfFile: Self.fixtures + "/in.jsonl", encoding: .utf8)
        _ = FileManager.default.createFile(
            atPath: scratch.file("in.jsonl"),
            contents: Data((input + #"{"custom_id":"p0004","prompt":"Question four?"}"# + "\n").utf8))
        // Read as it is, without upgrading.
        let (status, statusText) = try runToEnd(
            chatbatchBinary(), ["status", scratch.file("out.jsonl.checkpoint")], captureStdout: true)
        #expect(status == 0 && statusText.contains("3 done"), "\(name): \(statusText)")
        // Resumed: only the new line is sent; the answered ones stand (another port: another endpoint's, kept).
        let (code, text) = try runToEnd(
            chatbatchBinary(),
            [
                "run", scratch.file("in.jsonl"), "--provider", "openai-compatible", "--base-url", g.baseURL, "--model",
                "openai/gpt-oss-120b",
                "--output", scratch.file("out.jsonl"), "--other-endpoint-answers", "keep"
            ], environment: ["OPENAI_API_KEY": "sk-fake"])
        #expect(code == 1 && g.ledger.count == 1, "\(name): \(text)")  // 1: the invalid line stays failed
        #expect(g.ledger.snapshot().first?.clientRequestID == "p0004")
        let version = try SQLiteDatabase(path: scratch.file("out.jsonl.checkpoint"), readOnly: true)
            .query("SELECT value FROM meta WHERE key='schema_version'").first?.first?.text
        #expect(version == String(CheckpointStore.schemaVersion), "\(name)")
        // Exported whole, in both formats.
        for format in ["batch", "flat"] {
            let (exported, exportText) = try runToEnd(
                chatbatchBinary(),
                [
                    "export", scratch.file("out.jsonl.checkpoint"), "--output", scratch.file("export-\(format).jsonl"),
                    "--format", format
                ], captureStdout: true)
            #expect(
                exported == 0 && exportText.contains("wrote 4 results") && exportText.contains("1 errors"),
                "\(name) \(format): \(exportText)")
        }
        #expect(
            Set(scratch.lines("export-flat.jsonl").compactMap { $0["custom_id"]?.stringValue }) == [
                "p0001", "p0002", "p0003", "p0004"
            ])
    }
}
