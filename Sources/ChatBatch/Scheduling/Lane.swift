/// One provider's share of a run: its in-flight window, warm-up gate, Retry-After pause, rate buckets, share of the
/// budget, the models it refused, its health, and whether it was stopped (its key refused). A 429, an outage or a
/// refusal at one provider touches its lane only.
struct Lane: Sendable {
    let route: Int
    let settings: RouteSettings
    var limiter: AdaptiveLimit
    var budget: Budget
    var requestBucket: TokenBucket?
    var tokenBucket: TokenBucket?
    /// The key's request and token rates as its answers show them (headers, or 429s that are not noise).
    var requestPacer = RatePacer()
    var tokenPacer = RatePacer()
    /// The first 429 since the last answer that was not one: a key that answers nothing else for longer than the
    /// outage budget stops the lane.
    var rateLimitedSince: UInt64? = nil
    /// Real tokens ÷ estimated tokens, smoothed: corrects the tokens-per-minute estimates as answers arrive.
    var tokenRatio = 1.0
    var inflight = 0
    var pausedUntil: UInt64 = 0
    var warmedUp: Bool
    /// The warm-up (or outage) probe is on the wire, or waiting to be retried (then only it may be sent here).
    var probeInFlight = false
    var probeWaiting = false
    /// Models this provider refused (this run or an earlier one).
    var refusedModels: [String: ModelRefusal]
    /// Models it answered for; a model not in here is probed by one request first (with warm-up on).
    var provenModels = Set<String>()
    var probingModels = Set<String>()
    /// Why it takes no more lines (its key was refused, it cannot be reached, its first answers all failed alike).
    var stopped: String? = nil
    /// Paused by `chatbatch control … pause`: it sends nothing new until `resume`.
    var pausedByControl = false
    var health: EndpointHealth
    var firstFailures = FirstFailures()
    /// What happened here, for the summary's row.
    var sent = 0
    var rateLimits = 0
    /// What the key served here over the last few seconds (a store's workers learn the key's level from it).
    var serving = ServingLog()
    var done = 0
    var failed = 0
    var promptTokens = 0
    var completionTokens = 0
    var tokens: Int { promptTokens + completionTokens }
    var cost = 0.0
    /// Answers by status, transport failures, and how long answers took (for the metrics file).
    var statusCounts: [Int: Int] = [:]
    var noAnswer = 0
    var latency = LatencyHistogram()
    /// How long its answers take (seconds, smoothed over the last few dozen), nil before the first.
    var answerSeconds: Double? = nil

    /// What an answer's `x-ratelimit-*` headers said of the key's quotas (nothing when it sent none).
    mutating func heard(_ hint: RateLimitHint?, now: UInt64) {
        if let quota = hint?.requests { requestPacer.heard(quota, now: now) }
        if let quota = hint?.tokens { tokenPacer.heard(quota, now: now) }
    }

    /// One send came back from the wire (an answer or a transport failure; a withheld or cancelled send says
    /// nothing): counted for the metrics file, and a 2xx's time kept for routing. Returns the outage an answer ends,
    /// and whether it is the first answer this endpoint ever gave (the checkpoint records that once).
    mutating func exchanged(_ response: HTTPResponse) -> (endedOutage: EndpointHealth.Outage?, firstAnswer: Bool) {
        if let kind = response.failure?.kind, kind == .withheld || kind == .cancelled { return (nil, false) }
        latency.add(seconds: response.totalSeconds)
        guard response.status > 0 else {
            noAnswer += 1
            return (nil, false)
        }
        statusCounts[response.status, default: 0] += 1
        if (200..<300).contains(response.status) { answered(inSeconds: response.totalSeconds) }
        let ended = health.answered()
        let first = health.newlyProven
        if first { health.recordedProven() }
        return (ended, first)
    }

    /// A line's outcome at this provider, for the summary's row.
    mutating func settled(done: Bool) {
        if done { self.done += 1 } else { failed += 1 }
    }

    /// A 2xx answer took `seconds`.
    mutating func answered(inSeconds seconds: Double) {
        guard seconds.isFinite, seconds >= 0 else { return }
        answerSeconds = answerSeconds.map { 0.95 * $0 + 0.05 * seconds } ?? seconds
    }

    /// Answers a second it can give at its present limit (nil before its first answer).
    var answersPerSecond: Double? { answerSeconds.map { Double(room) / max(0.001, $0) } }

    init(
        route: Int, settings: RouteSettings, adaptive: Bool, warmup: Bool, spent: Double,
        refusedModels: [String: ModelRefusal], proven: Bool,
        remembered: Int?, now: UInt64
    ) {
        self.route = route
        self.settings = settings
        limiter = AdaptiveLimit(maximum: settings.concurrency, adaptive: adaptive, remembered: remembered)
        budget = Budget(cap: settings.maxCost, spent: spent)
        requestBucket = settings.requestsPerMinute.map { TokenBucket(perMinute: $0, now: now) }
        tokenBucket = settings.tokensPerMinute.map { TokenBucket(perMinute: $0, now: now) }
        warmedUp = !warmup
        self.refusedModels = refusedModels
        health = EndpointHealth(proven: proven)
    }

    var name: String { settings.name }

    /// A new value for one of its limits, from `chatbatch control … set` (nil: off).
    mutating func set(_ setting: ControlSetting, _ value: Double?, now: UInt64) {
        switch setting {
        case .concurrency: limiter.setMaximum(Int(value ?? Double(limiter.maximum)))
        case .maxCost: budget.cap = value
        case .rpm: requestBucket = value.map { TokenBucket(perMinute: $0, now: now) }
        case .tpm: tokenBucket = value.map { TokenBucket(perMinute: $0, now: now) }
        }
    }

    /// Requests it may have in flight now (one at a time while warming up or probing an outage).
    var room: Int {
        guard stopped == nil, !pausedByControl else { return 0 }
        if warmedUp { return limiter.limit }
        return probeInFlight ? 0 : 1
    }

    /// Free places, for choosing where the next line goes.
    var free: Int { max(0, room - inflight) }
}
