import ChatBatchCore
import Foundation

/// Combines the outputs of shards (`chatbatch merge`): results, errors and summaries.
public enum OutputMerge {
    /// What a merge wrote.
    public struct Report: Sendable {
        public var results = 0
        public var errors = 0
        public var summaries = 0
    }

    /// Concatenates each shard's results file (and its errors file, named like a run names it) into one pair,
    /// refusing a custom_id that appears twice; sums the summaries' counts, tokens and cost.
    public static func merge(
        results: [String], output: String, errors: String?, summaries: [String], summaryOutput: String?
    ) throws -> Report {
        var report = Report()
        var seen = Set<UInt64>()
        func copy(_ sources: [String], to target: String, count: inout Int, required: Bool) throws {
            let fd = try OutputFiles.openForWriting(target + ".merge-tmp", truncate: true)
            defer { close(fd) }
            for source in sources {
                guard FileManager.default.fileExists(atPath: source) else {
                    if required {
                        throw ChatBatchError(.badOutput, "\(source): no such shard results file; nothing was merged")
                    }
                    continue
                }
                let reader = try LineReader(path: source)
                while let line = try reader.next() {
                    if line.bytes.isEmpty { continue }
                    guard let id = (try? JSON.parse(line.bytes))?["custom_id"]?.stringValue else {
                        throw ChatBatchError(
                            .badOutput, "\(source):\(line.number): not an output line with a custom_id")
                    }
                    guard seen.insert(StableHash.of(id)).inserted else {
                        throw ChatBatchError(
                            .duplicateAcrossShards,
                            "\(source):\(line.number): custom_id '\(id)' is in more than one shard's output")
                    }
                    try OutputFiles.writeAll(fd, line.bytes + [0x0A], path: target)
                    count += 1
                }
            }
            guard rename(target + ".merge-tmp", target) == 0 else {
                throw ChatBatchError(.renameFailed, "cannot write \(target): \(String(cString: strerror(errno)))")
            }
        }
        for source in results where !FileManager.default.fileExists(atPath: source) {
            throw ChatBatchError(.badOutput, "\(source): no such shard results file; nothing was merged")
        }
        try checkEveryShard(results: results, summaries: summaries)
        try copy(results, to: output, count: &report.results, required: true)
        try copy(
            results.map(JobSettings.defaultErrors(for:)), to: errors ?? JobSettings.defaultErrors(for: output),
            count: &report.errors, required: false)
        if let summaryOutput, !summaries.isEmpty {
            var total = JSONObject()
            for path in summaries {
                guard let data = FileManager.default.contents(atPath: path),
                    let summary = try? JSON.parse(Array(data)).objectValue
                else {
                    throw ChatBatchError(.badSummary, "\(path): not a chatbatch summary (JSON object)")
                }
                add(summary, into: &total)
                report.summaries += 1
            }
            total["headline"] = .string(headline(total, shards: summaries.count))
            total["shard"] = nil
            if let attempts = total["attempts"]?.doubleValue, let wall = total["wall_seconds"]?.doubleValue, wall > 0 {
                total["requests_per_second"] = .double((attempts / wall * 10).rounded() / 10)
            }
            total["exit_code"] = .int(Int(total["exit_code"]?.doubleValue ?? 0))
            total["shards"] = .int(summaries.count)
            let fd = try OutputFiles.openForWriting(summaryOutput, truncate: true)
            defer { close(fd) }
            try OutputFiles.writeAll(fd, Array(JSON.object(total).serialized().utf8) + [0x0A], path: summaryOutput)
        }
        return report
    }

    /// Adds one summary's figures into `total`: counts (and counts by code or status) summed, the longest wall time
    /// and the highest exit code kept, and text taken from the first summary.
    static func add(_ summary: JSONObject, into total: inout JSONObject) {
        for (key, value) in summary {
            switch (key, total[key], value) {
            case ("wall_seconds", let old, _), ("exit_code", let old, _):
                total[key] = .double(max(old?.doubleValue ?? 0, value.doubleValue ?? 0))
            case (_, .some(.int(let a)), .int(let b)): total[key] = .int(a + b)
            case (_, let old, .int(let b)) where old == nil: total[key] = .int(b)
            case (_, let old, .double(let b)): total[key] = .double((old?.doubleValue ?? 0) + b)
            case (_, .some(.object(var sum)), .object(let more)):
                add(more, into: &sum)
                total[key] = .object(sum)
            case (_, nil, _): total[key] = value
            default: break
            }
        }
    }

    /// The merged summary's headline, from the summed counts (a shard's own headline speaks of that shard only).
    static func headline(_ total: JSONObject, shards: Int) -> String {
        func n(_ key: String) -> Int { total[key]?.intValue ?? 0 }
        let answered = n("done") + n("already_done")
        let notAnswered = [
            (n("failed"), "failed"), (n("invalid"), "invalid"), (n("already_failed"), "already failed"),
            (n("left_pending"), "left pending")
        ].filter { $0.0 > 0 }.map { "\($0.0) \($0.1)" }
        return "\(shards) shards: \(answered) of \(n("input_lines")) lines answered"
            + (notAnswered.isEmpty ? "" : ", " + notAnswered.joined(separator: ", "))
    }

    /// Refuses a set of results files that leaves out a shard of their plan, or mixes two plans. Each file's shard
    /// is read from its checkpoint beside it (`X.jsonl.checkpoint`) or from its summary; files whose shard cannot be
    /// told are not checked.
    static func checkEveryShard(results: [String], summaries: [String]) throws(ChatBatchError) {
        var known: [(file: String, shard: Shard)] = []
        for path in results where FileManager.default.fileExists(atPath: path + ".checkpoint") {
            guard let store = try? CheckpointStore(path: path + ".checkpoint", create: false, lock: false) else {
                continue
            }
            if let text = try? store.meta("shard"), let shard = try? Shard(parsing: text) {
                known.append((path, shard))
            }
            store.closeAndUnlock()
        }
        for path in summaries {
            guard let data = FileManager.default.contents(atPath: path), let summary = try? JSON.parse(Array(data)),
                let text = summary["shard"]?.stringValue, let shard = try? Shard(parsing: text)
            else { continue }
            known.append((path, shard))
        }
        guard let first = known.first else { return }
        if let other = known.first(where: { $0.shard.count != first.shard.count }) {
            throw ChatBatchError(
                .badOutput,
                "\(first.file) is shard \(first.shard.index)/\(first.shard.count) but \(other.file) is shard \(other.shard.index)/\(other.shard.count): they are not shards of one plan; nothing was merged"
            )
        }
        let present = Set(known.map(\.shard.index))
        let missing = (0..<first.shard.count).filter { !present.contains($0) }
        guard missing.isEmpty else {
            throw ChatBatchError(
                .badOutput,
                "shard \(missing.map { "\($0)/\(first.shard.count)" }.joined(separator: ", ")) missing: the files given are shards \(present.sorted().map(String.init).joined(separator: ", ")) of \(first.shard.count); pass every shard's results file (nothing was merged)"
            )
        }
    }
}
