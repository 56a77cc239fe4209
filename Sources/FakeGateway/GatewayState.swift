import ChatBatchCore
import Foundation
import Synchronization

/// How the gateway will treat one admitted request.
enum Admission: Sendable, Equatable {
    /// Answer; `corrupt` is badjson or mismatch when a script asks for a bad structured answer.
    case answer(corrupt: ScriptedAction?)
    case fail(status: Int, retryAfter: String?)
    case reset
    case stall
}

/// The gateway's shared, lock-protected state: failure dice, scripts, cold start, per-key limits.
final class GatewayState: Sendable {
    struct KeyState {
        var inflight = 0
        var tokens: Double = 0
        var lastRefill: Double = 0
        /// The request bucket (requests per minute): its level and when it was last refilled.
        var requests: Double = 0
        var requestsRefill: Double = 0

        /// Brings the request bucket (`rate` a second, holding `capacity`) up to `now`.
        mutating func refillRequests(rate: Double, capacity: Double, now: Double) {
            requests = min(capacity, requests + (now - requestsRefill) * rate)
            requestsRefill = now
        }

        /// Brings the token bucket (`rate` a second, holding one second of it) up to `now`.
        mutating func refillTokens(rate: Double, now: Double) {
            tokens = min(rate, tokens + (now - lastRefill) * rate)
            lastRefill = now
        }
    }

    struct State {
        var rng: SplitMix64
        var attempts: [String: Int] = [:]
        var keys: [String: KeyState] = [:]
        var lastActivity: Double? = nil
        var coldUntil: Double = 0
        var requestCounter: UInt64 = 0
    }

    let config: FakeGatewayConfiguration
    let prefix: String
    private let state: Mutex<State>

    init(config: FakeGatewayConfiguration) {
        self.config = config
        self.state = Mutex(State(rng: SplitMix64(seed: config.randomSeed)))
        self.prefix = String(StableHash.hex(UInt64(Date().timeIntervalSince1970 * 1e6)).suffix(8))
    }

    static func now() -> Double { Date().timeIntervalSince1970 }

    /// A unique `X-Tera-Request-ID`.
    func nextRequestID() -> String {
        let n = state.withLock { s -> UInt64 in
            s.requestCounter += 1
            return s.requestCounter
        }
        return "tera-\(prefix)-\(n)"
    }

    /// Decides what happens to a valid request; an admitted one (answer, reset, stall) holds an in-flight slot
    /// for its key until `release` is called.
    func admit(key: String, clientID: String?, estimatedTokens: Int, at now: Double) -> Admission {
        state.withLock { s in
            // Cold start: the first request after an idle spell starts a window of 503s.
            if config.coldStartSeconds > 0 {
                if s.lastActivity == nil || now - s.lastActivity! >= config.idleSeconds {
                    s.coldUntil = now + config.coldStartSeconds
                }
                s.lastActivity = now
            }
            var attemptAction: ScriptedAction? = nil
            if let id = clientID, let script = config.script[id] {
                let n = s.attempts[id, default: 0]
                s.attempts[id] = n + 1
                attemptAction = n < script.count ? script[n] : .ok
            }
            if let action = attemptAction {
                switch action {
                case .ok: break
                case .rateLimited: return .fail(status: 429, retryAfter: retryAfter(config.retryAfterSeconds))
                case .serverError: return .fail(status: 500, retryAfter: nil)
                case .unavailable: return .fail(status: 503, retryAfter: nil)
                case .badRequest: return .fail(status: 400, retryAfter: nil)
                case .requestTimeout: return .fail(status: 408, retryAfter: nil)
                case .overloaded: return .fail(status: 529, retryAfter: nil)
                case .reset:
                    s.keys[key, default: KeyState()].inflight += 1
                    return .reset
                case .stall:
                    s.keys[key, default: KeyState()].inflight += 1
                    return .stall
                default:
                    s.keys[key, default: KeyState()].inflight += 1
                    return .answer(corrupt: action)
                }
            } else {
                if now < s.coldUntil { return .fail(status: 503, retryAfter: nil) }
            }
            var k = s.keys[key, default: newKey(at: now)]
            defer { s.keys[key] = k }
            if let limit = config.maxInflightPerKey, k.inflight >= limit {
                return .fail(status: 429, retryAfter: retryAfter(config.retryAfterSeconds ?? 1))
            }
            if let perMinute = config.requestsPerMinutePerKey {
                let rate = perMinute / 60
                k.refillRequests(rate: rate, capacity: requestCapacity, now: now)
                if k.requests < 1 {
                    return .fail(
                        status: 429, retryAfter: retryAfter(max(1, Int(((1 - k.requests) / rate).rounded(.up)))))
                }
                k.requests -= 1
            }
            if let rate = config.tokensPerSecondPerKey {
                k.refillTokens(rate: rate, now: now)
                if k.tokens < Double(estimatedTokens) && k.tokens < rate {
                    let wait = Int(((Double(estimatedTokens) - k.tokens) / rate).rounded(.up))
                    return .fail(status: 429, retryAfter: retryAfter(max(1, wait)))
                }
                k.tokens -= Double(estimatedTokens)
            }
            if attemptAction == nil {
                let roll = Double(s.rng.next() % 1_000_000) / 1_000_000
                var edge = config.fail429Rate
                if roll < edge { return .fail(status: 429, retryAfter: retryAfter(config.retryAfterSeconds)) }
                edge += config.fail500Rate
                if roll < edge { return .fail(status: 500, retryAfter: nil) }
                edge += config.fail503Rate
                if roll < edge { return .fail(status: 503, retryAfter: nil) }
                edge += config.resetRate
                if roll < edge {
                    k.inflight += 1
                    return .reset
                }
                edge += config.stallRate
                if roll < edge {
                    k.inflight += 1
                    return .stall
                }
            }
            k.inflight += 1
            return .answer(corrupt: nil)
        }
    }

    /// A key the first time it is seen: its buckets full.
    private func newKey(at now: Double) -> KeyState {
        KeyState(
            tokens: config.tokensPerSecondPerKey ?? 0, lastRefill: now, requests: requestCapacity, requestsRefill: now)
    }

    /// The request bucket's size: `rateBucketSeconds` of the per-minute rate, at least one request.
    var requestCapacity: Double { max(1, (config.requestsPerMinutePerKey ?? 0) / 60 * config.rateBucketSeconds) }

    /// The `x-ratelimit-*` headers for `key` as its buckets stand now (none unless `rateLimitHeaders` is set).
    func rateLimitHeaders(key: String, at now: Double) -> [(String, String)] {
        guard config.rateLimitHeaders else { return [] }
        return state.withLock { s in
            // a copy: the headers say how the buckets stand, they change nothing
            var k = s.keys[key] ?? newKey(at: now)
            var out: [(String, String)] = []
            func seconds(_ v: Double) -> String { String(format: "%.3gs", max(0, v)) }
            if let perMinute = config.requestsPerMinutePerKey {
                let rate = perMinute / 60
                k.refillRequests(rate: rate, capacity: requestCapacity, now: now)
                let level = k.requests
                out += [
                    ("x-ratelimit-limit-requests", String(Int(requestCapacity))),
                    ("x-ratelimit-remaining-requests", String(Int(level))),
                    ("x-ratelimit-reset-requests", seconds((requestCapacity - level) / rate))
                ]
            }
            if let rate = config.tokensPerSecondPerKey {
                k.refillTokens(rate: rate, now: now)
                let level = k.tokens
                out += [
                    ("x-ratelimit-limit-tokens", String(Int(rate))),
                    ("x-ratelimit-remaining-tokens", String(Int(max(0, level)))),
                    ("x-ratelimit-reset-tokens", seconds((rate - level) / rate))
                ]
            }
            return out
        }
    }

    /// The Retry-After header of a 429: the configured text when set, else the seconds.
    func retryAfter(_ seconds: Int?) -> String? { config.retryAfterText ?? seconds.map(String.init) }

    /// Frees the in-flight slot an admitted request held.
    func release(key: String) {
        state.withLock { s in s.keys[key]?.inflight -= 1 }
    }

    /// Admitted requests not yet answered, over every key.
    var inflight: Int { state.withLock { s in s.keys.values.reduce(0) { $0 + $1.inflight } } }

    /// Latency for an answer of `completionTokens` tokens: fixed, plus jitter, plus per token.
    func latencyNanoseconds(completionTokens: Int) -> Int64 {
        var ms = config.latencyMilliseconds + config.perTokenMicroseconds * Double(completionTokens) / 1000
        if config.jitterMilliseconds > 0 {
            let r = state.withLock { s in Double(s.rng.next() % 1_000_000) / 1_000_000 }
            ms += r * config.jitterMilliseconds
        }
        return Int64(ms * 1_000_000)
    }
}
