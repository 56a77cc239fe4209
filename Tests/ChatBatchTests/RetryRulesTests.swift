import ChatBatchCore
import FakeGateway
import Foundation
import Testing

@testable import ChatBatch

@Suite("Retry rules: Retry-After, the error table, servers' error codes")
struct RetryRulesTests {
    @Test func retryAfterTakesSecondsOrAnHTTPDate() {
        let now = 1_800_000_000.0
        #expect(RetryPolicy.retryAfter("7", now: now) == 7)
        #expect(RetryPolicy.retryAfter(" 1.5 ", now: now) == 1.5)
        #expect(RetryPolicy.retryAfter("-3", now: now) == nil)
        #expect(RetryPolicy.retryAfter("soon", now: now) == nil)
        let date = "Fri, 15 Jan 2027 08:00:30 GMT"  // 1_800_000_030
        #expect(RetryPolicy.retryAfter(date, now: now) == 30)
        #expect(RetryPolicy.retryAfter("Fri, 15 Jan 2027 07:00:00 GMT", now: now) == 0)
    }

    @Test func verdictsFollowTheErrorTable() {
        let policy = RetryPolicy(baseDelay: 0.5, maxDelay: 8)
        var rng = SystemRandomNumberGenerator()
        func response(_ status: Int, _ headers: [String: String] = [:], body: String = "") -> HTTPResponse {
            HTTPResponse(
                status: status, headers: headers, body: Array(body.utf8), failure: nil, firstByteSeconds: 0,
                totalSeconds: 0)
        }
        #expect(policy.verdict(for: response(200), attempt: 1, now: 0, random: &rng) == .success)
        #expect(
            policy.verdict(for: response(429, ["retry-after": "4"]), attempt: 1, now: 0, random: &rng)
                == .retry(after: 4, pauseAll: true, ambiguous: false))
        #expect(
            policy.verdict(for: response(503, ["retry-after": "2"]), attempt: 1, now: 0, random: &rng)
                == .retry(after: 2, pauseAll: false, ambiguous: false))
        #expect(policy.verdict(for: response(400), attempt: 1, now: 0, random: &rng) == .fail)
        #expect(policy.verdict(for: response(401), attempt: 1, now: 0, random: &rng) == .stopRun)
        let scope = #"{"error":{"message":"not scoped","type":"permission_error","code":"model_not_permitted"}}"#
        #expect(policy.verdict(for: response(403, body: scope), attempt: 1, now: 0, random: &rng) == .blockModel)
        let missing =
            #"{"error":{"message":"The model 'x' does not exist","type":"invalid_request_error","code":"model_not_found"}}"#
        #expect(policy.verdict(for: response(404, body: missing), attempt: 1, now: 0, random: &rng) == .blockModel)
        let vllm =
            #"{"object":"error","message":"The model `x` does not exist.","type":"NotFoundError","param":null,"code":404}"#
        #expect(policy.verdict(for: response(404, body: vllm), attempt: 1, now: 0, random: &rng) == .blockModel)
        // A 404 that does not name the model is a wrong URL, not a refused model.
        #expect(
            policy.verdict(
                for: response(
                    404, body: #"{"error":{"message":"File Not Found","type":"not_found_error","code":404}}"#),
                attempt: 1, now: 0, random: &rng) == .wrongRoute)
        #expect(policy.verdict(for: response(404), attempt: 1, now: 0, random: &rng) == .wrongRoute)
        // An authentication error by its body, whatever the status.
        #expect(
            policy.verdict(
                for: response(
                    400,
                    body: #"{"error":{"message":"bad key","type":"invalid_request_error","code":"invalid_api_key"}}"#),
                attempt: 1, now: 0, random: &rng) == .stopRun)
        // 408 and 529 are transient; x-should-retry overrides the table both ways.
        #expect(
            policy.verdict(for: response(408, ["retry-after": "1"]), attempt: 1, now: 0, random: &rng)
                == .retry(after: 1, pauseAll: false, ambiguous: false))
        #expect(
            policy.verdict(for: response(529, ["retry-after": "1"]), attempt: 1, now: 0, random: &rng)
                == .retry(after: 1, pauseAll: false, ambiguous: false))
        #expect(
            policy.verdict(
                for: response(409, ["x-should-retry": "true", "retry-after": "1"]), attempt: 1, now: 0, random: &rng)
                == .retry(after: 1, pauseAll: false, ambiguous: false))
        #expect(
            policy.verdict(for: response(503, ["x-should-retry": "false"]), attempt: 1, now: 0, random: &rng) == .fail)
        // retry-after-ms is read before Retry-After; no header value can overflow a clock.
        #expect(
            policy.verdict(
                for: response(429, ["retry-after-ms": "1500", "retry-after": "9"]), attempt: 1, now: 0, random: &rng)
                == .retry(after: 1.5, pauseAll: true, ambiguous: false))
        for value in ["inf", "Infinity", "1e400", "nan", "99999999999999999999"] {
            #expect(
                policy.verdict(for: response(429, ["retry-after": value]), attempt: 1, now: 0, random: &rng)
                    == .retry(after: RetryPolicy.longestWait, pauseAll: true, ambiguous: false), "\(value)")
        }
        #expect(Clock.nanoseconds(.infinity) > 0 && Clock.nanoseconds(.nan) == 0 && Clock.nanoseconds(-1) == 0)
        let refused = HTTPResponse(
            status: 0, headers: [:], body: [],
            failure: TransportFailure(kind: .notSent, curlCode: 7, message: "Connection refused"),
            firstByteSeconds: 0, totalSeconds: 0)
        #expect(policy.verdict(for: refused, attempt: 1, now: 0, random: &rng) == .unreachable)
        let reset = HTTPResponse(
            status: 0, headers: [:], body: [],
            failure: TransportFailure(kind: .sentNoAnswer, curlCode: 52, message: "Empty reply"),
            firstByteSeconds: 0, totalSeconds: 0)
        guard case .retry(let after, false, true) = policy.verdict(for: reset, attempt: 3, now: 0, random: &rng) else {
            Issue.record("a reset is a retry counted as possibly billed twice")
            return
        }
        #expect(after >= 0 && after <= 2)  // full jitter: [0, 0.5·2²]
        for attempt in 1...20 { #expect(policy.backoff(attempt, &rng) <= 8) }
    }

    @Test func serverErrorsReadStringAndIntegerCodes() {
        let openAI = ServerError(
            status: 400,
            body: Array(#"{"error":{"message":"bad","type":"invalid_request_error","code":"invalid_value"}}"#.utf8))
        #expect(openAI.message == "bad" && openAI.code == "invalid_value" && openAI.type == "invalid_request_error")
        let vllm = ServerError(
            status: 400, body: Array(#"{"error":{"message":"too long","type":"BadRequestError","code":400}}"#.utf8))
        #expect(vllm.code == "400" && vllm.message == "too long")
        let plain = ServerError(status: 502, body: Array("<html>bad gateway</html>".utf8))
        #expect(plain.message.contains("HTTP 502") && plain.message.contains("bad gateway"))
    }
}
