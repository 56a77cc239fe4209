import CSQLite
import ChatBatchCore
import FakeGateway
import Foundation
import Testing

@testable import ChatBatch

@Suite("Checkpoint: refusals, export, and a full disk")
struct CheckpointTests {
    @Test func foreignDamagedAndNewerCheckpointsAreRefusedUntouched() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start()
        defer { g.shutdown() }
        scratch.write("in.jsonl", lines: promptLines(3))
        let checkpoint = scratch.file("out.jsonl.checkpoint")

        // Another program's SQLite file.
        var db: OpaquePointer?
        sqlite3_open(checkpoint, &db)
        sqlite3_exec(db, "CREATE TABLE invoices(id INTEGER); INSERT INTO invoices VALUES(1)", nil, nil, nil)
        sqlite3_close(db)
        let foreign = try Data(contentsOf: URL(fileURLWithPath: checkpoint))
        let (a, _) = try runJob(settings(scratch, g))
        #expect(a.exit == .usageOrInput)
        #expect(a.stopReason?.contains("another program") == true)
        #expect(try Data(contentsOf: URL(fileURLWithPath: checkpoint)) == foreign)

        // Not SQLite at all.
        _ = FileManager.default.createFile(atPath: checkpoint, contents: Data("{\"hello\": 1}\n".utf8))
        let (b, _) = try runJob(settings(scratch, g))
        #expect(b.exit == .usageOrInput)
        #expect(b.stopReason?.contains("not a chatbatch checkpoint") == true)

        // A real checkpoint, truncated.
        try FileManager.default.removeItem(atPath: checkpoint)
        // a new checkpoint does not overwrite outputs it did not write
        try? FileManager.default.removeItem(atPath: scratch.file("out.jsonl"))
        _ = try runJob(settings(scratch, g))
        let whole = try Data(contentsOf: URL(fileURLWithPath: checkpoint))
        try whole.prefix(whole.count / 2).write(to: URL(fileURLWithPath: checkpoint))
        try? FileManager.default.removeItem(atPath: checkpoint + "-wal")
        let (c, _) = try runJob(settings(scratch, g))
        #expect(c.exit == .usageOrInput, "\(c.stopReason ?? "")")
        #expect(c.stopReason?.contains("damaged") == true)

        // A newer schema version.
        try FileManager.default.removeItem(atPath: checkpoint)
        try? FileManager.default.removeItem(atPath: scratch.file("out.jsonl"))
        _ = try runJob(settings(scratch, g))
        sqlite3_open(checkpoint, &db)
        sqlite3_exec(db, "UPDATE meta SET value='99' WHERE key='schema_version'", nil, nil, nil)
        sqlite3_close(db)
        let (d, _) = try runJob(settings(scratch, g))
        #expect(d.exit == .usageOrInput)
        #expect(d.stopReason?.contains("newer chatbatch") == true)
        #expect(g.ledger.snapshot().count == 6)  // only the two real runs sent anything
    }

    @Test func exportRebuildsTheSameLinesInEitherOrderAndFormat() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start { $0.script = ["p0004": [.badRequest]] }
        defer { g.shutdown() }
        scratch.write("in.jsonl", lines: promptLines(30) + ["not json"])
        _ = try runJob(settings(scratch, g))
        let results = try String(contentsOfFile: scratch.file("out.jsonl"), encoding: .utf8)
        let errors = try String(contentsOfFile: scratch.file("out.errors.jsonl"), encoding: .utf8)
        try? FileManager.default.removeItem(atPath: scratch.file("out.jsonl"))
        try FileManager.default.removeItem(atPath: scratch.file("out.errors.jsonl"))
        let report = try CheckpointExport.export(
            checkpoint: scratch.file("out.jsonl.checkpoint"), results: nil, errors: nil, order: .completion,
            format: .batch)
        #expect(report.results == 29 && report.errors == 2)
        #expect(try String(contentsOfFile: scratch.file("out.jsonl"), encoding: .utf8) == results)
        #expect(try String(contentsOfFile: scratch.file("out.errors.jsonl"), encoding: .utf8) == errors)
        // Input order, flat, elsewhere.
        _ = try CheckpointExport.export(
            checkpoint: scratch.file("out.jsonl.checkpoint"), results: scratch.file("flat.jsonl"),
            errors: scratch.file("flat.errors.jsonl"), order: .input, format: .flat)
        let flat = scratch.lines("flat.jsonl").compactMap { $0["custom_id"]?.stringValue }
        #expect(flat == (1...30).map { String(format: "p%04d", $0) }.filter { $0 != "p0004" })
        // The run's own files still resume cleanly after an export replaced them.
        let (again, _) = try runJob(settings(scratch, g))
        #expect(again.attempts == 0)
        #expect(try String(contentsOfFile: scratch.file("out.jsonl"), encoding: .utf8) == results)
    }

    @Test func fullDiskStopsClearlyAndTheResumePaysNothingTwice() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start()
        defer { g.shutdown() }
        scratch.write("in.jsonl", lines: promptLines(200))
        let yaml = """
            input: in.jsonl
            output: out.jsonl
            checkpoint: /tmp/chatbatch-fulldisk-\(UUID().uuidString).checkpoint
            base_url: \(g.baseURL)
            api_key_env: CB_TEST_KEY
            concurrency: 8
            """
        _ = FileManager.default.createFile(atPath: scratch.file("job.yaml"), contents: Data(yaml.utf8))
        let checkpoint = yaml.split(separator: "\n").first { $0.hasPrefix("checkpoint:") }!.dropFirst(12)
            .trimmingCharacters(in: .whitespaces)
        defer { for s in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: checkpoint + s) } }
        // ulimit -f caps every file the process writes, so the results file or the checkpoint, whichever grows
        // past 60 KiB first, fails its write; either way the run must stop clearly and resume without paying twice.
        func run(limitKiB: Int?) throws -> (Int32, String) {
            let limit = limitKiB.map { "ulimit -f \($0 * 2); " } ?? ""  // dash counts 512-byte blocks
            return try runToEnd(
                "/bin/sh", ["-c", "\(limit)exec \"$0\" run \"$1\"", chatbatchBinary(), scratch.file("job.yaml")])
        }
        let (status, stderr) = try run(limitKiB: 60)
        #expect(status == 4, "\(stderr)")
        #expect(stderr.contains("file size limit") && stderr.contains("run the same command again"), "\(stderr)")
        let (resumed, _) = try run(limitKiB: nil)
        #expect(resumed == 0)
        try expectExactlyOnceWithCheckpoint(
            scratch, checkpoint: checkpoint, ids: (1...200).map { String(format: "p%04d", $0) }, gateway: g)
    }

    func expectExactlyOnceWithCheckpoint(_ scratch: Scratch, checkpoint: String, ids: [String], gateway: FakeGateway)
        throws
    {
        let results = scratch.lines("out.jsonl").compactMap { $0["custom_id"]?.stringValue }
        #expect(results.sorted() == ids.sorted())
        let ambiguous = try ambiguousCounts(checkpoint)
        for (id, billed) in gateway.ledger.billedCounts() {
            #expect(billed <= 1 + (ambiguous[id] ?? 0), "\(id) billed \(billed) times")
        }
    }
}
