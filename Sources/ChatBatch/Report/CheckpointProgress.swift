/// How far a checkpoint's job has come, read while a run holds it: lines answered and failed, tokens and spend.
/// (`chatbatch serve` gives a batch's `request_counts` and `usage` from it.)
public struct CheckpointProgress: Sendable, Equatable {
    public var done = 0
    public var failed = 0
    /// Lines claimed and not yet answered: requests in flight (or, after a crash, possibly billed).
    public var inflight = 0
    public var promptTokens = 0
    public var completionTokens = 0
    public var cost = 0.0

    public init(
        done: Int = 0, failed: Int = 0, inflight: Int = 0, promptTokens: Int = 0, completionTokens: Int = 0,
        cost: Double = 0
    ) {
        self.done = done
        self.failed = failed
        self.inflight = inflight
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
        self.cost = cost
    }

    /// Reads the checkpoint at `path` without taking it from the run that holds it.
    public static func read(checkpoint path: String) throws(ChatBatchError) -> CheckpointProgress {
        let store = try CheckpointStore(path: path, create: false, lock: false)
        defer { store.db.close() }
        let counts = try store.stateCounts()
        let totals = try store.totals()
        return CheckpointProgress(
            done: counts[.done] ?? 0, failed: counts[.failed] ?? 0, inflight: counts[.inflight] ?? 0,
            promptTokens: totals.prompt,
            completionTokens: totals.completion, cost: totals.cost)
    }
}
