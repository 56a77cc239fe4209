import ChatBatchCore
import FakeGateway
import Foundation
import TestSupport
import Testing

@testable import ChatBatch

/// `jobs/slurm-array.sh` as Slurm runs it: submitted by its usage line, four array tasks (one cancelled, one warned
/// of its time limit and requeued), then the merge job it submits. Stand-ins for sbatch and scontrol record what
/// they were asked; this test plays slurmstepd: it opens the task's log, and signals as Slurm does.
@Suite("The Slurm array example", .serialized)
struct SlurmExampleTests {
    static let script = ArchitectureTests.root.appendingPathComponent("jobs/slurm-array.sh").path

    final class Cluster {
        let scratch = Scratch()
        let gateway: FakeGateway
        let path: String

        init() throws {
            gateway = try FakeGateway.start { $0.latencyMilliseconds = 400 }
            let fm = FileManager.default
            try writeShardedExample(scratch, under: "", gateway, lines: 60, keyMode: 0o600)
            try fm.createDirectory(atPath: scratch.file("bin"), withIntermediateDirectories: true)
            try? fm.removeItem(atPath: scratch.file("out"))  // Slurm's usage line makes it (the test checks it does)
            // sbatch: a submission of the array checks, as Slurm will, that the log's folder exists; a --wrap job is
            // recorded. scontrol: records what it was asked.
            let sbatch = """
                #!/bin/sh
                for a in "$@"; do case "$a" in --wrap=*) printf '%s\\n' "${a#--wrap=}" >> "$WORK/submitted"; exit 0;; esac; done
                out=$(sed -n 's/^#SBATCH --output=//p' "$1"); [ -d "$(dirname "$out")" ] || { echo "no folder for $out" >&2; exit 1; }
                echo array >> "$WORK/submitted"
                """
            try sbatch.write(toFile: scratch.file("bin/sbatch"), atomically: true, encoding: .utf8)
            try "#!/bin/sh\necho \"$*\" >> \"$WORK/scontrol\"\n".write(
                toFile: scratch.file("bin/scontrol"), atomically: true, encoding: .utf8)
            try fm.createSymbolicLink(atPath: scratch.file("bin/chatbatch"), withDestinationPath: chatbatchBinary())
            chmod(scratch.file("bin/sbatch"), 0o755)
            chmod(scratch.file("bin/scontrol"), 0o755)
            path = scratch.file("bin") + ":" + (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin")
        }

        /// Starts array task `i` as slurmstepd does: its own session and process group, its log opened for it, and
        /// the signal mask cleared (the test process blocks its stop signals; a batch shell never inherits that).
        func task(_ i: Int, restarts: Int? = nil) throws -> Process {
            _ = FileManager.default.createFile(atPath: scratch.file("out/slurm-77_\(i).log"), contents: nil)
            let log = try #require(
                FileHandle(forWritingAtPath: scratch.file("out/slurm-77_\(i).log")), "Slurm opens out/…")
            var environment = [
                "WORK": scratch.path, "PATH": path, "SLURM_ARRAY_TASK_ID": "\(i)", "SLURM_ARRAY_TASK_COUNT": "4",
                "SLURM_ARRAY_JOB_ID": "77", "SLURM_JOB_ID": "\(78 + i)"
            ]
            if let restarts { environment["SLURM_RESTART_COUNT"] = "\(restarts)" }
            // setsid fails only for a process group's leader already: either way the task leads its own group.
            let clean = "sigprocmask(SIG_SETMASK, POSIX::SigSet->new); POSIX::setsid(); exec @ARGV"
            return try launch(
                "/usr/bin/perl", ["-MPOSIX", "-e", clean, "--", "/bin/bash", SlurmExampleTests.script],
                environment: environment, stderr: log, stdout: log)
        }

        func summary(_ i: Int) throws -> JSON {
            try JSON.parse(String(contentsOfFile: scratch.file("out/summary.shard-\(i).json"), encoding: .utf8))
        }

        func recorded(_ name: String) -> [String] {
            ((try? String(contentsOfFile: scratch.file(name), encoding: .utf8)) ?? "").split(separator: "\n").map(
                String.init)
        }
    }

    @Test func cancelAndTheTimeLimitStopEachTaskOnceAndTheRequeuedTasksAndTheMergeLandEveryLineOnce() throws {
        let c = try Cluster()
        defer { c.gateway.shutdown() }
        // Submitted by the usage line of the script's header, which makes the log's folder first.
        let usage = try #require(
            try String(contentsOfFile: Self.script, encoding: .utf8).split(separator: "\n")
                .first { $0.contains("&& sbatch jobs/slurm-array.sh") })
        let submit = String(usage.dropFirst(1).split(separator: "#")[0]).replacingOccurrences(
            of: "jobs/slurm-array.sh", with: Self.script)
        let (code, stderr) = try runToEnd(
            "/bin/sh", ["-c", "cd \"$WORK\" && \(submit)"], environment: ["WORK": c.scratch.path, "PATH": c.path])
        #expect(code == 0 && c.recorded("submitted") == ["array"], "\(stderr)")

        // scancel: SIGTERM to every process of task 0 (its process group), while requests are in flight.
        let cancelled = try c.task(0)
        #expect(eventually(timeout: 20) { c.gateway.ledger.snapshot().count >= 2 })
        kill(-cancelled.processIdentifier, SIGTERM)
        cancelled.waitUntilExit()
        #expect(cancelled.terminationStatus == 4)
        #expect(try c.summary(0)["possibly_billed_twice"] == 0, "one SIGTERM: the requests in flight finished")
        // The time limit's warning: USR1 to the batch shell alone; it stops chatbatch once and requeues the task.
        let before = c.gateway.ledger.snapshot().count
        let warned = try c.task(1)
        #expect(eventually(timeout: 20) { c.gateway.ledger.snapshot().count >= before + 2 })
        kill(warned.processIdentifier, SIGUSR1)
        warned.waitUntilExit()
        #expect(warned.terminationStatus == 4)
        #expect(try c.summary(1)["possibly_billed_twice"] == 0)
        #expect(c.recorded("scontrol") == ["requeue 79"])

        // The requeued tasks run again (Slurm sets SLURM_RESTART_COUNT), the others run once: all end 0, the
        // shard with the invalid line too, so afterok releases the one merge job task 0 submitted.
        for (i, restarts) in [(0, 1), (1, 1), (2, nil), (3, nil)] {
            let p = try c.task(i, restarts: restarts)
            p.waitUntilExit()
            #expect(p.terminationStatus == 0, "task \(i)")
        }
        let merges = c.recorded("submitted").filter { $0 != "array" }
        #expect(merges.count == 1)
        let (merged, mergeText) = try runToEnd("/bin/sh", ["-c", merges[0]], environment: ["PATH": c.path])
        #expect(merged == 0, "\(mergeText)")
        let ids = c.scratch.lines("out/extract.jsonl").compactMap { $0["custom_id"]?.stringValue }
        #expect(ids.count == 60 && Set(ids) == Set((1...60).map { String(format: "p%04d", $0) }))
        #expect(
            c.gateway.ledger.billedCounts().values.allSatisfy { $0 == 1 } && c.gateway.ledger.billedCounts().count == 60
        )
        let summary = try JSON.parse(String(contentsOfFile: c.scratch.file("out/summary.json"), encoding: .utf8))
        // Each shard's last run: the resumed ones count what their first run answered as already done.
        let answered = (summary["done"]?.intValue ?? 0) + (summary["already_done"]?.intValue ?? 0)
        #expect(answered == 60 && summary["shards"] == 4, "\(summary)")
    }
}
