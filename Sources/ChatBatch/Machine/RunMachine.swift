import ChatBatchCore

/// Every decision of a run, as a value: it takes events (lines read, answers, timers, signals, controls, write
/// failures) and returns actions (record these, send these, store this, wake me at, log this, finish). It has no
/// queue, clock, file or socket; `RunDriver` carries its actions out. Each of its steps is a `mutating func … ->
/// [RunAction]`, as async-http-client's pool state machine is: it changes the state and returns what to do. The
/// rules it applies live in `Scheduler` (what may go when), `AnswerPolicy` (what an answer means) and here (what
/// the run does about it: accounting, stopping, the outage pause, the first answers' check).
struct RunMachine: Sendable {
    let config: RunConfiguration
    let retry: RetryPolicy
    var scheduler: Scheduler
    var summary = RunSummary()
    private(set) var stop: RunStop? = nil
    /// The run has handed out `.finish`.
    private(set) var finished = false
    /// The input is all read (or was not read at all: unchanged since a finished run). The scheduler is told, so
    /// that the last lines are routed by when they would finish.
    private(set) var inputDone = false { didSet { scheduler.inputExhausted = inputDone } }
    private var inputRequested = false
    private var wakeArmedAt: UInt64? = nil
    var random: Jitter
    private var messagesShown = 0
    let started: UInt64
    /// Set when the input is unchanged since a run that finished every line: nothing is read or sent.
    let finishedInput: CheckpointStore.FinishedInput?
    /// The longest pause already announced (a long Retry-After is said once, not per 429).
    var announcedPause = 0.0
    /// Line count of the input, for progress.
    var progressTotal: Int? = nil
    private var recentAttempts: [(UInt64, Int)] = []
    /// The windows last sampled, by route.
    private var sampledWindows: [Int] = []
    /// What the machine has to say before its first event (lines a run that died left in flight), said with it.
    private var startupNotes: [RunAction] = []
    /// When `chatbatch control … pause` stopped every provider sending (wall clock), nil when not paused.
    var pausedSince: Double? = nil
    /// Controls applied so far (for the metrics file).
    var controlsApplied = 0
    /// With `--store`: what the job had spent when this worker started (counted in the budget from the start).
    var jobSpentAtStart = 0.0

    /// `spent`, `refusedModels` and `proven` are per provider, in the run's order (what the checkpoint says of each).
    init(
        config: RunConfiguration, spent: [Double], refusedModels: [[String: ModelRefusal]], proven: [Bool],
        remembered: [Int?] = [],
        finishedInput: CheckpointStore.FinishedInput?, crashRecovered: Int, now: UInt64, random: Jitter = Jitter()
    ) {
        self.config = config
        retry = RetryPolicy(baseDelay: config.retry.baseDelay, maxDelay: config.retry.maxDelay)
        scheduler = Scheduler(
            config: config, spent: spent, refused: refusedModels, proven: proven, remembered: remembered, now: now)
        started = now
        self.random = random
        self.finishedInput = finishedInput
        if crashRecovered > 0 {
            startupNotes.append(.log(RunMessages.crashRecovered(crashRecovered)))
        }
    }

    /// Applies one event and returns what to do about it.
    mutating func handle(_ event: RunEvent, at now: Moment) -> [RunAction] {
        var out = startupNotes
        startupNotes = []
        switch event {
        case .start: out += start(now)
        case .inputRead(let batch): out += accept(batch, now)
        case .inputFailed(let message): out += halt(.inputFailed(message), now)
        case .answered(let answers):
            for answer in answers { out += apply(answer, now) }
            out += pump(now)
        case .notSent(let jobs):
            for job in jobs {
                scheduler.returned(job)
                uncount(job)
                out.append(.record(.unsent(customID: job.request.customID)))
            }
            out += pump(now)
        case .leaseLost(let jobs):
            for job in jobs {
                scheduler.returned(job)
                uncount(job)
                summary.takenOver += 1
                out.append(.record(.unsent(customID: job.request.customID)))
            }
            out += pump(now)
        case .sharedKey(let news):
            for item in news where scheduler.lanes.indices.contains(item.route) {
                let r = item.route
                if item.pausedFor > 0 {
                    scheduler.pause(route: r, until: now.uptime + UInt64(item.pausedFor * 1e9))
                }
                // The key's level, divided between its live workers, is this worker's (never above the job's own).
                if let share = item.share { scheduler.lanes[r].limiter.adopt(share) }
            }
            out += pump(now)
        case .jobSpent(let total):
            // The store's total holds this worker's spend too, and what the job had spent when it started.
            scheduler.setSpentElsewhere(max(0, total - jobSpentAtStart - summary.cost))
            out += pump(now)
        case .timer:
            if let armed = wakeArmedAt, armed <= now.uptime { wakeArmedAt = nil }
            out += pump(now)
        case .signal:
            if finished {
                // Already ending (the executor is winding down): the signal changes nothing.
            } else if stop == nil {
                out += halt(.interrupted, now)
            } else {
                out.append(.log("chatbatch: stopping now"))
                out.append(.cancelInFlight(after: 0))
            }
        case .writeFailed(let message, let outputOnly):
            out += halt(outputOnly ? .outputFailed(message) : .checkpointFailed(message), now)
        case .inputCounted(let n):
            progressTotal = n
        case .tick:
            if !finished { out += sample() }
        case .control(let controls):
            // Once finished, a control is left untaken: the command says the run ended before applying it.
            if !finished { out += steer(controls, now) }
        }
        return out
    }

    private mutating func start(_ now: Moment) -> [RunAction] {
        var out: [RunAction] = []
        if let known = finishedInput {
            // Unchanged since a run that finished every line: every line is done or failed already.
            inputDone = true
            summary.inputUnchanged = true
            summary.inputLines = known.done + known.failed
            summary.alreadyDone = known.done
            summary.alreadyFailed = known.failed
            out += checkFinished(now)
        } else {
            out += requestInput()
        }
        return out
    }

    // MARK: input

    private mutating func requestInput() -> [RunAction] {
        guard !inputDone, !inputRequested, stop == nil else { return [] }
        inputRequested = true
        // A worker on a store claims what it reads: it holds no more than it may soon send, so that the other
        // workers (and, if it dies, whoever takes its lines over) are not kept waiting for lines it only queues.
        return [.readInput(limit: config.files.store != nil ? readAhead : max(256, readAhead * 2))]
    }

    private mutating func accept(_ batch: FeedBatch, _ now: Moment) -> [RunAction] {
        var out: [RunAction] = []
        inputRequested = false
        inputDone = batch.endOfInput
        summary.inputLines += batch.linesRead
        summary.invalid += batch.invalid
        summary.alreadyDone += batch.alreadyDone
        summary.alreadyFailed += batch.alreadyFailed
        summary.changed += batch.changed
        summary.otherEndpoint += batch.otherEndpoint
        for m in batch.messages {
            messagesShown += 1
            if messagesShown <= 50 {
                out.append(.log(m))
            } else if messagesShown == 51 {
                out.append(.log(RunMessages.moreInputProblems))
            }
        }
        for id in batch.forgotten { out.append(.record(.forget(customID: id))) }
        for id in batch.superseded { out.append(.record(.supersede(customID: id))) }
        for record in batch.settled { out.append(.record(.finish(record, attempt: nil))) }
        for (request, answer) in batch.cached { out += answerFromCache(request, answer, now) }
        for entry in batch.backfill { out.append(.store(entry)) }
        scheduler.enqueue(batch.requests)
        out += pump(now)
        return out
    }

    // MARK: sending

    /// Sends whatever the scheduler allows now, arranges to be called again when it next may, and ends the run once
    /// nothing is left to do.
    mutating func pump(_ now: Moment) -> [RunAction] {
        var out = stop == nil ? send(now) : []
        out += checkFinished(now)
        return out
    }

    /// The requests the scheduler lets go now (each claimed before it is sent), and what comes of the rest.
    private mutating func send(_ now: Moment) -> [RunAction] {
        var out = sample(onlyChanged: true)
        decide: while true {
            switch scheduler.next(now: now.uptime) {
            case .send(let job):
                count(job)
                out.append(
                    .record(
                        .claim(
                            customID: job.request.customID, line: job.request.line, bodyHash: job.request.bodyHash,
                            model: job.request.model,
                            attempt: job.attempt, route: job.route)))
                out.append(.send(job))
            case .refuse(let job, let refusal):
                out += refuseUnsent(job, refusal)
            case .overBudget:
                out += halt(.budget(scheduler.budgetMessage), now)
                break decide
            case .wait(let until):
                if let until { out += wake(at: until) }
                break decide
            }
        }
        if scheduler.queuedFresh < readAhead { out += requestInput() }
        return out
    }

    /// Fresh lines kept queued: the most that may be in flight (a control may raise it above the job's). A worker on a
    /// store keeps what its windows may send now: a line it holds queued is one the other workers cannot have, and
    /// at the end of a job a worker sending a small share of its key must not hold a concurrency's worth of lines.
    var readAhead: Int {
        if config.files.store != nil { return max(1, scheduler.lanes.reduce(0) { $0 + $1.limiter.limit }) }
        return max(config.concurrency, scheduler.lanes.reduce(0) { $0 + $1.limiter.maximum })
    }

    /// Asks for `.timer` at `deadline` (a pause, a rate bucket refilling, a retry coming due).
    mutating func wake(at deadline: UInt64) -> [RunAction] {
        if let armed = wakeArmedAt, armed <= deadline { return [] }
        wakeArmedAt = deadline
        return [.wake(at: deadline)]
    }

    // MARK: accounting: a send counted, and taken back, here only

    /// `job` leaves: an attempt, and for its first attempt a prompt sent (and a cache miss, with a cache).
    private mutating func count(_ job: ScheduledJob) {
        summary.attempts += 1
        guard job.attempt == 1 else { return }
        summary.sent += 1
        if config.cache.path != nil && config.cache.mode.reads { summary.cacheMisses += 1 }
        if job.request.resentAfterCrash { summary.resentAfterCrash += 1 }
    }

    /// Takes back what `count` counted for a job that never reached the server.
    mutating func uncount(_ job: ScheduledJob) {
        summary.attempts -= 1
        guard job.attempt == 1 else { return }
        summary.sent -= 1
        if config.cache.path != nil && config.cache.mode.reads { summary.cacheMisses -= 1 }
        if job.request.resentAfterCrash { summary.resentAfterCrash -= 1 }
    }

    // MARK: stopping

    /// Stops one provider for `reason` (its key refused, it cannot be reached, its first answers all failed alike):
    /// the others carry on; with none left, the run stops for that reason.
    mutating func stopLane(_ r: Int, _ reason: RunStop, _ now: Moment) -> [RunAction] {
        var out: [RunAction] = []
        guard scheduler.lanes[r].stopped == nil else { return out }
        scheduler.stop(route: r, reason.message)
        if scheduler.lanes.allSatisfy({ $0.stopped != nil }) {
            out += halt(reason, now)
        } else {
            out.append(.log(RunMessages.providerStopped(scheduler.lanes[r].name, reason: reason.message)))
        }
        return out
    }

    /// Stops sending for `reason` (the first reason wins); what is in flight finishes, or is cancelled when the
    /// checkpoint cannot record it.
    mutating func halt(_ reason: RunStop, _ now: Moment) -> [RunAction] {
        var out: [RunAction] = []
        if stop == nil {
            stop = reason
            let inflight = scheduler.inflight
            out.append(.log(RunMessages.stopping(reason, inflight: inflight, grace: config.retry.grace)))
            switch reason {
            case .interrupted: out.append(.cancelInFlight(after: config.retry.grace))
            case .checkpointFailed, .inputFailed: out.append(.cancelInFlight(after: 0))
            default: break
            }
        }
        out += checkFinished(now)
        return out
    }

    /// Ends the run once nothing is in flight and either the work is done or a stop was asked for.
    mutating func checkFinished(_ now: Moment) -> [RunAction] {
        var out: [RunAction] = []
        guard !finished, scheduler.inflight == 0 else { return out }
        if stop == nil {
            guard inputDone, scheduler.isDrained else { return out }
            // The input ended with nothing answered: the held failures are just the lines' own.
            for r in scheduler.lanes.indices {
                for held in scheduler.lanes[r].firstFailures.release() {
                    out += finishFailed(held.record, held.attempt)
                }
            }
        } else {
            for r in scheduler.lanes.indices {
                for held in scheduler.lanes[r].firstFailures.release() {
                    out += requeue(held.record, held.attempt, note: held.record.errorMessage)
                }
            }
        }
        finished = true
        out.append(.finish)
        return out
    }

    /// The record of a line back to pending, with its attempt kept for the audit.
    func requeue(_ record: FinishedRecord, _ attempt: AttemptRecord?, note: String?) -> [RunAction] {
        [
            .record(
                .requeue(
                    customID: record.customID, line: record.line, bodyHash: record.bodyHash, model: record.model,
                    attempt: attempt, note: note))
        ]
    }

    /// Each provider's state, sampled into the checkpoint's timeline (the report draws it): every second, and when
    /// a window changes.
    mutating func sample(onlyChanged: Bool = false) -> [RunAction] {
        var out: [RunAction] = []
        if sampledWindows.count != scheduler.lanes.count {
            sampledWindows = Array(repeating: -1, count: scheduler.lanes.count)
        }
        for lane in scheduler.lanes where !onlyChanged || sampledWindows[lane.route] != lane.limiter.limit {
            sampledWindows[lane.route] = lane.limiter.limit
            out.append(
                .record(
                    .sample(
                        inflight: lane.inflight, window: lane.limiter.limit,
                        paused: lane.health.outage != nil || lane.pausedByControl,
                        route: lane.route)))
        }
        return out
    }

    /// The in-flight level each provider's key was found to allow, to start the next run there (by route).
    var learntCeilings: [Int: Int] {
        var out: [Int: Int] = [:]
        for lane in scheduler.lanes where lane.limiter.throttled && lane.limiter.ceiling < Int.max {
            out[lane.route] = lane.limiter.ceiling
        }
        return out
    }

    // MARK: progress

    /// Where the run stands, for the progress line.
    mutating func snapshot(_ now: Moment) -> ProgressSnapshot {
        let sum = summary
        let finishedLines =
            sum.done + sum.failed + sum.invalid + sum.alreadyDone + sum.alreadyFailed + sum.changed + sum.otherEndpoint
        // The rate over about the last 10 s: samples older than that go, but one earlier sample always stays (a log
        // line every 30 s has no other); the first line, with none, takes the rate since the run started.
        recentAttempts.append((now.uptime, sum.attempts))
        while recentAttempts.count > 2 && now.uptime &- recentAttempts[1].0 >= 10_000_000_000 {
            recentAttempts.removeFirst()
        }
        var rate = 0.0
        let (since, attemptsThen) = recentAttempts.count > 1 ? recentAttempts[0] : (started, 0)
        if now.uptime > since { rate = Double(sum.attempts - attemptsThen) / (Double(now.uptime - since) / 1e9) }
        return ProgressSnapshot(
            finished: finishedLines, total: progressTotal, inflight: scheduler.inflight, limit: scheduler.limit,
            requestsPerSecond: rate, tokens: sum.totalTokens, cost: sum.cost, retries: sum.retries,
            failures: sum.failed + sum.invalid,
            elapsed: Double(now.uptime &- started) / 1e9, priceKnown: config.pricesKnown, paused: paused)
    }
}

/// The machine's backoff jitter: seeded from the system, or by a test (`Jitter(seed:)`).
typealias Jitter = SplitMix64
