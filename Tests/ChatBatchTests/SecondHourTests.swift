import ChatBatchCore
import FakeGateway
import Foundation
import Testing

@testable import ChatBatch

/// The binary a user installed: `CHATBATCH_INSTALLED` (CI sets it after `scripts/install` into a scratch prefix),
/// else the one built beside the tests.
func installedBinary() -> String { ProcessInfo.processInfo.environment["CHATBATCH_INSTALLED"] ?? chatbatchBinary() }

/// A fresh home folder for a user who is not root: `nobody` when the tests run as root (as CI does), else the user
/// running them. Only the installed binary is on its PATH (copied beside the home, so any user can run it).
final class OrdinaryUser {
    let scratch = Scratch()
    let home: String
    let bin: String

    init() throws {
        home = scratch.file("home")
        bin = scratch.file("bin")
        try FileManager.default.createDirectory(atPath: home, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: bin, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: installedBinary(), toPath: bin + "/chatbatch")
        for folder in [scratch.path, bin] {
            try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: folder)
        }
        if getuid() == 0 { try FileManager.default.setAttributes([.ownerAccountID: 65534], ofItemAtPath: home) }
    }

    /// Runs `script` with bash in the home folder, as this user, with a bare environment; stdout and stderr together.
    func run(_ script: String) throws -> (Int32, String) {
        // Bounded: a script that hangs is ended after two minutes (and fails its test).
        let env = [
            "/usr/bin/env", "-i", "HOME=\(home)", "PATH=\(bin):/usr/bin:/bin", "LANG=C.UTF-8", "timeout", "-k", "5",
            "120",
            "bash", "-c", "cd \"$HOME\" || exit 1\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n" + script
        ]
        if getuid() == 0 { return try runToEnd("/usr/sbin/runuser", ["-u", "nobody", "--"] + env, captureStdout: true) }
        return try runToEnd(env[0], Array(env.dropFirst()), captureStdout: true)
    }
}

/// The shell blocks of the README marked `<!-- example: offline -->`: what a user can run with no key and no network.
func offlineReadmeExamples() throws -> [String] {
    let readme = try String(contentsOf: FirstHourTests.repository.appendingPathComponent("README.md"), encoding: .utf8)
    var blocks: [String] = []
    var lines = readme.split(separator: "\n", omittingEmptySubsequences: false)[...]
    while let marker = lines.firstIndex(of: "<!-- example: offline -->") {
        lines = lines[(marker + 1)...]
        guard lines.first == "```sh", let end = lines.dropFirst().firstIndex(of: "```") else { break }
        blocks.append(lines[(lines.startIndex + 1)..<end].joined(separator: "\n"))
        lines = lines[(end + 1)...]
    }
    return blocks
}

/// A second new user's hour, with the real binary: an ordinary user, the README's examples as written, and the
/// answers a run must never throw away.
@Suite("A second new user's hour", .serialized)
struct SecondHourTests {
    @Test func theDemoAndTheFakeGatewayWorkForAUserWhoIsNotRoot() throws {
        let user = try OrdinaryUser()
        let (code, text) = try user.run("chatbatch demo")
        #expect(code == 0 && text.contains("all 200 lines done") && text.contains("0 possibly billed twice"), "\(text)")
        // The standalone gateway as that user answers a plain curl (a socket option only root may set closed every
        // connection it accepted), with no key at all, as a local model server started without one does.
        let script = """
            chatbatch fake-gateway --port 0 > url 2>/dev/null & until [ -s url ]; do sleep 0.05; done
            curl -s -o answer -w '%{http_code}' -H 'Content-Type: application/json' \
                -d '{"model":"openai/gpt-oss-120b","messages":[{"role":"user","content":"hi"}]}' "$(cat url)/chat/completions"
            kill %1
            """
        let (curled, status) = try user.run(script)
        #expect(curled == 0 && status.hasSuffix("200"), "\(status)")
        #expect(
            (try? String(contentsOfFile: user.home + "/answer", encoding: .utf8))?.contains("chat.completion") == true)
    }

    @Test func everyOfflineExampleOfTheReadmeRunsAsWritten() throws {
        let blocks = try offlineReadmeExamples()
        #expect(blocks.count >= 4, "the README marks \(blocks.count) offline examples")
        let user = try OrdinaryUser()
        let (demo, demoText) = try user.run("chatbatch demo")
        #expect(demo == 0, "\(demoText)")
        for block in blocks {
            let (code, text) = try user.run("set -e\n" + block)
            #expect(code == 0, "\(block)\n---\n\(text)")
            #expect(!text.contains("invalid") || text.contains("0 invalid"), "\(block)\n---\n\(text)")
            if block.contains("chatbatch serve") {
                let served = (try? String(contentsOfFile: user.home + "/served.jsonl", encoding: .utf8)) ?? ""
                #expect(served.split(separator: "\n").count == 3 && served.contains(#""status_code":200"#), "\(text)")
            }
            if block.contains("--output again/demo.jsonl") {
                #expect(text.contains("200 answered from the cache, 0 sent"), "\(text)")
                #expect(
                    text.contains("200 from real endpoints") == false && text.contains("200 from the fake gateway"),
                    "\(text)")
            }
        }
        for results in [
            "try/results.jsonl", "piped/results.jsonl", "again/demo.jsonl", "local/results.jsonl",
            "steered/results.jsonl"
        ] {
            let lines =
                (try? String(contentsOfFile: user.home + "/" + results, encoding: .utf8))?.split(separator: "\n") ?? []
            #expect(lines.count == 200, "\(results): \(lines.count) lines")
        }
    }

    @Test func linesReadFromStandardInputAreNamedSo() throws {
        let scratch = Scratch()
        scratch.write("in.jsonl", lines: promptLines(2) + ["{broken"])
        let p = Process()
        p.executableURL = URL(fileURLWithPath: chatbatchBinary())
        p.arguments = [
            "run", "-", "--fake-gateway", "--provider", "openai-compatible", "--model", "m", "--output",
            scratch.file("o.jsonl")
        ]
        p.standardInput = FileHandle(forReadingAtPath: scratch.file("in.jsonl"))
        let err = Pipe()
        p.standardError = err
        p.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
        try p.run()
        let text = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        #expect(
            p.terminationStatus == 1 && text.contains("standard input:3:") && !text.contains("o.jsonl.input.jsonl:"),
            "\(text)")
    }

    @Test func aCacheFilledByTheFakeGatewayNeverAnswersARealRun() throws {
        let scratch = Scratch()
        let real = try FakeGateway.start()  // an endpoint that is not --fake-gateway: a real one, for chatbatch
        defer { real.shutdown() }
        scratch.write("in.jsonl", lines: promptLines(30))
        let cache = scratch.file("cache/answers.db")  // its folder does not exist yet
        func run(_ extra: [String], key: String = "") throws -> (Int32, String) {
            try runToEnd(
                chatbatchBinary(),
                [
                    "run", scratch.file("in.jsonl"), "--provider", "openai-compatible", "--model",
                    "openai/gpt-oss-120b", "--cache", cache
                ] + extra,
                environment: ["OPENAI_API_KEY": key])
        }
        let (fake, fakeText) = try run(["--fake-gateway", "--output", scratch.file("fake.jsonl")])
        #expect(fake == 0 && fakeText.contains("0 answered from the cache, 30 sent"), "\(fakeText)")
        let (paid, paidText) = try run(
            ["--base-url", real.baseURL, "--output", scratch.file("real.jsonl")], key: "sk-fake")
        #expect(paid == 0 && paidText.contains("0 answered from the cache, 30 sent"), "\(paidText)")
        #expect(real.ledger.count == 30)
        let (again, againText) = try run(
            ["--base-url", real.baseURL, "--output", scratch.file("again.jsonl")], key: "sk-fake")
        #expect(
            again == 0 && againText.contains("30 answered from the cache, 0 sent") && real.ledger.count == 30,
            "\(againText)")
        let (_, stats) = try runToEnd(chatbatchBinary(), ["cache", "stats", cache], captureStdout: true)
        #expect(stats.contains("30 from real endpoints, 30 from the fake gateway"), "\(stats)")
        // The real answers are the real endpoint's: every request id in real.jsonl is one the real endpoint gave.
        let given = Set(real.ledger.snapshot().map(\.requestID))
        let ids = scratch.lines("real.jsonl").compactMap { $0["response"]?["request_id"]?.stringValue }
        #expect(ids.count == 30 && ids.allSatisfy(given.contains))
    }

    @Test func aRunThatSentNothingThrowsNoAnswerAway() throws {
        let scratch = Scratch()
        let closed = try FakeGateway.start()
        let closedURL = closed.baseURL
        closed.shutdown()  // its port now refuses connections
        scratch.write("in.jsonl", lines: promptLines(20))
        let job = scratch.file("job.yaml")
        try "input: in.jsonl\noutput: out.jsonl\nprovider: tera\n".write(toFile: job, atomically: true, encoding: .utf8)
        let (first, _) = try runToEnd(chatbatchBinary(), ["run", job, "--fake-gateway"])
        #expect(first == 0)
        let before = try String(contentsOfFile: scratch.file("out.jsonl"), encoding: .utf8)
        // For real, against an endpoint that cannot be reached: stopped, nothing sent, the 20 lines left pending there.
        let (real, realText) = try runToEnd(
            chatbatchBinary(), ["run", job, "--base-url", closedURL], environment: ["TERA_API_KEY": "sk-x"])
        #expect(real == 3 && realText.contains("20 left pending"), "\(realText)")
        // Back to the fake gateway: its answers were never replaced, so nothing is sent and nothing is paid twice.
        let (again, againText) = try runToEnd(chatbatchBinary(), ["run", job, "--fake-gateway"])
        #expect(again == 0 && againText.contains("nothing to do") && againText.contains("0 attempts"), "\(againText)")
        #expect(try String(contentsOfFile: scratch.file("out.jsonl"), encoding: .utf8) == before)
        let (_, status) = try runToEnd(chatbatchBinary(), ["status", job], captureStdout: true)
        #expect(status.contains("20 done, 0 failed, 0 pending"), "\(status)")
        let (_, report) = try runToEnd(chatbatchBinary(), ["report", job, "--json"], captureStdout: true)
        let r = try JSON.parse(report)
        // 20 answers, 1 refused connection
        #expect(r["retries"]?.intValue == 0 && r["attempts"]?.intValue == 21, "\(report)")

        // Between two real endpoints with `resend`: B cannot be reached, so A's answers stand and A is not paid again.
        let a = try FakeGateway.start()
        defer { a.shutdown() }
        let (paid, _) = try runToEnd(
            chatbatchBinary(), ["run", job, "--base-url", a.baseURL, "--other-endpoint-answers", "resend"],
            environment: ["TERA_API_KEY": "sk-fake"])
        #expect(paid == 0 && a.ledger.count == 20)
        let (toB, toBText) = try runToEnd(
            chatbatchBinary(), ["run", job, "--base-url", closedURL, "--other-endpoint-answers", "resend"],
            environment: ["TERA_API_KEY": "sk-fake"])
        #expect(toB == 3 && toBText.contains("20 left pending"), "\(toBText)")
        let (backToA, backText) = try runToEnd(
            chatbatchBinary(), ["run", job, "--base-url", a.baseURL], environment: ["TERA_API_KEY": "sk-fake"])
        #expect(backToA == 0 && backText.contains("nothing to do") && a.ledger.count == 20, "\(backText)")
        #expect(scratch.lines("out.jsonl").count == 20 && scratch.lines("out.errors.jsonl").isEmpty)
    }

    @Test func theCountsAgreeWhereverTheyAreShown() throws {
        let scratch = Scratch()
        scratch.write(
            "in.jsonl",
            lines: promptLines(6) + ["{broken", #"{"custom_id":"x","prompt":"a","max_token":3}"#, "[1]", "nope"])
        let base = ["--fake-gateway", "--provider", "openai-compatible", "--model", "m"]
        // validate, --strict and run count the same invalid lines (a warning is not an invalid line).
        let (_, validated) = try runToEnd(
            chatbatchBinary(), ["validate", scratch.file("in.jsonl"), "--model", "m", "--json"], captureStdout: true)
        let invalid = try JSON.parse(String(validated.split(separator: "\n").last ?? ""))["invalid"]?.intValue
        #expect(invalid == 3, "\(validated)")
        let (strict, strictText) = try runToEnd(chatbatchBinary(), ["run", scratch.file("in.jsonl"), "--strict"] + base)
        #expect(strict == 2 && strictText.contains("--strict: 3 invalid lines"), "\(strictText)")
        // The headline says what the detail line says.
        let (ran, ranText) = try runToEnd(chatbatchBinary(), ["run", scratch.file("in.jsonl")] + base)
        #expect(
            ran == 1 && ranText.contains("7 of 10 lines answered, 3 invalid")
                && ranText.contains("0 failed, 3 invalid"), "\(ranText)")
        // A rerun that reads nothing does not say it read the lines.
        let (_, rerun) = try runToEnd(chatbatchBinary(), ["run", scratch.file("in.jsonl")] + base)
        #expect(rerun.contains("10 in the input:") && !rerun.contains("10 read"), "\(rerun)")

        // merge: the headline and the counts by status are the shards' sums; a shard left out is refused.
        scratch.write("all.jsonl", lines: promptLines(40))
        for i in 0..<2 {
            let (code, _) = try runToEnd(
                chatbatchBinary(),
                ["run", scratch.file("all.jsonl"), "--shard", "\(i)/2", "--summary-json", scratch.file("s\(i).json")]
                    + base)
            #expect(code == 0)
        }
        let shard = { (i: Int) in scratch.file("all.shard-\(i)-of-2.results.jsonl") }
        let (merged, mergedText) = try runToEnd(
            chatbatchBinary(),
            [
                "merge", shard(0), shard(1), "--output", scratch.file("m.jsonl"), "--summary", scratch.file("s0.json"),
                "--summary", scratch.file("s1.json"),
                "--summary-json", scratch.file("m.json")
            ], captureStdout: true)
        #expect(merged == 0, "\(mergedText)")
        let summary = try JSON.parse(String(contentsOfFile: scratch.file("m.json"), encoding: .utf8))
        #expect(summary["headline"]?.stringValue == "2 shards: 40 of 40 lines answered", "\(summary)")
        #expect(summary["status_counts"]?["200"]?.intValue == 40 && summary["attempts"]?.intValue == 40, "\(summary)")
        let (one, oneText) = try runToEnd(
            chatbatchBinary(), ["merge", shard(0), "--output", scratch.file("m1.jsonl")], captureStdout: true)
        #expect(one == 2 && oneText.contains("shard 1/2 missing"), "\(oneText)")
    }

    @Test func smallThingsAUserNotices() throws {
        let scratch = Scratch()
        scratch.write("in.jsonl", lines: promptLines(3))
        // A refused --html path is a usage error (2), and the file is kept.
        let (_, _) = try runToEnd(
            chatbatchBinary(), ["run", scratch.file("in.jsonl"), "--fake-gateway", "--provider", "tera", "--quiet"])
        let (html, htmlText) = try runToEnd(
            chatbatchBinary(),
            ["report", scratch.file("in.results.jsonl.checkpoint"), "--html", scratch.file("in.jsonl")])
        #expect(
            html == 2 && htmlText.contains("not a chatbatch report") && scratch.lines("in.jsonl").count == 3,
            "\(htmlText)")
        // A mistyped command gets a suggestion.
        let (typo, typoText) = try runToEnd(chatbatchBinary(), ["runn", scratch.file("in.jsonl")])
        #expect(typo == 2 && typoText.contains("Did you mean 'run'?"), "\(typoText)")
        // The log says a warning's level once, and every line of the summary is its own timestamped event.
        scratch.write("w.jsonl", lines: [#"{"custom_id":"a","prompt":"x","max_token":3}"#])
        let log = scratch.file("run.log")
        _ = try runToEnd(
            chatbatchBinary(),
            ["run", scratch.file("w.jsonl"), "--fake-gateway", "--provider", "tera", "--log-file", log])
        let logged = try String(contentsOfFile: log, encoding: .utf8)
        #expect(logged.contains("chatbatch warning: ") && !logged.contains("notice: warning:"), "\(logged)")
        #expect(
            logged.split(separator: "\n").allSatisfy { $0.hasPrefix("20") && $0.contains(" chatbatch ") }, "\(logged)")
    }

    @Test(
        .enabled(
            if: ProcessInfo.processInfo.environment["CHATBATCH_INSTALLED"] != nil,
            "set CHATBATCH_INSTALLED after scripts/install (CI does)"))
    func theInstalledBinaryIsStrippedAndItsSymbolsAreKept() throws {
        let binary = installedBinary()
        let size = (try FileManager.default.attributesOfItem(atPath: binary)[.size] as? Int) ?? 0
        #expect(size < 80 << 20, "\(size) bytes")  // the build is about 100 MB; its debug information is a third of it
        let (_, sections) = try runToEnd("/usr/bin/env", ["readelf", "-S", "-W", binary], captureStdout: true)
        #expect(
            sections.contains(".gnu_debuglink") && !sections.contains(".debug_info") && !sections.contains(".symtab"),
            "\(sections)")
        // The symbols and debug information are kept beside it, where gdb looks (the debug link names the file).
        let debug = (binary as NSString).deletingLastPathComponent + "/.debug/chatbatch.debug"
        let (_, kept) = try runToEnd("/usr/bin/env", ["readelf", "-S", "-W", debug], captureStdout: true)
        #expect(kept.contains(".debug_info") && kept.contains(".symtab"), "\(kept)")
    }
}
