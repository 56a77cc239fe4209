import ChatBatchCore
import FakeGateway
import Foundation
import TestSupport
import Testing

@testable import ChatBatch

/// `jobs/k8s-work-queue.yaml` and `jobs/slurm-store-array.sh` as written, on a real PostgreSQL server: the pods'
/// arguments run as three interchangeable workers, and the array's tasks as Slurm starts them (one warned of its
/// time limit); every line ends once in the outputs the last worker writes.
@Suite(
    "The store's Kubernetes and Slurm examples",
    .serialized,
    needs("PostgreSQL's initdb and pg_ctl (Debian: apt-get install postgresql)") { PostgresServer.binaries != nil })
struct StoreExamplesTests {
    static let server = Result { try PostgresServer() }
    static let jobs = ArchitectureTests.root.appendingPathComponent("jobs")

    /// `jobs/extract.yaml`'s stand-in (in.jsonl on the gateway) and one key, under `scratch`.
    func prepare(_ scratch: Scratch, _ g: FakeGateway, lines: Int) throws {
        for dir in ["jobs", "out", "keys"] {
            try FileManager.default.createDirectory(atPath: scratch.file(dir), withIntermediateDirectories: true)
        }
        scratch.write("jobs/in.jsonl", lines: promptLines(lines) + ["{\"custom_id\":\"broken\"}"])
        try [
            "input: in.jsonl", "provider: openai-compatible", "model: openai/gpt-oss-120b",
            "base_url: \(g.baseURL)", "concurrency: 4"
        ].joined(separator: "\n").write(toFile: scratch.file("jobs/extract.yaml"), atomically: true, encoding: .utf8)
        try "sk-fake\n".write(toFile: scratch.file("keys/key"), atomically: true, encoding: .utf8)
        chmod(scratch.file("keys/key"), 0o600)
    }

    /// The outputs hold every prompt once and the broken line in the errors file.
    func expectEveryLineOnce(_ scratch: Scratch, lines: Int, sourceLocation: SourceLocation = #_sourceLocation) {
        let results = scratch.lines("out/extract.jsonl").compactMap { $0["custom_id"]?.stringValue }
        let errors = scratch.lines("out/extract.errors.jsonl").compactMap { $0["custom_id"]?.stringValue }
        #expect(results.count == lines && Set(results).count == lines, sourceLocation: sourceLocation)
        #expect(errors == ["broken"], sourceLocation: sourceLocation)
    }

    @Test func theWorkQueueJobsPodsAreInterchangeableWorkersOnOneJob() throws {
        let yaml = try String(contentsOf: Self.jobs.appendingPathComponent("k8s-work-queue.yaml"), encoding: .utf8)
        let keys = yaml.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        #expect(keys.contains("podReplacementPolicy: Failed"))
        #expect(keys.contains { $0.hasPrefix("parallelism:") } && !keys.contains { $0.hasPrefix("completions:") })
        let scratch = Scratch()
        let g = try FakeGateway.start { $0.latencyMilliseconds = 30 }
        defer { g.shutdown() }
        try prepare(scratch, g, lines: 150)
        let server = try Self.server.get()
        let arguments = KubernetesExampleTests.containerArguments(of: yaml).map {
            $0.replacingOccurrences(
                of: "postgres://chatbatch@postgres:5432/chatbatch",
                with: "postgres://\(PostgresServer.user)@127.0.0.1:\(server.port)/postgres"
            ).replacingOccurrences(of: "/work/", with: scratch.path + "/").replacingOccurrences(
                of: "/keys/", with: scratch.path + "/keys/")
        }
        #expect(arguments.first == "run" && arguments.contains("--store"), "\(arguments)")
        let pods = try (0..<3).map { _ in
            try launch(chatbatchBinary(), arguments, environment: ["PGPASSWORD": server.password])
        }
        for pod in pods { pod.waitUntilExit() }
        #expect(pods.allSatisfy { $0.terminationStatus == 0 })
        expectEveryLineOnce(scratch, lines: 150)
        #expect(g.ledger.billedCounts().values.allSatisfy { $0 == 1 } && g.ledger.count == 150)
    }

    @Test func theStoreArraysTasksShareTheJobAndOneWarnedOfItsTimeLimitLeavesItsLinesToTheOthers() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start { $0.latencyMilliseconds = 150 }
        defer { g.shutdown() }
        try prepare(scratch, g, lines: 300)
        let server = try Self.server.get()
        try FileManager.default.createDirectory(atPath: scratch.file("bin"), withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(
            atPath: scratch.file("bin/chatbatch"), withDestinationPath: chatbatchBinary())
        let path = scratch.file("bin") + ":" + (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin")
        let script = Self.jobs.appendingPathComponent("slurm-store-array.sh").path
        let environment = [
            "PATH": path, "WORK": scratch.path,
            "CHATBATCH_STORE": "postgres://\(PostgresServer.user)@127.0.0.1:\(server.port)/postgres",
            "PGPASSWORD": server.password, "CHATBATCH_JOB": "slurm-\(UUID().uuidString.prefix(8))"
        ]
        _ = FileManager.default.createFile(atPath: scratch.file("task0.log"), contents: nil)
        let tasks = try (0..<3).map { i in
            // As slurmstepd starts a task: its own session, and the test process's blocked signals cleared.
            try launch(
                "/usr/bin/perl",
                [
                    "-MPOSIX", "-e", "sigprocmask(SIG_SETMASK, POSIX::SigSet->new); POSIX::setsid(); exec @ARGV", "--",
                    "/bin/bash", script
                ],
                environment: environment.merging(["SLURM_ARRAY_TASK_ID": String(i)]) { a, _ in a },
                stderr: i == 0 ? FileHandle(forWritingAtPath: scratch.file("task0.log")) : nil)
        }
        // Task 0 is warned of its time limit, as Slurm does, once the work is under way.
        #expect(eventually(timeout: 30) { g.ledger.count >= 30 })
        kill(tasks[0].processIdentifier, SIGUSR1)
        for t in tasks { t.waitUntilExit() }
        #expect(tasks[0].terminationStatus == 4, "\(scratch.text("task0.log"))")
        #expect(tasks[1].terminationStatus == 0 && tasks[2].terminationStatus == 0)
        expectEveryLineOnce(scratch, lines: 300)
        #expect(g.ledger.billedCounts().values.allSatisfy { $0 == 1 })
    }
}
