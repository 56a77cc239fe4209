import ChatBatchCore
import FakeGateway
import Foundation
import Testing

@testable import ChatBatch

/// A careful attacker's tries, with the real binary against a hostile server on loopback.
@Suite("Security: secrets, the plain-http rule, a hostile server", .serialized)
struct SecurityTests {
    static let key = "sk-test/ab+cd=ef-0123456789XYZ"

    /// Every file under `folder`, as bytes.
    func everyFile(_ folder: String) -> [(String, [UInt8])] {
        let names = (FileManager.default.enumerator(atPath: folder)?.allObjects as? [String]) ?? []
        return names.compactMap { name in
            let path = folder + "/" + name
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir), !isDir.boolValue,
                let data = FileManager.default.contents(atPath: path)
            else { return nil }
            return (name, Array(data))
        }
    }

    /// The key's forms a reader could decode: as it is, JSON-escaped, in base64 (as the server wrote it) and
    /// URL-encoded.
    func forms(_ key: String) -> [String] {
        let unreserved = CharacterSet(
            charactersIn: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
        return [
            key, key.replacingOccurrences(of: "/", with: "\\/"),
            key.unicodeScalars.map { String(format: "\\u%04x", $0.value) }.joined(),
            String(Data([UInt8(ascii: "x")] + Array(key.utf8)).base64EncodedString().dropFirst(2).dropLast(4)),
            key.addingPercentEncoding(withAllowedCharacters: unreserved) ?? key
        ]
    }

    func contains(_ haystack: [UInt8], _ needle: String) -> Bool {
        let n = Array(needle.utf8)
        guard !n.isEmpty, haystack.count >= n.count else { return false }
        return Redactor.find(n, in: haystack, from: 0) != nil
    }

    @Test func aKeyEchoedInAnyFormIsWrittenNowhere() throws {
        let logs = Scratch()
        let server = try HostileServer(log: logs.file("requests.jsonl"))
        defer { server.stop() }
        for mode in ["uescape", "slash", "base64", "urlenc", "split", "lines"] {
            let scratch = Scratch()
            scratch.write("in.jsonl", lines: promptLines(2))
            let args =
                [
                    "run", scratch.file("in.jsonl"), "--provider", "openai-compatible", "--base-url",
                    server.baseURL(mode), "--model", "m",
                    "--format", "flat", "--log-file", scratch.file("run.log"), "--summary-json",
                    scratch.file("summary.json"),
                    "--max-attempts", "1"
                ] + (mode == "split" ? ["--stream"] : [])
            let (code, stderr) = try runToEnd(chatbatchBinary(), args, environment: ["OPENAI_API_KEY": Self.key])
            #expect(code == 0 || code == 1 || (mode == "lines" && code == 3), "\(mode): \(stderr)")
            let checkpoint = scratch.file("in.results.jsonl.checkpoint")
            _ = try runToEnd(chatbatchBinary(), ["report", checkpoint, "--html", scratch.file("report.html")])
            let (_, exported) = try runToEnd(
                chatbatchBinary(), ["export", checkpoint, "--output", scratch.file("export.jsonl"), "--format", "flat"],
                captureStdout: true)
            let places = everyFile(scratch.path) + [("stderr", Array(stderr.utf8)), ("export", Array(exported.utf8))]
            for (name, bytes) in places {
                for form in forms(Self.key) {
                    let holds = contains(bytes, form)
                    #expect(!holds, "\(mode): \(name) holds the key as \(form)")
                }
            }
            // The answer was taken (scrubbed), not lost: every line is in one of the two files (a refused key:
            // pending).
            if mode != "lines" {
                #expect(
                    scratch.lines("in.results.jsonl").count + scratch.lines("in.results.errors.jsonl").count == 2,
                    "\(mode)")
            }
            // A key split over lines: the forms joined again must not be found either.
            for (name, bytes) in places {
                let holds =
                    contains(bytes.filter { $0 != 0x0A && $0 != 0x0D }, Self.key)
                    || contains(
                        Array(
                            String(decoding: bytes, as: UTF8.self)
                                .replacingOccurrences(of: "\\n", with: "").utf8), Self.key)
                #expect(!holds, "\(mode): \(name) holds the key split over lines")
            }
        }
    }

    @Test func aKeyIsOneLineAndItsFileIsPrivate() throws {
        let scratch = Scratch()
        let server = try HostileServer(log: scratch.file("requests.jsonl"))
        defer { server.stop() }
        scratch.write("in.jsonl", lines: promptLines(1))
        let base = [
            "run", scratch.file("in.jsonl"), "--provider", "openai-compatible", "--base-url", server.baseURL("ok"),
            "--model", "m"
        ]
        // A trailing newline (a Kubernetes secret read from a file) is taken off; the header is one line.
        let (code, text) = try runToEnd(
            chatbatchBinary(), base + ["--output", scratch.file("a.jsonl")],
            environment: ["OPENAI_API_KEY": "sk-one-line\n"])
        #expect(code == 0, "\(text)")
        #expect(server.requests().last?["authorization"] == "Bearer sk-one-line")
        // A second line is refused, naming where the key came from; nothing is sent.
        let before = server.requests().count
        _ = FileManager.default.createFile(
            atPath: scratch.file("key"), contents: Data("sk-first\nX-Injected: yes\n".utf8),
            attributes: [.posixPermissions: 0o600])
        let (two, twoText) = try runToEnd(
            chatbatchBinary(), base + ["--api-key-file", scratch.file("key"), "--output", scratch.file("b.jsonl")])
        #expect(
            two == 2 && twoText.contains("line break") && twoText.contains(scratch.file("key"))
                && !twoText.contains("sk-first"), "\(twoText)")
        #expect(server.requests().count == before)
        // A key file others can read is warned about; it still works.
        _ = FileManager.default.createFile(
            atPath: scratch.file("open-key"), contents: Data("sk-readable\n".utf8),
            attributes: [.posixPermissions: 0o644])
        let (open, openText) = try runToEnd(
            chatbatchBinary(), base + ["--api-key-file", scratch.file("open-key"), "--output", scratch.file("c.jsonl")])
        #expect(
            open == 0 && openText.contains("can be read by others") && openText.contains("chmod 600"), "\(openText)")
        // An Authorization header of one's own is refused: the key has its own sources.
        let (header, headerText) = try runToEnd(
            chatbatchBinary(),
            base + ["--header", "Authorization: Bearer sk-in-ps", "--output", scratch.file("d.jsonl")])
        #expect(
            header == 2 && headerText.contains("--api-key-env") && !headerText.contains("sk-in-ps"), "\(headerText)")
    }

    @Test func credentialsInAURLOrAProxyAreSecretsAndThePathGoesBeforeTheQuery() throws {
        let scratch = Scratch()
        let server = try HostileServer(log: scratch.file("requests.jsonl"))
        defer { server.stop() }
        scratch.write("in.jsonl", lines: promptLines(2))
        let url = "http://puser:URLPASS77@127.0.0.1:\(server.port)/ok/v1?api_key=QUERYSECRET88"
        let (code, text) = try runToEnd(
            chatbatchBinary(),
            [
                "run", scratch.file("in.jsonl"), "--provider", "openai-compatible", "--base-url", url,
                "--model", "m", "--summary-json", scratch.file("s.json")
            ])
        #expect(code == 0, "\(text)")
        #expect(
            server.requests().allSatisfy { $0["path"] == "/ok/v1/chat/completions?api_key=QUERYSECRET88" },
            "\(server.requests())")
        // A failed connect names the URL without them.
        let (down, downText) = try runToEnd(
            chatbatchBinary(),
            [
                "run", scratch.file("in.jsonl"), "--provider", "openai-compatible", "--model", "m",
                "--base-url", "http://puser:URLPASS77@127.0.0.1:1/v1?api_key=QUERYSECRET88",
                "--output", scratch.file("down.jsonl")
            ])
        #expect(down == 3, "\(downText)")
        // A proxy's password in libcurl's own error text.
        let (proxy, proxyText) = try runToEnd(
            chatbatchBinary(),
            [
                "run", scratch.file("in.jsonl"), "--provider", "openai-compatible", "--model", "m",
                "--base-url", "https://127.0.0.1:1/v1", "--proxy", "htp://puser:PROXYSECRET9@127.0.0.1:9",
                "--output", scratch.file("proxy.jsonl")
            ])
        #expect(proxy != 0, "\(proxyText)")
        for (name, bytes) in everyFile(scratch.path) + [("stderr", Array((text + downText + proxyText).utf8))]
        where name != "requests.jsonl" {
            for secret in ["URLPASS77", "QUERYSECRET88", "PROXYSECRET9"] {
                let holds = contains(bytes, secret)
                #expect(!holds, "\(name) holds \(secret)")
            }
        }
    }

    @Test func thePlainHTTPRuleCannotBeWalkedAround() throws {
        let scratch = Scratch()
        scratch.write("in.jsonl", lines: promptLines(1))
        let cases: [([String], String)] = [
            (["--base-url", "http://127.attacker.example:8000/v1"], "unencrypted"),
            (["--base-url", "127.0.0.1:8000/v1"], "not an http:// or https:// URL"),
            (["--base-url", "http:/127.0.0.1/v1"], "not an http:// or https:// URL"),
            (["--base-url", "http://127.0.0.1:8000/v1", "--proxy", "http://proxy.corp.example:3128"], "proxy")
        ]
        for (flags, said) in cases {
            let (code, text) = try runToEnd(
                chatbatchBinary(),
                ["run", scratch.file("in.jsonl"), "--provider", "openai-compatible", "--model", "m"] + flags,
                environment: ["OPENAI_API_KEY": "sk-secret-key"])
            #expect(code == 2 && text.contains(said), "\(flags): \(text)")
        }
        // localhost is still this machine.
        let server = try HostileServer(log: scratch.file("requests.jsonl"))
        defer { server.stop() }
        let (ok, okText) = try runToEnd(
            chatbatchBinary(),
            [
                "run", scratch.file("in.jsonl"), "--provider", "openai-compatible", "--model", "m",
                "--base-url", "http://localhost:\(server.port)/ok/v1"
            ], environment: ["OPENAI_API_KEY": "sk-secret-key"])
        #expect(ok == 0, "\(okText)")
    }

    @Test func anAnswerTooLargeIsCutAtTheCapFailedOnceAndCounted() throws {
        let scratch = Scratch()
        let server = try HostileServer(log: scratch.file("requests.jsonl"))
        defer { server.stop() }
        for mode in ["hugelength", "endless", "gzipbomb"] {
            scratch.write("\(mode).jsonl", lines: promptLines(2))
            let (code, text) = try runToEnd(
                "/usr/bin/env",
                [
                    "time", "-f", "maxrss_kb=%M", chatbatchBinary(), "run", scratch.file("\(mode).jsonl"),
                    "--provider", "openai-compatible", "--model", "m", "--base-url", server.baseURL(mode)
                ],
                environment: ["OPENAI_API_KEY": "sk-fake"])
            #expect(code == 1, "\(mode): \(text)")
            let errors = scratch.lines("\(mode).results.errors.jsonl")
            #expect(
                errors.count == 2 && errors.allSatisfy { $0["error"]?["code"]?.stringValue == "response_too_large" },
                "\(mode): \(errors)")
            #expect(text.contains("2 possibly billed twice"), "\(mode): \(text)")
            let rss = peakRSSKilobytes(text)
            #expect(rss < 300_000, "\(mode): \(rss) kB")
        }
        // Never asked again: one request per line and mode.
        #expect(server.requests().count == 6)
    }

    @Test func aHugeCustomIDIsAnInvalidLineAndTheOthersRun() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start()
        defer { g.shutdown() }
        scratch.write(
            "in.jsonl",
            lines: promptLines(3) + [#"{"custom_id":"\#(String(repeating: "x", count: 1 << 20))","prompt":"hi"}"#])
        writeJob(scratch, g)
        let (code, text) = try runToEnd(chatbatchBinary(), ["run", scratch.file("job.yaml")])
        #expect(code == 1 && text.contains("custom_id is 1048576 bytes long"), "\(text.prefix(2000))")
        #expect(
            scratch.lines("out.jsonl").count == 3 && scratch.lines("out.errors.jsonl").count == 1 && g.ledger.count == 3
        )
    }

    @Test func aServersMessageCannotDriveTheTerminalOrForgeALogLine() throws {
        let scratch = Scratch()
        let server = try HostileServer(log: scratch.file("requests.jsonl"))
        defer { server.stop() }
        scratch.write("in.jsonl", lines: promptLines(2))
        let (code, text) = try runToEnd(
            chatbatchBinary(),
            [
                "run", scratch.file("in.jsonl"), "--provider", "openai-compatible", "--model", "m",
                "--base-url", server.baseURL("ansi"), "--log-file", scratch.file("run.log")
            ],
            environment: ["OPENAI_API_KEY": "sk-fake"])
        let log = (try? String(contentsOfFile: scratch.file("run.log"), encoding: .utf8)) ?? ""
        #expect(code != 0)
        for (name, out) in [("stderr", text), ("log", log)] {
            #expect(
                !out.unicodeScalars.contains {
                    $0.value == 0x1B || $0.value == 0x07 || $0.value == 0x9B || $0.value == 0x202E || $0 == "\r"
                }, "\(name)")
            #expect(
                !out.split(separator: "\n").contains { $0.hasPrefix("chatbatch: all 2 lines done") },
                "\(name): a forged line")
        }
        #expect(log.contains("\\u{1B}"), "\(log)")
    }

    @Test func pathsChatbatchCreatesAreNeverSymlinksAndStayPrivate() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start()
        defer { g.shutdown() }
        scratch.write("in.jsonl", lines: promptLines(2))
        writeJob(scratch, g)
        // A symlink where the checkpoint goes: refused, and where it points stays as it was.
        scratch.write("elsewhere", lines: ["mine"])
        try FileManager.default.createSymbolicLink(
            atPath: scratch.file("out.jsonl.checkpoint"), withDestinationPath: scratch.file("elsewhere"))
        let (linked, linkedText) = try runToEnd(chatbatchBinary(), ["run", scratch.file("job.yaml")])
        #expect(linked == 2 && linkedText.contains("symbolic link") && g.ledger.count == 0, "\(linkedText)")
        #expect(FileManager.default.contents(atPath: scratch.file("elsewhere")) == Data("mine\n".utf8))
        unlink(scratch.file("out.jsonl.checkpoint"))
        // A log file that is a symlink: refused.
        try FileManager.default.createSymbolicLink(
            atPath: scratch.file("run.log"), withDestinationPath: scratch.file("elsewhere"))
        let (log, logText) = try runToEnd(
            chatbatchBinary(), ["run", scratch.file("job.yaml"), "--log-file", scratch.file("run.log")])
        #expect(log == 2 && logText.contains("symbolic link"), "\(logText)")
        // An empty checkpoint made beforehand with 0644 becomes 0600; folders made under umask 000 are 0700.
        _ = FileManager.default.createFile(
            atPath: scratch.file("out.jsonl.checkpoint"), contents: nil, attributes: [.posixPermissions: 0o644])
        let (ran, ranText) = try runToEnd(
            "/bin/sh",
            [
                "-c", "umask 000; exec \"$0\" run \"$1\" --summary-json \"$2\"", chatbatchBinary(),
                scratch.file("job.yaml"),
                scratch.file("deep/er/summary.json")
            ], environment: ["CB_TEST_KEY": "sk-fake"])
        #expect(ran == 0, "\(ranText)")
        let mode = { (path: String) in
            ((try? FileManager.default.attributesOfItem(atPath: path)[.posixPermissions]) as? Int) ?? -1
        }
        #expect(mode(scratch.file("out.jsonl.checkpoint")) == 0o600)
        let (_, _) = try runToEnd(
            "/bin/sh",
            [
                "-c", "umask 000; exec \"$0\" run \"$1\" --output \"$2\"", chatbatchBinary(), scratch.file("job.yaml"),
                scratch.file("new/folder/out2.jsonl")
            ])
        #expect(mode(scratch.file("new")) == 0o700 && mode(scratch.file("new/folder")) == 0o700)
        // the summary and metrics folders: others may read what is in them
        #expect(mode(scratch.file("deep/er")) == 0o755)
    }

    @Test func aDateThatLeavesTheFolderAPartialAndAProxyThatRefusesAreSaidAtOnce() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start()
        defer { g.shutdown() }
        scratch.write("in.jsonl", lines: promptLines(2))
        writeJob(scratch, g, extra: ["summary_json: out/{date}/summary.json"])
        let (date, dateText) = try runToEnd(
            chatbatchBinary(), ["run", scratch.file("job.yaml"), "--date", "../../../x"])
        #expect(date == 2 && dateText.contains("is not a date") && g.ledger.count == 0, "\(dateText)")
        scratch.write("r.jsonl", lines: [#"{"id":1,"text":"a"}"#])
        let (partial, partialText) = try runToEnd(
            chatbatchBinary(),
            [
                "run", scratch.file("r.jsonl"), "--fake-gateway", "--provider", "tera",
                "--template", "{{> /etc/passwd}} {{text}}"
            ])
        #expect(partial == 2 && partialText.contains("partial"), "\(partialText)")
        // A proxy that answers 403 to CONNECT: one clear stop, nothing counted as possibly billed.
        let proxy = try HostileServer(log: scratch.file("proxy.jsonl"))
        defer { proxy.stop() }
        let (refused, refusedText) = try runToEnd(
            chatbatchBinary(),
            [
                "run", scratch.file("in.jsonl"), "--provider", "openai-compatible", "--model", "m",
                "--base-url", "https://127.0.0.1:9/v1", "--proxy", "http://127.0.0.1:\(proxy.port)"
            ],
            environment: ["OPENAI_API_KEY": "sk-fake"])
        #expect(
            refused == 3 && refusedText.contains("refused to open a tunnel")
                && refusedText.contains("0 possibly billed twice"), "\(refusedText)")
        #expect(proxy.requests().count == 1)
    }
}
