import ChatBatchCore
import FakeGateway
import Foundation
import Synchronization
import TestSupport
import Testing

@testable import BatchService
@testable import ChatBatch

/// The official `openai` Python SDK, installed from PyPI into a virtual environment made once per machine: the
/// Batch API client of these tests, unchanged but for `base_url`. nil (with why) when it cannot be had.
enum OpenAISDK {
    static let venv = FileManager.default.temporaryDirectory.appendingPathComponent("chatbatch-openai-sdk-venv").path
    static let python: Result<String, SetupFailure> = {
        let python = venv + "/bin/python"
        func works() -> Bool { (try? runToEnd(python, ["-c", "import openai"]))?.0 == 0 }
        if works() { return .success(python) }
        try? FileManager.default.removeItem(atPath: venv)
        guard let made = try? runToEnd("/usr/bin/python3", ["-m", "venv", venv]), made.0 == 0 else {
            return .failure(SetupFailure(why: "python3 -m venv failed (Debian's python3-venv)"))
        }
        let pip = try? runToEnd(venv + "/bin/pip", ["install", "-q", "openai"])
        guard works() else {
            return .failure(SetupFailure(why: "pip install openai failed: \(pip?.1.suffix(300) ?? "")"))
        }
        return .success(python)
    }()

    struct SetupFailure: Error { var why: String }
}

/// `chatbatch serve` driven by the official openai SDK: upload, create, poll, download, compared with `chatbatch run`
/// on the same file; a bad file; idempotent creates; two batches; cancel; SIGKILL and restart; wrong key and id.
@Suite(
    "The Batch API served, with the official openai SDK as the client", .serialized,
    needs("the openai SDK could not be installed from PyPI into a venv") {
        (try? OpenAISDK.python.get()) != nil
    })
struct BatchServeTests {
    /// The client: each command prints one JSON object.
    static let client = #"""
        import json, sys, time, openai
        base, command = sys.argv[1], sys.argv[2]
        c = openai.OpenAI(base_url=base, api_key="sk-serve", max_retries=0)
        def wait(batch_id, until=("completed", "failed", "cancelled", "expired")):
            for _ in range(1200):
                b = c.batches.retrieve(batch_id)
                if b.status in until:
                    return b
                time.sleep(0.1)
            raise SystemExit("batch %s stuck in %s" % (batch_id, b.status))
        def out(b):
            text = c.files.content(b.output_file_id).text if b.output_file_id else ""
            errors = c.files.content(b.error_file_id).text if b.error_file_id else ""
            return {"id": b.id, "status": b.status, "counts": b.request_counts.model_dump(),
                    "output": text, "errors": errors, "usage": b.usage.model_dump() if b.usage else None}
        if command == "roundtrip":
            f = c.files.create(file=open(sys.argv[3], "rb"), purpose="batch")
            b = c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h",
                                 metadata={"job": "nightly"})
            r = out(wait(b.id))
            r["first_status"] = b.status
            r["metadata"] = c.batches.retrieve(b.id).metadata
            r["listed"] = [x.id for x in c.batches.list(limit=10).data]
            r["file"] = {"id": f.id, "purpose": f.purpose, "filename": f.filename}
            print(json.dumps(r))
        elif command == "bad":
            try:
                c.files.create(file=open(sys.argv[3], "rb"), purpose="batch")
                print(json.dumps({"status": 200}))
            except openai.APIStatusError as e:
                print(json.dumps({"status": e.status_code, "message": e.message}))
        elif command == "idempotent":
            f = c.files.create(file=open(sys.argv[3], "rb"), purpose="batch")
            args = dict(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h",
                        extra_headers={"Idempotency-Key": "nightly-2026-12-02"})
            first, second = c.batches.create(**args), c.batches.create(**args)
            wait(first.id)
            plain = dict(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h",
                         metadata={"try": "1"})
            retried = [c.batches.create(**plain).id, c.batches.create(**plain).id]
            other = c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
            done = wait(other.id)
            print(json.dumps({"first": first.id, "second": second.id, "other": other.id, "retried": retried,
                              "other_counts": done.request_counts.model_dump()}))
        elif command == "two":
            f1 = c.files.create(file=open(sys.argv[3], "rb"), purpose="batch")
            f2 = c.files.create(file=open(sys.argv[4], "rb"), purpose="batch")
            b1 = c.batches.create(input_file_id=f1.id, endpoint="/v1/chat/completions", completion_window="24h")
            b2 = c.batches.create(input_file_id=f2.id, endpoint="/v1/chat/completions", completion_window="24h")
            print(json.dumps([out(wait(b1.id)), out(wait(b2.id))]))
        elif command == "fair":
            big = c.files.create(file=open(sys.argv[3], "rb"), purpose="batch")
            small = c.files.create(file=open(sys.argv[4], "rb"), purpose="batch")
            b1 = c.batches.create(input_file_id=big.id, endpoint="/v1/chat/completions", completion_window="24h")
            time.sleep(0.5)
            b2 = c.batches.create(input_file_id=small.id, endpoint="/v1/chat/completions", completion_window="24h")
            done_small = wait(b2.id)
            big_then = c.batches.retrieve(b1.id)
            done_big = wait(b1.id)
            print(json.dumps({"small": done_small.status, "big_when_small_done": big_then.status,
                              "big_done_then": big_then.request_counts.completed, "big": done_big.status,
                              "big_counts": done_big.request_counts.model_dump()}))
        elif command == "start":
            f = c.files.create(file=open(sys.argv[3], "rb"), purpose="batch")
            b = c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
            print(json.dumps({"id": b.id}))
        elif command == "cancel":
            b = c.batches.cancel(sys.argv[3])
            print(json.dumps({"status": b.status, **out(wait(b.id))}))
        elif command == "finish":
            print(json.dumps(out(wait(sys.argv[3]))))
        elif command == "mismatch":
            f = c.files.create(file=open(sys.argv[3], "rb"), purpose="batch")
            b = wait(c.batches.create(input_file_id=f.id, endpoint="/v1/embeddings", completion_window="24h").id)
            print(json.dumps({"status": b.status, "errors": [e.model_dump() for e in b.errors.data]}))
        elif command == "refusals":
            r = {}
            try:
                openai.OpenAI(base_url=base, api_key="sk-wrong", max_retries=0).files.list()
            except openai.APIStatusError as e:
                r["wrong_key"] = e.status_code
            try:
                c.batches.retrieve("batch_nope")
            except openai.APIStatusError as e:
                r["unknown_batch"] = e.status_code
            try:
                c.batches.create(input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h")
            except openai.APIStatusError as e:
                r["unknown_file"] = e.status_code
            try:
                c.files.create(file=open(sys.argv[3], "rb"), purpose="batch")
            except openai.APIStatusError as e:
                r["too_large"] = e.status_code
            print(json.dumps(r))
        """#

    /// A running `chatbatch serve` on the gateway, with its data folder in `scratch`.
    final class Server {
        let process: Process
        let base: String
        init(_ scratch: Scratch, extra: [String] = []) throws {
            let out = Pipe()
            let log = scratch.file("serve-\(UUID().uuidString).log")
            _ = FileManager.default.createFile(atPath: log, contents: nil)
            let process = try launch(
                chatbatchBinary(),
                ["serve", scratch.file("serve.yaml"), "--data", scratch.file("data"), "--port", "0"] + extra,
                environment: ["CHATBATCH_SERVE_KEY": "sk-serve"], stderr: FileHandle(forWritingAtPath: log),
                stdout: out)
            let line = Mutex("")
            let reader = out.fileHandleForReading
            _ = eventually(timeout: 20) {
                let data = reader.availableData
                line.withLock { $0 += String(decoding: data, as: UTF8.self) }
                return line.withLock { $0.contains("\n") } || !process.isRunning
            }
            self.process = process
            base = line.withLock { $0 }.split(separator: "\n").first.map(String.init) ?? ""
        }
        func stop(_ signal: Int32 = SIGTERM) -> Int32 {
            kill(process.processIdentifier, signal)
            process.waitUntilExit()
            return process.terminationStatus
        }
    }

    static func setUp(_ g: FakeGateway, concurrency: Int = 8) -> Scratch {
        let scratch = Scratch()
        let yaml = [
            "provider: openai-compatible", "base_url: \(g.baseURL)", "model: openai/gpt-oss-120b",
            "concurrency: \(concurrency)", "api_key_env: CB_TEST_KEY", "retry: {base_delay: 0.01, max_delay: 0.2}"
        ]
        _ = FileManager.default.createFile(
            atPath: scratch.file("serve.yaml"), contents: Data(yaml.joined(separator: "\n").utf8))
        _ = FileManager.default.createFile(atPath: scratch.file("client.py"), contents: Data(client.utf8))
        return scratch
    }

    static func batchLines(_ n: Int, prefix: String = "r") -> [String] {
        (1...n).map { i in
            EndpointRunTests.line(
                "\(prefix)\(i)", "/v1/chat/completions",
                [
                    "model": "openai/gpt-oss-120b",
                    "messages": [["role": "user", "content": .string("Question \(i)?")]],
                    "max_tokens": 60
                ])
        }
    }

    static func call(_ scratch: Scratch, _ server: Server, _ args: [String]) throws -> JSON {
        let python = try OpenAISDK.python.get()
        let (code, text) = try runToEnd(python, [scratch.file("client.py"), server.base] + args, captureStdout: true)
        #expect(code == 0, "\(args[0]): \(text)")
        let last = text.split(separator: "\n").last.map(String.init) ?? ""
        return (try? JSON.parse(last)) ?? .string(text)
    }

    static func byID(_ jsonl: String) -> [String: JSON] {
        var out: [String: JSON] = [:]
        for line in jsonl.split(separator: "\n") {
            if let j = try? JSON.parse(String(line)), let id = j["custom_id"]?.stringValue { out[id] = j }
        }
        return out
    }

    @Test func theSDKUploadsCreatesPollsAndDownloadsWhatChatbatchRunWrites() throws {
        let g = try FakeGateway.start()
        defer { g.shutdown() }
        let scratch = Self.setUp(g)
        scratch.write("in.jsonl", lines: Self.batchLines(60))
        let server = try Server(scratch)
        let r = try Self.call(scratch, server, ["roundtrip", scratch.file("in.jsonl")])
        var get = HTTPRequest(
            url: server.base.replacingOccurrences(of: "/v1", with: "/metrics"), headers: [], body: [], timeout: 10)
        get.method = "GET"
        let metrics = CurlTransport(maxConnections: 1).send(get)
        let text = String(decoding: metrics.body, as: UTF8.self)
        #expect(server.stop(SIGINT) == 0)
        #expect(metrics.status == 200 && text.contains(#"chatbatch_serve_batches{status="completed"} 1"#), "\(text)")
        #expect(text.contains(#"chatbatch_serve_lines{outcome="completed"} 60"#))
        try text.write(toFile: scratch.file("serve.prom"), atomically: true, encoding: .utf8)
        #expect(try Metrics.check(scratch.file("serve.prom")) != false)
        #expect(r["status"] == "completed" && r["first_status"] == "validating", "\(r)")
        #expect(r["counts"] == ["completed": 60, "failed": 0, "total": 60] && r["errors"] == "")
        #expect(r["metadata"] == ["job": "nightly"] && r["file"]?["purpose"] == "batch")
        #expect(r["usage"]?["input_tokens"]?.intValue ?? 0 > 0)
        // Neither key is in anything the server wrote (its data folder, its log) or answered, in any encoding.
        let secrets = ["sk-fake", "sk-serve"].flatMap { [$0, Data($0.utf8).base64EncodedString()] }
        let written = FileManager.default.enumerator(atPath: scratch.path)?.compactMap { $0 as? String } ?? []
        for name in written where !name.hasSuffix(".py") && !name.hasSuffix(".yaml") && name != "in.jsonl" {
            let bytes = FileManager.default.contents(atPath: scratch.file(name)) ?? Data()
            let text = String(decoding: bytes, as: UTF8.self)
            for secret in secrets { #expect(!text.contains(secret), "\(secret) in \(name)") }
        }
        for secret in secrets { #expect(!r.serialized().contains(secret)) }
        let served = Self.byID(r["output"]?.stringValue ?? "")
        // The same file through `chatbatch run`: the same lines, the same answers.
        var s = settings(scratch, g)
        s.provider = .openAICompatible
        let (summary, _) = try runJob(s)
        #expect(summary.exit == .allDone)
        let ran = Self.byID(try String(contentsOfFile: scratch.file("out.jsonl"), encoding: .utf8))
        #expect(Set(served.keys) == Set(ran.keys) && served.count == 60)
        for (id, line) in ran {
            let content = { (j: JSON?) in j?["response"]?["body"]?["choices"]?.arrayValue?.first?["message"]?["content"]
            }
            #expect(content(served[id]) == content(line), "\(id)")
            #expect(served[id]?["response"]?["status_code"] == 200 && served[id]?["error"] == .null)
        }
        // 60 lines served, 60 run: each billed once per way.
        #expect(g.ledger.billedCounts().values.allSatisfy { $0 == 2 })
    }

    @Test func aBadFileIsA400NamingItsLineAndRefusalsAreOpenAIsShapes() throws {
        let g = try FakeGateway.start()
        defer { g.shutdown() }
        let scratch = Self.setUp(g)
        var lines = Self.batchLines(5)
        lines[2] = #"{"custom_id":"r3","method":"POST","url":"/v1/chat/completions","body":{"messages":"hi"}}"#
        scratch.write("bad.jsonl", lines: lines)
        scratch.write("big.jsonl", lines: Self.batchLines(200))
        let server = try Server(scratch, extra: ["--max-file-bytes", "10000"])
        let bad = try Self.call(scratch, server, ["bad", scratch.file("bad.jsonl")])
        let refusals = try Self.call(scratch, server, ["refusals", scratch.file("big.jsonl")])
        scratch.write("chat.jsonl", lines: Self.batchLines(3))
        let mismatch = try Self.call(scratch, server, ["mismatch", scratch.file("chat.jsonl")])
        #expect(server.stop() == 0)
        #expect(bad["status"] == 400, "\(bad)")
        #expect(bad["message"]?.stringValue?.contains("bad.jsonl:3: `messages` must be an array") == true, "\(bad)")
        #expect(refusals == ["wrong_key": 401, "unknown_batch": 404, "unknown_file": 404, "too_large": 413])
        // Lines that name another endpoint than the batch's: the batch fails validation, each line named.
        let errors = mismatch["errors"]?.arrayValue ?? []
        #expect(mismatch["status"] == "failed" && errors.count == 3, "\(mismatch)")
        #expect(errors.first?["code"] == "mismatched_endpoint" && errors.first?["line"] == 1)
        #expect(g.ledger.count == 0)
    }

    @Test func aRetriedCreateWithOneIdempotencyKeyIsOneBatchAndTwoBatchesBothFinish() throws {
        let g = try FakeGateway.start { $0.latencyMilliseconds = 5 }
        defer { g.shutdown() }
        let scratch = Self.setUp(g)
        scratch.write("a.jsonl", lines: Self.batchLines(30, prefix: "a"))
        scratch.write("b.jsonl", lines: Self.batchLines(40, prefix: "b"))
        let server = try Server(scratch)
        let same = try Self.call(scratch, server, ["idempotent", scratch.file("a.jsonl")])
        let two = try Self.call(scratch, server, ["two", scratch.file("a.jsonl"), scratch.file("b.jsonl")])
        #expect(server.stop() == 0)
        #expect(same["first"] == same["second"] && same["other"] != same["first"], "\(same)")
        // Without a key, the same create again within ten minutes is its retry: one batch.
        let retried = same["retried"]?.arrayValue ?? []
        #expect(retried.count == 2 && retried[0] == retried[1] && retried[0] != same["other"], "\(same)")
        #expect(same["other_counts"]?["completed"] == 30)
        let batches = two.arrayValue ?? []
        #expect(batches.map { $0["status"] } == ["completed", "completed"], "\(two)")
        #expect(Set(Self.byID(batches.first?["output"]?.stringValue ?? "").keys) == Set((1...30).map { "a\($0)" }))
        #expect(Set(Self.byID(batches.last?["output"]?.stringValue ?? "").keys) == Set((1...40).map { "b\($0)" }))
    }

    @Test func cancelStopsSendingAndTheOutputHoldsWhatWasDone() throws {
        let g = try FakeGateway.start { $0.latencyMilliseconds = 100 }
        defer { g.shutdown() }
        let scratch = Self.setUp(g, concurrency: 4)
        scratch.write("in.jsonl", lines: Self.batchLines(400))
        let server = try Server(scratch)
        let started = try Self.call(scratch, server, ["start", scratch.file("in.jsonl")])
        let id = started["id"]?.stringValue ?? ""
        #expect(eventually(timeout: 30) { g.ledger.count >= 20 })
        let cancelled = try Self.call(scratch, server, ["cancel", id])
        #expect(server.stop() == 0)
        #expect(cancelled["status"] == "cancelled" || cancelled["status"] == "cancelling", "\(cancelled)")
        let done = Self.byID(cancelled["output"]?.stringValue ?? "")
        let sent = g.ledger.count
        #expect(sent < 400 && done.count == sent, "sent \(sent), in the output \(done.count)")
        #expect(cancelled["counts"]?["completed"]?.intValue == done.count)
        #expect(done.values.allSatisfy { $0["response"]?["status_code"] == 200 })
    }

    @Test func aServerKilledMidBatchResumesItWhenStartedAgainAndPaysOnce() throws {
        let g = try FakeGateway.start {
            $0.latencyMilliseconds = 20
            $0.jitterMilliseconds = 20
        }
        defer { g.shutdown() }
        let scratch = Self.setUp(g, concurrency: 8)
        scratch.write("in.jsonl", lines: Self.batchLines(300))
        let first = try Server(scratch)
        let id = try Self.call(scratch, first, ["start", scratch.file("in.jsonl")])["id"]?.stringValue ?? ""
        #expect(eventually(timeout: 30) { g.ledger.count >= 60 })
        #expect(first.stop(SIGKILL) == SIGKILL)
        let second = try Server(scratch)
        let r = try Self.call(scratch, second, ["finish", id])
        #expect(second.stop(SIGHUP) == 0)
        #expect(r["status"] == "completed" && r["counts"]?["completed"] == 300, "\(r)")
        let lines = Self.byID(r["output"]?.stringValue ?? "")
        #expect(Set(lines.keys) == Set((1...300).map { "r\($0)" }))
        // Every line billed more than once is one the checkpoint counts as possibly billed twice.
        let checkpoint = scratch.file("data/batches/\(id)/checkpoint")
        let ambiguous = try ambiguousCounts(checkpoint)
        for (custom, billed) in g.ledger.billedCounts() where billed > 1 + (ambiguous[custom] ?? 0) {
            Issue.record("\(custom) billed \(billed) times, \(ambiguous[custom] ?? 0) counted")
        }
        // A batch's checkpoint is read by status and report as any other.
        let (statusCode, status) = try runToEnd(chatbatchBinary(), ["status", checkpoint], captureStdout: true)
        #expect(statusCode == 0 && status.contains("300"), "\(status)")
        let (reportCode, report) = try runToEnd(
            chatbatchBinary(), ["report", checkpoint, "--html", scratch.file("batch.html")], captureStdout: true)
        #expect(reportCode == 0 && FileManager.default.fileExists(atPath: scratch.file("batch.html")), "\(report)")
    }

    /// `jobs/serve-nginx.conf` as written, its names and paths changed for loopback: a client reaches the server
    /// through nginx over TLS, an upload included.
    @Test(needs("nginx, openssl and curl") { installed("nginx") != nil && installed("openssl") != nil })
    func theNginxExampleServesItOverTLS() throws {
        let g = try FakeGateway.start()
        defer { g.shutdown() }
        let scratch = Self.setUp(g)
        scratch.write("in.jsonl", lines: Self.batchLines(3))
        let server = try Server(scratch)
        defer { _ = server.stop() }
        let dir = scratch.file("nginx")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        chmod(scratch.path, 0o755)
        chmod(dir, 0o777)
        let certificates = try TestCertificates(in: dir)
        let example = try String(
            contentsOf: FirstHourTests.repository.appendingPathComponent("jobs/serve-nginx.conf"), encoding: .utf8)
        let serverPort = URLComponents(string: server.base)?.port ?? 0
        let port = freeLoopbackPort()
        let site = example.replacingOccurrences(of: "127.0.0.1:8080", with: "127.0.0.1:\(serverPort)")
            .replacingOccurrences(of: "listen 443", with: "listen 127.0.0.1:\(port)")
            .replacingOccurrences(of: "/etc/ssl/certs/batch.example.com.pem", with: certificates.cert)
            .replacingOccurrences(of: "/etc/ssl/private/batch.example.com.key", with: certificates.key)
        try site.write(toFile: dir + "/site.conf", atomically: true, encoding: .utf8)
        let conf = """
            worker_processes 1;
            pid \(dir)/nginx.pid;
            error_log \(dir)/error.log info;
            events { worker_connections 64; }
            http {
                client_body_temp_path \(dir)/body; proxy_temp_path \(dir)/proxy; fastcgi_temp_path \(dir)/fcgi;
                uwsgi_temp_path \(dir)/uwsgi; scgi_temp_path \(dir)/scgi;
                access_log off;
                include \(dir)/site.conf;
            }
            """
        try conf.write(toFile: dir + "/nginx.conf", atomically: true, encoding: .utf8)
        let nginx = try launch(
            installed("nginx") ?? "/usr/sbin/nginx", ["-p", dir, "-c", dir + "/nginx.conf", "-g", "daemon off;"])
        defer { stopProcess(nginx) }
        #expect(eventually(timeout: 10) { isListening(port) })
        let curl = installed("curl") ?? "/usr/bin/curl"
        let base = "https://127.0.0.1:\(port)/v1"
        let auth = ["--cacert", certificates.ca, "-s", "-H", "Authorization: Bearer sk-serve"]
        let (uploaded, file) = try runToEnd(
            curl, auth + ["-F", "purpose=batch", "-F", "file=@" + scratch.file("in.jsonl"), base + "/files"],
            captureStdout: true)
        #expect(uploaded == 0 && file.contains(#""object":"file""#) && file.contains(#""bytes":"#), "\(file)")
        let (listed, list) = try runToEnd(curl, auth + [base + "/files"], captureStdout: true)
        #expect(listed == 0 && list.contains(#""object":"list""#) && list.contains("in.jsonl"), "\(list)")
    }

    /// An upload is read from its spool a megabyte at a time: a file part of several megabytes, full of near-misses of
    /// the boundary (CRLF, dashes), comes out byte for byte whatever chunk edge the delimiter falls on.
    @Test(arguments: [0, 1, 7, 1 << 20])
    func aMultipartUploadIsSplitFromItsSpoolByteForByte(shift: Int) throws {
        let scratch = Scratch()
        let boundary = "----formdata-chatbatch-7"
        var rng = SplitMix64(seed: UInt64(shift))
        var file = [UInt8](repeating: 0x61, count: shift)
        let pieces: [[UInt8]] = [Array("\r\n--".utf8), Array("\r\n------formdata".utf8), Array("-".utf8), [0x0D]]
        while file.count < 3 << 20 {
            file += Array("{\"custom_id\":\"x\"}".utf8) + pieces[Int(rng.next() % 4)]
        }
        var body = Array(
            "preamble\r\n--\(boundary)\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch".utf8)
        body += Array(
            "\r\n--\(boundary)\r\nContent-Disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\n".utf8)
        body += Array("Content-Type: application/octet-stream\r\n\r\n".utf8) + file
        body += Array("\r\n--\(boundary)--\r\n".utf8)
        let spool = scratch.file("spool")
        _ = FileManager.default.createFile(atPath: spool, contents: Data(body))
        let form = try #require(try MultipartUpload(spool: spool, boundary: boundary, filePath: scratch.file("out")))
        #expect(form.fields["purpose"] == "batch" && form.filename == "in.jsonl" && form.fileBytes == file.count)
        #expect(try Data(contentsOf: URL(fileURLWithPath: scratch.file("out"))) == Data(file))
        // Without its closing delimiter the body was cut: refused.
        _ = FileManager.default.createFile(atPath: spool, contents: Data(body.dropLast(boundary.count + 8)))
        #expect(try MultipartUpload(spool: spool, boundary: boundary, filePath: scratch.file("out")) == nil)
    }

    /// Batches run side by side, sharing the job's concurrency: a small batch created after a large one finishes
    /// while the large one runs, and the two together never have more in flight than the job allows.
    @Test func aSmallBatchBehindALargeOneIsNotHeldForIt() throws {
        let g = try FakeGateway.start { $0.latencyMilliseconds = 100 }
        defer { g.shutdown() }
        let scratch = Self.setUp(g, concurrency: 8)
        scratch.write("big.jsonl", lines: Self.batchLines(320, prefix: "big"))
        scratch.write("small.jsonl", lines: Self.batchLines(12, prefix: "small"))
        let server = try Server(scratch)
        let r = try Self.call(scratch, server, ["fair", scratch.file("big.jsonl"), scratch.file("small.jsonl")])
        #expect(server.stop() == 0)
        #expect(r["small"] == "completed" && r["big_when_small_done"] == "in_progress", "\(r)")
        #expect((r["big_done_then"]?.intValue ?? 320) < 320 && r["big"] == "completed", "\(r)")
        #expect(r["big_counts"]?["completed"] == 320)
        // The most requests the gateway had at once, from its ledger: each request from its arrival to its answer.
        var edges: [(at: Double, step: Int)] = []
        for e in g.ledger.snapshot() {
            edges.append((e.receivedAt, 1))
            edges.append((e.respondedAt, -1))
        }
        edges.sort { a, b in a.at < b.at || (a.at == b.at && a.step < b.step) }
        var now = 0
        var peak = 0
        for (_, step) in edges {
            now += step
            peak = max(peak, now)
        }
        #expect(peak <= 8, "in flight at once: \(peak)")
    }

    /// What a hostile client sends gets an answer, never a crash, and nothing is read before the key is checked.
    @Test func oddRequestsAreAnsweredAndTheServerStaysUp() throws {
        let g = try FakeGateway.start()
        defer { g.shutdown() }
        let scratch = Self.setUp(g)
        let server = try Server(scratch)
        let transport = CurlTransport(maxConnections: 2)
        func send(_ method: String, _ path: String, key: String? = "sk-serve", body: [UInt8] = []) -> HTTPResponse {
            var r = HTTPRequest(
                url: server.base.replacingOccurrences(of: "/v1", with: "") + path,
                headers: (key.map { ["Authorization: Bearer \($0)"] } ?? []) + ["Content-Type: application/json"],
                body: body, timeout: 10)
            r.method = method
            return transport.send(r)
        }
        #expect(send("GET", "/metrics?=&=x&a").status == 200)
        #expect(send("GET", "/v1/batches?=&after=&limit=x").status == 200)
        #expect(send("POST", "/v1/files", key: nil, body: [UInt8](repeating: 0x61, count: 3 << 20)).status == 401)
        #expect(send("POST", "/v1/batches", body: [UInt8](repeating: 0x20, count: 2 << 20)).status == 413)
        #expect(send("POST", "/v1/batches", body: Array("{not json".utf8)).status == 400)
        #expect(send("GET", "/v1/files/..%2F..%2Fetc%2Fpasswd/content").status == 404)
        #expect(send("DELETE", "/v1/batches/x").status == 404)
        #expect(send("GET", "/v1/files").status == 200)
        #expect(server.process.isRunning)
        #expect(server.stop() == 0)
    }
}
