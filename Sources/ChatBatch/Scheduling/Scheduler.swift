import ChatBatchCore
import Foundation

/// One prompt as the scheduler tracks it: its request, its attempts, and what it has cost so far.
struct ScheduledJob: Sendable {
    var request: PreparedRequest
    var attempt = 0
    /// The most this request can cost (budget), and the tokens it is expected to use (tokens per minute).
    var worst = 0.0
    var estimate = 0.0
    /// The adaptive limit's epoch when it was sent, and whether it is the warm-up probe.
    var sentEpoch = 0
    var probe = false
    /// The first request for its model: until it is answered, the model's other lines wait (one request per refused model).
    var modelProbe = false
    /// Tokens and dollars already billed for this prompt (answers that failed their check), and how often it was asked again.
    var paidPrompt = 0
    var paidCompletion = 0
    var paidCost = 0.0
    var invalidRetries = 0
    /// Some answer billed for this prompt came without usage: the paid figures are partly estimated.
    var usageEstimated = false
    /// Which of the run's endpoints it is sent to (0 with one provider).
    var route = 0
    /// Requests in flight (itself included) and the in-flight limit when it was sent.
    var sentInflight = 0
    var sentWindow = 0

    init(request: PreparedRequest) { self.request = request }
}

/// What the first request for a model learnt about it.
enum ModelProbeOutcome: Sendable {
    /// Answered (not refused): the model is usable; its held lines go out.
    case answered
    /// Refused (403/404): its held lines are refused unsent.
    case refused(ModelRefusal)
    /// Not known (withheld, cancelled, 401): its held lines go back to the queue; the next one probes.
    case unknown
}

/// Decides what may be sent next, and when: the rules of a run with no I/O and no clock of its own.
///
/// It holds the queues (fresh requests, retries due now, retries waiting for their time, lines held behind a
/// model's first request) and every limit: the concurrency window, the warm-up probe, the Retry-After pause of
/// the whole key, the requests- and tokens-per-minute buckets, and the budget. Times are uptime nanoseconds
/// passed in by the caller, so tests drive it with a fake clock.
struct Scheduler: Sendable {
    /// What `next(now:)` says to do.
    enum Decision: Sendable {
        /// Send this job now (it is counted in flight).
        case send(ScheduledJob)
        /// Do not send this job: its model was refused. Write it to the errors file.
        case refuse(ScheduledJob, ModelRefusal)
        /// The next request could pass the budget cap: the run must stop.
        case overBudget
        /// Nothing may be sent now; ask again at this time (a pause, a bucket, a retry coming due), or when something changes (nil).
        case wait(until: UInt64?)
    }

    let config: RunConfiguration
    private(set) var limiter: AdaptiveLimit
    private(set) var budget: Budget
    private var requestBucket: TokenBucket?
    private var tokenBucket: TokenBucket?
    /// Real tokens ÷ estimated tokens, smoothed: corrects the tokens-per-minute estimates as answers arrive.
    private var tokenRatio = 1.0

    private var fresh: [PreparedRequest] = []
    private var freshHead = 0
    private var due: [ScheduledJob] = []
    private var delayed: [(at: UInt64, job: ScheduledJob)] = []
    private(set) var inflight = 0
    private(set) var pausedUntil: UInt64 = 0

    private(set) var warmedUp: Bool
    /// The warm-up probe is on the wire, or waiting to be retried (then only it may be sent).
    private var probeInFlight = false
    private var probeWaiting = false

    /// Models the provider refused (this run or an earlier one): their lines are refused unsent.
    private(set) var refusedModels: [String: ModelRefusal]
    /// Models a request has been answered for; a model not in here is probed by one request first (with warm-up on).
    private var provenModels = Set<String>()
    private var probingModels = Set<String>()
    private var held: [String: [ScheduledJob]] = [:]
    private(set) var heldCount = 0

    init(config: RunConfiguration, spent: Double, refusedModels: [String: ModelRefusal], now: UInt64) {
        self.config = config
        limiter = AdaptiveLimit(maximum: config.limits.concurrency, adaptive: config.limits.adaptive)
        budget = Budget(cap: config.limits.maxCost, spent: spent)
        requestBucket = config.limits.requestsPerMinute.map { TokenBucket(perMinute: $0, now: now) }
        tokenBucket = config.limits.tokensPerMinute.map { TokenBucket(perMinute: $0, now: now) }
        warmedUp = !config.limits.warmup
        self.refusedModels = refusedModels
    }

    // MARK: queues

    /// Fresh requests from the input, sent after any retries that are due.
    mutating func enqueue(_ requests: [PreparedRequest]) {
        if freshHead > 4096 { fresh.removeFirst(freshHead); freshHead = 0 }
        fresh.append(contentsOf: requests)
    }

    /// Fresh requests not yet sent (the input is read ahead while this is low).
    var queuedFresh: Int { fresh.count - freshHead }

    /// Requests never claimed that the checkpoint has no row for (queued, or held behind a model's first request).
    var unrecorded: Int {
        fresh[freshHead...].filter { !$0.hasRow }.count + held.values.reduce(0) { $0 + $1.filter { !$0.request.hasRow && $0.attempt == 0 }.count }
    }

    /// True when nothing is queued, waiting, held or in flight.
    var isDrained: Bool { queuedFresh == 0 && due.isEmpty && delayed.isEmpty && heldCount == 0 && inflight == 0 }

    /// Sends `job` again at `at`; a 429 also pauses the whole key until `pauseUntil`.
    mutating func retry(_ job: ScheduledJob, at: UInt64, pauseUntil: UInt64? = nil) {
        if let pauseUntil, pauseUntil > pausedUntil { pausedUntil = pauseUntil }
        if job.probe && !warmedUp { probeWaiting = true }  // only this retry may go out until it succeeds
        delayed.append((at, job))
    }

    /// Sends `job` again as soon as the limits allow (a structured answer asked again).
    mutating func retryNow(_ job: ScheduledJob) { due.append(job) }

    // MARK: deciding

    /// What to do next at `now`; call until it says `wait`.
    mutating func next(now: UInt64) -> Decision {
        releaseDelayed(now: now)
        if now < pausedUntil { return .wait(until: min(pausedUntil, earliestDelayed ?? .max)) }
        var room = limiter.limit
        if !warmedUp {
            if probeWaiting, let i = due.firstIndex(where: \.probe), i > 0 { due.insert(due.remove(at: i), at: 0) }  // the probe goes first
            if probeInFlight { room = 0 } else if probeWaiting { room = due.first?.probe == true ? 1 : 0 } else { room = 1 }
        }
        while inflight < room {
            let fromRetry = !due.isEmpty
            var job: ScheduledJob
            if fromRetry {
                job = due[0]
            } else if freshHead < fresh.count {
                job = ScheduledJob(request: fresh[freshHead])
            } else {
                break
            }
            let r = job.request
            if let model = r.model, let refusal = refusedModels[model] {
                take(fromRetry)
                return .refuse(job, refusal)
            }
            let probesModel = config.limits.warmup && r.model.map { !provenModels.contains($0) } == true
            if probesModel && !job.modelProbe && probingModels.contains(r.model!) {
                take(fromRetry)
                held[r.model!, default: []].append(job)
                heldCount += 1
                continue
            }
            job.worst = config.worstCost(promptTokens: r.promptTokens, maxTokens: r.maxTokens)
            if !budget.allows(job.worst) { return .overBudget }
            job.estimate = Double(r.promptTokens + config.completionBound(r.maxTokens)) * tokenRatio
            var wait = requestBucket?.wait(for: 1, now: now) ?? 0
            wait = max(wait, tokenBucket?.wait(for: job.estimate, now: now) ?? 0)
            if wait > 0 { return .wait(until: min(now &+ Clock.nanoseconds(wait), earliestDelayed ?? .max)) }
            take(fromRetry)
            requestBucket?.take(1)
            tokenBucket?.take(job.estimate)
            budget.inflightWorst += job.worst
            job.sentEpoch = limiter.epoch
            if !warmedUp {
                job.probe = true
                probeInFlight = true
                probeWaiting = false
            }
            if probesModel {
                job.modelProbe = true
                probingModels.insert(r.model!)
            }
            job.attempt += 1
            inflight += 1
            job.sentInflight = inflight
            job.sentWindow = limiter.limit
            return .send(job)
        }
        return .wait(until: earliestDelayed)
    }

    /// The budget's state, for the message when it stops the run.
    var budgetMessage: String {
        String(format: "budget: $%.6f spent and $%.6f at most in flight; one more request could pass the $%.6f cap. Run again with a larger --max-cost to carry on",
               budget.spent, budget.inflightWorst, budget.cap ?? 0)
    }

    private mutating func take(_ fromRetry: Bool) {
        if fromRetry { due.removeFirst() } else { freshHead += 1 }
    }

    private var earliestDelayed: UInt64? { delayed.lazy.map(\.at).min() }

    private mutating func releaseDelayed(now: UInt64) {
        guard !delayed.isEmpty else { return }
        var waiting: [(at: UInt64, job: ScheduledJob)] = []
        for item in delayed { if item.at <= now { due.append(item.job) } else { waiting.append(item) } }
        delayed = waiting
    }

    // MARK: answers

    /// A sent job came back, whatever the answer: it no longer holds a place in flight.
    mutating func returned(_ job: ScheduledJob) {
        inflight -= 1
        budget.inflightWorst -= job.worst
        if job.probe { probeInFlight = false }  // unless it is retried, the next request becomes the probe
    }

    /// A 2xx answer: the money is spent, the window may grow, the warm-up (or an outage's probing) is over, the
    /// token estimate learns.
    mutating func succeeded(_ job: ScheduledJob, promptTokens: Int, completionTokens: Int, cost: Double) {
        budget.spent += cost
        limiter.succeeded()
        warmedUp = true
        if promptTokens + completionTokens > 0 {
            tokenBucket?.adjust(job.estimate - Double(promptTokens + completionTokens))
            let raw = Double(job.request.promptTokens + config.completionBound(job.request.maxTokens))
            tokenRatio = 0.9 * tokenRatio + 0.1 * min(1, Double(promptTokens + completionTokens) / max(1, raw))
        }
    }

    /// The endpoint stopped answering: until something succeeds, one request at a time goes out (a probe), as in
    /// the warm-up.
    mutating func holdForProbe() {
        warmedUp = false
        probeWaiting = false
    }

    /// A 429 for `job`: the window halves (once per round).
    mutating func rateLimited(_ job: ScheduledJob) { limiter.rateLimited(sentEpoch: job.sentEpoch) }

    /// Records a refusal; returns it as kept (the first refusal of a model wins).
    mutating func refuse(model: String, _ refusal: ModelRefusal) -> (refusal: ModelRefusal, isNew: Bool) {
        if let known = refusedModels[model] { return (known, false) }
        refusedModels[model] = refusal
        return (refusal, true)
    }

    /// Settles a model's first request; returns the held jobs that must now be refused unsent.
    mutating func settleModelProbe(_ job: ScheduledJob, _ outcome: ModelProbeOutcome) -> [ScheduledJob] {
        guard job.modelProbe, let model = job.request.model else { return [] }
        probingModels.remove(model)
        let jobs = held.removeValue(forKey: model) ?? []
        heldCount -= jobs.count
        switch outcome {
        case .answered:
            provenModels.insert(model)
            due.append(contentsOf: jobs)
        case .unknown:
            due.append(contentsOf: jobs)
        case .refused:
            return jobs
        }
        return []
    }
}
