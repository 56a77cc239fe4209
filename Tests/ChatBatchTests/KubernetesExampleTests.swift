import ChatBatchCore
import FakeGateway
import Foundation
import TestSupport
import Testing

@testable import ChatBatch

/// `jobs/k8s-indexed-job.yaml` and `jobs/Dockerfile` as written: the container's arguments run as PID 1 of a PID
/// namespace of their own (what a container runtime gives them), stopped the way the kubelet stops a pod.
@Suite("The Kubernetes example and its image", .serialized)
struct KubernetesExampleTests {
    static let jobs = ArchitectureTests.root.appendingPathComponent("jobs")
    static var yaml: String {
        (try? String(contentsOf: jobs.appendingPathComponent("k8s-indexed-job.yaml"), encoding: .utf8)) ?? ""
    }
    static var dockerfile: String {
        (try? String(contentsOf: jobs.appendingPathComponent("Dockerfile"), encoding: .utf8)) ?? ""
    }

    /// The container's `args:` list, as Kubernetes passes it (after the image's ENTRYPOINT).
    static func containerArguments(of yaml: String = yaml) -> [String] {
        var out: [String] = []
        var inArgs = false
        var indent = 0
        for line in yaml.split(separator: "\n", omittingEmptySubsequences: false) {
            let text = line.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false)[0]
            let trimmed = text.trimmingCharacters(in: .whitespaces)
            let lead = text.prefix { $0 == " " }.count
            if trimmed == "args:" {
                inArgs = true
                indent = lead
                continue
            }
            guard inArgs else { continue }
            if trimmed.hasPrefix("- ") && lead >= indent {
                out.append(String(trimmed.dropFirst(2)))
            } else if !trimmed.isEmpty {
                break
            }
        }
        return out
    }

    /// Kubernetes' `$(VAR)` expansion of container arguments.
    static func expand(_ argument: String, _ environment: [String: String]) -> String {
        var s = argument
        for (k, v) in environment { s = s.replacingOccurrences(of: "$(\(k))", with: v) }
        return s
    }

    @Test func theImageRecipeIsLintedAndItsRuntimeStageHasEveryLibraryTheBinaryLinks() throws {
        let lines = Self.dockerfile.split(separator: "\n").map(String.init).filter { !$0.hasPrefix("#") }
        let froms = lines.filter { $0.hasPrefix("FROM ") }
        #expect(froms.count == 2, "a builder stage, then the runtime")
        for from in froms {
            let image = from.split(separator: " ")[1]
            #expect(image.contains(":") && !image.hasSuffix(":latest"), "pin the base image's tag: \(from)")
        }
        // Every COPY from the build context names something in the repository.
        for line in lines where line.hasPrefix("COPY ") && !line.contains("--from=") {
            let source = line.split(separator: " ")[1]
            #expect(
                FileManager.default.fileExists(
                    atPath: ArchitectureTests.root.appendingPathComponent(String(source)).path), "\(line)")
        }
        // apt: no recommends, lists removed in the same layer.
        let joined = Self.dockerfile.replacingOccurrences(of: "\\\n", with: " ")
        let installs = joined.split(separator: "\n").filter { $0.contains("apt-get install") }
        #expect(installs.count == 2)
        for run in installs {
            #expect(
                run.contains("--no-install-recommends") && run.contains("rm -rf /var/lib/apt/lists/*")
                    && run.contains("apt-get update"), "\(run)")
        }
        #expect(
            lines.contains { $0.hasPrefix("USER ") && !$0.contains("root") && !$0.hasSuffix(" 0") },
            "the runtime runs as an ordinary user")
        #expect(
            lines.contains("ENTRYPOINT [\"chatbatch\"]"), "exec form: chatbatch is PID 1 and gets the pod's SIGTERM")
        #expect(
            lines.contains { $0.contains("scripts/install") }, "the image builds the binary as the README installs it")
        // The runtime stage installs the package of every library the installed binary links (the Swift runtime is
        // linked in; the debug build's own Swift libraries are left out when no installed binary is given).
        let runtime = String(installs[1])
        let packages = Set(runtime.split(separator: " ").map(String.init)).union(["libc6", "libgcc-s1", "libstdc++6"])
        let binary = ProcessInfo.processInfo.environment["CHATBATCH_INSTALLED"] ?? chatbatchBinary()
        let (code, needed) = try runToEnd("/usr/bin/readelf", ["-d", binary], captureStdout: true)
        #expect(code == 0)
        let libraries = needed.split(separator: "\n").filter { $0.contains("(NEEDED)") }.compactMap { line -> String? in
            guard let open = line.lastIndex(of: "["), let close = line.lastIndex(of: "]") else { return nil }
            return String(line[line.index(after: open)..<close])
        }.filter {
            !$0.hasPrefix("libswift") && !$0.contains("Foundation")
                && !["libdispatch.so", "libBlocksRuntime.so"].contains($0)
        }
        #expect(libraries.contains("libcurl.so.4") && libraries.contains("libsqlite3.so.0"))
        for library in libraries where !library.hasPrefix("ld-linux") {
            // Debian registers a library under /lib or /usr/lib (the same folder since the /usr merge).
            var (found, owner) = try runToEnd(
                "/usr/bin/dpkg", ["-S", "/lib/x86_64-linux-gnu/\(library)"], captureStdout: true)
            if found != 0 {
                (found, owner) = try runToEnd(
                    "/usr/bin/dpkg", ["-S", "/usr/lib/x86_64-linux-gnu/\(library)"], captureStdout: true)
            }
            let package = owner.split(separator: ":").first.map(String.init) ?? ""
            #expect(
                found == 0 && packages.contains(package),
                "\(library) comes from \(package), which the runtime stage does not install (\(owner))")
        }
    }

    @Test(needs("root: a PID namespace of its own, as a container runtime gives", { geteuid() == 0 }))
    func thePodsArgumentsRunAsPID1StopCleanlyOnSIGTERMAndEveryShardEndsOnce() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start { $0.latencyMilliseconds = 400 }
        defer { g.shutdown() }
        try writeShardedExample(scratch, under: "work", g, lines: 40, keyMode: 0o400)
        let arguments = Self.containerArguments()
        #expect(
            arguments.first == "run" && !arguments.contains { $0 == "sh" || $0.hasSuffix("/sh") || $0 == "-c" },
            "no shell between the runtime and chatbatch")
        func pod(_ index: Int) -> [String] {
            arguments.map {
                Self.expand($0, ["JOB_COMPLETION_INDEX": "\(index)"])
                    .replacingOccurrences(of: "/work/", with: scratch.file("work/")).replacingOccurrences(
                        of: "/keys/", with: scratch.file("keys/"))
            }
        }
        // Pod 0 is stopped as the kubelet stops it: SIGTERM to the container's PID 1, from outside its namespace.
        let first = try launch("/usr/bin/unshare", ["--pid", "--fork", "--kill-child", chatbatchBinary()] + pod(0))
        #expect(eventually(timeout: 20) { g.ledger.snapshot().count >= 2 })
        var init1: Int32 = 0
        #expect(
            eventually(timeout: 5) {
                let children =
                    (try? String(
                        contentsOfFile: "/proc/\(first.processIdentifier)/task/\(first.processIdentifier)/children",
                        encoding: .utf8)) ?? ""
                init1 = Int32(children.split(separator: " ").first ?? "") ?? 0
                return init1 > 0
            })
        let status = (try? String(contentsOfFile: "/proc/\(init1)/status", encoding: .utf8)) ?? ""
        #expect(
            status.split(separator: "\n").contains { $0.hasPrefix("NSpid:") && $0.hasSuffix("\t1") },
            "chatbatch is PID 1 in the pod")
        kill(init1, SIGTERM)
        first.waitUntilExit()
        #expect(first.terminationStatus == 4, "stopped cleanly, resumable")
        let stopped = try JSON.parse(
            String(contentsOfFile: scratch.file("work/out/summary.shard-0.json"), encoding: .utf8))
        #expect(stopped["possibly_billed_twice"] == 0, "requests in flight finished before the pod ended")
        // Every index's pod (index 0's next one) runs to its end: 0 even for the shard with the invalid line.
        for i in 0..<4 {
            let p = try launch("/usr/bin/unshare", ["--pid", "--fork", "--kill-child", chatbatchBinary()] + pod(i))
            p.waitUntilExit()
            #expect(p.terminationStatus == 0, "index \(i) is done: not run again")
        }
        // The merge, as the comment at the end writes it, run by a plain POSIX shell.
        let merge = try #require(Self.yaml.split(separator: "\n").first { $0.hasPrefix("#   chatbatch merge") })
        let command = String(merge.dropFirst(4)).replacingOccurrences(of: "/work/", with: scratch.file("work/"))
        let (code, stderr) = try runToEnd(
            "/bin/sh", ["-c", command.replacingOccurrences(of: "chatbatch ", with: chatbatchBinary() + " ")])
        #expect(code == 0, "\(stderr)")
        let ids = scratch.lines("work/out/extract.jsonl").compactMap { $0["custom_id"]?.stringValue }
        #expect(ids.count == 40 && Set(ids).count == 40)
        #expect(g.ledger.billedCounts().values.allSatisfy { $0 == 1 })
        // What the Job does with those endings: exit 2 fails its index at once; 4 and 0 are not that rule's.
        #expect(
            Self.yaml.contains("restartPolicy: Never")
                && Self.yaml.contains("onExitCodes: {containerName: chatbatch, operator: In, values: [2]}"))
    }
}
