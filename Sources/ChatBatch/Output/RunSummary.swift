import ChatBatchCore
import Foundation

/// One provider's part of a run with several.
public struct ProviderSummary: Sendable, Equatable {
    public var name: String
    /// Requests sent to it (retries included), answered, failed there, answered 429.
    public var sent = 0
    public var done = 0
    public var failed = 0
    public var rateLimited = 0
    public var tokens = 0
    public var cost = 0.0
    public var latencyP50: Double? = nil
    public var latencyP99: Double? = nil
    /// Its in-flight limit at the end.
    public var window = 0
    /// Why it took no more lines, if it stopped.
    public var stopped: String? = nil
    /// Its prices are known; otherwise its cost is shown as unknown, never as $0.
    public var priceKnown = true

    public var json: JSON {
        [
            "name": .string(name), "sent": .int(sent), "done": .int(done), "failed": .int(failed),
            "rate_limited": .int(rateLimited),
            "tokens": .int(tokens), "cost_usd": priceKnown ? .double(cost) : .null,
            "latency_ms_p50": latencyP50.map(JSON.double) ?? .null,
            "latency_ms_p99": latencyP99.map(JSON.double) ?? .null, "window": .int(window),
            "stopped": stopped.map(JSON.string) ?? .null
        ]
    }

    var line: String {
        func ms(_ v: Double?) -> String { v.map { String(format: "%.0f", $0) } ?? "-" }
        return String(
            format: "  %-10@ %d sent, %d done, %d failed, %d 429s, %d tokens, %@, p50 %@ ms, p99 %@ ms, window %d",
            name, sent, done, failed, rateLimited, tokens, priceKnown ? String(format: "$%.6f", cost) : "price unknown",
            ms(latencyP50), ms(latencyP99), window)
            + (stopped.map { "; stopped: \($0)" } ?? "")
    }
}

/// What a run did: outcomes, tokens, money, retries, time.
public struct RunSummary: Sendable {
    public var inputLines = 0
    public var sent = 0
    public var done = 0
    public var failed = 0
    public var invalid = 0
    public var alreadyDone = 0
    public var alreadyFailed = 0
    public var changed = 0
    public var leftPending = 0
    /// The run stopped before reading all its input and could not count the rest: `leftPending` is a lower bound.
    public var leftPendingIsAtLeast = false
    /// Lines answered by another endpoint, not sent again (`--other-endpoint-answers`).
    public var otherEndpoint = 0
    /// What happened to the prompts, in one line.
    public var headline = ""
    /// A row per provider (runs with several).
    public var providers: [ProviderSummary] = []
    /// Lines not sent because the provider refused their model (403/404); they are in the errors file.
    public var blocked = 0
    public var promptTokens = 0
    public var completionTokens = 0
    public var cost = 0.0
    public var attempts = 0
    public var retries = 0
    /// Requests retried after being sent without an answer (timeout, reset, cut stream): possibly billed twice.
    public var possiblyBilledTwice = 0
    /// Prompts a previous run left in flight when it died, and this run sent again.
    public var resentAfterCrash = 0
    /// With a store: lines whose lease this worker lost before sending them (another worker has them).
    public var takenOver = 0
    public var failuresByCode: [String: Int] = [:]
    public var statusCounts: [Int: Int] = [:]
    /// Models the provider refused for this key, with the refusal.
    public var blockedModels: [String: String] = [:]
    /// The adaptive in-flight limit at the end, and its lowest value.
    public var concurrencyLimit = 0
    public var lowestConcurrency = 0
    /// Retries of the warm-up probe while the backend was cold.
    public var warmupRetries = 0
    /// Structured answers asked again because they did not parse or fit their schema (`--retry-invalid`).
    public var invalidRetries = 0
    public var wallSeconds = 0.0
    public var exit: RunExit = .allDone
    public var stopReason: String? = nil
    /// Spend over every run on this checkpoint.
    public var checkpointCost = 0.0
    /// Lines answered from the response cache (nothing sent), lines sent while the cache was consulted, and
    /// what the hits would have cost.
    public var cacheHits = 0
    public var cacheMisses = 0
    public var tokensSaved = 0
    public var costSaved = 0.0
    /// Answers whose server sent no usage: their tokens and cost are estimated.
    public var usageEstimated = 0
    /// Answers holding text that could not be decoded (invalid UTF-8, unpaired surrogates), kept with U+FFFD.
    public var repaired = 0
    /// The input was not read: it is unchanged (size, time, hash, settings) since a run that finished every line.
    public var inputUnchanged = false
    /// The run was refused before it started (no key, a busy or foreign checkpoint, `--strict`): nothing was sent.
    public var refused = false
    /// The run's shard (`i/n`), so that `merge` can tell a missing shard.
    public var shard: String?
    /// Every provider's prices are known; otherwise the cost is "price unknown", never $0.
    public var priceKnown = true

    public var totalTokens: Int { promptTokens + completionTokens }
    /// The run finished without sending or writing anything new (everything was done before).
    public var sentNothingNew: Bool {
        sent == 0 && done == 0 && failed == 0 && invalid == 0 && blocked == 0 && cacheHits == 0 && changed == 0
            && otherEndpoint == 0
            && stopReason == nil
    }
    /// A summary or metrics file that `existed` before this run is kept as the last run that did some work wrote it
    /// when this run had nothing to do (a rerun on the same night keeps the night's figures).
    public func keeps(fileThatExisted existed: Bool) -> Bool { existed && sentNothingNew }
    public var requestsPerSecond: Double { wallSeconds > 0 ? Double(attempts) / wallSeconds : 0 }

    public var json: JSON {
        var failures = JSONObject()
        for k in failuresByCode.keys.sorted() { failures[k] = .int(failuresByCode[k]!) }
        var statuses = JSONObject()
        for k in statusCounts.keys.sorted() { statuses[String(k)] = .int(statusCounts[k]!) }
        var blockedJSON = JSONObject()
        for k in blockedModels.keys.sorted() { blockedJSON[k] = .string(blockedModels[k]!) }
        return [
            "exit_code": .int(Int(exit.rawValue)), "exit": .string(exit.meaning),
            "stop_reason": stopReason.map(JSON.string) ?? .null,
            "input_lines": .int(inputLines), "sent": .int(sent), "done": .int(done), "failed": .int(failed),
            "invalid": .int(invalid), "already_done": .int(alreadyDone), "already_failed": .int(alreadyFailed),
            "changed": .int(changed), "other_endpoint": .int(otherEndpoint), "left_pending": .int(leftPending),
            "blocked": .int(blocked),
            "headline": .string(headline), "providers": .array(providers.map(\.json)),
            "prompt_tokens": .int(promptTokens), "completion_tokens": .int(completionTokens),
            "total_tokens": .int(totalTokens),
            "cost_usd": priceKnown ? .double(cost) : .null,
            "checkpoint_cost_usd": priceKnown ? .double(checkpointCost) : .null,
            "price_known": .bool(priceKnown),
            "attempts": .int(attempts), "retries": .int(retries),
            "possibly_billed_twice": .int(possiblyBilledTwice), "resent_after_crash": .int(resentAfterCrash),
            "taken_over": .int(takenOver),
            "failures_by_code": .object(failures), "status_counts": .object(statuses),
            "blocked_models": .object(blockedJSON),
            "concurrency_limit": .int(concurrencyLimit), "lowest_concurrency": .int(lowestConcurrency),
            "warmup_retries": .int(warmupRetries), "invalid_retries": .int(invalidRetries),
            "cache_hits": .int(cacheHits), "cache_misses": .int(cacheMisses), "tokens_saved": .int(tokensSaved),
            "cost_saved_usd": .double(costSaved), "usage_estimated": .int(usageEstimated),
            "text_repaired": .int(repaired), "input_unchanged": .bool(inputUnchanged),
            "wall_seconds": .double((wallSeconds * 1000).rounded() / 1000),
            "requests_per_second": .double((requestsPerSecond * 10).rounded() / 10),
            "shard": shard.map(JSON.string) ?? .null
        ]
    }

    /// The summary printed at the end of a run.
    public var text: String {
        if refused {
            let reason = stopReason ?? exit.meaning
            return "chatbatch: \(reason)" + (reason.contains("nothing was sent") ? "" : " (nothing was sent)")
        }
        var lines: [String] = []
        lines.append("chatbatch: " + (headline.isEmpty ? exit.meaning : headline))
        if let stopReason { lines.append("  why        \(stopReason)") }
        lines.append(
            "  lines      \(inputLines) \(inputUnchanged ? "in the input" : "read"): \(done) done, \(failed) failed, \(invalid) invalid, \(alreadyDone) already done"
                + (alreadyFailed > 0 ? ", \(alreadyFailed) already failed" : "")
                + (leftPending > 0 ? ", \(leftPendingIsAtLeast ? "at least " : "")\(leftPending) left pending" : "")
                + (changed > 0 ? ", \(changed) changed (not resent)" : "")
                + (otherEndpoint > 0 ? ", \(otherEndpoint) answered by another endpoint (not resent)" : ""))
        if inputUnchanged {
            lines.append(
                "  input      unchanged since the last run that finished every line (size, time, hash and settings match): not read again"
            )
        }
        if !failuresByCode.isEmpty {
            lines.append(
                "  failures   "
                    + failuresByCode.keys.sorted().map { "\($0) \(failuresByCode[$0]!)" }.joined(separator: ", "))
        }
        for (model, reason) in blockedModels.sorted(by: { $0.key < $1.key }) {
            lines.append("  refused    \(model): \(reason)")
        }
        if blocked > 0 {
            lines.append(
                "  not sent   \(blocked) lines for a refused model (in the errors file; --retry-failed sends them again)"
            )
        }
        if cacheHits + cacheMisses > 0 {
            lines.append(
                String(
                    format: "  cache      %d answered from the cache, %d sent; saved %d tokens, $%.6f", cacheHits,
                    cacheMisses, tokensSaved, costSaved))
        }
        lines.append(
            "  tokens     \(promptTokens) prompt + \(completionTokens) completion = \(totalTokens)"
                + (usageEstimated > 0
                    ? " (\(usageEstimated) answers came without usage: their tokens are estimated)" : ""))
        if repaired > 0 {
            lines.append(
                "  text       \(repaired) answers held bytes that are not text; kept with U+FFFD in their place")
        }
        lines.append(
            priceKnown
                ? String(format: "  cost       $%.6f this run, $%.6f on this checkpoint", cost, checkpointCost)
                : "  cost       price unknown (the provider publishes no prices; give prices: in the job to count the cost)"
        )
        lines.append(
            "  requests   \(attempts) attempts, \(retries) retries, \(possiblyBilledTwice) possibly billed twice, \(resentAfterCrash) resent after a crash"
        )
        lines.append(
            "  in flight  limit \(concurrencyLimit) at the end, lowest \(lowestConcurrency)"
                + (warmupRetries > 0 ? ", warm-up waited through \(warmupRetries) failures" : ""))
        lines.append(String(format: "  time       %.2f s, %.1f requests/s", wallSeconds, requestsPerSecond))
        if !providers.isEmpty {
            lines.append("  providers")
            lines += providers.map(\.line)
        }
        return lines.joined(separator: "\n")
    }
}
