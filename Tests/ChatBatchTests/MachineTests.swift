import ChatBatchCore
import Testing

@testable import ChatBatch

/// A run's whole logic, event by event, with no HTTP, no queue and no clock: what `RunMachine` decides.
@Suite("The run machine, event by event")
struct MachineTests {
    static let second: UInt64 = 1_000_000_000
    static let t0: UInt64 = 1_000 * second
    static let answer =
        #"{"id":"c1","choices":[{"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"completion_tokens":5}}"#

    /// A machine, the clock it is driven by, and everything it asked for so far.
    struct Harness {
        var machine: RunMachine
        var now = MachineTests.t0
        var inflight: [ScheduledJob] = []
        var records: [CheckpointOp] = []
        var logs: [String] = []
        var wakes: [UInt64] = []
        var cancels: [Double] = []
        var finished = false
        var lastActions: [RunAction] = []

        init(proven: Bool = true, _ change: (inout JobSettings) -> Void = { _ in }) throws {
            var s = JobSettings()
            s.input = "in.jsonl"
            s.provider = .openAICompatible
            s.baseURL = "http://127.0.0.1:9/v1"
            s.model = "m"
            s.concurrency = 4
            s.adaptiveConcurrency = false
            s.warmup = false
            s.retryBaseDelay = 0.5
            s.retryMaxDelay = 8
            change(&s)
            machine = RunMachine(
                config: try s.resolve(), spent: [0], refusedModels: [[:]], proven: [proven], finishedInput: nil,
                crashRecovered: 0,
                now: MachineTests.t0, random: Jitter(seed: 1))
        }

        @discardableResult
        mutating func handle(_ event: RunEvent) -> [RunAction] {
            let actions = machine.handle(event, at: Moment(uptime: now, wall: 1_800_000_000))
            lastActions = actions
            var claimed = Set<String>()
            for action in actions {
                switch action {
                case .record(let op):
                    if case .claim(let id, _, _, _, _, _) = op { claimed.insert(id) }
                    records.append(op)
                case .send(let job):
                    #expect(claimed.contains(job.request.customID), "a send without its claim in the same turn")
                    inflight.append(job)
                case .log(let m): logs.append(m)
                case .wake(let at): wakes.append(at)
                case .cancelInFlight(let after): cancels.append(after)
                case .finish: finished = true
                case .store, .readInput: break
                }
            }
            return actions
        }

        mutating func feed(_ ids: [String], end: Bool = true, resentAfterCrash: Bool = false) {
            var batch = FeedBatch()
            batch.linesRead = ids.count
            batch.endOfInput = end
            batch.requests = ids.enumerated().map { i, id in
                var r = PreparedRequest(
                    customID: id, line: i + 1, body: [], bodyHash: id, model: "m", maxTokens: 100, promptTokens: 50,
                    stream: false)
                r.resentAfterCrash = resentAfterCrash
                return r
            }
            handle(.inputRead(batch))
        }

        /// Answers the request in flight for `id` with `status` (and `body`), or with a transport failure.
        mutating func answer(
            _ id: String, _ status: Int, _ body: String = MachineTests.answer, headers: [String: String] = [:],
            failure: TransportFailure.Kind? = nil
        ) {
            guard let i = inflight.firstIndex(where: { $0.request.customID == id }) else {
                Issue.record("\(id) is not in flight")
                return
            }
            let job = inflight.remove(at: i)
            let response = HTTPResponse(
                status: failure == nil ? status : 0, headers: headers, body: failure == nil ? Array(body.utf8) : [],
                failure: failure.map {
                    TransportFailure(
                        kind: $0, curlCode: 7, message: "Failed to connect to 127.0.0.1 port 9: Connection refused")
                },
                firstByteSeconds: 0.01, totalSeconds: 0.05)
            handle(.answered([Answer(job: job, response: response, startedAt: 0)]))
        }

        mutating func at(_ t: UInt64) {
            now = t
            handle(.timer)
        }

        /// Lets time pass, wake-up by wake-up, until something is sent or the run finishes.
        mutating func waitForSend() {
            var guardrail = 0
            while sentIDs.isEmpty && !finished && guardrail < 100, let next = wakes.filter({ $0 > now }).min() {
                at(next)
                guardrail += 1
            }
        }

        var sentIDs: [String] { inflight.map(\.request.customID) }
        var finishedIDs: [String] {
            records.compactMap { if case .finish(let r, _) = $0 { return r.customID } else { return nil } }
        }
        var failedIDs: [String] {
            records.compactMap {
                if case .finish(let r, _) = $0, r.state == .failed { return r.customID } else { return nil }
            }
        }

        func conclude() -> RunSummary {
            machine.conclude(
                CheckpointWriter.RunEnding(writeFailure: nil, pending: 0, spent: nil), unread: 0,
                now: Moment(uptime: now, wall: 0))
        }
    }

    @Test func aCleanRunClaimsBeforeSendingAnswersAndFinishes() throws {
        var h = try Harness()
        h.handle(.start)
        h.feed(["a", "b", "c", "d", "e"])
        #expect(h.sentIDs == ["a", "b", "c", "d"])  // the window
        for id in ["a", "b", "c", "d"] { h.answer(id, 200) }
        #expect(h.sentIDs == ["e"])
        h.answer("e", 200)
        #expect(h.finished && h.finishedIDs.count == 5)
        let s = h.conclude()
        #expect(
            s.exit == .allDone && s.sent == 5 && s.done == 5 && s.promptTokens == 50 && s.headline == "all 5 lines done"
        )
    }

    @Test func aResumeCountsWhatACrashLeftInFlightAsPossiblyBilledTwice() throws {
        var h = try Harness()
        h.handle(.start)
        h.feed(["a", "b"], resentAfterCrash: true)
        h.answer("a", 200)
        h.answer("b", 200)
        let s = h.conclude()
        #expect(s.resentAfterCrash == 2 && s.possiblyBilledTwice == 2)
    }

    @Test func aRetryAfterPausesTheKeyAndTooLongAWaitStopsTheRun() throws {
        var h = try Harness { $0.maxWait = 60 }
        h.handle(.start)
        h.feed(["a", "b", "c", "d", "e", "f"])
        h.answer("a", 429, "{}", headers: ["retry-after": "30"])
        // Room in the window, but the key is paused: nothing leaves before Retry-After.
        #expect(h.sentIDs == ["b", "c", "d"])
        #expect(h.wakes.last == Self.t0 + 30 * Self.second)
        #expect(h.logs.contains { $0.contains("the key asked to wait 30 s") && $0.contains("sending resumes at") })
        for id in ["b", "c", "d"] { h.answer(id, 200) }
        #expect(h.sentIDs.isEmpty)
        h.at(Self.t0 + 30 * Self.second)
        #expect(h.sentIDs.first == "a" && h.inflight.first?.attempt == 2)
        // A wait longer than --max-wait stops the run, resumable; the line stays pending.
        h.answer("a", 429, "{}", headers: ["retry-after": "inf"])
        #expect(h.machine.stop != nil)
        for id in h.sentIDs { h.answer(id, 200) }
        #expect(h.finished)
        let s = h.conclude()
        #expect(s.exit == .stoppedEarly && s.stopReason?.contains("--max-wait") == true)
    }

    @Test func anOutagePausesProbesWithOneRequestAndUsesNoAttempts() throws {
        var h = try Harness { $0.maxAttempts = 2 }
        h.handle(.start)
        h.feed(["a", "b", "c", "d", "e"])
        h.answer("a", 0, failure: .notSent)
        #expect(h.logs.contains { $0.contains("is unreachable") && $0.contains("one request probes it") })
        for id in ["b", "c", "d"] { h.answer(id, 0, failure: .notSent) }
        #expect(h.sentIDs.isEmpty)  // paused
        // Probes go one at a time, each after a longer wait; none uses up an attempt.
        var gaps: [UInt64] = []
        for round in 1...5 {
            let before = h.now
            h.waitForSend()
            gaps.append(h.now - before)
            try #require(
                h.sentIDs.count == 1,
                "round \(round): now \(h.now - Self.t0) wakes \(h.wakes.map { $0 - Self.t0 }) stop \(String(describing: h.machine.stop)) logs \(h.logs)"
            )
            #expect(h.inflight[0].attempt == 1)
            h.answer(h.sentIDs[0], 0, failure: .notSent)
        }
        #expect(gaps == gaps.sorted() && gaps.last! > gaps.first!, "backoff grows: \(gaps)")
        h.waitForSend()
        let probe = h.sentIDs[0]
        h.answer(probe, 200)
        #expect(h.logs.contains { $0.contains("answers again after") })
        #expect(h.sentIDs.count == 4)  // the window opens again
        while let id = h.sentIDs.first { h.answer(id, 200) }
        #expect(h.finished)
        let s = h.conclude()
        #expect(s.exit == .allDone && s.done == 5 && s.failed == 0 && s.attempts == 5, "\(s.text)")
    }

    @Test func anOutageLongerThanItsBudgetStopsTheRunResumable() throws {
        var h = try Harness { $0.outageBudget = 5 }
        h.handle(.start)
        h.feed(["a", "b"])
        h.answer("a", 0, failure: .notSent)
        h.answer("b", 0, failure: .notSent)
        while !h.finished {
            h.waitForSend()
            if let id = h.sentIDs.first { h.answer(id, 0, failure: .notSent) }
        }
        let s = h.conclude()
        #expect(s.exit == .stoppedEarly && s.stopReason?.contains("--outage-budget") == true && s.failed == 0)
        #expect(h.failedIDs.isEmpty)
    }

    @Test func anEndpointThatNeverAnsweredStopsAtItsFirstFailureWithTheCause() throws {
        var refused = try Harness(proven: false)
        refused.handle(.start)
        refused.feed(["a", "b", "c"])
        refused.answer("a", 0, failure: .notSent)
        #expect(refused.machine.stop != nil)
        #expect(refused.sentIDs.count == 2)  // already on the wire; nothing more leaves
        refused.answer("b", 0, failure: .notSent)
        refused.answer("c", 0, failure: .notSent)
        let s = refused.conclude()
        #expect(s.exit == .stoppedEarly && s.failed == 0 && s.sent == 0)
        #expect(
            s.stopReason?.contains("Is the server running, and is the port right?") == true, "\(s.stopReason ?? "")")
        // A 404 that names no model, on an endpoint that never answered, is a wrong URL: the run stops, the line stays
        // pending.
        var wrong = try Harness(proven: false) { $0.concurrency = 1 }
        wrong.handle(.start)
        wrong.feed(["a", "b"])
        wrong.answer("a", 404, #"{"error":{"message":"No such route.","type":"not_found_error","code":"not_found"}}"#)
        #expect(wrong.finished && wrong.failedIDs.isEmpty)
        #expect(wrong.conclude().stopReason?.contains("does the base URL end in /v1") == true)
    }

    @Test func firstAnswersThatAllFailAlikeStopTheRunAndLeaveTheLinesPending() throws {
        var h = try Harness(proven: false) { $0.concurrency = 2 }
        h.handle(.start)
        h.feed((1...20).map { "p\($0)" })
        let noDB = #"{"error":{"message":"No connected db.","type":"None","code":"no_db_connection"}}"#
        while !h.finished, let id = h.sentIDs.first { h.answer(id, 400, noDB) }
        let s = h.conclude()
        #expect(s.exit == .stoppedEarly && s.failed == 0 && h.failedIDs.isEmpty, "\(s.text)")
        #expect(s.attempts <= FirstFailures.limit + 1)
        #expect(s.stopReason?.contains("no_db_connection") == true)
        // One success among them: the failures are the lines' own, and written as such.
        var mixed = try Harness(proven: false) { $0.concurrency = 1 }
        mixed.handle(.start)
        mixed.feed(["a", "b", "c"])
        mixed.answer("a", 400, noDB)
        #expect(mixed.failedIDs.isEmpty)  // held back while nothing has succeeded
        mixed.answer("b", 200)
        #expect(mixed.failedIDs == ["a"])
        mixed.answer("c", 400, noDB)
        #expect(mixed.failedIDs == ["a", "c"])
    }

    @Test func aRefusedModelCostsOneRequestAndItsLinesGoToTheErrorsFile() throws {
        var h = try Harness {
            $0.warmup = true
            $0.concurrency = 8
        }
        h.handle(.start)
        h.feed(["a", "b", "c"])
        #expect(h.sentIDs == ["a"])  // the model's first request goes alone
        h.answer(
            "a", 404,
            #"{"error":{"message":"The model 'm' does not exist","type":"invalid_request_error","code":"model_not_found"}}"#
        )
        #expect(h.finished && Set(h.failedIDs) == ["a", "b", "c"])
        let s = h.conclude()
        #expect(s.exit == .doneWithFailures && s.attempts == 1 && s.blocked == 2)
    }

    @Test func theBudgetStopsBeforeARequestCouldPassTheCap() throws {
        var h = try Harness {
            $0.maxCost = 0.008
            $0.prices = Prices(inputPerMillion: 0, outputPerMillion: 36)
        }
        h.handle(.start)
        h.feed(["a", "b", "c", "d"])
        #expect(h.sentIDs.count == 2)  // 100 tokens at most each: $0.0036 a request
        h.answer("a", 200)
        h.answer("b", 200)
        let s = h.conclude()
        #expect(h.finished && s.exit == .stoppedEarly && s.stopReason?.contains("--max-cost") == true)
    }

    @Test func signalsAndWriteFailuresStopWithWhatTheyMean() throws {
        var h = try Harness { $0.grace = 7 }
        h.handle(.start)
        h.feed(["a", "b", "c", "d", "e"])
        h.handle(.signal)
        #expect(h.cancels == [7])  // in flight may finish within the grace
        h.handle(.signal)
        #expect(h.cancels == [7, 0])  // a second signal: at once
        for id in h.sentIDs { h.answer(id, 0, failure: .cancelled) }
        #expect(h.finished && h.conclude().exit == .interrupted)

        var output = try Harness()
        output.handle(.start)
        output.feed(["a", "b", "c", "d", "e"])
        output.handle(.writeFailed("cannot write out.jsonl: disk full", outputOnly: true))
        #expect(output.cancels.isEmpty)  // what is in flight finishes into the checkpoint
        for id in output.sentIDs { output.answer(id, 200) }
        #expect(output.finishedIDs.count == 4 && output.finished)
        #expect(output.conclude().exit == .interrupted)

        var checkpoint = try Harness()
        checkpoint.handle(.start)
        checkpoint.feed(["a", "b"])
        checkpoint.handle(.writeFailed("checkpoint: disk I/O error", outputOnly: false))
        #expect(checkpoint.cancels == [0])
    }
}

extension MachineTests {
    /// A log line every 30 s (the default when not on a terminal) gives a real rate and an ETA, not "0.0 req/s":
    /// the window of about 10 s keeps one earlier sample whatever the interval, and the first line takes the rate
    /// since the start.
    @Test func progressLinesThirtySecondsApartGiveARateAndAnETA() throws {
        var h = try Harness()
        h.feed((1...40).map { "p\($0)" }, end: true)
        h.handle(.inputCounted(40))
        var snapshots: [ProgressSnapshot] = []
        for round in 1...3 {
            for id in h.sentIDs { h.answer(id, 200) }  // four answered each round
            h.now = MachineTests.t0 + UInt64(round) * 30 * MachineTests.second
            snapshots.append(h.machine.snapshot(Moment(uptime: h.now, wall: 1_800_000_000)))
        }
        for s in snapshots {
            #expect(s.requestsPerSecond > 0, "\(s.line)")
            #expect(s.line.contains("ETA "), "\(s.line)")
        }
    }
}
