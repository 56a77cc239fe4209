import ChatBatchCore
import FakeGateway
import Foundation
import TestSupport
import Testing

@testable import ChatBatch

/// The HTML report rendered by a real browser, and the metrics file read by a real Prometheus parser, with the real
/// binary.
@Suite("Pictures and metrics", .serialized)
struct ReportMetricsTests {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    @Test(
        needs("chromium is not installed (apt-get install chromium): the report is not rendered") {
            Browser.chromium() != nil
        })
    func theReportOfAStoppedAndResumedDemoRendersInHeadlessChromium() throws {
        guard let chromium = Browser.chromium() else {
            Issue.record("chromium is not installed and could not be installed (apt-get install chromium)")
            return
        }
        let scratch = Scratch()
        let png = scratch.file("report.png"), html = scratch.file("report.html")
        // The README's picture step: the demo job stopped with SIGTERM part-way and resumed, then rendered.
        let (code, said) = try runToEnd(
            Self.repository.appendingPathComponent("scripts/report-picture").path, [png, html],
            environment: [
                "CHATBATCH": chatbatchBinary(),
                "PATH": URL(fileURLWithPath: chromium).deletingLastPathComponent().path + ":/usr/bin:/bin"
            ])
        #expect(code == 0, "\(said)")
        let page = try String(contentsOfFile: html, encoding: .utf8)
        // Self-contained: nothing to fetch, no script.
        for fetch in ["<script", "src=", "href=", "url(", "@import", "<link", "<img"] {
            #expect(!page.contains(fetch), "the page holds \(fetch)")
        }
        #expect(
            page.components(separatedBy: "<svg").count - 1 == 4, "answers over time, latency, status over time, cost")
        for part in [
            "run 1", "run 2", "p50 ", "p90 ", "p99 ", "in-flight limit", "By model", "interrupted", "all 200 lines done"
        ] {
            #expect(page.contains(part), "the page lacks \(part)")
        }
        // The screenshot is the page drawn: the charts' colours are there, not a blank or an error page.
        let facts = try Browser.pixels(png)
        #expect(facts["width"] == 1000 && facts["height"] == 2250, "\(facts)")
        #expect((facts["blue"] ?? 0) > 2000, "the answered line and latency bars: \(facts)")
        #expect((facts["green"] ?? 0) > 2000, "the 2xx bars and the cost line: \(facts)")
        #expect((facts["orange"] ?? 0) > 100, "the in-flight limit: \(facts)")
        #expect((facts["inked"] ?? 0) > 0.04, "\(facts)")
    }

    @Test func aRunningRunHasAReportAndLiveMetricsAndItsEndsAreInBoth() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start {
            $0.latencyMilliseconds = 60
            $0.script = ["p0003": [.badRequest], "p0005": [.rateLimited, .ok]]
            $0.retryAfterSeconds = 0
        }
        defer { g.shutdown() }
        scratch.write("in.jsonl", lines: promptLines(80))
        writeJob(
            scratch, g, concurrency: 4,
            extra: ["stream: true", "metrics_file: metrics/night.prom", "metrics_interval: 0.1"])
        let metrics = scratch.file("metrics/night.prom")
        let run = try launch(chatbatchBinary(), ["run", scratch.file("job.yaml"), "--quiet"])
        defer { if run.isRunning { kill(run.processIdentifier, SIGKILL) } }
        #expect(
            eventually(timeout: 20) { Metrics.value(metrics, "chatbatch_prompts", ["state": "answered"]) ?? 0 >= 12 })
        let running = try String(contentsOfFile: metrics, encoding: .utf8)
        #expect(
            Metrics.value(metrics, "chatbatch_running") == 1
                && Metrics.value(metrics, "chatbatch_last_exit_code") == nil, "\(running)")
        #expect(
            Metrics.value(metrics, "chatbatch_inflight_limit", ["provider": "openai-compatible"]) ?? 0 >= 1,
            "\(running)")
        #expect(running.contains(#"chatbatch_job="job""#), "labelled with the job file's name: \(running)")
        #expect(try Metrics.check(metrics) ?? true)
        // The report of the run still going: its run has not ended, streamed lines have a time to first token.
        let (reported, said) = try runToEnd(
            chatbatchBinary(), ["report", scratch.file("job.yaml"), "--html", scratch.file("now.html")],
            captureStdout: true)
        #expect(reported == 0, "\(said)")
        let now = try String(contentsOfFile: scratch.file("now.html"), encoding: .utf8)
        #expect(
            now.contains("not ended") && now.contains("Time to first token")
                && now.components(separatedBy: "<svg").count - 1 == 5)

        kill(run.processIdentifier, SIGTERM)
        run.waitUntilExit()
        #expect(run.terminationStatus == 4)
        #expect(
            Metrics.value(metrics, "chatbatch_running") == 0 && Metrics.value(metrics, "chatbatch_last_exit_code") == 4)
        #expect(Metrics.value(metrics, "chatbatch_prompts", ["state": "left_pending"]) ?? 0 > 0)
        #expect(try Metrics.check(metrics) ?? true)

        let (resumed, text) = try runToEnd(chatbatchBinary(), ["run", scratch.file("job.yaml"), "--quiet"])
        #expect(resumed == 1, "p0003's 400 failed it: \(text)")
        let answered = ["answered", "answered_before"].compactMap {
            Metrics.value(metrics, "chatbatch_prompts", ["state": $0])
        }.reduce(0, +)
        let failed = ["failed", "failed_before"].compactMap {
            Metrics.value(metrics, "chatbatch_prompts", ["state": $0])
        }.reduce(0, +)
        #expect(answered == 79 && failed == 1 && Metrics.value(metrics, "chatbatch_last_exit_code") == 1)
        #expect(Metrics.value(metrics, "chatbatch_input_lines_read") == 80)
        #expect(try Metrics.check(metrics) ?? true)
        let (_, _) = try runToEnd(
            chatbatchBinary(), ["report", scratch.file("job.yaml"), "--html", scratch.file("now.html")],
            captureStdout: true)
        let done = try String(contentsOfFile: scratch.file("now.html"), encoding: .utf8)
        #expect(done.contains("<code>p0003</code> in.jsonl:3:"), "a failure's example names its line")
        #expect(done.contains("run 2") && !done.contains("not ended"))
    }

    @Test(arguments: ["demo", "extract"])
    func theShippedJobsWriteMetricsThatAgreeWithTheirSummary(_ job: String) throws {
        let scratch = Scratch()
        let jobs = Self.repository.appendingPathComponent("jobs")
        try FileManager.default.copyItem(
            atPath: jobs.appendingPathComponent("\(job).yaml").path, toPath: scratch.file("\(job).yaml"))
        try FileManager.default.copyItem(atPath: jobs.appendingPathComponent("data").path, toPath: scratch.file("data"))
        let metrics = scratch.file("\(job).prom")
        let (code, said) = try runToEnd(
            chatbatchBinary(),
            [
                "run", scratch.file("\(job).yaml"), "--fake-gateway", "--quiet", "--metrics-file", metrics,
                "--summary-json", scratch.file("summary.json")
            ])
        #expect(code == 0, "\(said)")
        #expect(try Metrics.check(metrics) ?? true)
        let summary = try JSON.parse(String(contentsOfFile: scratch.file("summary.json"), encoding: .utf8))
        let labels = ["chatbatch_job": job]
        #expect(
            Metrics.value(metrics, "chatbatch_prompts", labels.merging(["state": "answered"]) { $1 })
                == summary["done"]?.doubleValue)
        #expect(
            Metrics.value(metrics, "chatbatch_tokens_total", ["kind": "prompt"])
                == summary["prompt_tokens"]?.doubleValue)
        #expect(
            Metrics.value(metrics, "chatbatch_tokens_total", ["kind": "completion"])
                == summary["completion_tokens"]?.doubleValue)
        #expect(Metrics.value(metrics, "chatbatch_requests_total", ["code": "200"]) == summary["done"]?.doubleValue)
        #expect(Metrics.value(metrics, "chatbatch_request_duration_seconds_count") == summary["done"]?.doubleValue)
        #expect(
            Metrics.value(metrics, "chatbatch_last_exit_code") == 0 && Metrics.value(metrics, "chatbatch_running") == 0)
        #expect(
            abs((Metrics.value(metrics, "chatbatch_cost_usd_total") ?? 0) - (summary["cost_usd"]?.doubleValue ?? -1))
                < 1e-9)
        let attrs = try FileManager.default.attributesOfItem(atPath: metrics)
        #expect((attrs[.posixPermissions] as? Int) == 0o644, "node_exporter runs as another user")
        let (reported, text) = try runToEnd(
            chatbatchBinary(), ["report", scratch.file("\(job).yaml"), "--html", scratch.file("r.html")],
            captureStdout: true)
        #expect(reported == 0 && text.contains("wrote"), "\(text)")
        #expect(
            try String(contentsOfFile: scratch.file("r.html"), encoding: .utf8).components(separatedBy: "<svg").count
                - 1 == 4)
    }

    @Test func neitherTheReportNorTheMetricsReplaceAFileTheyDidNotWrite() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start()
        defer { g.shutdown() }
        scratch.write("in.jsonl", lines: promptLines(5))
        writeJob(scratch, g)
        #expect(try runToEnd(chatbatchBinary(), ["run", scratch.file("job.yaml"), "--quiet"]).0 == 0)
        let before = try Data(contentsOf: URL(fileURLWithPath: scratch.file("in.jsonl")))
        let (code, said) = try runToEnd(
            chatbatchBinary(), ["report", scratch.file("job.yaml"), "--html", scratch.file("in.jsonl")])
        #expect(code != 0 && said.contains("is not a chatbatch report"), "\(said)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: scratch.file("in.jsonl"))) == before)
        // An earlier report is replaced.
        #expect(
            try runToEnd(chatbatchBinary(), ["report", scratch.file("job.yaml"), "--html", scratch.file("r.html")]).0
                == 0)
        #expect(
            try runToEnd(chatbatchBinary(), ["report", scratch.file("job.yaml"), "--html", scratch.file("r.html")]).0
                == 0)
        // A metrics file that cannot be written stops nothing paid: the run is refused before sending.
        try "x".write(toFile: scratch.file("blocker"), atomically: true, encoding: .utf8)
        scratch.write("more.jsonl", lines: promptLines(3, prefix: "m"))
        let sent = g.ledger.count
        let (refused, why) = try runToEnd(
            chatbatchBinary(),
            [
                "run", scratch.file("more.jsonl"), "--base-url", g.baseURL, "--api-key-env", "CB_TEST_KEY",
                "--metrics-file", scratch.file("blocker/m.prom")
            ])
        #expect(refused == 2 && why.contains("cannot write the metrics to"), "\(why)")
        #expect(g.ledger.count == sent)
    }
}

/// The metrics file as a Prometheus parser reads it.
enum Metrics {
    /// The value of the first sample of `name` whose labels include `labels`, or nil.
    static func value(_ path: String, _ name: String, _ labels: [String: String] = [:]) -> Double? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix(name + "{") {
            guard let close = line.lastIndex(of: "}") else { continue }
            let inside = line[line.index(line.startIndex, offsetBy: name.count + 1)..<close]
            let have = Dictionary(
                inside.split(separator: ",").compactMap { pair -> (String, String)? in
                    let kv = pair.split(separator: "=", maxSplits: 1)
                    return kv.count == 2 ? (String(kv[0]), String(kv[1].dropFirst().dropLast())) : nil
                }, uniquingKeysWith: { a, _ in a })
            if labels.allSatisfy({ have[$0.key] == $0.value }) {
                return Double(line[line.index(after: close)...].trimmingCharacters(in: .whitespaces))
            }
        }
        return nil
    }

    /// Checks the file with `promtool check metrics` (Debian's prometheus), else the prometheus_client parser;
    /// nil (and a note) when neither is here.
    static func check(_ path: String) throws -> Bool? {
        if let promtool = installed("promtool") {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: promtool)
            p.arguments = ["check", "metrics"]
            p.standardInput = FileHandle(forReadingAtPath: path)
            let out = Pipe()
            p.standardOutput = out
            p.standardError = out
            try p.run()
            let said = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            p.waitUntilExit()
            if p.terminationStatus != 0 || !said.isEmpty { print("promtool check metrics \(path): \(said)") }
            return p.terminationStatus == 0 && said.isEmpty
        }
        let script = """
            import sys
            from prometheus_client.parser import text_string_to_metric_families
            n = sum(1 for _ in text_string_to_metric_families(open(sys.argv[1]).read()))
            print(n)
            """
        let (code, said) = try runToEnd("/usr/bin/env", ["python3", "-c", script, path], captureStdout: true)
        if said.contains("No module named") {
            // In CI, which installs promtool, an unparsed file is a failure; elsewhere the rest of the test still runs.
            if inCI { Issue.record("neither promtool nor prometheus_client is installed: \(path) was not parsed") }
            print(
                "note: neither promtool (apt-get install prometheus) nor prometheus_client is installed: \(path) was not parsed"
            )
            return nil
        }
        if code != 0 { print("prometheus_client could not parse \(path): \(said)") }
        return code == 0
    }
}

/// Headless Chromium, and what a screenshot shows.
enum Browser {
    /// Chromium's path; installed with apt-get when it is missing and this is root (as the suite's set-up does).
    static func chromium() -> String? {
        if let path = installed("chromium") { return path }
        guard getuid() == 0, let apt = installed("apt-get") else { return nil }
        _ = try? runToEnd(apt, ["install", "-y", "-qq", "chromium"], environment: ["DEBIAN_FRONTEND": "noninteractive"])
        return installed("chromium")
    }

    /// A PNG's size, how many pixels are near the report's blue, green and orange, and the share that is not white.
    static func pixels(_ png: String) throws -> [String: Double] {
        let script = """
            import json, struct, sys, zlib
            data = open(sys.argv[1], 'rb').read()
            assert data[:8] == b'\\x89PNG\\r\\n\\x1a\\n'
            pos, idat = 8, b''
            while pos < len(data):
                n, kind = struct.unpack('>I4s', data[pos:pos + 8])
                body = data[pos + 8:pos + 8 + n]
                if kind == b'IHDR':
                    w, h, depth, ctype = struct.unpack('>IIBB', body[:10])
                elif kind == b'IDAT':
                    idat += body
                pos += 12 + n
            assert depth == 8 and ctype in (2, 6)
            bpp = 3 if ctype == 2 else 4
            raw, stride, prev, rows, i = zlib.decompress(idat), w * bpp, bytearray(w * bpp), [], 0
            for _ in range(h):
                f, line = raw[i], bytearray(raw[i + 1:i + 1 + stride]); i += 1 + stride
                for x in range(stride):
                    a = line[x - bpp] if x >= bpp else 0
                    b = prev[x]; c = prev[x - bpp] if x >= bpp else 0
                    if f == 1: line[x] = (line[x] + a) & 255
                    elif f == 2: line[x] = (line[x] + b) & 255
                    elif f == 3: line[x] = (line[x] + (a + b) // 2) & 255
                    elif f == 4:
                        p = a + b - c; pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                        line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
                rows.append(line); prev = line
            def near(px, rgb): return all(abs(px[k] - rgb[k]) < 40 for k in range(3))
            counts = {'blue': 0, 'green': 0, 'orange': 0}
            colours = {'blue': (47, 111, 222), 'green': (28, 154, 90), 'orange': (224, 138, 30)}
            inked = 0
            for row in rows:
                for x in range(0, stride, bpp):
                    px = row[x:x + 3]
                    if min(px) < 235: inked += 1
                    for name, rgb in colours.items():
                        if near(px, rgb): counts[name] += 1
            counts.update(width=w, height=h, inked=inked / (w * h))
            print(json.dumps(counts))
            """
        let (code, said) = try runToEnd("/usr/bin/env", ["python3", "-c", script, png], captureStdout: true)
        guard code == 0, let json = try? JSON.parse(said), let fields = json.objectValue else { return ["error": 1] }
        return Dictionary(uniqueKeysWithValues: fields.keys.map { ($0, fields[$0]?.doubleValue ?? 0) })
    }
}
