import ChatBatchCore
import Foundation

/// What a run would do, found without sending anything (`chatbatch validate`).
public struct ValidationReport: Sendable {
    public var lines = 0
    public var valid = 0
    public var invalid = 0
    public var alreadyDone = 0
    public var alreadyFailed = 0
    public var changed = 0
    /// Lines another endpoint answered, which a run would not send without `--other-endpoint-answers`.
    public var otherEndpoint = 0
    /// Lines a run (or a resume) would still send.
    public var toSend = 0
    /// Of the lines a run would answer, those the response cache holds (with `--cache`): not sent, not paid.
    public var cacheHits = 0
    public var promptTokens = 0
    /// `max_tokens` summed over the lines to send (the model's maximum output where a line sets none).
    public var maxCompletionTokens = 0
    /// Least: prompts only. Most: prompts plus every answer at `max_tokens`.
    /// Every provider's prices are known (else the cost range is "price unknown").
    public var priceKnown = true
    public var costLeast = 0.0
    public var costMost = 0.0
    /// With several providers: the same range at each one's prices (every line sent there).
    public var costByProvider: [(name: String, least: Double, most: Double)] = []
    public var problems: [String] = []
    /// Lines to send by endpoint path, when any is not chat (empty for an all-chat file).
    public var toSendByEndpoint: [String: Int] = [:]

    public var json: JSON {
        [
            "lines": .int(lines), "valid": .int(valid), "invalid": .int(invalid), "already_done": .int(alreadyDone),
            "already_failed": .int(alreadyFailed), "changed": .int(changed), "other_endpoint": .int(otherEndpoint),
            "to_send": .int(toSend), "cache_hits": .int(cacheHits),
            "estimated_prompt_tokens": .int(promptTokens), "max_completion_tokens": .int(maxCompletionTokens),
            "cost_usd_least": priceKnown ? .double(costLeast) : .null,
            "cost_usd_most": priceKnown ? .double(costMost) : .null,
            "cost_by_provider": .array(
                costByProvider.map {
                    ["name": .string($0.name), "cost_usd_least": .double($0.least), "cost_usd_most": .double($0.most)]
                }),
            "problems": .array(problems.prefix(100).map(JSON.string)),
            "to_send_by_endpoint": .object(
                JSONObject(toSendByEndpoint.sorted { $0.key < $1.key }.map { ($0, .int($1)) }))
        ]
    }

    public var text: String {
        var out = problems.prefix(50).map { $0 }
        if problems.count > 50 { out.append("… and \(problems.count - 50) more") }
        out.append("lines      \(lines): \(valid) valid, \(invalid) invalid")
        out.append(
            "to send    \(toSend)"
                + (alreadyDone + alreadyFailed > 0
                    ? " (\(alreadyDone) already done, \(alreadyFailed) already failed)" : "")
                + (changed > 0 ? ", \(changed) changed since answered (sent only with --force)" : "")
                + (otherEndpoint > 0
                    ? ", \(otherEndpoint) answered by another endpoint (see --other-endpoint-answers)" : ""))
        if !toSendByEndpoint.isEmpty {
            out.append(
                "endpoints  "
                    + toSendByEndpoint.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(
                        separator: ", "))
        }
        if cacheHits > 0 {
            out.append(
                "cache      \(cacheHits) more answered from the cache (not sent; the counts below leave them out)")
        }
        out.append("tokens     about \(promptTokens) prompt, at most \(maxCompletionTokens) completion")
        if !priceKnown {
            out.append(
                "cost       price unknown: the provider publishes no prices (give prices: in the job to get a range)")
        } else if costByProvider.isEmpty {
            out.append(
                String(
                    format: "cost       $%.6f (prompts only) to $%.6f (every answer at max_tokens)", costLeast, costMost
                ))
        } else {
            for p in costByProvider {
                out.append(
                    String(
                        format:
                            "cost       $%.6f to $%.6f if every line went to %@ (prompts only to every answer at max_tokens)",
                        p.least, p.most, p.name))
            }
        }
        return out.joined(separator: "\n")
    }
}

/// Reads a whole job without sending anything: invalid lines, counts, estimated tokens, cost range, and
/// what a resume would still send (from the checkpoint, when there is one; it is only read, never locked).
public enum BatchValidator {
    /// `useCheckpoint: false` judges every line on its own, as `--strict` does before a run.
    public static func validate(_ config: RunConfiguration, useCheckpoint: Bool = true) throws -> ValidationReport {
        try InputFeed.refuseIfNotJSONL(config.files.input)
        var reader: CheckpointReader? = nil
        var claims = EndpointClaims(choice: config.choices.otherEndpointAnswers)
        if useCheckpoint && FileManager.default.fileExists(atPath: config.files.checkpoint) {
            // refuses foreign or damaged files
            let store = try CheckpointStore(path: config.files.checkpoint, create: false, lock: false)
            reader = try CheckpointReader(path: config.files.checkpoint, version: store.version)
            for e in try store.endpoints() {
                if config.routes.contains(where: { $0.endpoint.identity == e.identity }) { claims.current.insert(e.id) }
                if e.fake { claims.fakes.insert(e.id) }
                claims.names[e.id] = e.fake ? "the fake gateway" : e.label
            }
            claims.runIsFake = config.endpoint.fake
            store.closeAndUnlock()
        }
        var report = ValidationReport()
        // A job on a store: what its workers settled is not sent again.
        let settled = useCheckpoint ? storeSettled(config, problems: &report.problems) : []
        var cache: ResponseCache? = nil
        if let path = config.cache.path, config.cache.mode.reads, FileManager.default.fileExists(atPath: path) {
            cache = try ResponseCache(path: path, create: false)
        }
        let feed = try InputFeed(
            config: config, checkpoint: reader, hasInvalidRows: false, cache: cache, endpoints: claims,
            recountsInvalid: true)
        defer { feed.close() }
        var tokens: [APIEndpoint: (prompt: Int, completion: Int)] = [:]
        var byEndpoint: [APIEndpoint: Int] = [:]
        while !feed.done {
            let batch = try feed.next(limit: 4096)
            report.lines += batch.linesRead
            report.invalid += batch.invalid
            report.alreadyDone += batch.alreadyDone
            report.alreadyFailed += batch.alreadyFailed
            report.changed += batch.changed
            report.otherEndpoint += batch.otherEndpoint
            report.problems += batch.messages
            report.cacheHits += batch.cached.count
            for r in batch.requests {
                if r.line < settled.count, settled[r.line] != 0 {
                    if settled[r.line] == 1 { report.alreadyDone += 1 } else { report.alreadyFailed += 1 }
                    continue
                }
                report.toSend += 1
                report.promptTokens += r.promptTokens
                report.maxCompletionTokens += config.completionBound(r.maxTokens)
                tokens[r.endpoint, default: (0, 0)].prompt += r.promptTokens
                tokens[r.endpoint, default: (0, 0)].completion += config.completionBound(r.maxTokens)
                byEndpoint[r.endpoint, default: 0] += 1
            }
        }
        if byEndpoint.keys.contains(where: { $0 != .chat }) {
            report.toSendByEndpoint = Dictionary(uniqueKeysWithValues: byEndpoint.map { ($0.key.rawValue, $0.value) })
        }
        // The range at a provider's prices, each endpoint priced as it bills.
        func range(_ prices: Prices) -> (least: Double, most: Double) {
            tokens.reduce((0, 0)) { sum, entry in
                (
                    sum.0 + prices.cost(prompt: entry.value.prompt, completion: 0, endpoint: entry.key),
                    sum.1
                        + prices.cost(
                            prompt: entry.value.prompt, completion: entry.value.completion, endpoint: entry.key)
                )
            }
        }
        report.valid = report.lines - report.invalid
        report.priceKnown = config.pricesKnown
        (report.costLeast, report.costMost) = range(config.routes[0].prices)
        if config.routes.count > 1 {
            report.costByProvider = config.routes.map { route in
                let r = range(route.prices)
                return (route.name, r.least, r.most)
            }
        }
        return report
    }

    /// The lines the job's store holds settled (see `PostgresWorkQueue.settledLines`); none when the job has no
    /// store, or the store holds no such job yet. A store that cannot be read is said, and every line counted.
    static func storeSettled(_ config: RunConfiguration, problems: inout [String]) -> [UInt8] {
        guard let store = config.files.store else { return [] }
        do throws(ChatBatchError) {
            let queue = try PostgresWorkQueue.reading(try PostgresAddress(store), job: config.files.jobName)
            return try queue.settledLines()
        } catch {
            if [.missingCheckpoint, .notACheckpoint].contains(error.code) { return [] }
            problems.append(
                "the store could not be read (\(error)): every line is counted as still to send")
            return []
        }
    }
}
