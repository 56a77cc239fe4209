import ChatBatchCore
import Foundation

/// Decides what may be sent next, where, and when: the rules of a run with no I/O and no clock of its own.
///
/// It holds the queues every provider takes from (fresh requests, retries due now, retries waiting for their time,
/// lines held behind a model's first request at a provider) and one `Lane` per provider with its own limits: the
/// window, the warm-up probe, the Retry-After pause of its key, its rate buckets, its share of the budget and the
/// models it refused. `fill` lets every provider take lines as its window allows (the one with the most room
/// first); `priority` offers each line to the providers in list order. A retry may go to another provider. Times
/// are uptime nanoseconds passed in by the caller, so tests drive it with a fake clock.
struct Scheduler: Sendable {
    /// What `next(now:)` says to do.
    enum Decision: Sendable {
        /// Send this job now, to the lane its `route` names (it is counted in flight).
        case send(ScheduledJob)
        /// Do not send this job: every provider refused its model. Write it to the errors file.
        case refuse(ScheduledJob, ModelRefusal)
        /// The next request could pass the budget cap: the run must stop.
        case overBudget
        /// Nothing may be sent now; ask again at this time (a pause, a bucket, a retry coming due), or when something
        /// changes (nil).
        case wait(until: UInt64?)
    }

    let config: RunConfiguration
    var lanes: [Lane]
    /// The total: spent over every run on the checkpoint, and the worst case of everything in flight.
    private(set) var budget: Budget

    private var fresh: [PreparedRequest] = []
    private var freshHead = 0
    private var due: [ScheduledJob] = []
    private var delayed: [(at: UInt64, job: ScheduledJob)] = []
    /// Lines of a model held while its first request at a lane is out, by lane and model.
    private var held: [String: [ScheduledJob]] = [:]
    private(set) var heldCount = 0
    /// The whole input has been read: what is queued is all that is left, so the last lines can be routed by when
    /// they would finish.
    var inputExhausted = false

    /// `spent` is each lane's spend so far, and `refused` the models each refused, both by route.
    /// `remembered` is the in-flight level each provider's key was found to allow in an earlier run (nil: unknown).
    init(
        config: RunConfiguration, spent: [Double], refused: [[String: ModelRefusal]], proven: [Bool],
        remembered: [Int?] = [], now: UInt64
    ) {
        self.config = config
        budget = Budget(cap: config.limits.maxCost, spent: spent.reduce(0, +))
        lanes = config.routes.enumerated().map { i, route in
            Lane(
                route: i, settings: route, adaptive: config.limits.adaptive, warmup: config.limits.warmup,
                spent: i < spent.count ? spent[i] : 0, refusedModels: i < refused.count ? refused[i] : [:],
                proven: i < proven.count ? proven[i] : false, remembered: i < remembered.count ? remembered[i] : nil,
                now: now)
        }
    }

    /// Each route's key is used by that many workers of a store: a limit not yet learnt ramps up as their part.
    mutating func startShared(workers: [Int]) {
        for (r, n) in workers.enumerated() where r < lanes.count { lanes[r].limiter.startShared(workers: n) }
    }

    // MARK: queues

    /// Fresh requests from the input, sent after any retries that are due.
    mutating func enqueue(_ requests: [PreparedRequest]) {
        if freshHead > 4096 {
            fresh.removeFirst(freshHead)
            freshHead = 0
        }
        fresh.append(contentsOf: requests)
    }

    /// Fresh requests not yet sent (the input is read ahead while this is low).
    var queuedFresh: Int { fresh.count - freshHead }
    /// Lines not yet sent: fresh, retries due, and retries waiting for their time.
    var unsent: Int { queuedFresh + due.count + delayed.count }

    /// Requests never claimed that the checkpoint has no row for (queued, or held behind a model's first request).
    var unrecorded: Int {
        fresh[freshHead...].filter { !$0.hasRow }.count
            + held.values.reduce(0) { $0 + $1.filter { !$0.request.hasRow && $0.attempt == 0 }.count }
    }

    /// Requests in flight, over every provider.
    var inflight: Int { lanes.reduce(0) { $0 + $1.inflight } }
    /// The in-flight limit over every provider, and its lowest.
    var limit: Int { lanes.reduce(0) { $0 + $1.limiter.limit } }
    var lowest: Int { lanes.reduce(0) { $0 + $1.limiter.lowest } }
    /// Every provider is warmed up.
    var warmedUp: Bool { lanes.allSatisfy(\.warmedUp) }

    /// True when nothing is queued, waiting, held or in flight.
    var isDrained: Bool { queuedFresh == 0 && due.isEmpty && delayed.isEmpty && heldCount == 0 && inflight == 0 }

    /// Sends `job` again at `at`; a 429 also pauses its provider's key until `pauseUntil`.
    mutating func retry(_ job: ScheduledJob, at: UInt64, pauseUntil: UInt64? = nil) {
        let r = job.route
        if let pauseUntil, pauseUntil > lanes[r].pausedUntil { lanes[r].pausedUntil = pauseUntil }
        // only this retry may go out there until it succeeds
        if job.probe && !lanes[r].warmedUp { lanes[r].probeWaiting = true }
        delayed.append((at, job))
    }

    /// Holds lane `r` back until `until` (an outage's backoff, while its lines go to the other providers).
    mutating func pause(route r: Int, until: UInt64) {
        if until > lanes[r].pausedUntil { lanes[r].pausedUntil = until }
    }

    /// Sends `job` again as soon as the limits allow (a structured answer asked again).
    mutating func retryNow(_ job: ScheduledJob) { due.append(job) }

    // MARK: deciding

    /// What to do next at `now`; call until it says `wait`.
    mutating func next(now: UInt64) -> Decision {
        releaseDelayed(now: now)
        var wake = earliestDelayed
        for lane in lanes where lane.stopped == nil && lane.pausedUntil > now && lane.free > 0 {
            wake = min(wake ?? .max, lane.pausedUntil)
        }
        while true {
            let order = candidates(now: now)
            if order.isEmpty { return .wait(until: wake) }
            // A lane probing after a warm-up or an outage takes only its probe's retry, which goes first.
            for r in order where lanes[r].probeWaiting && !lanes[r].warmedUp {
                if let i = due.firstIndex(where: { $0.probe && $0.route == r }) {
                    let job = due.remove(at: i)
                    return send(job, lane: r, now: now)
                }
            }
            let fromRetry = !due.isEmpty
            guard fromRetry || freshHead < fresh.count else { return .wait(until: wake) }
            let job = fromRetry ? due[0] : ScheduledJob(request: fresh[freshHead])
            let model = job.request.refusalKey
            // Refused by every provider that is still sending: refused unsent.
            let live = lanes.filter { $0.stopped == nil }
            if let model, !live.isEmpty, live.allSatisfy({ $0.refusedModels[model] != nil }) {
                take(fromRetry)
                return .refuse(job, live[0].refusedModels[model]!)
            }
            var taken = false
            for r in order where !(lanes[r].probeWaiting && !lanes[r].warmedUp) {
                if let model, lanes[r].refusedModels[model] != nil { continue }
                if let model, config.limits.warmup, !lanes[r].provenModels.contains(model),
                    lanes[r].probingModels.contains(model), !job.modelProbe
                {
                    // Its model's first request at this lane is out: the line waits for its answer (one request per
                    // refused model).
                    if lanes.count == 1
                        || !order.contains(where: {
                            $0 != r && lanes[$0].refusedModels[model] == nil && !lanes[$0].probingModels.contains(model)
                        })
                    {
                        take(fromRetry)
                        held[Self.heldKey(r, model), default: []].append(job)
                        heldCount += 1
                        taken = true
                        break
                    }
                    continue
                }
                let worst = config.worstCost(
                    promptTokens: job.request.promptTokens, maxTokens: job.request.maxTokens,
                    prices: lanes[r].settings.prices, endpoint: job.request.endpoint)
                if !budget.allows(worst) { return .overBudget }
                if !lanes[r].budget.allows(worst) { continue }  // its share is spent: the others may take it
                if let bucketWait = bucketWait(job, lane: r, now: now) {
                    wake = min(wake ?? .max, bucketWait)
                    continue
                }
                take(fromRetry)
                return send(job, lane: r, now: now)
            }
            if !taken { return .wait(until: wake) }
        }
    }

    /// When `lane`'s buckets allow `job`, or nil when they do now.
    private mutating func bucketWait(_ job: ScheduledJob, lane r: Int, now: UInt64) -> UInt64? {
        let estimate =
            Double(job.request.promptTokens + config.completionBound(job.request.maxTokens)) * lanes[r].tokenRatio
        var wait = lanes[r].requestBucket?.wait(for: 1, now: now) ?? 0
        wait = max(wait, lanes[r].tokenBucket?.wait(for: estimate, now: now) ?? 0)
        wait = max(
            wait, lanes[r].requestPacer.wait(for: 1, now: now), lanes[r].tokenPacer.wait(for: estimate, now: now))
        return wait > 0 ? now &+ Clock.nanoseconds(wait) : nil
    }

    /// Hands `job` to lane `r`: counted in flight there, with what it may cost and how many tokens it should use.
    private mutating func send(_ job: ScheduledJob, lane r: Int, now: UInt64) -> Decision {
        var job = job
        let prices = lanes[r].settings.prices
        job.worst = config.worstCost(
            promptTokens: job.request.promptTokens, maxTokens: job.request.maxTokens, prices: prices,
            endpoint: job.request.endpoint)
        job.estimate =
            Double(job.request.promptTokens + config.completionBound(job.request.maxTokens)) * lanes[r].tokenRatio
        lanes[r].requestBucket?.take(1)
        lanes[r].tokenBucket?.take(job.estimate)
        lanes[r].requestPacer.take(1)
        lanes[r].tokenPacer.take(job.estimate)
        job.sentAt = now
        budget.inflightWorst += job.worst
        lanes[r].budget.inflightWorst += job.worst
        job.route = r
        job.sentEpoch = lanes[r].limiter.epoch
        if !lanes[r].warmedUp {
            job.probe = true
            lanes[r].probeInFlight = true
            lanes[r].probeWaiting = false
        } else {
            job.probe = false
        }
        if job.modelProbeRoute == nil, let model = job.request.refusalKey, config.limits.warmup,
            !lanes[r].provenModels.contains(model),
            !lanes[r].probingModels.contains(model)
        {
            job.modelProbeRoute = r
            lanes[r].probingModels.insert(model)
        }
        job.attempt += 1
        lanes[r].serving.sent(at: now)
        lanes[r].inflight += 1
        lanes[r].sent += 1
        job.sentLaneInflight = lanes[r].inflight
        job.sentInflight = inflight
        job.sentWindow = limit
        return .send(job)
    }

    /// A new cap for the whole run's spend (`chatbatch control … set max_cost`; nil: none).
    mutating func setBudgetCap(_ cap: Double?) { budget.cap = cap }

    /// What other workers of the job have spent since this one started (`--store`): the cap holds for the job.
    private(set) var spentElsewhere = 0.0
    mutating func setSpentElsewhere(_ amount: Double) {
        budget.spent += amount - spentElsewhere
        spentElsewhere = amount
    }

    /// The budget's state, for the message when it stops the run.
    var budgetMessage: String {
        String(
            format:
                "budget: $%.6f spent and $%.6f at most in flight; one more request could pass the $%.6f cap. Run again with a larger --max-cost to carry on",
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

    private static func heldKey(_ route: Int, _ model: String) -> String { "\(route)\u{0}\(model)" }

    // MARK: answers

    /// A sent job came back, whatever the answer (at `answeredAt`; nil: it never left): it no longer holds a place in
    /// flight.
    mutating func returned(_ job: ScheduledJob, answeredAt: UInt64? = nil) {
        let r = job.route
        lanes[r].serving.returned(sent: job.sentAt, at: answeredAt)
        lanes[r].inflight -= 1
        budget.inflightWorst -= job.worst
        lanes[r].budget.inflightWorst -= job.worst
        if job.probe { lanes[r].probeInFlight = false }  // unless it is retried, the next request becomes the probe
    }

    /// A 2xx answer: the money is spent, the window may grow, the warm-up (or an outage's probing) is over, the
    /// token estimate learns.
    mutating func succeeded(_ job: ScheduledJob, promptTokens: Int, completionTokens: Int, cost: Double, now: UInt64) {
        let r = job.route
        budget.spent += cost
        lanes[r].budget.spent += cost
        lanes[r].promptTokens += promptTokens
        lanes[r].completionTokens += completionTokens
        lanes[r].cost += cost
        lanes[r].limiter.succeeded(now: now, inflight: job.sentLaneInflight)
        lanes[r].warmedUp = true
        if promptTokens + completionTokens > 0 {
            lanes[r].tokenBucket?.adjust(job.estimate - Double(promptTokens + completionTokens))
            lanes[r].tokenPacer.adjust(job.estimate - Double(promptTokens + completionTokens))
            let raw = Double(job.request.promptTokens + config.completionBound(job.request.maxTokens))
            lanes[r].tokenRatio =
                0.9 * lanes[r].tokenRatio + 0.1 * min(1, Double(promptTokens + completionTokens) / max(1, raw))
        }
    }

    /// The lane's endpoint stopped answering: until something succeeds there, one request at a time goes out (a
    /// probe), as in the warm-up.
    mutating func holdForProbe(route r: Int) {
        lanes[r].warmedUp = false
        lanes[r].probeWaiting = false
    }

    /// An answer from `job`'s provider that was not a 429, with what its headers say about the key's limits.
    mutating func answered(_ job: ScheduledJob, hint: RateLimitHint?, now: UInt64) {
        let r = job.route
        lanes[r].rateLimitedSince = nil
        _ = lanes[r].requestPacer.answered(limited: false, now: now)
        lanes[r].heard(hint, now: now)
    }

    /// A 429 for `job`, asking to wait `wait` seconds (nil: it said nothing). What it means decides what changes:
    /// - sent with more requests in flight than the key ever answered (or while looking one above the ceiling):
    ///   the key's concurrency, and the in-flight window shrinks;
    /// - one of several among the key's last answers: a rate (requests or tokens a minute), and sends are paced. A 429
    ///   sent with at most half as many in flight is clearly not concurrency (a key that allows N at once never
    ///   refuses at N/2, however late its answers are counted): four of the last sixteen answers show a rate. One
    ///   sent with more may be a concurrency limit answered late: it takes eight. Once pacing, every such 429 is
    ///   the rate's;
    /// - otherwise noise, or a concurrency limit counted late: the key pauses for its wait, as for every 429, and
    ///   the window steps down one (never below half of the round's), growing back one per success.
    /// Returns how long the key has answered nothing but 429s (seconds).
    @discardableResult
    mutating func rateLimited(_ job: ScheduledJob, wait: Double?, hint: RateLimitHint?, now: UInt64) -> Double {
        let r = job.route
        lanes[r].rateLimits += 1
        lanes[r].serving.refused(sent: job.sentAt)
        let since = lanes[r].rateLimitedSince ?? now
        lanes[r].rateLimitedSince = since
        lanes[r].heard(hint, now: now)
        let limiter = lanes[r].limiter
        let pacing = lanes[r].requestPacer.rate != nil
        if job.sentLaneInflight > limiter.proven || limiter.probing {
            lanes[r].limiter.rateLimited(sentEpoch: job.sentEpoch, inflight: job.sentLaneInflight)
        } else {
            let clear = pacing || job.sentLaneInflight <= max(1, limiter.proven / 2)
            let showsRate = lanes[r].requestPacer.answered(limited: true, clear: clear, now: now) || hint != nil
            if showsRate && (wait != nil || hint != nil) {
                lanes[r].requestPacer.rateLimited(wait: wait, sentAt: job.sentAt, now: now)
            } else {
                // Not (yet) a rate it can pace: the window steps down one, to half of the round's at most.
                lanes[r].limiter.rateLimited(sentEpoch: job.sentEpoch, inflight: job.sentLaneInflight)
            }
        }
        return Double(now &- since) / 1e9
    }

    /// A lane takes no more lines; returns the lines held at it, back to the queue for the others.
    mutating func stop(route r: Int, _ reason: String) {
        lanes[r].stopped = lanes[r].stopped ?? reason
        for key in held.keys where key.hasPrefix("\(r)\u{0}") {
            let jobs = held.removeValue(forKey: key) ?? []
            heldCount -= jobs.count
            due.append(contentsOf: jobs)
        }
    }

    /// Records that lane `r` refused `model`; returns it as kept (the first refusal there wins).
    mutating func refuse(model: String, _ refusal: ModelRefusal, route r: Int) -> (refusal: ModelRefusal, isNew: Bool) {
        if let known = lanes[r].refusedModels[model] { return (known, false) }
        lanes[r].refusedModels[model] = refusal
        return (refusal, true)
    }

    /// Models refused by every provider (their lines go to the errors file), with the first provider's refusal.
    var refusedEverywhere: [String: ModelRefusal] {
        var out: [String: ModelRefusal] = [:]
        for (model, refusal) in lanes[0].refusedModels where lanes.allSatisfy({ $0.refusedModels[model] != nil }) {
            out[model] = refusal
        }
        return out
    }

    /// Settles a model's first request at its lane; returns the held jobs that must now be refused unsent (refused
    /// by every provider); the others go back to the queue.
    mutating func settleModelProbe(_ job: ScheduledJob, _ outcome: ModelProbeOutcome) -> [ScheduledJob] {
        guard let r = job.modelProbeRoute, let model = job.request.refusalKey else { return [] }
        lanes[r].probingModels.remove(model)
        let jobs = held.removeValue(forKey: Self.heldKey(r, model)) ?? []
        heldCount -= jobs.count
        switch outcome {
        case .answered:
            lanes[job.route].provenModels.insert(model)  // proven where it was answered (a retry may go elsewhere)
        case .unknown, .refused:
            break
        }
        if case .refused = outcome, lanes.allSatisfy({ $0.stopped != nil || $0.refusedModels[model] != nil }) {
            return jobs
        }
        due.append(contentsOf: jobs)
        return []
    }
}
