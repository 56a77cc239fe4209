import ChatBatchCore

/// When an event happens: uptime for every rule, and the wall clock for what the user reads.
struct Moment: Sendable {
    /// Nanoseconds since boot (never goes back).
    var uptime: UInt64
    /// Seconds since 1970 (UTC).
    var wall: Double
}

/// One sent request and what came back.
struct Answer: Sendable {
    var job: ScheduledJob
    var response: HTTPResponse
    /// Wall-clock seconds when it was handed to the transport.
    var startedAt: Double
}

/// What the workers of a store know of one provider's key (`--store`): a pause that a 429 at another worker asked
/// for, and this worker's share of the in-flight level the key was found to allow.
struct SharedKeyNews: Sendable, Equatable {
    let route: Int
    /// Seconds left of a pause another worker's 429 asked for (0: none beyond this worker's own).
    let pausedFor: Double
    /// This worker's share of the level the key allows over all its workers (nil: not learnt yet).
    let share: Int?
}

/// Something that happened to a run; `RunMachine.handle` turns it into actions.
enum RunEvent: Sendable {
    /// The run starts (nothing has been read or sent).
    case start
    /// The input feed read a batch: requests to send, lines it settled (invalid, done before, cached).
    case inputRead(FeedBatch)
    /// The input could not be read on.
    case inputFailed(String)
    /// Answers (or transport failures) of sent requests, in the order they arrived.
    case answered([Answer])
    /// Requests whose claims could not be committed: they were never handed to the transport.
    case notSent([ScheduledJob])
    /// Requests whose lines this worker no longer holds in its store (its lease lapsed and another worker claimed
    /// them): never handed to the transport, and no longer this run's to answer.
    case leaseLost([ScheduledJob])
    /// What the store's workers know of the keys (`--store`).
    case sharedKey([SharedKeyNews])
    /// What the whole job has spent, as its store records it (`--store` with `max_cost`).
    case jobSpent(Double)
    /// A wake-up the machine asked for came due.
    case timer
    /// SIGINT or SIGTERM.
    case signal
    /// A write failed: the checkpoint (nothing can be recorded) or only an output file.
    case writeFailed(String, outputOnly: Bool)
    /// The input's line count, for progress.
    case inputCounted(Int)
    /// A second has passed: the run's state is sampled into the checkpoint's timeline.
    case tick
    /// Controls given with `chatbatch control` (pause, resume, drain, a new limit), oldest first.
    case control([ControlRequest])
}

/// What the executor must do for the machine; it decides nothing.
enum RunAction: Sendable {
    /// Commit this change in the turn's transaction (before any `send` of the same turn leaves).
    case record(CheckpointOp)
    /// Send this request, once its claim (recorded in the same turn) is committed.
    case send(ScheduledJob)
    /// Store an answer in the response cache.
    case store(CacheWriter.Entry)
    /// Read up to this many more requests from the input.
    case readInput(limit: Int)
    /// Deliver `.timer` at this uptime.
    case wake(at: UInt64)
    /// Tell the user.
    case log(String)
    /// Cancel every request in flight after this many seconds (0: now).
    case cancelInFlight(after: Double)
    /// Nothing is in flight and nothing more will be sent: end the run.
    case finish
}

/// Why a run stopped before its input was done, and the exit that says so.
enum RunStop: Sendable {
    /// The key (401, or an authentication error by its body) was refused.
    case keyRefused(String)
    /// The server's TLS certificate was refused before anything was sent.
    case certificateRefused(String)
    /// One more request could pass `--max-cost`.
    case budget(String)
    /// The key asked to wait longer than `--max-wait`.
    case waitTooLong(String)
    /// The endpoint cannot be reached or is the wrong URL (its first request failed, or an outage outlasted its
    /// budget).
    case unreachable(String)
    /// The first answers all failed the same way, and nothing has succeeded.
    case systematic(String)
    /// SIGINT or SIGTERM.
    case interrupted
    /// The checkpoint could not be written: what was in flight is cancelled.
    case checkpointFailed(String)
    /// An output file could not be written: what was in flight finished into the checkpoint.
    case outputFailed(String)
    /// The input could not be read on.
    case inputFailed(String)
    /// `chatbatch control … drain`: what was in flight finished.
    case drained(String)

    var exit: RunExit {
        switch self {
        case .keyRefused, .certificateRefused, .budget, .waitTooLong, .unreachable, .systematic: return .stoppedEarly
        case .interrupted, .checkpointFailed, .outputFailed, .inputFailed, .drained: return .interrupted
        }
    }

    var message: String {
        switch self {
        case .keyRefused(let m), .certificateRefused(let m), .budget(let m), .waitTooLong(let m), .unreachable(let m),
            .systematic(let m),
            .checkpointFailed(let m), .outputFailed(let m), .inputFailed(let m), .drained(let m):
            return m
        case .interrupted: return "interrupted; run the same command again to resume"
        }
    }
}
