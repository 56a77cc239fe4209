@testable import ChatBatch
import ChatBatchCore
import FakeGateway
import Foundation
import Testing

/// `jobs/slurm-array.sh` as Slurm would run it: four array tasks, then the merge job it submits.
@Suite("The Slurm array example")
struct SlurmExampleTests {
    @Test func fourArrayTasksAndTheMergeTheySubmitLandEveryLineOnce() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start()
        defer { g.shutdown() }
        let fm = FileManager.default
        for dir in ["jobs", "keys", "bin", "out"] { try fm.createDirectory(atPath: scratch.file(dir), withIntermediateDirectories: true) }
        scratch.write("jobs/in.jsonl", lines: promptLines(60))
        let job = ["input: in.jsonl", "provider: openai-compatible", "model: openai/gpt-oss-120b", "base_url: \(g.baseURL)", "api_key_env: TERA_API_KEY"]
        try job.joined(separator: "\n").write(toFile: scratch.file("jobs/extract.yaml"), atomically: true, encoding: .utf8)
        for i in 0..<4 { try "sk-fake\n".write(toFile: scratch.file("keys/key-\(i)"), atomically: true, encoding: .utf8) }
        // A stand-in for sbatch: it records the command it was asked to submit.
        let sbatch = "#!/bin/sh\nfor a in \"$@\"; do case \"$a\" in --wrap=*) printf '%s\\n' \"${a#--wrap=}\" >> \"$WORK/submitted\";; esac; done\n"
        try sbatch.write(toFile: scratch.file("bin/sbatch"), atomically: true, encoding: .utf8)
        try fm.createSymbolicLink(atPath: scratch.file("bin/chatbatch"), withDestinationPath: chatbatchBinary())
        chmod(scratch.file("bin/sbatch"), 0o755)
        let script = ArchitectureTests.root.appendingPathComponent("jobs/slurm-array.sh").path
        let path = scratch.file("bin") + ":" + (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin")
        for i in 0..<4 {
            let (code, stderr) = try runToEnd("/bin/bash", [script], environment: [
                "WORK": scratch.path, "PATH": path, "SLURM_ARRAY_TASK_ID": "\(i)", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_JOB_ID": "77",
            ])
            #expect(code == 0, "task \(i): \(stderr)")
        }
        let submitted = try String(contentsOfFile: scratch.file("submitted"), encoding: .utf8).split(separator: "\n")
        #expect(submitted.count == 1)
        let (code, stderr) = try runToEnd("/bin/sh", ["-c", String(submitted[0])], environment: ["PATH": path])
        #expect(code == 0, "\(stderr)")
        let ids = scratch.lines("out/extract.jsonl").compactMap { $0["custom_id"]?.stringValue }
        #expect(ids.count == 60 && Set(ids) == Set((1...60).map { String(format: "p%04d", $0) }))
        #expect(g.ledger.billedCounts().values.allSatisfy { $0 == 1 } && g.ledger.snapshot().count == 60)
        let summary = try JSON.parse(String(contentsOfFile: scratch.file("out/summary.json"), encoding: .utf8))
        #expect(summary["done"] == 60 && summary["shards"] == 4)
    }
}
