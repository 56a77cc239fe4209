import ChatBatchCore
import FakeGateway
import Foundation
import TestSupport
import Testing

@testable import ChatBatch

/// Nights through `scripts/nightly` with METRICS_DIR: a good night, a rerun with nothing to do, a night whose input is
/// missing, a skipped night, a night whose run is killed. A real node_exporter reads the files, and
/// `jobs/chatbatch-alerts.yml` is run by `promtool test rules` against what it exposed after each.
@Suite("Operating it: nightly metrics and alerts", .serialized)
struct NightlyAlertsTests {
    static let rules = ArchitectureTests.root.appendingPathComponent("jobs/chatbatch-alerts.yml").path
    typealias Series = [(name: String, value: Double)]

    /// One night's state as node_exporter exposes it: its `chatbatch_` samples.
    static func scrape(_ port: Int) throws -> Series {
        let (code, text) = try runToEnd(
            "/usr/bin/curl", ["-sf", "http://127.0.0.1:\(port)/metrics"], captureStdout: true)
        #expect(code == 0)
        #expect(text.contains("node_textfile_scrape_error 0"), "node_exporter read every file")
        return text.split(separator: "\n").filter { $0.hasPrefix("chatbatch_") }.compactMap { line in
            guard let space = line.lastIndex(of: " "), let v = Double(line[line.index(after: space)...]) else {
                return nil
            }
            return (String(line[..<space]), v)
        }
    }

    /// A `promtool test rules` case: the series held from the first minute on, their timestamps shifted so that the
    /// events happened one minute into promtool's clock, and which alerts fire at each time.
    static func testCase(_ series: Series, base: Double, expect: [(at: String, alerts: [String])]) -> String {
        var out = ["  - interval: 1m", "    input_series:"]
        for s in series {
            let value =
                s.name.hasPrefix("chatbatch_") && s.name.split(separator: "{")[0].hasSuffix("_time_seconds")
                ? s.value - base : s.value
            let values = String(format: "%.0f", value)
            out.append("      - series: '\(s.name)'")
            out.append("        values: '_ \(values)+0x1800'")
        }
        out.append("    alert_rule_test:")
        let summaries = [
            "ChatbatchNightDidNotFinish": "chatbatch nightly: last night ended with exit code {code}",
            "ChatbatchLinesFailed": "chatbatch nightly: some lines failed last night (see the errors file)",
            "ChatbatchNoSuccessForADay": "chatbatch nightly: no successful run for more than 26 hours",
            "ChatbatchNightSkipped": "chatbatch nightly: a night was skipped; run it with DATE=… scripts/nightly",
            "ChatbatchRunStoppedReporting": "chatbatch nightly: a run started and stopped reporting without ending"
        ]
        let names = [
            "ChatbatchNightDidNotFinish", "ChatbatchLinesFailed", "ChatbatchNoSuccessForADay", "ChatbatchNightSkipped",
            "ChatbatchRunStoppedReporting"
        ]
        for e in expect {
            for name in names {
                out.append("      - eval_time: \(e.at)")
                out.append("        alertname: \(name)")
                if e.alerts.contains(name) {
                    let severity = ["ChatbatchLinesFailed", "ChatbatchNightSkipped"].contains(name) ? "ticket" : "page"
                    let code =
                        series.first { $0.name.hasPrefix("chatbatch_nightly_exit_code{") }.map {
                            String(format: "%.0f", $0.value)
                        } ?? "?"
                    let summary = (summaries[name] ?? "").replacingOccurrences(of: "{code}", with: code)
                    out.append("        exp_alerts: [{exp_labels: {chatbatch_job: nightly, severity: \(severity)},")
                    out.append("                      exp_annotations: {summary: '\(summary)'}}]")
                } else {
                    out.append("        exp_alerts: []")
                }
            }
        }
        return out.joined(separator: "\n")
    }

    @Test(
        needs(
            "node_exporter and promtool",
            { installed("prometheus-node-exporter") != nil && installed("promtool") != nil }))
    func everyNightReachesTheMetricsAndTheAlertsFireOnlyWhenTheyShould() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start { $0.latencyMilliseconds = 200 }
        defer { g.shutdown() }
        let fm = FileManager.default
        for dir in ["data", "textfile"] {
            try fm.createDirectory(atPath: scratch.file(dir), withIntermediateDirectories: true)
        }
        scratch.write("data/2026-11-20.jsonl", lines: promptLines(5))
        scratch.write("data/2026-11-23.jsonl", lines: promptLines(80))
        let yaml = [
            "input: data/{date}.jsonl", "output: out/{date}/results.jsonl", "provider: openai-compatible",
            "model: openai/gpt-oss-120b", "base_url: \(g.baseURL)", "api_key_env: CB_TEST_KEY", "concurrency: 2",
            "metrics_interval: 0.1"
        ]
        try yaml.joined(separator: "\n").write(toFile: scratch.file("nightly.yaml"), atomically: true, encoding: .utf8)
        let textfile = scratch.file("textfile")
        let lock = scratch.file("nightly.lock")
        let environment = { (date: String) in
            [
                "JOB": scratch.file("nightly.yaml"), "DATE": date, "LOCK": lock, "CHATBATCH": chatbatchBinary(),
                "METRICS_DIR": textfile
            ]
        }
        let wrapper = OperatingNightsTests.nightly
        let exporterPort = freeLoopbackPort()
        let exporter = try launch(
            installed("prometheus-node-exporter")!,
            [
                "--collector.disable-defaults", "--collector.textfile", "--collector.textfile.directory=\(textfile)",
                "--web.listen-address=127.0.0.1:\(exporterPort)"
            ])
        defer {
            kill(exporter.processIdentifier, SIGKILL)
            exporter.waitUntilExit()
        }
        #expect(eventually(timeout: 10) { isListening(exporterPort) })
        let base = Date().timeIntervalSince1970.rounded(.down) - 60
        var cases: [String] = []

        // A good night, then a rerun with nothing to do: the run's file keeps the night's figures.
        #expect(try runToEnd(wrapper, [], environment: environment("2026-11-20")).0 == 0)
        let good = try String(contentsOfFile: "\(textfile)/nightly.prom", encoding: .utf8)
        #expect(good.contains("chatbatch_last_success_time_seconds") && good.contains("code=\"200\"} 5"))
        #expect(try runToEnd(wrapper, [], environment: environment("2026-11-20")).0 == 0)
        #expect(
            try String(contentsOfFile: "\(textfile)/nightly.prom", encoding: .utf8) == good,
            "a rerun keeps the last real figures")
        cases.append(
            Self.testCase(
                try Self.scrape(exporterPort), base: base, expect: [("3m", []), ("27h", ["ChatbatchNoSuccessForADay"])])
        )

        // The input is missing: exit 2 reaches the metrics through the wrapper's file; the run's file is untouched.
        let (missing, _) = try runToEnd(wrapper, [], environment: environment("2026-11-21"))
        #expect(missing == 2)
        #expect(try String(contentsOfFile: "\(textfile)/nightly.prom", encoding: .utf8) == good)
        #expect(
            try String(contentsOfFile: "\(textfile)/nightly.nightly.prom", encoding: .utf8).contains(
                "chatbatch_nightly_exit_code{chatbatch_job=\"nightly\"} 2"))
        cases.append(
            Self.testCase(
                try Self.scrape(exporterPort), base: base,
                expect: [
                    ("3m", ["ChatbatchNightDidNotFinish"]),
                    ("27h", ["ChatbatchNightDidNotFinish", "ChatbatchNoSuccessForADay"])
                ]))

        // Last night still runs (it holds the lock): skipped, said in the log and counted.
        let fd = open(lock, O_CREAT | O_RDWR, 0o600)
        #expect(flock(fd, LOCK_EX | LOCK_NB) == 0)
        let (skipped, message) = try runToEnd(wrapper, [], environment: environment("2026-11-22"))
        flock(fd, LOCK_UN)
        close(fd)
        #expect(skipped == 5 && message.contains("no later night runs 2026-11-22's input"), "\(message)")
        #expect(
            try String(contentsOfFile: "\(textfile)/nightly.nightly.prom", encoding: .utf8).contains(
                "chatbatch_nightly_skipped_total{chatbatch_job=\"nightly\"} 1"))
        cases.append(
            Self.testCase(
                try Self.scrape(exporterPort), base: base,
                expect: [("3m", ["ChatbatchNightDidNotFinish", "ChatbatchNightSkipped"])]))

        // A night whose run is killed: while it runs nothing fires; once it stops writing, "stopped reporting" does.
        let night = try launch(wrapper, [], environment: environment("2026-11-23"))
        var running = ""
        #expect(
            eventually(timeout: 20) {
                running = (try? String(contentsOfFile: "\(textfile)/nightly.prom", encoding: .utf8)) ?? ""
                return running.contains("chatbatch_running{chatbatch_job=\"nightly\"} 1")
                    && g.ledger.snapshot().count > 5
            })
        #expect(!running.contains("chatbatch_run_end_time_seconds"), "no end time while the run goes")
        let alive = try Self.scrape(exporterPort)
        // Last night's skip still shows until this night ends; a run that goes on writing is not "stopped reporting".
        cases.append(
            Self.testCase(alive, base: base, expect: [("2m", ["ChatbatchNightDidNotFinish", "ChatbatchNightSkipped"])]))
        let children = try String(
            contentsOfFile: "/proc/\(night.processIdentifier)/task/\(night.processIdentifier)/children", encoding: .utf8
        )
        let run = try #require(Int32(children.split(separator: " ").first ?? ""))
        kill(run, SIGKILL)
        night.waitUntilExit()
        #expect(night.terminationStatus == 137)
        cases.append(
            Self.testCase(
                try Self.scrape(exporterPort), base: base,
                expect: [
                    ("20m", ["ChatbatchNightDidNotFinish", "ChatbatchRunStoppedReporting", "ChatbatchNightSkipped"])
                ]))

        let file = scratch.file("alerts-test.yml")
        try (["rule_files: [\(Self.rules)]", "evaluation_interval: 1m", "tests:"] + cases).joined(separator: "\n")
            .write(toFile: file, atomically: true, encoding: .utf8)
        let (code, output) = try runToEnd(installed("promtool")!, ["test", "rules", file], captureStdout: true)
        #expect(code == 0, "\(output)")
    }
}
