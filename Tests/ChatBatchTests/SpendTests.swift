import ChatBatchCore
import FakeGateway
import Foundation
import Testing

@testable import ChatBatch

@Suite("Spend safely: adaptive concurrency, warm-up, budget, client-side limits, validate")
struct SpendTests {
    /// What the gateway billed, at Tera's prices.
    func billedCost(_ g: FakeGateway) -> Double {
        g.ledger.snapshot().filter(\.billed).reduce(0) {
            $0
                + Prices(inputPerMillion: 0.09, outputPerMillion: 0.36).cost(
                    prompt: $1.promptTokens, completion: $1.completionTokens)
        }
    }

    @Test func convergesUnderAPerKeyConcurrencyLimitWithoutAnErrorStorm() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start {
            $0.maxInflightPerKey = 8
            $0.retryAfterSeconds = 1
            $0.latencyMilliseconds = 30
        }
        defer { g.shutdown() }
        scratch.write("in.jsonl", lines: promptLines(400))
        var s = settings(scratch, g)
        s.concurrency = 64
        s.maxAttempts = 20
        let (summary, _) = try runJob(s)
        #expect(summary.exit == .allDone && summary.done == 400)
        let limited = g.ledger.snapshot().filter { $0.status == 429 }.count
        // Slow start overshoots the gateway's 8 once; after that the limit stays below where the 429 came.
        #expect(limited <= 10, "\(limited) 429s")
        #expect(summary.lowestConcurrency <= 8)
        try expectExactlyOnce(scratch, ids: (1...400).map { String(format: "p%04d", $0) }, gateway: g)
    }

    @Test func warmUpWaitsOutAColdStartWithAHandfulOf503s() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start { $0.coldStartSeconds = 1.5 }
        defer { g.shutdown() }
        scratch.write("in.jsonl", lines: promptLines(60))
        var s = settings(scratch, g)
        s.concurrency = 32
        s.retryBaseDelay = 0.25
        s.maxAttempts = 3  // the warm-up probe's 503s do not use up its attempts
        let (summary, _) = try runJob(s)
        #expect(summary.exit == .allDone && summary.done == 60)
        let ledger = g.ledger.snapshot()
        let firstSuccess = try #require(ledger.firstIndex { $0.status == 200 })
        let cold = ledger[..<firstSuccess].filter { $0.status == 503 }.count
        #expect(cold >= 1 && cold <= 6, "\(cold) 503s before the first success")
        #expect(ledger.filter { $0.status == 503 }.count == cold)  // none after it: nothing burst into the cold backend
    }

    @Test func budgetCapStopsMidRunAndALargerCapCarriesOnWithoutDoubleBilling() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start { $0.latencyMilliseconds = 5 }
        defer { g.shutdown() }
        scratch.write("in.jsonl", lines: promptLines(200))
        var s = settings(scratch, g)
        s.request = JSONObject([("max_tokens", 200)])
        s.maxCost = 0.002
        let (capped, messages) = try runJob(s)
        #expect(capped.exit == .stoppedEarly)
        #expect(capped.done > 0 && capped.done < 200)
        #expect(messages.contains { $0.contains("--max-cost") })
        #expect(billedCost(g) <= 0.002)
        #expect(abs(capped.checkpointCost - billedCost(g)) < 1e-9)
        s.maxCost = 1
        let (resumed, _) = try runJob(s)
        #expect(resumed.exit == .allDone)
        #expect(capped.done + resumed.done == 200)
        try expectExactlyOnce(scratch, ids: (1...200).map { String(format: "p%04d", $0) }, gateway: g)
        #expect(g.ledger.billedCounts().values.allSatisfy { $0 == 1 })
    }

    @Test func requestsPerMinuteLimitsTheSendingRate() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start()
        defer { g.shutdown() }
        scratch.write("in.jsonl", lines: promptLines(25))
        var s = settings(scratch, g)
        s.requestsPerMinute = 600  // 10 a second, a bucket of 10
        s.warmup = false
        let (summary, _) = try runJob(s)
        #expect(summary.done == 25)
        let times = g.ledger.snapshot().map(\.receivedAt).sorted()
        // A full bucket of 10, then one every 0.1 s: the 25th cannot arrive before about 1.5 s.
        #expect(times.last! - times.first! >= 1.3)
        let firstSecond = times.filter { $0 < times.first! + 0.95 }.count
        #expect(firstSecond <= 20, "\(firstSecond) requests in the first second")
    }

    @Test func validateEstimatesWithinTheRangeTheGatewayBills() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start()
        defer { g.shutdown() }
        scratch.write("in.jsonl", lines: promptLines(100) + ["{bad json"])
        var s = settings(scratch, g)
        s.request = JSONObject([("max_tokens", 300)])
        let report = try BatchValidator.validate(try s.resolve())
        #expect(report.lines == 101 && report.invalid == 1 && report.toSend == 100)
        #expect(report.problems.first?.contains("in.jsonl:101") == true)
        #expect(g.ledger.snapshot().isEmpty)
        _ = try runJob(s)
        let billed = billedCost(g)
        let billedPrompt = g.ledger.snapshot().reduce(0) { $0 + $1.promptTokens }
        #expect(report.costLeast <= billed && billed <= report.costMost)
        // The prompt estimate is within a factor of 1.5 of what was billed.
        #expect(
            Double(report.promptTokens) / Double(billedPrompt) > 0.67
                && Double(report.promptTokens) / Double(billedPrompt) < 1.5)
        // After the run, a resume would send nothing.
        let after = try BatchValidator.validate(try s.resolve())
        #expect(after.toSend == 0 && after.alreadyDone == 100)
    }
}
