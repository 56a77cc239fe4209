/// What the checkpoint knows about a custom_id before a run sends it: the facts the resume rules read.
struct PriorState: Sendable, Equatable {
    var state: RequestState
    var bodyHash: String
    var crashResend: Bool
    /// The endpoint that answered it (nil: unknown, from a checkpoint older than schema 3, or not answered).
    var endpointID: Int?
}

/// Which endpoints' answers a run takes as its own.
struct EndpointClaims: Sendable {
    /// The run's endpoints (their checkpoint ids).
    var current: Set<Int> = []
    /// Endpoints that are the fake gateway.
    var fakes: Set<Int> = []
    /// The run itself goes to the fake gateway.
    var runIsFake = false
    var choice: OtherEndpointAnswers = .ask
    /// Names of the endpoints, for messages.
    var names: [Int: String] = [:]
}

/// The resume rules: what a run does with a line, given what the checkpoint knows of its custom_id. A pure
/// function of the facts (the input feed gathers them and carries the verdict out; it decides nothing itself):
/// new and pending lines go out; lines done before are skipped, or, when their body changed, reported and sent
/// again only with `--force`; failed lines are skipped unless `--retry-failed`; another endpoint's answers as
/// `--other-endpoint-answers` says, and a fake gateway's never stand for a real endpoint's.
struct ResumePolicy: Sendable {
    /// What to do with one line.
    enum Verdict: Sendable, Equatable {
        /// Send it. `resentAfterCrash`: a run died with it in flight (counted as possibly billed twice);
        /// `supersede`: it has an answer this send replaces (a forced resend, a retried failure, another endpoint's
        /// or the fake gateway's answer); `fakeAnswer`: that answer was the fake gateway's (counted and said).
        case send(resentAfterCrash: Bool, supersede: Bool, fakeAnswer: Bool)
        /// Answered before with the same body (by this run's endpoints, or another's with `keep`): not sent.
        case alreadyDone
        /// Failed before with the same body: not sent.
        case alreadyFailed
        /// Answered before with another body: not sent, and said.
        case changed
        /// Answered by another real endpoint (`ask`): not sent, and said naming it.
        case otherEndpoint(Int)
    }

    let force: Bool
    let retryFailed: Bool
    let endpoints: EndpointClaims

    /// The verdict for a line whose body hashes to `bodyHash`, with what the checkpoint holds of its id (nil: none).
    func verdict(bodyHash: String, prior: PriorState?) -> Verdict {
        guard let prior else { return .send(resentAfterCrash: false, supersede: false, fakeAnswer: false) }
        let sameBody = prior.bodyHash == bodyHash
        switch prior.state {
        case .pending, .inflight:
            return .send(resentAfterCrash: prior.crashResend, supersede: false, fakeAnswer: false)
        case .done:
            if sameBody {
                guard let endpoint = prior.endpointID, !endpoints.current.contains(endpoint) else {
                    return .alreadyDone
                }
                if endpoints.fakes.contains(endpoint) && !endpoints.runIsFake {
                    return .send(resentAfterCrash: false, supersede: true, fakeAnswer: true)
                }
                switch endpoints.choice {
                case .keep: return .alreadyDone
                case .resend: return .send(resentAfterCrash: false, supersede: true, fakeAnswer: false)
                case .ask: return .otherEndpoint(endpoint)
                }
            }
            return force ? .send(resentAfterCrash: false, supersede: true, fakeAnswer: false) : .changed
        case .failed:
            if sameBody && !retryFailed { return .alreadyFailed }
            return .send(resentAfterCrash: false, supersede: true, fakeAnswer: false)
        }
    }
}
