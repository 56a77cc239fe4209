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
                    if required { throw ChatBatchError(.badOutput, "\(source): no such shard results file; nothing was merged") }
                    continue
                }
                let reader = try LineReader(path: source)
                while let line = try reader.next() {
                    if line.bytes.isEmpty { continue }
                    guard let id = (try? JSON.parse(line.bytes))?["custom_id"]?.stringValue else {
                        throw ChatBatchError(.badOutput, "\(source):\(line.number): not an output line with a custom_id")
                    }
                    guard seen.insert(StableHash.of(id)).inserted else {
                        throw ChatBatchError(.duplicateAcrossShards, "\(source):\(line.number): custom_id '\(id)' is in more than one shard's output")
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
        try copy(results, to: output, count: &report.results, required: true)
        try copy(results.map(JobSettings.defaultErrors(for:)), to: errors ?? JobSettings.defaultErrors(for: output), count: &report.errors, required: false)
        if let summaryOutput, !summaries.isEmpty {
            var total = JSONObject()
            for path in summaries {
                guard let data = FileManager.default.contents(atPath: path), let summary = try? JSON.parse(Array(data)).objectValue else {
                    throw ChatBatchError(.badSummary, "\(path): not a chatbatch summary (JSON object)")
                }
                for (key, value) in summary {
                    switch (key, total[key], value) {
                    case ("wall_seconds", let old, _), ("exit_code", let old, _):
                        total[key] = .double(max(old?.doubleValue ?? 0, value.doubleValue ?? 0))
                    case (_, .some(.int(let a)), .int(let b)): total[key] = .int(a + b)
                    case (_, let old, .int(let b)) where old == nil: total[key] = .int(b)
                    case (_, let old, .double(let b)): total[key] = .double((old?.doubleValue ?? 0) + b)
                    case (_, nil, _): total[key] = value
                    default: break
                    }
                }
                report.summaries += 1
            }
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
}
