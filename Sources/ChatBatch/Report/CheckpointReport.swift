import ChatBatchCore
import Foundation

/// What a checkpoint says about its job: `chatbatch status` and `chatbatch report`. Reads only; takes no lock.
public enum CheckpointReport {
    /// Counts by state, spend so far, the last run, and whether a run holds the checkpoint now.
    public static func status(checkpoint: String) throws -> JSON {
        let store = try CheckpointStore(path: checkpoint, create: false, lock: false)
        let counts = try store.stateCounts()
        let totals = try store.totals()
        let runs = try store.runs()
        var byState = JSONObject()
        for state in [RequestState.pending, .inflight, .done, .failed] {
            byState[state.rawValue] = .int(counts[state] ?? 0)
        }
        var lastRun = JSON.null
        if let last = runs.last {
            lastRun = [
                "id": .int(last.id), "started_at": isoDate(last.startedAt), "ended_at": isoDate(last.endedAt),
                "exit_code": last.exitCode.map(JSON.int) ?? .null
            ]
        }
        let inputLines = try store.inputLines()
        return [
            "checkpoint": .string(checkpoint), "held_by_a_run": .bool(CheckpointStore.isHeld(path: checkpoint)),
            "input": .string(try store.meta("input.path") ?? ""), "input_lines": inputLines.map(JSON.int) ?? .null,
            "not_read": .int(max(0, (inputLines ?? 0) - counts.values.reduce(0, +))),
            "prompts": .object(byState), "prompt_tokens": .int(totals.prompt),
            "completion_tokens": .int(totals.completion),
            "cost_usd": try store.pricesKnown() ? .double(totals.cost) : .null, "runs": .int(runs.count),
            "last_run": lastRun,
            "cache": try cacheSavings(store),
            "providers": .array(try providerRows(store)),
            "controls": .array(try store.controls())
        ]
    }

    /// The controls given to the job (`chatbatch control`), newest last, and whether the run holding it is paused.
    static func controlLines(_ s: JSON, held: Bool, lastRun: Int?) -> [String] {
        let controls = s["controls"]?.arrayValue ?? []
        var lines: [String] = []
        let runWide = controls.filter {
            $0["provider"]?.isNull != false && $0["applied_at"]?.doubleValue != nil
                && ["pause", "resume"].contains($0["action"]?.stringValue ?? "")
                && $0["outcome"]?.stringValue?.hasPrefix("applied") == true
        }
        if held, let last = runWide.last, last["action"]?.stringValue == "pause", last["run_id"]?.intValue == lastRun {
            lines.append(
                "  paused     since \(isoDate(last["applied_at"]?.doubleValue).stringValue ?? "?") (from "
                    + "\(last["host"]?.stringValue ?? "?")): nothing new is sent; chatbatch control … resume carries on"
            )
        }
        for c in controls.suffix(5) {
            let given = isoDate(c["given_at"]?.doubleValue).stringValue ?? "?"
            let provider = c["provider"]?.stringValue.map { " for \($0)" } ?? ""
            let state: String
            if let outcome = c["outcome"]?.stringValue {
                // Its first clause: the log and `status --json` have the whole of it.
                let clause = outcome.components(separatedBy: "; ").first ?? outcome
                state = (c["run_id"]?.intValue.map { "run #\($0): " } ?? "") + clause
            } else {
                state = c["next_run"]?.boolValue == true ? "kept for the next run" : "not taken yet"
            }
            lines.append(
                "  control    #\(c["id"]?.intValue ?? 0) \(c["action"]?.stringValue ?? "")\(provider) at \(given) from "
                    + "\(c["host"]?.stringValue ?? "?"): \(state)")
        }
        return lines
    }

    /// A row per endpoint that answered (with several): requests, 429s, answers, failures, tokens, cost, latency.
    static func providerRows(_ history: any JobHistory) throws -> [JSON] {
        let endpoints = try history.endpointLabels()
        guard endpoints.count > 1 else { return [] }
        var rows: [JSON] = []
        for e in endpoints {
            let (requests, rateLimited, lines) = try history.endpointTotals(e.id)
            let latencies = try history.answerLatencies(endpointID: e.id)
            func at(_ p: Double) -> JSON { latencies.nearestRank(p).map { .double(($0 * 10).rounded() / 10) } ?? .null }
            rows.append([
                "name": .string(e.label), "requests": .int(requests), "rate_limited": .int(rateLimited),
                "done": .int(lines.done), "failed": .int(lines.failed), "tokens": .int(lines.tokens),
                "cost_usd": .double(lines.cost), "latency_ms_p50": at(0.5),
                "latency_ms_p99": at(0.99)
            ])
        }
        return rows
    }

    static func providerLines(_ rows: JSON?) -> [String] {
        (rows?.arrayValue ?? []).map { p in
            func ms(_ v: JSON?) -> String { v?.doubleValue.map { String(format: "%.0f", $0) } ?? "-" }
            return String(
                format:
                    "  provider   %@: %d requests, %d done, %d failed, %d 429s, %d tokens, $%.6f, p50 %@ ms, p99 %@ ms",
                p["name"]?.stringValue ?? "?", p["requests"]?.intValue ?? 0, p["done"]?.intValue ?? 0,
                p["failed"]?.intValue ?? 0,
                p["rate_limited"]?.intValue ?? 0, p["tokens"]?.intValue ?? 0, p["cost_usd"]?.doubleValue ?? 0,
                ms(p["latency_ms_p50"]),
                ms(p["latency_ms_p99"]))
        }
    }

    public static func statusText(_ s: JSON) -> String {
        let p = s["prompts"] ?? .null
        let held = s["held_by_a_run"]?.boolValue == true
        var lines = ["\(s["checkpoint"]?.stringValue ?? ""): " + (held ? "a run holds it now" : "no run holds it")]
        let total =
            s["input_lines"]?.intValue.map { " (the input has \($0) lines: \(s["input"]?.stringValue ?? ""))" } ?? ""
        let done = p["done"]?.intValue ?? 0, failed = p["failed"]?.intValue ?? 0, pending = p["pending"]?.intValue ?? 0,
            inflight = p["inflight"]?.intValue ?? 0
        // Lines never read yet (a stopped run, or one still going) are pending too: the same count a run's summary
        // gives.
        let unread = max(0, (s["input_lines"]?.intValue ?? 0) - done - failed - pending - inflight)
        let pendingText = unread > 0 ? "\(pending + unread) pending (\(unread) not yet read)" : "\(pending) pending"
        lines.append("  prompts    \(done) done, \(failed) failed, \(pendingText), \(inflight) in flight\(total)")
        lines.append(
            "  tokens     \(s["prompt_tokens"]?.intValue ?? 0) prompt + \(s["completion_tokens"]?.intValue ?? 0) completion"
        )
        lines.append(
            s["cost_usd"]?.doubleValue.map { String(format: "  spent      $%.6f", $0) }
                ?? "  spent      price unknown (the provider publishes no prices; give prices: in the job to count the cost)"
        )
        if let cache = cacheLine(s["cache"]) { lines.append(cache) }
        lines += providerLines(s["providers"])
        lines += controlLines(s, held: held, lastRun: s["last_run"]?["id"]?.intValue)
        if let last = s["last_run"], !last.isNull {
            let started = "#\(last["id"]?.intValue ?? 0) started \(last["started_at"]?.stringValue ?? "?")"
            let end: String
            if let ended = last["ended_at"]?.stringValue {
                end = "ended \(ended)" + (last["exit_code"]?.intValue.map { " with exit code \($0)" } ?? "")
            } else {
                end = held ? "still running" : "did not end (it was killed; run the same command again to resume)"
            }
            lines.append("  last run   \(started), \(end); \(s["runs"]?.intValue ?? 0) runs in all")
        }
        return lines.joined(separator: "\n")
    }

    /// Latency percentiles, answers by status, retries, ambiguous sends, tokens, cost, throughput over time.
    public static func report(checkpoint: String, buckets: Int = 40) throws -> JSON {
        let store = try CheckpointStore(path: checkpoint, create: false, lock: false)
        defer { store.release() }
        return try report(store, source: ("checkpoint", checkpoint), buckets: buckets)
    }

    /// The report of job `name` (nil: the store's only job) in the PostgreSQL store at `address`: every worker's
    /// requests and lines together.
    public static func report(store address: String, job name: String?, buckets: Int = 40) throws -> JSON {
        let history = try PostgresJobHistory(store: address, job: name)
        return try report(history, source: ("store", history.title), buckets: buckets)
    }

    /// The report of `store`, headed by `source` (what it is: `checkpoint` or `store`, and its name).
    static func report(_ store: any JobHistory, source: (key: String, name: String), buckets: Int) throws -> JSON {
        let latencies = try store.answerLatencies(endpointID: nil)
        func percentile(_ p: Double) -> JSON {
            latencies.nearestRank(p / 100).map { .double(($0 * 10).rounded() / 10) } ?? .null
        }
        var statuses = JSONObject()
        for (code, count) in try store.attemptsByStatus() {
            statuses[code == 0 ? "no_answer" : code < 0 ? "no_answer_recorded" : String(code)] = .int(count)
        }
        // Retries as each run counted them: a line's attempts in one run after its first (a later run sending it
        // again after a stop is not a retry).
        let attempts = try store.attemptCounts()
        let ambiguous = try store.possiblyBilledTwice()
        let totals = try store.totals()
        var failures = JSONObject()
        for (code, lines) in try store.failuresByCode() { failures[code] = .int(lines) }
        // Throughput: answers finished per time slice.
        let ends = try store.successTimes()
        var series: [Int] = []
        var sliceSeconds = 0.0
        if let first = ends.first, let last = ends.last {
            sliceSeconds = max(0.001, (last - first) / Double(buckets))
            series = [Int](repeating: 0, count: buckets)
            for t in ends { series[min(buckets - 1, Int((t - first) / sliceSeconds))] += 1 }
        }
        return [
            source.key: .string(source.name),
            "latency_ms": [
                "p50": percentile(50), "p90": percentile(90), "p99": percentile(99),
                "max": latencies.last.map(JSON.double) ?? .null
            ],
            "answers_by_status": .object(statuses), "attempts": .int(attempts.attempts),
            "retries": .int(attempts.attempts - attempts.sends),
            "possibly_billed_twice": .int(ambiguous), "failures_by_code": .object(failures),
            "prompt_tokens": .int(totals.prompt), "completion_tokens": .int(totals.completion),
            "cost_usd": try store.pricesKnown() ? .double(totals.cost) : .null,
            "cache": try cacheSavings(store), "providers": .array(try providerRows(store)),
            "throughput": [
                "slice_seconds": .double((sliceSeconds * 1000).rounded() / 1000),
                "answers_per_slice": .array(series.map(JSON.int))
            ]
        ]
    }

    public static func reportText(_ r: JSON) -> String {
        let l = r["latency_ms"] ?? .null
        func ms(_ v: JSON?) -> String { v?.doubleValue.map { String(format: "%.1f", $0) } ?? "-" }
        var lines = ["\(r["checkpoint"]?.stringValue ?? r["store"]?.stringValue ?? "")"]
        lines.append(
            "  latency ms   p50 \(ms(l["p50"]))  p90 \(ms(l["p90"]))  p99 \(ms(l["p99"]))  max \(ms(l["max"]))")
        let statuses = (r["answers_by_status"]?.objectValue ?? JSONObject()).map {
            "\($0.key): \($0.value.intValue ?? 0)"
        }
        lines.append("  answers      " + statuses.joined(separator: ", "))
        lines.append(
            "  attempts     \(r["attempts"]?.intValue ?? 0), \(r["retries"]?.intValue ?? 0) retries, \(r["possibly_billed_twice"]?.intValue ?? 0) possibly billed twice"
        )
        let failures = (r["failures_by_code"]?.objectValue ?? JSONObject()).map {
            "\($0.key) \($0.value.intValue ?? 0)"
        }
        if !failures.isEmpty { lines.append("  failures     " + failures.joined(separator: ", ")) }
        lines.append(
            "  tokens       \(r["prompt_tokens"]?.intValue ?? 0) prompt + \(r["completion_tokens"]?.intValue ?? 0) completion"
        )
        lines.append(
            r["cost_usd"]?.doubleValue.map { String(format: "  cost         $%.6f", $0) }
                ?? "  cost         price unknown (the provider publishes no prices)")
        if let cache = cacheLine(r["cache"]) {
            lines.append("  " + cache.dropFirst(2).replacingOccurrences(of: "cache      ", with: "cache        "))
        }
        lines += providerLines(r["providers"])
        let series = r["throughput"]?["answers_per_slice"]?.arrayValue?.compactMap(\.intValue) ?? []
        if let peak = series.max(), peak > 0 {
            let blocks = Array("▁▂▃▄▅▆▇█")
            let chart = String(series.map { $0 == 0 ? " " : blocks[min(7, $0 * 8 / (peak + 1))] })
            let slice = r["throughput"]?["slice_seconds"]?.doubleValue ?? 0
            lines.append(
                String(
                    format: "  throughput   |%@| peak %.0f answers/s (%.2f s a column)", chart,
                    Double(peak) / max(slice, 0.001), slice))
        }
        return lines.joined(separator: "\n")
    }

    /// Lines answered from the response cache, and the tokens and dollars they would have cost.
    static func cacheSavings(_ store: any JobHistory) throws -> JSON {
        let saved = try store.cacheSavings()
        return ["hits": .int(saved.hits), "tokens_saved": .int(saved.tokens), "cost_saved_usd": .double(saved.cost)]
    }

    static func cacheLine(_ c: JSON?) -> String? {
        guard let hits = c?["hits"]?.intValue, hits > 0 else { return nil }
        return String(
            format: "  cache      %d answered from the cache; saved %d tokens, $%.6f", hits,
            c?["tokens_saved"]?.intValue ?? 0, c?["cost_saved_usd"]?.doubleValue ?? 0)
    }

    static func isoDate(_ t: Double?) -> JSON {
        guard let t else { return .null }
        let f = ISO8601DateFormatter()
        return .string(f.string(from: Date(timeIntervalSince1970: t)))
    }
}
