import ChatBatchCore
import FakeGateway
import Foundation
import Testing

@testable import ChatBatch

/// A rerun of a finished job proves the input unchanged by its fingerprint instead of re-reading every line,
/// and falls back to the line-level check whenever anything could differ.
@Suite("Resume of a finished run: the input fingerprint")
struct ResumeFingerprintTests {
    func modificationTime(_ path: String) -> timespec {
        var st = stat()
        stat(path, &st)
        return st.st_mtim
    }

    /// Puts back a modification time, to the nanosecond.
    func setModificationTime(_ path: String, _ t: timespec) {
        var times = [t, t]
        #expect(utimensat(AT_FDCWD, path, &times, 0) == 0)
    }

    @Test func aFinishedRunIsNotReadAgainAndItsCountsAndFilesStay() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start { $0.script = ["p0003": [.badRequest]] }
        defer { g.shutdown() }
        scratch.write("in.jsonl", lines: promptLines(30) + ["not json"])
        let s = settings(scratch, g)
        let (first, _) = try runJob(s)
        #expect(!first.inputUnchanged && first.done == 29 && first.failed == 1 && first.invalid == 1)
        let files = try ["out.jsonl", "out.errors.jsonl"].map {
            try Data(contentsOf: URL(fileURLWithPath: scratch.file($0)))
        }
        let (again, _) = try runJob(s)
        #expect(again.inputUnchanged && again.attempts == 0)
        #expect(
            again.inputLines == 31 && again.alreadyDone == 29 && again.alreadyFailed == 2
                && again.exit == .doneWithFailures)
        #expect(abs(again.checkpointCost - first.cost) < 1e-12 && again.leftPending == 0)
        #expect(again.text.contains("not read again"))
        #expect(
            try ["out.jsonl", "out.errors.jsonl"].map { try Data(contentsOf: URL(fileURLWithPath: scratch.file($0))) }
                == files)
        // A lost output file is still rebuilt from the checkpoint.
        try FileManager.default.removeItem(atPath: scratch.file("out.jsonl"))
        let (rebuilt, _) = try runJob(s)
        #expect(rebuilt.inputUnchanged && rebuilt.attempts == 0)
        #expect(try Data(contentsOf: URL(fileURLWithPath: scratch.file("out.jsonl"))) == files[0])
        // --retry-failed reads the input and sends the failed line again.
        var retry = s
        retry.retryFailed = true
        let (retried, _) = try runJob(retry)
        #expect(!retried.inputUnchanged && retried.attempts == 1)
    }

    @Test func oneChangedByteAtTheSameSizeAndTimeIsStillCaught() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start()
        defer { g.shutdown() }
        let path = scratch.write("in.jsonl", lines: promptLines(20))
        _ = try runJob(settings(scratch, g))
        let mtime = modificationTime(path)
        var text = try String(contentsOfFile: path, encoding: .utf8)
        text = text.replacingOccurrences(of: "Question number 7?", with: "Question number 8?")
        try text.write(toFile: path, atomically: false, encoding: .utf8)
        setModificationTime(path, mtime)
        let (again, _) = try runJob(settings(scratch, g))
        #expect(!again.inputUnchanged && again.changed == 1 && again.exit == .usageOrInput)
    }

    @Test func aChangedRequestSettingIsCaught() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start()
        defer { g.shutdown() }
        scratch.write("in.jsonl", lines: promptLines(10))
        var s = settings(scratch, g)
        _ = try runJob(s)
        s.request = JSONObject([("temperature", .double(0.7))])
        let (again, _) = try runJob(s)
        #expect(!again.inputUnchanged && again.changed == 10 && again.attempts == 0)
    }

    @Test func aRunThatDoesNotFinishForgetsTheRecordBeforeItSends() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start { $0.apiKeys = ["sk-fake"] }
        defer { g.shutdown() }
        let path = scratch.write("in.jsonl", lines: promptLines(10))
        let original = try Data(contentsOf: URL(fileURLWithPath: path))
        let mtime = modificationTime(path)
        _ = try runJob(settings(scratch, g))
        // A grown input with a wrong key: the run stops at the first request, leaving the new line pending.
        scratch.write("in.jsonl", lines: promptLines(11))
        let (stopped, _) = try runJob(settings(scratch, g), key: "sk-wrong")
        #expect(stopped.exit == .stoppedEarly)
        // The original bytes and time are back, but the record is gone: the line-level check runs, and the
        // pending line (no longer in the input) is reported, not hidden.
        try original.write(to: URL(fileURLWithPath: path))
        setModificationTime(path, mtime)
        let (again, _) = try runJob(settings(scratch, g))
        #expect(!again.inputUnchanged && again.alreadyDone == 10 && again.leftPending == 1)
    }
}
