import ChatBatchCore

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
    /// The first request for its model: until it is answered, the model's other lines wait (one request per refused
    /// model).
    var modelProbe: Bool { modelProbeRoute != nil }
    /// The lane at which it is its model's first request (the lane's other lines of the model wait for its answer).
    var modelProbeRoute: Int? = nil
    /// Tokens and dollars already billed for this prompt (answers that failed their check), and how often it was asked
    /// again.
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
    /// Requests in flight at its provider (itself included) when it was sent: a 429 says the key allows fewer.
    var sentLaneInflight = 0
    /// When it was last sent (uptime ns).
    var sentAt: UInt64 = 0
    /// Its attempts answered 429: "not now", not one of the attempts `max_attempts` allows.
    var rateLimitedAttempts = 0

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
