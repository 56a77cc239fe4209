import ChatBatchCore
import Foundation

/// What to do with one HTTP attempt's outcome, following the seed's error table.
enum AttemptVerdict: Equatable {
    /// 2xx: keep the answer.
    case success
    /// Retryable (429, 500, 503, 502/504, nothing sent, sent but no answer). `pauseAll` is set for 429:
    /// the limit is per key, so the whole run holds off. `ambiguous`: the request may have been billed.
    case retry(after: Double, pauseAll: Bool, ambiguous: Bool)
    /// Never retried: the line goes to the errors file (400 and other 4xx).
    case fail
    /// 401, or a refused TLS certificate: every other request would fail the same way; stop the run, leave the rest pending.
    case stopRun
    /// 403/404: this model cannot be used with this key; send nothing more for it, keep its lines pending.
    case blockModel
}

/// The retry rules: which statuses are retried, and how long to wait (Retry-After, or backoff with full jitter).
struct RetryPolicy: Sendable {
    var baseDelay: Double
    var maxDelay: Double

    /// Decides for an attempt; `attempt` is 1 for the first send.
    func verdict(for response: HTTPResponse, attempt: Int, random: inout some RandomNumberGenerator) -> AttemptVerdict {
        if let failure = response.failure {
            if failure.kind == .tlsRefused { return .stopRun }  // every request would meet the same certificate
            return .retry(after: backoff(attempt, &random), pauseAll: false, ambiguous: failure.kind == .sentNoAnswer)
        }
        let retryAfter = Self.retryAfter(response.headers["retry-after"], now: Date())
        switch response.status {
        case 200..<300:
            return .success
        case 429:
            return .retry(after: retryAfter ?? backoff(attempt, &random), pauseAll: true, ambiguous: false)
        case 500, 502, 503, 504:
            return .retry(after: retryAfter ?? backoff(attempt, &random), pauseAll: false, ambiguous: false)
        case 401:
            return .stopRun
        case 403, 404:
            return .blockModel
        default:
            return .fail
        }
    }

    /// Exponential backoff with full jitter: a random wait in [0, min(max, base·2^(attempt-1))].
    func backoff(_ attempt: Int, _ random: inout some RandomNumberGenerator) -> Double {
        let cap = min(maxDelay, baseDelay * pow(2, Double(max(0, attempt - 1))))
        return Double.random(in: 0...cap, using: &random)
    }

    /// Parses `Retry-After`: delay seconds, or an HTTP date. Negative or unreadable values give nil.
    static func retryAfter(_ value: String?, now: Date) -> Double? {
        guard let value = value?.trimmingCharacters(in: .whitespaces), !value.isEmpty else { return nil }
        if let seconds = Double(value) { return seconds >= 0 ? seconds : nil }
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        for format in ["EEE, dd MMM yyyy HH:mm:ss zzz", "EEEE, dd-MMM-yy HH:mm:ss zzz", "EEE MMM d HH:mm:ss yyyy"] {
            formatter.dateFormat = format
            if let date = formatter.date(from: value) { return max(0, date.timeIntervalSince(now)) }
        }
        return nil
    }
}

/// The server's error, read from `{"error":{"message","type","code"}}`; `code` may be a string (OpenAI) or an integer (vLLM).
struct ServerError {
    var message: String
    var type: String?
    var code: String?

    init(status: Int, body: [UInt8]) {
        let json = try? JSON.parse(body)
        let error = json?["error"]
        message = error?["message"]?.stringValue ?? json?["message"]?.stringValue
            ?? (body.isEmpty ? "HTTP \(status) with an empty body" : "HTTP \(status): " + String(decoding: body.prefix(300), as: UTF8.self))
        type = error?["type"]?.stringValue
        code = error?["code"]?.stringValue ?? error?["code"]?.intValue.map(String.init)
    }
}
