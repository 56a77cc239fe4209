import Foundation

/// What a checkpoint was made for: one input and one shard plan.
extension CheckpointStore {
    /// Records the run's input and shard plan, or refuses a run whose input or plan is not the checkpoint's: two
    /// inputs, or two shard plans, on one checkpoint would mix their lines in one set of outputs.
    func claim(input: String, label: String, shard: Shard?) throws(ChatBatchError) {
        let path =
            input.hasPrefix("/")
            ? input : (FileManager.default.currentDirectoryPath as NSString).appendingPathComponent(input)
        let plan = shard.map { "\($0.index)/\($0.count)" } ?? "none"
        // A recorded input that is gone (the job's folder moved) is not another input: the run takes it over.
        if let recorded = try meta("input.path"), recorded != path, FileManager.default.fileExists(atPath: recorded) {
            throw ChatBatchError(
                .otherInput,
                "checkpoint \(self.path) belongs to the input \(recorded), not \(label); one checkpoint holds one input's lines. Give this input its own --output (or --checkpoint), or move the other checkpoint away"
            )
        }
        if let recorded = try meta("shard"), recorded != plan {
            func name(_ p: String) -> String { p == "none" ? "no shard" : "shard \(p)" }
            throw ChatBatchError(
                .otherInput,
                "checkpoint \(self.path) was made for \(name(recorded)), and this run is \(name(plan)); one checkpoint holds one shard plan's lines. Keep the plan, or give this run its own --output"
            )
        }
        try setMeta("input.path", path)
        try setMeta("shard", plan)
    }

    /// Every provider of the last run had known prices (a checkpoint from before this was recorded: taken as known).
    func pricesKnown() throws(ChatBatchError) -> Bool {
        (try meta("prices.unknown") ?? "").isEmpty
    }

    /// How many lines the checkpoint's input has: as the last run that read it through recorded, else counted now
    /// (nil for a shard, whose lines are a part of its input, or when the input cannot be read).
    func inputLines() throws(ChatBatchError) -> Int? {
        if let lines = try meta("input.lines").flatMap({ Int($0) }) { return lines }
        guard (try meta("shard")) ?? "none" == "none", let path = try meta("input.path") else { return nil }
        return countLines(path)
    }
}
