import ChatBatchCore

/// What the run machine tells the user, in one place: why a provider or the run stops (the text of a `RunStop`),
/// and the notes it logs. Each says what happened, that nothing was lost when nothing was, and what to do. The
/// machine's code says which message; the words are here.
enum RunMessages {
    /// `" at NAME"` when the run has several providers (a message then says which).
    typealias At = String

    // MARK: why a provider, or the run, stops

    static func keyOnlyRateLimited(at: At, for seconds: Double, budget: Double) -> String {
        "the key\(at) has answered nothing but 429s for \(d(seconds)) (more than --outage-budget \(d(budget))); "
            + "nothing was lost. Run the same command again later to carry on"
    }

    static func systematic(at: At, signature: String, message: String) -> String {
        "the first \(FirstFailures.limit) answers\(at) all failed the same way (\(signature): \(message)) and nothing "
            + "has succeeded; the lines stay pending. Fix the cause (the key, the model, the URL) and run the same "
            + "command again"
    }

    static func wrongRoute(url: String, reason: String, at: At) -> String {
        "\(url) answered \(reason): does the base URL end in /v1 (for TIR: is the project id right)? Nothing else was "
            + "sent\(at); fix the URL and run the same command again"
    }

    /// An endpoint that never answered cannot be reached. "Nothing was sent" only when it is true: earlier sends
    /// that timed out may have reached the server.
    static func neverReached(url: String, reason: String, possiblyBilled: Int, hint: String) -> String {
        let sent =
            possiblyBilled > 0
            ? "no answer came back (\(possiblyBilled) earlier sends may have reached it: counted as possibly billed "
                + "twice)"
            : "nothing was sent"
        return "\(url): \(reason); \(sent). \(hint) Then run the same command again"
    }

    static func outageTooLong(url: String, budget: Double, reason: String) -> String {
        "\(url) has been unreachable for more than \(d(budget)) (--outage-budget; last: \(reason)); nothing was lost. "
            + "Run the same command again once it is back"
    }

    static func waitTooLong(seconds: Double, maxWait: Double) -> String {
        "the key asked to wait \(d(seconds)) before sending again (Retry-After), more than --max-wait \(d(maxWait)); "
            + "run the same command again later to carry on"
    }

    static func drained(host: String, inflight: Int) -> String {
        "drained by chatbatch control (from \(host)): the \(inflight) requests in flight finish, nothing new is sent; "
            + "run the same command again to resume"
    }

    // MARK: notes

    static let usageEstimated =
        "chatbatch: warning: the server sent no usage with some answers; their tokens and cost are estimated (the "
        + "summary counts them, the flat output marks them usage_estimated, and --max-cost uses the estimate)"

    static let moreInputProblems =
        "chatbatch: more input problems, not said here (invalid lines are in the errors file; the summary counts the "
        + "rest)"

    static func crashRecovered(_ n: Int) -> String {
        "chatbatch: \(n) prompts were in flight when a previous run stopped; they will be sent again and counted as "
            + "possibly billed twice"
    }

    static func answersAgain(host: String, after seconds: Double) -> String {
        "chatbatch: \(host) answers again after \(d(seconds)) unreachable; sending resumes"
    }

    static func outageStarted(host: String, reason: String, budget: Double, severalProviders: Bool) -> String {
        "chatbatch: \(host) is unreachable (\(reason)); sending there paused: one request probes it with backoff, for "
            + "up to \(d(budget)) (--outage-budget)" + (severalProviders ? " (the other providers carry on)" : "")
    }

    static func pause(seconds: Double, resumesAt: String) -> String {
        "chatbatch: the key asked to wait \(d(seconds)) (Retry-After on a 429): sending resumes at \(resumesAt) UTC"
    }

    static func modelRefused(_ r: ModelRefusal, at: At, provider: String, everywhere: Bool) -> String {
        let what = "(HTTP \(r.status) \(r.code): \(r.message))"
        return everywhere
            ? "chatbatch: \(r.subject) refused\(at) \(what); its other lines are not sent and go to the errors file "
                + "(run again with --retry-failed once the key may use it)"
            : "chatbatch: \(r.subject) refused at \(provider) \(what); its lines go to the other providers"
    }

    static func providerStopped(_ name: String, reason: String) -> String {
        "chatbatch: provider \(name) stopped: \(reason); the other providers carry on"
    }

    static func stopping(_ reason: RunStop, inflight: Int, grace: Double) -> String {
        switch reason {
        case .interrupted:
            return "chatbatch: stopping: letting \(inflight) requests in flight finish (up to \(Int(grace)) s); "
                + "interrupt again to stop at once"
        case .checkpointFailed(let m):
            return "chatbatch: stopping: \(m)"
                + (inflight > 0
                    ? " (the \(inflight) requests in flight cannot be recorded: they are cancelled, and the next run "
                        + "sends them again and counts them as possibly billed twice)" : "")
        case .outputFailed(let m):
            return "chatbatch: stopping: \(m)"
                + (inflight > 0 ? " (the \(inflight) requests in flight finish into the checkpoint)" : "")
        default:
            return "chatbatch: stopping: \(reason.message)"
        }
    }

    private static func d(_ seconds: Double) -> String { RunMachine.duration(seconds) }
}
