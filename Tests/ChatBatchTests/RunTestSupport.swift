import ChatBatchCore
import FakeGateway
import Foundation
import Synchronization
import TestSupport
import Testing

@testable import ChatBatch

/// A scratch folder for one test, removed when the test ends.
final class Scratch {
    let path: String
    init() {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("chatbatch-test-\(UUID().uuidString)").path
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }

    func file(_ name: String) -> String { path + "/" + name }

    /// Writes JSON lines (or raw strings) as a JSONL file and returns its path.
    @discardableResult
    func write(_ name: String, lines: [String]) -> String {
        let p = file(name)
        _ = FileManager.default.createFile(atPath: p, contents: Data(lines.map { $0 + "\n" }.joined().utf8))
        return p
    }

    func lines(_ name: String) -> [JSON] {
        guard let text = try? String(contentsOfFile: file(name), encoding: .utf8) else { return [] }
        return text.split(separator: "\n").map { (try? JSON.parse(String($0))) ?? .string("UNPARSEABLE: \($0)") }
    }
}

/// `n` prompt lines with ids p0001....
func promptLines(_ n: Int, prefix: String = "p") -> [String] {
    (1...n).map { i in
        JSON.object(
            JSONObject([
                ("custom_id", .string(String(format: "%@%04d", prefix, i))),
                ("prompt", .string("Question number \(i)?"))
            ])
        ).serialized()
    }
}

/// Settings pointing at the gateway with the files in `scratch`.
func settings(_ scratch: Scratch, _ gateway: FakeGateway, input: String = "in.jsonl") -> JobSettings {
    var s = JobSettings()
    s.input = scratch.file(input)
    s.output = scratch.file("out.jsonl")
    s.provider = .tera
    s.baseURL = gateway.baseURL
    s.concurrency = 8
    s.retryBaseDelay = 0.01
    s.retryMaxDelay = 0.2
    s.timeout = 10
    return s
}

/// Runs a job in-process against the gateway with its key.
func runJob(_ s: JobSettings, key: String? = "sk-fake", log: (@Sendable (String) -> Void)? = nil) throws -> (
    RunSummary, [String]
) {
    let messages = Mutex<[String]>([])
    let config = try s.resolve()
    let summary = RunSession.execute(config, apiKeyOverride: key, handleSignals: false) { m in
        messages.withLock { $0.append(m) }
        log?(m)
    }
    return (summary, messages.withLock { $0 })
}

/// Every input id ends in exactly one output file, exactly once; and the gateway billed no id more than
/// once beyond the sends the checkpoint counted as possibly billed twice.
func expectExactlyOnce(
    _ scratch: Scratch, ids: [String], gateway: FakeGateway, checkpoints: [String]? = nil, resent: [[String: Int]] = [],
    sourceLocation: SourceLocation = #_sourceLocation
) throws {
    let results = scratch.lines("out.jsonl").compactMap { $0["custom_id"]?.stringValue }
    let errors = scratch.lines("out.errors.jsonl").compactMap { $0["custom_id"]?.stringValue }
    var counts: [String: Int] = [:]
    for id in results + errors { counts[id, default: 0] += 1 }
    let missing = ids.filter { counts[$0] == nil }
    let repeated = counts.filter { $0.value > 1 }
    #expect(missing.isEmpty, "missing from both files: \(missing.prefix(10))", sourceLocation: sourceLocation)
    #expect(repeated.isEmpty, "written more than once: \(repeated.prefix(10))", sourceLocation: sourceLocation)
    #expect(results.count + errors.count == ids.count, sourceLocation: sourceLocation)
    var ambiguous: [String: Int] = [:]
    for checkpoint in checkpoints ?? [scratch.file("out.jsonl.checkpoint")] {
        ambiguous.merge(try ambiguousCounts(checkpoint)) { $0 + $1 }
    }
    for counts in resent { ambiguous.merge(counts) { $0 + $1 } }
    for (id, billed) in gateway.ledger.billedCounts() where billed > 1 + (ambiguous[id] ?? 0) {
        Issue.record(
            "\(id) billed \(billed) times, only \(ambiguous[id] ?? 0) resends counted as ambiguous",
            sourceLocation: sourceLocation)
    }
}

/// Per custom_id, the sends the checkpoint counted as possibly billed twice.
func ambiguousCounts(_ checkpoint: String) throws -> [String: Int] {
    let db = try SQLiteDatabase(path: checkpoint, readOnly: true)
    var out: [String: Int] = [:]
    for row in try db.query("SELECT custom_id, ambiguous FROM requests WHERE ambiguous > 0") {
        out[row[0].text ?? ""] = row[1].int ?? 0
    }
    return out
}

func checkpointRows(_ checkpoint: String, where condition: String = "1=1") throws -> [[SQLiteValue]] {
    try SQLiteDatabase(path: checkpoint, readOnly: true).query(
        "SELECT custom_id, state, attempts, error_code FROM requests WHERE \(condition) ORDER BY custom_id")
}

/// The chatbatch executable built beside the tests.
func chatbatchBinary() -> String {
    if let p = ProcessInfo.processInfo.environment["CHATBATCH_BIN"] { return p }
    let dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    var candidate = dir.appendingPathComponent("chatbatch").path
    if !FileManager.default.fileExists(atPath: candidate) {
        candidate = dir.deletingLastPathComponent().appendingPathComponent("chatbatch").path
    }
    return candidate
}

/// Writes `job.yaml` for the binary: in.jsonl → out.jsonl on the gateway, key from `CB_TEST_KEY`, plus `extra` YAML
/// lines.
func writeJob(_ scratch: Scratch, _ gateway: FakeGateway, concurrency: Int = 8, extra: [String] = []) {
    let yaml =
        [
            "input: in.jsonl", "output: out.jsonl", "provider: openai-compatible", "model: openai/gpt-oss-120b",
            "base_url: \(gateway.baseURL)", "api_key_env: CB_TEST_KEY", "concurrency: \(concurrency)"
        ] + extra
    _ = FileManager.default.createFile(
        atPath: scratch.file("job.yaml"), contents: Data(yaml.joined(separator: "\n").utf8))
}

/// Starts a program with the fake gateway's key in `CB_TEST_KEY` and `environment` added; output to /dev/null unless
/// given.
func launch(
    _ executable: String, _ arguments: [String], environment: [String: String] = [:], stderr: Any? = nil,
    stdout: Any? = nil
) throws -> Process {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: executable)
    p.arguments = arguments
    var env = ProcessInfo.processInfo.environment
    env["CB_TEST_KEY"] = "sk-fake"
    for (k, v) in environment { env[k] = v }
    p.environment = env
    p.standardError = stderr ?? FileHandle(forWritingAtPath: "/dev/null")
    p.standardOutput = stdout ?? FileHandle(forWritingAtPath: "/dev/null")
    try p.run()
    return p
}

/// Runs a program to its end and returns its exit status and what it wrote to stderr (or to stdout, with
/// `captureStdout`).
func runToEnd(
    _ executable: String, _ arguments: [String], environment: [String: String] = [:], captureStdout: Bool = false
) throws -> (Int32, String) {
    let err = Pipe()
    let p = try launch(executable, arguments, environment: environment, stderr: err, stdout: captureStdout ? err : nil)
    let text = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    p.waitUntilExit()
    return (p.terminationStatus, text)
}

/// True in CI (`CI=true`): `.ci/run` installs every tool the tests use, so there no test may skip for a missing one.
let inCI = ProcessInfo.processInfo.environment["CI"] == "true"

/// A test that needs a tool: it runs when `available` holds, and always in CI, where a missing tool then fails it
/// (never a skip that reads as a pass). Elsewhere the runner counts it as skipped, saying `why`.
func needs(_ why: Comment, _ available: @escaping @Sendable () -> Bool) -> ConditionTrait {
    .enabled(if: inCI || available(), why)
}

/// Runs a job in-process on a thread of its own; the closure returned waits for it and gives its summary.
func runJobInBackground(_ s: JobSettings) -> () -> RunSummary? {
    let done = DispatchSemaphore(value: 0)
    let result = Mutex<RunSummary?>(nil)
    Thread {
        let summary = try? runJob(s).0
        result.withLock { $0 = summary }
        done.signal()
    }.start()
    return {
        done.wait()
        return result.withLock { $0 }
    }
}

/// The peak resident memory, in kB, that `/usr/bin/time -f maxrss_kb=%M` printed among `text` (Int.max if none).
func peakRSSKilobytes(_ text: String) -> Int {
    text.split(separator: "\n").first { $0.hasPrefix("maxrss_kb=") }.flatMap { Int($0.dropFirst(10)) } ?? .max
}

/// The sharded examples' work folder: `jobs/in.jsonl` (`lines` prompts and one invalid line), `jobs/extract.yaml` on
/// the
/// gateway at concurrency 4, and `keys/key-0` … `key-3` (mode `keyMode`), under `folder` of `scratch`.
func writeShardedExample(_ scratch: Scratch, under folder: String, _ gateway: FakeGateway, lines: Int, keyMode: mode_t)
    throws
{
    let base = folder.isEmpty ? "" : folder + "/"
    for dir in ["\(base)jobs", "\(base)out", "keys"] {
        try FileManager.default.createDirectory(atPath: scratch.file(dir), withIntermediateDirectories: true)
    }
    scratch.write("\(base)jobs/in.jsonl", lines: promptLines(lines) + ["{\"custom_id\":\"broken\"}"])
    let job = [
        "input: in.jsonl", "provider: openai-compatible", "model: openai/gpt-oss-120b", "base_url: \(gateway.baseURL)",
        "concurrency: 4"
    ]
    try job.joined(separator: "\n").write(
        toFile: scratch.file("\(base)jobs/extract.yaml"), atomically: true, encoding: .utf8)
    for i in 0..<4 {
        try "sk-fake\n".write(toFile: scratch.file("keys/key-\(i)"), atomically: true, encoding: .utf8)
        chmod(scratch.file("keys/key-\(i)"), keyMode)
    }
}
