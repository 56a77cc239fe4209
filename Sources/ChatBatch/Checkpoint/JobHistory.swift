import ChatBatchCore

/// What `chatbatch report` and its page read of a job: every request made, every line finished, each run and the
/// in-flight limit over time. One protocol, one backend per file: a checkpoint file (`CheckpointStore+Queries`) and
/// a job in a PostgreSQL store (`PostgresJobHistory`, where each worker is a run). The report asks for values,
/// never for rows: no SQL outside these files.
protocol JobHistory {
    /// What the report is about: the checkpoint's path, or the store's address (no password) and the job's name.
    var title: String { get }
    /// Every run (on a store: every worker), oldest first.
    func runs() throws(ChatBatchError) -> [HistoryRun]
    /// The settings a run recorded as it started (JSON), if any.
    func runSettings(_ run: Int) throws(ChatBatchError) -> JSON?
    /// Lines by state: answered, failed, waiting, with a request on the wire.
    func lineCounts() throws(ChatBatchError) -> (done: Int, failed: Int, pending: Int, inflight: Int)
    /// Tokens and cost over every finished line.
    func totals() throws(ChatBatchError) -> (prompt: Int, completion: Int, cost: Double)
    /// Whether every provider had known prices (else the cost is said as unknown, not as $0).
    func pricesKnown() throws(ChatBatchError) -> Bool
    /// Each attempt as it ended (its start plus its latency), with its status (nil: no answer) and latency.
    func attemptEnds() throws(ChatBatchError) -> [(t: Double, status: Int?, latencyMs: Double)]
    /// Each answered line when it was answered, with its cost and tokens, in that order.
    func answeredLines() throws(ChatBatchError) -> [(t: Double, cost: Double, tokens: Int)]
    /// The in-flight limit's samples, each of one endpoint (on a store: one endpoint of one worker), in time order.
    func windowSamples() throws(ChatBatchError) -> [(t: Double, endpoint: Int, window: Double)]
    /// Time to first token of every streamed answer (ms), sorted.
    func firstTokenTimes() throws(ChatBatchError) -> [Double]
    /// The latency of every attempt that got an answer (ms), sorted; of one endpoint's when given.
    func answerLatencies(endpointID: Int?) throws(ChatBatchError) -> [Double]
    /// When each 2xx answer finished, in order.
    func successTimes() throws(ChatBatchError) -> [Double]
    /// Attempts by status: 0 for no answer, -1 for a request that left and whose answer no run recorded.
    func attemptsByStatus() throws(ChatBatchError) -> [(status: Int, count: Int)]
    /// Every attempt, and the lines each run sent (a line's attempts in one run after its first are retries).
    func attemptCounts() throws(ChatBatchError) -> (attempts: Int, sends: Int)
    /// Sends counted as possibly billed twice, over every line.
    func possiblyBilledTwice() throws(ChatBatchError) -> Int
    /// Failed lines by error code (`unknown` when none), most first.
    func failuresByCode() throws(ChatBatchError) -> [(code: String, lines: Int)]
    /// A few failed lines with `code`: their custom_id, input line and message.
    func failedExamples(code: String, limit: Int) throws(ChatBatchError) -> [(
        customID: String, line: Int, message: String
    )]
    /// A breakdown per model, the model with most lines first.
    func byModel() throws(ChatBatchError) -> [HistoryBreakdown]
    /// The endpoints (providers) requests went to, each with the id the other queries take.
    func endpointLabels() throws(ChatBatchError) -> [(id: Int, label: String)]
    /// What one endpoint did: requests and 429s among its attempts; lines answered and failed, tokens and cost.
    func endpointTotals(_ id: Int) throws(ChatBatchError) -> (
        requests: Int, rateLimited: Int, lines: HistoryBreakdown
    )
    /// Lines answered from the response cache, and the tokens and dollars they saved.
    func cacheSavings() throws(ChatBatchError) -> (hits: Int, tokens: Int, cost: Double)
    /// The last `limit` controls given to the job (`chatbatch control`), oldest first.
    func controls(limit: Int) throws(ChatBatchError) -> [JSON]
    /// Lets go of the database.
    func release()
}

/// One run of a job (on a store: one worker).
struct HistoryRun: Sendable {
    var id: Int
    var startedAt: Double
    var endedAt: Double?
    var exitCode: Int?
    /// The summary it recorded as it ended (JSON text), nil for one that did not end.
    var summary: String?
    /// Where it ran (a store's worker: host and pid), nil for a run on a checkpoint file.
    var place: String? = nil
}

/// Lines, answers, failures, tokens, cost and mean latency of one model (or of one provider's answers).
struct HistoryBreakdown: Sendable {
    var name = ""
    var lines = 0
    var done = 0
    var failed = 0
    var tokens = 0
    var cost = 0.0
    var meanLatencyMs: Double? = nil
}
