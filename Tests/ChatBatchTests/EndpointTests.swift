import ChatBatchCore
import FakeGateway
import Foundation
import TestSupport
import Testing

@testable import ChatBatch

/// The endpoint as a whole, with the real binary: an outage of seconds, a wrong URL, a systematic failure, and
/// whose answers count.
@Suite("Endpoints: outages, wrong URLs, systematic failures, whose answers count", .serialized)
struct EndpointTests {
    func run(_ scratch: Scratch, _ arguments: [String] = []) throws -> (Int32, String) {
        try runToEnd(chatbatchBinary(), ["run", scratch.file("job.yaml")] + arguments)
    }

    @Test func anOutageOfSecondsFailsNoLineAndPaysNothingTwiceUncounted() throws {
        let scratch = Scratch()
        let first = try startRestartableGateway { $0.latencyMilliseconds = 40 }
        let port = first.port
        let n = 300
        scratch.write("in.jsonl", lines: promptLines(n))
        writeJob(
            scratch, first, concurrency: 16,
            extra: ["timeout: 5", "retry: {max_attempts: 3, base_delay: 0.05, max_delay: 0.5}"])
        let err = Pipe()
        let p = try launch(
            chatbatchBinary(), ["run", scratch.file("job.yaml"), "--summary-json", scratch.file("s.json")], stderr: err)
        #expect(eventually(timeout: 20) { first.ledger.count >= 80 })
        first.shutdown()  // the gateway goes away: connections refused
        usleep(2_500_000)  // the outage itself lasts a couple of seconds (not a wait for anything)
        // The gateway comes back on its port (one no other suite can be given: see startRestartableGateway).
        var restarted: FakeGateway? = nil
        #expect(
            eventually(timeout: 20) {
                restarted = try? FakeGateway.start {
                    $0.latencyMilliseconds = 40
                    $0.port = port
                }
                return restarted != nil
            })
        let second = try #require(restarted)
        defer { second.shutdown() }
        let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        #expect(p.terminationStatus == 0, "\(stderr)")
        #expect(stderr.contains("is unreachable") && stderr.contains("answers again after"), "\(stderr)")
        let summary = try JSON.parse(String(contentsOfFile: scratch.file("s.json"), encoding: .utf8))
        #expect(summary["failed"] == 0 && summary["done"]?.intValue == n, "\(summary)")
        // Across both gateways every line was billed once, beyond the sends counted as possibly billed twice.
        let results = scratch.lines("out.jsonl").compactMap { $0["custom_id"]?.stringValue }
        #expect(Set(results).count == n && results.count == n && scratch.lines("out.errors.jsonl").isEmpty)
        var billed: [String: Int] = [:]
        for ledger in [first.ledger, second.ledger] { billed.merge(ledger.billedCounts()) { $0 + $1 } }
        let ambiguous = try ambiguousCounts(scratch.file("out.jsonl.checkpoint"))
        for (id, count) in billed where count > 1 + (ambiguous[id] ?? 0) {
            Issue.record("\(id) billed \(count) times, \(ambiguous[id] ?? 0) counted")
        }
    }

    @Test func aWrongURLStopsAtOnceWithItsCauseAndFailsNoLine() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start()
        defer { g.shutdown() }
        scratch.write("in.jsonl", lines: promptLines(20))
        writeJob(scratch, g)
        // No /v1: the gateway answers 404 No such route.
        let (noV1, said) = try run(scratch, ["--base-url", g.rootURL])
        #expect(noV1 == 3 && said.contains("404") && said.contains("does the base URL end in /v1"), "\(said)")
        #expect(scratch.lines("out.errors.jsonl").isEmpty && g.ledger.count == 1)
        // A closed port, and https against a plain-http port.
        for (url, hint) in [
            ("http://127.0.0.1:\(freeLoopbackPort())/v1", "Is the server running"),
            ("https://127.0.0.1:\(g.port)/v1", "Is it plain http")
        ] {
            let start = Date()
            let (code, text) = try run(scratch, ["--base-url", url])
            #expect(code == 3 && text.contains(hint) && text.contains("nothing was sent"), "\(url): \(text)")
            #expect(Date().timeIntervalSince(start) < 30)
        }
        #expect(scratch.lines("out.errors.jsonl").isEmpty)
        // With the URL fixed, a plain rerun sends every line.
        let (fixed, text) = try run(scratch)
        #expect(fixed == 0 && scratch.lines("out.jsonl").count == 20, "\(text)")
    }

    @Test func theFirstAnswersFailingAlikeStopTheRunWithTheLinesLeftPending() throws {
        let scratch = Scratch()
        var script: [String: [ScriptedAction]] = [:]
        for i in 1...40 { script[String(format: "p%04d", i)] = [.badRequest] }
        let bad = try startRestartableGateway { $0.script = script }
        scratch.write("in.jsonl", lines: promptLines(40))
        writeJob(scratch, bad)
        let (code, stderr) = try run(scratch)
        #expect(code == 3 && stderr.contains("failed the same way") && stderr.contains("40 left pending"), "\(stderr)")
        #expect(bad.ledger.count == FirstFailures.limit && scratch.lines("out.errors.jsonl").isEmpty)
        // The cause fixed (the same endpoint answers now): a plain rerun sends them all, without --retry-failed.
        bad.shutdown()
        // The gateway comes back on its port (one no other suite can be given: see startRestartableGateway).
        var restarted: FakeGateway? = nil
        #expect(
            eventually(timeout: 20) {
                restarted = try? FakeGateway.start { $0.port = bad.port }
                return restarted != nil
            })
        let good = try #require(restarted)
        defer { good.shutdown() }
        let (again, text) = try run(scratch)
        #expect(again == 0 && scratch.lines("out.jsonl").count == 40, "\(text)")
    }

    @Test func aFakeGatewaysAnswersNeverStandForARealEndpointsAndAnotherEndpointsAreAskedAbout() throws {
        let scratch = Scratch()
        scratch.write("in.jsonl", lines: promptLines(12))
        let real = try FakeGateway.start()
        defer { real.shutdown() }
        writeJob(scratch, real)
        let (fake, fakeText) = try run(scratch, ["--fake-gateway"])
        #expect(fake == 0, "\(fakeText)")
        let (again, againText) = try run(scratch, ["--fake-gateway"])  // the fake again: its own answers stand
        #expect(again == 0 && againText.contains("nothing to do"), "\(againText)")
        // The same job for real: every line is sent to the real endpoint, and the run says why.
        let (paid, paidText) = try run(scratch)
        #expect(paid == 0 && paidText.contains("answered by the fake gateway"), "\(paidText)")
        #expect(real.ledger.count == 12 && scratch.lines("out.jsonl").count == 12)
        // Another real endpoint: its lines are not taken as done, nor paid again, unless the user says which.
        let other = try FakeGateway.start()
        defer { other.shutdown() }
        let (asked, askedText) = try run(scratch, ["--base-url", other.baseURL])
        #expect(asked == 2 && askedText.contains("--other-endpoint-answers") && other.ledger.count == 0, "\(askedText)")
        let (kept, _) = try run(scratch, ["--base-url", other.baseURL, "--other-endpoint-answers", "keep"])
        #expect(kept == 0 && other.ledger.count == 0)
        let (resent, _) = try run(scratch, ["--base-url", other.baseURL, "--other-endpoint-answers", "resend"])
        #expect(resent == 0 && other.ledger.count == 12 && scratch.lines("out.jsonl").count == 12)
        // validate says what a run on the job's own endpoint would do: nothing to send, 12 answered elsewhere.
        let (code, report) = try runToEnd(
            chatbatchBinary(), ["validate", scratch.file("job.yaml"), "--json"], captureStdout: true)
        let json = try? JSON.parse(report)
        #expect(code == 0 && json?["to_send"] == 0 && json?["other_endpoint"] == 12, "\(report)")
    }
}
