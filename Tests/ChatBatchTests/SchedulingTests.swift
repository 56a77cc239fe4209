import ChatBatchCore
import Foundation
import Testing

@testable import ChatBatch

/// The scheduling rules with a fake clock and no HTTP: `Scheduler` decides what may go, `AnswerPolicy` what an answer
/// means.
@Suite("Scheduling rules, driven by a fake clock")
struct SchedulingTests {
    static let second: UInt64 = 1_000_000_000
    static let t0: UInt64 = 1_000 * second

    static func config(_ change: (inout JobSettings) -> Void = { _ in }) throws -> RunConfiguration {
        var s = JobSettings()
        s.input = "in.jsonl"
        s.provider = .tera
        s.concurrency = 4
        s.adaptiveConcurrency = false
        s.warmup = false
        change(&s)
        return try s.resolve()
    }

    static func scheduler(_ config: RunConfiguration) -> Scheduler {
        Scheduler(config: config, spent: [0], refused: [[:]], proven: [true], now: t0)
    }

    static func request(_ id: String, model: String = "openai/gpt-oss-120b", line: Int = 1, format: JSON? = nil)
        -> PreparedRequest
    {
        PreparedRequest(
            customID: id, line: line, body: [], bodyHash: id, model: model, maxTokens: 100, promptTokens: 50,
            stream: false,
            responseFormat: format)
    }

    /// Calls `next` until it waits; returns what was sent and refused, and the wait.
    static func drain(_ s: inout Scheduler, at now: UInt64) -> (sent: [ScheduledJob], refused: [String], wait: UInt64??)
    {
        var sent: [ScheduledJob] = [], refused: [String] = []
        while true {
            switch s.next(now: now) {
            case .send(let job): sent.append(job)
            case .refuse(let job, _): refused.append(job.request.customID)
            case .overBudget: return (sent, refused, nil)
            case .wait(let until): return (sent, refused, .some(until))
            }
        }
    }

    @Test func theWindowBoundsWhatIsInFlight() throws {
        var s = Self.scheduler(try Self.config())
        s.enqueue((1...10).map { Self.request("p\($0)") })
        let first = Self.drain(&s, at: Self.t0)
        #expect(first.sent.map(\.request.customID) == ["p1", "p2", "p3", "p4"])
        #expect(first.sent.allSatisfy { $0.attempt == 1 } && s.inflight == 4)
        #expect(first.wait == .some(nil))  // nothing to wait for but an answer
        s.returned(first.sent[0])
        #expect(Self.drain(&s, at: Self.t0).sent.map(\.request.customID) == ["p5"])
    }

    @Test func warmUpSendsOneProbeUntilItSucceeds() throws {
        var s = Self.scheduler(try Self.config { $0.warmup = true })
        s.enqueue((1...10).map { Self.request("p\($0)") })
        let probe = Self.drain(&s, at: Self.t0).sent
        #expect(probe.count == 1 && probe[0].probe)
        // A cold backend: the probe is retried, and nothing else goes meanwhile.
        s.returned(probe[0])
        s.retry(probe[0], at: Self.t0 + Self.second)
        #expect(Self.drain(&s, at: Self.t0).sent.isEmpty)
        let again = Self.drain(&s, at: Self.t0 + Self.second).sent
        #expect(again.map(\.request.customID) == ["p1"] && again[0].attempt == 2)
        s.returned(again[0])
        s.succeeded(again[0], promptTokens: 10, completionTokens: 10, cost: 0, now: Self.t0)
        #expect(s.settleModelProbe(again[0], .answered).isEmpty)  // the probe was also its model's first request
        #expect(Self.drain(&s, at: Self.t0 + Self.second).sent.count == 4)
    }

    @Test func aRetryAfterPausesTheWholeKeyThenTheRetryGoesFirst() throws {
        var s = Self.scheduler(try Self.config())
        s.enqueue((1...10).map { Self.request("p\($0)") })
        let sent = Self.drain(&s, at: Self.t0).sent
        s.returned(sent[0])
        let until = Self.t0 + 3 * Self.second
        s.retry(sent[0], at: until, pauseUntil: until)
        // Room in the window and work queued, but the key is paused: nothing goes before Retry-After.
        let paused = Self.drain(&s, at: Self.t0 + Self.second)
        #expect(paused.sent.isEmpty && paused.wait == .some(until))
        let after = Self.drain(&s, at: until).sent
        #expect(after.map(\.request.customID) == ["p1"] && after[0].attempt == 2)
    }

    @Test func aNewModelIsProbedByOneRequestAndARefusalRefusesItsHeldLines() throws {
        var s = Self.scheduler(
            try Self.config {
                $0.warmup = true
                $0.concurrency = 8
            })
        s.enqueue([Self.request("a1")])
        let warm = Self.drain(&s, at: Self.t0).sent[0]
        s.returned(warm)
        s.succeeded(warm, promptTokens: 1, completionTokens: 1, cost: 0, now: Self.t0)
        #expect(s.settleModelProbe(warm, .answered).isEmpty)
        s.enqueue([
            Self.request("b1", model: "gpt-4o"), Self.request("a2"), Self.request("b2", model: "gpt-4o"),
            Self.request("b3", model: "gpt-4o")
        ])
        let sent = Self.drain(&s, at: Self.t0).sent
        #expect(sent.map(\.request.customID) == ["b1", "a2"])
        #expect(s.heldCount == 2)
        s.returned(sent[0])
        let refusal = ModelRefusal(model: "gpt-4o", status: 404, code: "model_not_found", message: "no such model")
        #expect(s.refuse(model: "gpt-4o", refusal, route: 0).isNew)
        #expect(s.settleModelProbe(sent[0], .refused(refusal)).map(\.request.customID) == ["b2", "b3"])
        // Later lines of the refused model are refused without being sent.
        s.enqueue([Self.request("b4", model: "gpt-4o")])
        #expect(Self.drain(&s, at: Self.t0).refused == ["b4"])
        #expect(s.heldCount == 0)
    }

    @Test func theBudgetStopsBeforeARequestCouldPassTheCap() throws {
        // Worst case of one request: 50 prompt + 100 completion tokens at Tera's prices = $0.0000405.
        var s = Self.scheduler(try Self.config { $0.maxCost = 0.0001 })
        s.enqueue((1...5).map { Self.request("p\($0)") })
        let run = Self.drain(&s, at: Self.t0)
        #expect(run.sent.count == 2 && run.wait == nil)  // nil: over budget
        #expect(s.budgetMessage.contains("--max-cost"))
    }

    @Test func requestsPerMinutePaceTheSends() throws {
        var s = Self.scheduler(try Self.config { $0.requestsPerMinute = 60 })
        s.enqueue((1...5).map { Self.request("p\($0)") })
        let first = Self.drain(&s, at: Self.t0)
        #expect(first.sent.count == 1 && first.wait == .some(Self.t0 + Self.second))
        #expect(Self.drain(&s, at: Self.t0 + Self.second).sent.count == 1)
    }

    @Test func aConcurrencyLimitIsLearntFromWhereThe429CameAndLookedPastRarely() {
        var w = AdaptiveLimit(maximum: 64, adaptive: true)
        var now = Self.t0
        #expect(w.limit == 8)
        for _ in 0..<2 { w.succeeded(now: now) }
        #expect(w.limit == 16)  // four per success until a 429: about ×5 per round trip
        while w.limit < 64 { w.succeeded(now: now) }
        // The key allows 16: a burst of 429s from further up, in any order, and the one from 17 in flight.
        w.rateLimited(sentEpoch: w.epoch, inflight: 30)
        #expect(w.limit == 29)  // the first 429 ever: learnt where it came, not cut by a quarter
        w.rateLimited(sentEpoch: w.epoch - 1, inflight: 17)
        w.rateLimited(sentEpoch: w.epoch - 1, inflight: 25)
        #expect(w.limit == 16 && w.ceiling == 16)  // not halved: the level the key allows
        // At the ceiling it looks one higher only after 30 s there; the look answered 429 costs no cut.
        w.succeeded(now: now)
        now += 29 * Self.second
        w.succeeded(now: now)
        #expect(w.limit == 16)
        now += Self.second
        w.succeeded(now: now)
        #expect(w.limit == 17)
        w.rateLimited(sentEpoch: w.epoch, inflight: 17)
        #expect(w.limit == 16 && w.ceiling == 16 && w.probeAfter == 60)
        w.succeeded(now: now)
        now += 59 * Self.second
        w.succeeded(now: now)
        #expect(w.limit == 16)  // the next look waits twice as long
        now += Self.second
        w.succeeded(now: now)
        #expect(w.limit == 17)
        w.succeeded(now: now, inflight: 12)  // an answer to a request sent below the look proves nothing
        #expect(w.ceiling == 16)
        w.succeeded(now: now, inflight: 17)  // this time the key allows it
        #expect(w.ceiling == 17)
        // A run that remembers the level starts there.
        let next = AdaptiveLimit(maximum: 64, adaptive: true, remembered: 16)
        #expect(next.limit == 16 && next.throttled)
    }

    /// Workers of a store starting together on a key no one has learnt: each starts at its part of the usual start
    /// and doubles per round trip (one more per success) rather than ×5, so that together they ramp up as one run.
    @Test func aKeySharedByWorkersRampsUpAsOneRunWould() {
        var alone = AdaptiveLimit(maximum: 64, adaptive: true)
        alone.startShared(workers: 1)
        var shared = AdaptiveLimit(maximum: 64, adaptive: true)
        shared.startShared(workers: 4)
        #expect(alone.limit == 8 && shared.limit == 2)
        for _ in 0..<2 {
            alone.succeeded(now: Self.t0, inflight: 1)
            shared.succeeded(now: Self.t0, inflight: 1)
        }
        #expect(alone.limit == 16 && shared.limit == 4)
        // The first 429 ends the ramp either way; a level learnt already is where a worker starts instead.
        shared.rateLimited(sentEpoch: shared.epoch, inflight: 5)
        #expect(shared.limit == 4 && shared.throttled)
        var remembered = AdaptiveLimit(maximum: 64, adaptive: true, remembered: 5)
        remembered.startShared(workers: 4)
        #expect(remembered.limit == 5)
        var fixed = AdaptiveLimit(maximum: 64, adaptive: false)
        fixed.startShared(workers: 4)
        #expect(fixed.limit == 64)
    }

    @Test func a429AtALevelTheKeyHasAnsweredIsNotConcurrencyAndCostsAStepNotTheWindow() {
        var w = AdaptiveLimit(maximum: 64, adaptive: true, remembered: 40)
        w.succeeded(now: Self.t0, inflight: 40)  // the key has answered 40 at once
        // Stray 429s (a fault mix's 0.5%, 200 answers apart, each in its own round): a step each, never a collapse.
        for _ in 0..<10 {
            w.rateLimited(sentEpoch: w.epoch, inflight: w.limit)
            for _ in 0..<200 { w.succeeded(now: Self.t0, inflight: w.limit) }
        }
        #expect(w.limit == 30 && w.ceiling == 30)
        // A token rate that empties its bucket answers most of a round 429: the round halves the limit, no further.
        let round = w.epoch
        for _ in 0..<30 { w.rateLimited(sentEpoch: round, inflight: 30) }
        #expect(w.limit == 15 && w.ceiling == 15 && w.lowest == 15)
        // The first request after a pause, sent alone and answered 429, does not say the key allows one.
        w.rateLimited(sentEpoch: w.epoch, inflight: 1)
        #expect(w.limit == 14)
        // Above what the key has answered, a 429 is concurrency again: the limit goes to one below where it came.
        var k = AdaptiveLimit(maximum: 64, adaptive: true)
        while k.limit < 64 { k.succeeded(now: Self.t0, inflight: min(k.limit, 16)) }
        k.rateLimited(sentEpoch: k.epoch, inflight: 40)
        k.rateLimited(sentEpoch: k.epoch - 1, inflight: 17)
        #expect(k.limit == 16 && k.ceiling == 16)
    }

    @Test func aKeyAtItsLimitCostsAFew429sNotAStallEveryFewSeconds() {
        // The key allows 8 in flight: a request sent with more than 8 out is a 429.
        var w = AdaptiveLimit(maximum: 64, adaptive: true)
        var throttled = 0
        for i in 0..<20_000 {  // at 160 answers a second: about two minutes
            let now = Self.t0 + UInt64(i) * Self.second / 160
            if w.limit > 8 {
                // The round's first refused request is the one sent as the ninth out (the rest of it cut no further).
                throttled += 1
                let round = w.epoch
                for out in 9...w.limit { w.rateLimited(sentEpoch: round, inflight: out) }
            } else {
                w.succeeded(now: now, inflight: w.limit)
            }
        }
        #expect(w.limit == 8)
        #expect(throttled <= 4, "\(throttled) 429 rounds in 20,000 answers")
    }

    // MARK: answers

    static func response(_ status: Int, _ body: String = "{}", headers: [String: String] = [:]) -> HTTPResponse {
        HTTPResponse(
            status: status, headers: headers, body: Array(body.utf8), failure: nil, firstByteSeconds: 0,
            totalSeconds: 0.05)
    }

    static func effect(_ response: HTTPResponse, _ job: ScheduledJob, config: RunConfiguration, warmingUp: Bool = false)
        -> AnswerEffect
    {
        var rng = SystemRandomNumberGenerator()
        let context = AnswerPolicy.Context(
            config: config, route: config.routes[0], retry: RetryPolicy(baseDelay: 0.5, maxDelay: 8),
            warmingUp: warmingUp, warmupRetries: 0, now: 1_800_000_000)
        return AnswerPolicy.effect(of: response, for: job, startedAt: 0, context: context, random: &rng)
    }

    static func job(_ request: PreparedRequest, attempt: Int = 1) -> ScheduledJob {
        var j = ScheduledJob(request: request)
        j.attempt = attempt
        return j
    }

    @Test func answersBecomeTheEffectsTheErrorTableSays() throws {
        let config = try Self.config { $0.maxAttempts = 3 }
        let job = Self.job(Self.request("x", line: 7))
        let ok = Self.effect(
            Self.response(
                200,
                #"{"choices":[{"message":{"role":"assistant","content":"hi"}}],"usage":{"prompt_tokens":1000000,"completion_tokens":1000000}}"#
            ), job, config: config)
        guard case .done(let record, _) = ok.outcome else {
            Issue.record("200 is done")
            return
        }
        #expect(
            record.output.contains(#""custom_id":"x""#)
                && ok.usage == Usage(promptTokens: 1_000_000, completionTokens: 1_000_000, cost: 0.45))
        guard
            case .retry(let after, true, false, _) = Self.effect(
                Self.response(429, headers: ["retry-after": "3"]), job, config: config
            ).outcome
        else {
            Issue.record("429 pauses the key")
            return
        }
        #expect(after == 3)
        guard case .retry(_, false, false, _) = Self.effect(Self.response(503), job, config: config).outcome else {
            Issue.record("503 retries")
            return
        }
        guard
            case .failed(let gaveUp) = Self.effect(
                Self.response(500), Self.job(job.request, attempt: 3), config: config
            ).outcome
        else {
            Issue.record("attempts run out")
            return
        }
        #expect(gaveUp.errorMessage?.hasPrefix("gave up after 3 attempts") == true)
        guard
            case .failed(let bad) = Self.effect(
                Self.response(400, #"{"error":{"message":"m","type":"invalid_request_error"}}"#), job, config: config
            ).outcome
        else {
            Issue.record("400 fails")
            return
        }
        #expect(bad.errorCode == "invalid_request_error" && bad.kind == .errors)  // no error.code: the type names it
        let notFound = #"{"error":{"message":"The model 'gpt-4o' does not exist","type":"model_not_found","code":404}}"#
        guard
            case .refuseModel(let refusal, let line) = Self.effect(Self.response(404, notFound), job, config: config)
                .outcome
        else {
            Issue.record("404 refuses the model")
            return
        }
        #expect(refusal.code == "model_not_found" && line.errorMessage?.hasPrefix("in.jsonl:7: ") == true)
        guard case .stopRun(let reason, _) = Self.effect(Self.response(401), job, config: config).outcome else {
            Issue.record("401 stops")
            return
        }
        #expect(reason.contains("TERA_API_KEY"))
        let cancelled = HTTPResponse(
            status: 0, headers: [:], body: [],
            failure: TransportFailure(kind: .cancelled, curlCode: 0, message: "cancelled"),
            firstByteSeconds: 0, totalSeconds: 0)
        let stop = Self.effect(cancelled, job, config: config)
        #expect(stop.attempt.ambiguous)
        // A cold backend does not use up the warm-up probe's attempts.
        guard
            case .retry(_, _, _, true) = Self.effect(
                Self.response(503), Self.job(job.request, attempt: 3), config: config, warmingUp: true
            ).outcome
        else {
            Issue.record("the warm-up probe waits out a cold start")
            return
        }
    }

    @Test func anAnswerThatMissesItsSchemaIsAskedAgainThenFailedWithItsCostCounted() throws {
        let config = try Self.config { $0.retryInvalid = 1 }
        let schema: JSON = [
            "type": "json_schema",
            "json_schema": [
                "name": "n",
                "schema": ["type": "object", "required": ["name"], "properties": ["name": ["type": "string"]]]
            ]
        ]
        let job = Self.job(Self.request("x", format: schema))
        let body =
            #"{"choices":[{"message":{"content":"{\"age\":3}"},"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"completion_tokens":5}}"#
        guard
            case .askAgain(let again, let code, _) = Self.effect(Self.response(200, body), job, config: config).outcome
        else {
            Issue.record("asked again")
            return
        }
        #expect(code == "schema_mismatch" && again.invalidRetries == 1 && again.paidPrompt == 10)
        let last = Self.effect(Self.response(200, body), again, config: config)
        guard case .failed(let record) = last.outcome else {
            Issue.record("then failed")
            return
        }
        #expect(
            record.errorCode == "schema_mismatch" && record.promptTokens == 20 && record.completionTokens == 10
                && last.usage != nil)
    }
}
