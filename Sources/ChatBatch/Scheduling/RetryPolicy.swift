import ChatBatchCore
import Foundation

/// What to do with one HTTP attempt's outcome, following the seed's error table.
enum AttemptVerdict: Equatable {
    /// 2xx: keep the answer.
    case success
    /// Retryable (408, 429, 5xx but 501/505, sent but no answer). `pauseAll` is set for 429: the limit is per
    /// key, so the whole run holds off. `ambiguous`: the request may have been billed.
    case retry(after: Double, pauseAll: Bool, ambiguous: Bool)
    /// Nothing reached the server (connection refused, name lookup, TLS handshake): the endpoint is down or
    /// wrong. Not an attempt of the line's: the run pauses and probes, or stops.
    case unreachable
    /// Never retried: the line goes to the errors file (400 and other 4xx).
    case fail
    /// 401 (or an authentication error by its body), or a refused TLS certificate: every other request would
    /// fail the same way; stop the run, leave the rest pending.
    case stopRun
    /// 403 `permission_error` or 404 `model_not_found`: this model cannot be used with this key. Also a 404, 405 or
    /// 501 at an endpoint besides chat: the provider does not serve it (its lines are refused after one request).
    case blockModel
    /// 404 or 405 that does not name the model: the URL is wrong.
    case wrongRoute
}

/// The retry rules: which statuses are retried, and how long to wait (`retry-after-ms`, `Retry-After`, or
/// backoff with full jitter). `x-should-retry: true|false` overrides the status table when a server sends it.
struct RetryPolicy: Sendable {
    var baseDelay: Double
    var maxDelay: Double

    /// The longest wait any header can ask for, in seconds (a day): a larger, infinite or unreadable value is
    /// taken as this, so no header value can overflow a clock.
    static let longestWait = 86_400.0

    /// Decides for an attempt; `attempt` is 1 for the first send, `now` the wall clock in seconds since 1970 (an
    /// HTTP-date Retry-After is counted from it).
    func verdict(
        for response: HTTPResponse, attempt: Int, now: Double, random: inout some RandomNumberGenerator
    ) -> AttemptVerdict {
        verdict(for: response, attempt: attempt, asked: Self.askedWait(response.headers, now: now), random: &random)
    }

    /// Decides for an attempt whose asked wait (`askedWait`) is read already, to `endpoint`.
    func verdict(
        for response: HTTPResponse, attempt: Int, asked: Double?, endpoint: APIEndpoint = .chat,
        random: inout some RandomNumberGenerator
    ) -> AttemptVerdict {
        if let failure = response.failure {
            switch failure.kind {
            case .tlsRefused, .proxyRefused: return .stopRun  // every request would meet the same certificate, or proxy
            case .notSent: return .unreachable
            case .tooLarge: return .fail
            default:
                return .retry(
                    after: backoff(attempt, &random), pauseAll: false, ambiguous: failure.kind == .sentNoAnswer)
            }
        }
        let status = response.status
        if (200..<300).contains(status) { return .success }
        if endpoint != .chat && [404, 405, 501].contains(status) { return .blockModel }
        let server = ServerError(status: status, body: response.body)
        let after = asked ?? backoff(attempt, &random)
        switch response.headers["x-should-retry"]?.lowercased() {
        case "true": return .retry(after: after, pauseAll: status == 429, ambiguous: false)
        case "false" where status != 401: return .fail
        default: break
        }
        if status == 401 || server.isAuthentication { return .stopRun }
        switch status {
        case 429: return .retry(after: after, pauseAll: true, ambiguous: false)
        case 408, 500, 502, 503, 504, 506..<600: return .retry(after: after, pauseAll: false, ambiguous: false)
        case 403 where server.isPermission, 404 where server.namesModel, 403 where server.namesModel,
            400 where server.namesModel:
            return .blockModel
        case 404, 405: return .wrongRoute
        default: return .fail
        }
    }

    /// Exponential backoff with full jitter: a random wait in [0, min(max, base·2^(attempt-1))].
    func backoff(_ attempt: Int, _ random: inout some RandomNumberGenerator) -> Double {
        let cap = min(maxDelay, baseDelay * pow(2, Double(min(60, max(0, attempt - 1)))))
        return Double.random(in: 0...max(0, cap), using: &random)
    }

    /// The wait a server asked for: `retry-after-ms` (the OpenAI SDKs' header) first, then `Retry-After`; `now` is
    /// the wall clock in seconds since 1970.
    static func askedWait(_ headers: [String: String], now: Double) -> Double? {
        if let ms = headers["retry-after-ms"].flatMap({ Double($0.trimmingCharacters(in: .whitespaces)) }),
            ms >= 0 || ms.isNaN
        {
            return clamp(ms / 1000)
        }
        return retryAfter(headers["retry-after"], now: now)
    }

    /// Parses `Retry-After`: delay seconds, or an HTTP date. Negative or unreadable values give nil; a huge or
    /// infinite one gives `longestWait`.
    static func retryAfter(_ value: String?, now: Double) -> Double? {
        guard let value = value?.trimmingCharacters(in: .whitespaces), !value.isEmpty else { return nil }
        if let seconds = Double(value) { return seconds >= 0 || seconds.isNaN ? clamp(seconds) : nil }
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        for format in ["EEE, dd MMM yyyy HH:mm:ss zzz", "EEEE, dd-MMM-yy HH:mm:ss zzz", "EEE MMM d HH:mm:ss yyyy"] {
            formatter.dateFormat = format
            if let date = formatter.date(from: value) { return clamp(max(0, date.timeIntervalSince1970 - now)) }
        }
        return nil
    }

    static func clamp(_ seconds: Double) -> Double {
        seconds.isFinite ? min(max(0, seconds), longestWait) : longestWait
    }
}
