import Dispatch
import Foundation
import Synchronization

/// What a store's worker writes for `report` and its page, beside its turns and never in their way: every request it
/// made, the details of each line the store kept from it, and its in-flight limit over time. The record queue hands
/// each recorded group of turns here; a queue of its own, on a connection of its own, writes what gathered about once
/// a second, in one statement. A store that cannot be reached keeps the rows for the next try; a worker killed loses
/// at most its last second of them (never a line's answer or cost: those are in the turns).
final class StoreHistory: @unchecked Sendable {
    private struct Gathered {
        var attempts: [AttemptHistory] = []
        var lines: [LineHistory] = []
        var samples: [SampleHistory] = []
        var scheduled = false
        /// Rows given up on (the store was away so long that they passed `limit`).
        var dropped = 0
    }

    /// Rows kept while the store cannot be reached; past that the oldest go (the report then misses them).
    static let limit = 200_000
    private let queue = DispatchQueue(label: "chatbatch.store.history")
    private let gathered = Mutex(Gathered())
    private let opening: () throws(ChatBatchError) -> PostgresWorkQueue
    /// The history queue's connection, opened at its first write.
    private var writer: PostgresWorkQueue? = nil
    /// Each route's provider name, as the report lists it.
    private let routeNames = Mutex<[String]>([])

    /// `opening` makes the connection this history writes on.
    init(opening: @escaping () throws(ChatBatchError) -> PostgresWorkQueue) {
        self.opening = opening
    }

    /// Names each route's provider (the run's order).
    func name(routes: [String]) { routeNames.withLock { $0 = routes } }

    /// Takes what one group of turns did (`kept`: the lines whose outcomes the store kept from this worker).
    func gather(_ ops: [CheckpointOp], kept: Set<Int>) {
        let names = routeNames.withLock { $0 }
        func label(_ route: Int?) -> String {
            guard let route, route >= 0, route < names.count else { return names.first ?? "" }
            return names[route]
        }
        var attempts: [AttemptHistory] = []
        var lines: [LineHistory] = []
        var samples: [SampleHistory] = []
        let now = Date().timeIntervalSince1970
        for op in ops {
            switch op {
            case .finish(let record, let attempt):
                if let attempt {
                    attempts.append(Self.attempt(attempt, line: record.line, endpoint: label(attempt.route)))
                }
                if kept.contains(record.line) {
                    lines.append(
                        LineHistory(
                            line: record.line, model: record.model, errorCode: record.errorCode,
                            errorMessage: record.errorMessage, latencyMs: record.latencyMs, ttftMs: record.ttftMs,
                            cached: record.cached, savedTokens: record.savedTokens, savedCost: record.savedCost,
                            endpoint: record.route.map { label($0) }))
                }
            case .requeue(_, let line, _, _, let attempt, _):
                if let attempt { attempts.append(Self.attempt(attempt, line: line, endpoint: label(attempt.route))) }
            case .sample(_, let window, _, let route):
                samples.append(SampleHistory(t: now, endpoint: label(route), window: window))
            default: continue
            }
        }
        if attempts.isEmpty && lines.isEmpty && samples.isEmpty { return }
        let schedule = gathered.withLock { g -> Bool in
            g.attempts += attempts
            g.lines += lines
            g.samples += samples
            let over = g.attempts.count + g.lines.count + g.samples.count - Self.limit
            if over > 0 {
                let cut = min(over, g.attempts.count)
                g.attempts.removeFirst(cut)
                g.samples.removeFirst(min(over - cut, g.samples.count))
                g.dropped += over
            }
            defer { g.scheduled = true }
            return !g.scheduled
        }
        if schedule { queue.asyncAfter(deadline: .now() + 1) { self.write() } }
    }

    private static func attempt(_ a: AttemptRecord, line: Int, endpoint: String) -> AttemptHistory {
        AttemptHistory(
            line: line, startedAt: a.startedAt, latencyMs: a.latencyMs, status: a.status, ambiguous: a.ambiguous,
            endpoint: endpoint)
    }

    /// Writes what gathered (on the history queue). Rows that could not be written wait for the next try.
    private func write() {
        let (attempts, lines, samples) = gathered.withLock { g in
            defer {
                g.attempts = []
                g.lines = []
                g.samples = []
                g.scheduled = false
            }
            return (g.attempts, g.lines, g.samples)
        }
        if attempts.isEmpty && lines.isEmpty && samples.isEmpty { return }
        do throws(ChatBatchError) {
            if writer == nil { writer = try opening() }
            try writer?.recordHistory(attempts: attempts, lines: lines, samples: samples)
        } catch {
            writer = nil
            let schedule = gathered.withLock { g -> Bool in
                g.attempts = attempts + g.attempts
                g.lines = lines + g.lines
                g.samples = samples + g.samples
                defer { g.scheduled = true }
                return !g.scheduled
            }
            if schedule { queue.asyncAfter(deadline: .now() + 1) { self.write() } }
        }
    }

    /// Writes what is left now (the worker stops), one try; returns how many rows were never written (given up on
    /// while the store was away, or left by this last try).
    func finish() -> Int {
        queue.sync { write() }
        return gathered.withLock { $0.dropped + $0.attempts.count + $0.lines.count + $0.samples.count }
    }
}
