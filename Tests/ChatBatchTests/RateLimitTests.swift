import ChatBatchCore
import FakeGateway
import Foundation
import Testing

@testable import ChatBatch

/// A key's rate is not its concurrency, and a stray 429 is not its limit: the rules with a fake clock, then real
/// runs against gateways limited by requests per minute, with and without `x-ratelimit-*` headers.
@Suite("Rate limits: rates, concurrency and noise")
struct RateLimitTests {
    static let second = SchedulingTests.second
    static let t0 = SchedulingTests.t0

    @Test func rateLimitHeadersAreReadAsServersWriteThem() throws {
        #expect(
            RateLimitHint.duration("1s") == 1 && RateLimitHint.duration("6m0s") == 360
                && RateLimitHint.duration("20ms") == 0.02)
        #expect(RateLimitHint.duration("1h2m3.5s") == 3723.5 && RateLimitHint.duration("1.5") == 1.5)
        #expect(
            RateLimitHint.duration("soon") == nil && RateLimitHint.duration("-1") == nil
                && RateLimitHint.duration("5x") == nil)
        let hint = try #require(
            RateLimitHint(headers: [
                "x-ratelimit-limit-requests": "60", "x-ratelimit-remaining-requests": "50",
                "x-ratelimit-reset-requests": "10s",
                "x-ratelimit-limit-tokens": "150000", "x-ratelimit-remaining-tokens": "149000"
            ]))
        #expect(hint.requests?.rate == 1 && hint.tokens?.rate == nil)  // 10 missing over 10 s; tokens: no reset said
        #expect(RateLimitHint(headers: ["retry-after": "1"]) == nil)
        #expect(RateLimitHint.headerNames.count == 6)
    }

    @Test func aLone429IsNoiseSeveralShowARateThenSendsArePaced() {
        var pacer = RatePacer()
        for i in 0..<12 {
            let shows = pacer.answered(limited: i == 5, now: Self.t0)
            #expect(!shows)
        }
        let idle = pacer.wait(now: Self.t0)
        #expect(pacer.rate == nil && idle == 0, "one 429 among a dozen answers is noise")
        var shown = false
        for _ in 0..<3 { shown = pacer.answered(limited: true, now: Self.t0) }
        #expect(shown, "four of the last sixteen are a rate")
        pacer.rateLimited(wait: 2, sentAt: Self.t0, now: Self.t0)
        #expect(pacer.rate == 0.5)
        let empty = pacer.wait(now: Self.t0), refilled = pacer.wait(now: Self.t0 + 2 * Self.second)
        #expect(empty == 2 && refilled == 0, "the bucket is empty: the next send waits for it")
        pacer.take()
        let next = pacer.wait(now: Self.t0 + 2 * Self.second)
        #expect(next > 0, "one at a time, at the rate")
        // A 429 for a request sent before the rate was set slows it no further; one sent after does.
        pacer.rateLimited(wait: 1, sentAt: Self.t0 - 1, now: Self.t0 + 3 * Self.second)
        #expect(pacer.rate == 0.5)
        pacer.rateLimited(wait: 1, sentAt: Self.t0 + 3 * Self.second, now: Self.t0 + 3 * Self.second)
        #expect(pacer.rate! < 0.5)
    }

    @Test func headersSetTheRateBeforeAny429() throws {
        var pacer = RatePacer()
        let quota = try #require(
            RateLimitHint(headers: [
                "x-ratelimit-limit-requests": "10", "x-ratelimit-remaining-requests": "2",
                "x-ratelimit-reset-requests": "4s"
            ])?.requests)
        pacer.heard(quota, now: Self.t0)
        #expect(pacer.rate == 2 && pacer.fromHeaders)
        pacer.take()
        pacer.take()
        let wait = pacer.wait(now: Self.t0)
        #expect(wait == 0.5, "what the server said is left, then its rate")
    }

    @Test func aStray429DuringTheRampIsUndoneAndARealLimitIsNot() {
        // A stray 429 while the ramp runs ahead of what has been proven: cut, then undone by successes above it.
        var stray = AdaptiveLimit(maximum: 64, adaptive: true)
        for i in 1...6 { stray.succeeded(now: Self.t0, inflight: i * 2) }
        let before = stray.limit
        stray.rateLimited(sentEpoch: stray.epoch, inflight: 14)
        #expect(stray.ceiling == 13 && stray.limit <= 13)
        for _ in 0..<RateLimitTests.disproof { stray.succeeded(now: Self.t0, inflight: 16) }
        #expect(stray.ceiling == .max && stray.limit >= before, "one 429 is weak evidence")
        // A key that allows 8: its 429s come together; requests answered above 8 (counted late) undo nothing.
        var real = AdaptiveLimit(maximum: 64, adaptive: true)
        for i in 1...8 { real.succeeded(now: Self.t0, inflight: i) }
        let round = real.epoch
        real.rateLimited(sentEpoch: round, inflight: 10)
        real.rateLimited(sentEpoch: round, inflight: 11)
        for _ in 0..<10 { real.succeeded(now: Self.t0, inflight: 10) }
        #expect(real.ceiling == 9 && real.limit <= 9)
    }

    static let disproof = AdaptiveLimit.disproof

    @Test func theLastLinesAreNotSentWhereTheyWouldFinishLast() throws {
        let config = try SchedulingTests.config {
            $0.providers = ["fast", "slow"].map { name in
                var p = JobSettings()
                p.name = name
                p.provider = .tera
                p.concurrency = 4
                return p
            }
        }
        var s = Scheduler(config: config, spent: [0, 0], refused: [[:], [:]], proven: [true, true], now: Self.t0)
        s.lanes[0].answered(inSeconds: 0.1)
        s.lanes[1].answered(inSeconds: 5)
        s.enqueue((1...40).map { SchedulingTests.request("p\($0)") })
        // While the input is still being read, every provider takes lines.
        let early = SchedulingTests.drain(&s, at: Self.t0).sent
        #expect(Set(early.map(\.route)) == [0, 1])
        for job in early { s.returned(job) }
        // Read through: 32 lines left, which the fast provider answers in 0.9 s; the slow one would take 5 s.
        s.inputExhausted = true
        let late = SchedulingTests.drain(&s, at: Self.t0).sent
        #expect(!late.isEmpty && late.allSatisfy { $0.route == 0 })
    }

    // MARK: real runs

    static func run(_ scratch: Scratch, _ g: FakeGateway, lines: Int, extra: [String]) throws -> (Int32, JSON) {
        scratch.write("in.jsonl", lines: promptLines(lines))
        writeJob(scratch, g, concurrency: 32, extra: ["summary_json: summary.json", "allow_http: true"] + extra)
        let (code, stderr) = try runToEnd(chatbatchBinary(), ["run", scratch.file("job.yaml"), "--quiet"])
        #expect(code == 0, "\(stderr)")
        return (code, try JSON.parse(String(contentsOfFile: scratch.file("summary.json"), encoding: .utf8)))
    }

    @Test func aKeyLimitedByRequestsPerMinuteAnswersEveryLineAnd429sUseNoAttempts() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start {
            $0.requestsPerMinutePerKey = 1200
            $0.rateBucketSeconds = 1
            $0.latencyMilliseconds = 20
        }
        defer { g.shutdown() }
        // Two attempts a line: 429s that used them up would fail lines.
        let (_, summary) = try Self.run(scratch, g, lines: 120, extra: ["retry: {max_attempts: 2}"])
        #expect(summary["done"] == 120 && summary["failed"] == 0)
        let ledger = g.ledger.snapshot()
        let limited = ledger.filter { $0.status == 429 }.count
        #expect(g.ledger.billedCounts().values.allSatisfy { $0 == 1 } && g.ledger.billedCounts().count == 120)
        // Paced, not a window of which all but one come back 429 after every pause (that was one 429 an answer).
        #expect(limited < 60, "\(limited) 429s for 120 lines")
    }

    @Test func withRateLimitHeadersTheKeyIsPacedBeforeIt429s() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start {
            $0.requestsPerMinutePerKey = 1200
            $0.rateBucketSeconds = 1
            $0.latencyMilliseconds = 20
            $0.rateLimitHeaders = true
        }
        defer { g.shutdown() }
        let (_, summary) = try Self.run(scratch, g, lines: 80, extra: [])
        #expect(summary["done"] == 80)
        let limited = g.ledger.snapshot().filter { $0.status == 429 }.count
        #expect(limited <= 3, "\(limited) 429s")
    }

    @Test func aKeyThatAnswersNothingBut429sStopsTheRunResumableAfterTheOutageBudget() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start {
            $0.fail429Rate = 1
            $0.retryAfterText = "0.05"
        }
        defer { g.shutdown() }
        scratch.write("in.jsonl", lines: promptLines(5))
        writeJob(scratch, g, extra: ["outage_budget: 1", "allow_http: true"])
        let (code, stderr) = try runToEnd(chatbatchBinary(), ["run", scratch.file("job.yaml"), "--quiet"])
        #expect(code == 3 && stderr.contains("nothing but 429s"), "\(stderr)")
        #expect(
            try checkpointRows(scratch.file("out.jsonl.checkpoint"), where: "state='failed'").isEmpty,
            "no line failed: all pending")
    }
}
