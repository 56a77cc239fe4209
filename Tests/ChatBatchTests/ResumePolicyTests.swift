import Testing

@testable import ChatBatch

/// The resume rules as a pure function: what a run does with a line, given what the checkpoint holds of its id.
@Suite("The resume rules")
struct ResumePolicyTests {
    static func prior(_ state: RequestState, _ hash: String = "h", crash: Bool = false, endpoint: Int? = 1)
        -> PriorState
    {
        PriorState(state: state, bodyHash: hash, crashResend: crash, endpointID: endpoint)
    }

    @Test func everyCaseOfTheTable() {
        var claims = EndpointClaims(current: [1], fakes: [9], runIsFake: false, choice: .ask)
        let plain = ResumePolicy(force: false, retryFailed: false, endpoints: claims)
        let send = ResumePolicy.Verdict.send(resentAfterCrash: false, supersede: false, fakeAnswer: false)
        let replace = ResumePolicy.Verdict.send(resentAfterCrash: false, supersede: true, fakeAnswer: false)
        #expect(plain.verdict(bodyHash: "h", prior: nil) == send)
        #expect(plain.verdict(bodyHash: "h", prior: Self.prior(.pending)) == send)
        #expect(
            plain.verdict(bodyHash: "h", prior: Self.prior(.inflight, crash: true))
                == .send(resentAfterCrash: true, supersede: false, fakeAnswer: false))
        #expect(plain.verdict(bodyHash: "h", prior: Self.prior(.done)) == .alreadyDone)
        #expect(plain.verdict(bodyHash: "h", prior: Self.prior(.done, endpoint: nil)) == .alreadyDone)
        #expect(plain.verdict(bodyHash: "other", prior: Self.prior(.done)) == .changed)
        #expect(plain.verdict(bodyHash: "h", prior: Self.prior(.failed)) == .alreadyFailed)
        #expect(plain.verdict(bodyHash: "other", prior: Self.prior(.failed)) == replace)
        #expect(plain.verdict(bodyHash: "h", prior: Self.prior(.done, endpoint: 2)) == .otherEndpoint(2))
        #expect(
            plain.verdict(bodyHash: "h", prior: Self.prior(.done, endpoint: 9))
                == .send(resentAfterCrash: false, supersede: true, fakeAnswer: true))
        let forced = ResumePolicy(force: true, retryFailed: true, endpoints: claims)
        #expect(forced.verdict(bodyHash: "other", prior: Self.prior(.done)) == replace)
        #expect(forced.verdict(bodyHash: "h", prior: Self.prior(.failed)) == replace)
        claims.choice = .keep
        #expect(
            ResumePolicy(force: false, retryFailed: false, endpoints: claims)
                .verdict(bodyHash: "h", prior: Self.prior(.done, endpoint: 2)) == .alreadyDone)
        claims.choice = .resend
        #expect(
            ResumePolicy(force: false, retryFailed: false, endpoints: claims)
                .verdict(bodyHash: "h", prior: Self.prior(.done, endpoint: 2)) == replace)
        claims.runIsFake = true
        #expect(
            ResumePolicy(force: false, retryFailed: false, endpoints: claims)
                .verdict(bodyHash: "h", prior: Self.prior(.done, endpoint: 9)) == replace)
    }
}
