import ChatBatchCore
import Foundation

/// The checkpoint's runs and endpoints: what a run learns as it opens, and what it records as it ends.
extension CheckpointStore {
    // MARK: runs

    /// What a run learns from the checkpoint as it starts.
    struct OpenedRun: Sendable {
        var runID: Int
        /// Prompts a previous run left in flight (possibly billed); now pending, marked as resends after a crash.
        var crashRecovered: Int
        /// No prompt has a row yet: nothing to look up per line.
        var isEmpty: Bool
        /// Some line was recorded as invalid (a fixed line then replaces its `line-N` row).
        var hasInvalidRows: Bool
        /// Spend over every earlier run.
        var spent: Double
        /// The models each of the run's endpoints refused, in the run's order.
        var refusedModels: [[String: ModelRefusal]]
        /// Set when the input is unchanged since a run that finished every line: nothing needs reading.
        var finishedInput: FinishedInput? = nil
        /// The run's endpoints as the checkpoint knows them, and every other endpoint that answered before.
        var endpoints: [Endpoint] = []
        var otherEndpoints: [Endpoint] = []
        /// What each endpoint spent, by its id.
        var spentByEndpoint: [Int: Double] = [:]
        /// The in-flight level each of the run's endpoints' keys allowed in an earlier run, in the run's order.
        var ceilings: [Int?] = []
    }

    /// An endpoint as the checkpoint records it.
    struct Endpoint: Sendable, Equatable {
        var id: Int
        var identity: String
        var label: String
        var fake: Bool
        /// It answered something, in some run.
        var proven: Bool
    }

    /// What a run that finished every line of its input left behind, so that the next run can skip the input.
    struct FinishedInput: Sendable, Equatable {
        var fingerprint: String
        var done: Int
        var failed: Int
        var promptTokens: Int
        var completionTokens: Int
        var cost: Double

        var json: JSON {
            [
                "fingerprint": .string(fingerprint), "done": .int(done), "failed": .int(failed),
                "prompt_tokens": .int(promptTokens),
                "completion_tokens": .int(completionTokens), "cost": .double(cost)
            ]
        }

        init(fingerprint: String, done: Int, failed: Int, promptTokens: Int, completionTokens: Int, cost: Double) {
            self.fingerprint = fingerprint
            self.done = done
            self.failed = failed
            self.promptTokens = promptTokens
            self.completionTokens = completionTokens
            self.cost = cost
        }

        init?(json: JSON?) {
            guard let json, let fingerprint = json["fingerprint"]?.stringValue, let done = json["done"]?.intValue,
                let failed = json["failed"]?.intValue
            else { return nil }
            self.init(
                fingerprint: fingerprint, done: done, failed: failed,
                promptTokens: json["prompt_tokens"]?.intValue ?? 0,
                completionTokens: json["completion_tokens"]?.intValue ?? 0, cost: json["cost"]?.doubleValue ?? 0)
        }
    }

    /// The record of the last run that finished every line, if no run has started since.
    func finishedInput() throws(ChatBatchError) -> FinishedInput? {
        FinishedInput(json: try meta("input.finished").flatMap { try? JSON.parse($0) })
    }

    func recordFinishedInput(_ finished: FinishedInput) throws(ChatBatchError) {
        try setMeta("input.finished", finished.json.serialized())
    }

    /// Starts a run: reconciles the output files, recovers prompts left in flight, records the run, and reads
    /// what the scheduler needs. `forgetRefusedModels` (`--retry-failed`) lets refused models be tried again.
    ///
    /// `fingerprint` (nil with `--force` or `--retry-failed`) is compared with what the last run that finished
    /// every line recorded; when they agree, nothing is scanned. Any other run forgets that record before it
    /// sends anything, so a record can only stand while nothing is pending or in flight.
    func openRun(
        sink: any OutputSink, forgetRefusedModels: Bool,
        endpoints: [(identity: String, label: String, provider: String, url: String, fake: Bool)],
        fingerprint: (_ endpoints: [String]) -> String?, log: (String) -> Void
    ) throws -> OpenedRun {
        try sink.reconcile(with: self, log: log)
        var known: [Endpoint] = []
        for e in endpoints {
            known.append(
                try register(identity: e.identity, label: e.label, provider: e.provider, url: e.url, fake: e.fake))
        }
        let others = try self.endpoints().filter { other in !known.contains { $0.id == other.id } }
        if let fingerprint = fingerprint(known.map(\.identity)), let finished = try finishedInput(),
            finished.fingerprint == fingerprint,
            try !outputNeedsRebuild()
        {
            return OpenedRun(
                runID: try beginRun(), crashRecovered: 0, isEmpty: false, hasInvalidRows: false, spent: finished.cost,
                refusedModels: try known.map { e throws(ChatBatchError) in try refusedModels(endpointID: e.id) },
                finishedInput: finished,
                endpoints: known, otherEndpoints: others, spentByEndpoint: try spentByEndpoint(),
                ceilings: try known.map { e throws(ChatBatchError) in try ceiling(endpointID: e.id) })
        }
        try db.query("DELETE FROM meta WHERE key='input.finished'")
        let recovered = try recoverInflight()
        let id = try beginRun()
        if forgetRefusedModels { try clearRefusedModels() }
        return OpenedRun(
            runID: id, crashRecovered: recovered, isEmpty: try isEmpty(),
            hasInvalidRows: (try db.query("SELECT count(*) FROM requests WHERE error_code='invalid_line'").first?.first?
                .int ?? 0) > 0,
            spent: try totals().cost,
            refusedModels: try known.map { e throws(ChatBatchError) in try refusedModels(endpointID: e.id) },
            endpoints: known, otherEndpoints: others, spentByEndpoint: try spentByEndpoint(),
            ceilings: try known.map { e throws(ChatBatchError) in try ceiling(endpointID: e.id) })
    }

    /// The endpoint with this identity, recorded if it is new.
    func register(identity: String, label: String, provider: String, url: String, fake: Bool) throws(ChatBatchError)
        -> Endpoint
    {
        try db.query(
            "INSERT INTO endpoints(identity, label, provider, url, fake) VALUES(?, ?, ?, ?, ?) ON CONFLICT(identity) DO UPDATE SET label=excluded.label",
            [.text(identity), .text(label), .text(provider), .text(url), .int(fake ? 1 : 0)])
        guard let e = try endpoints().first(where: { $0.identity == identity }) else {
            throw ChatBatchError(.sqliteError, "checkpoint \(path): the endpoint \(identity) was not recorded")
        }
        return e
    }

    /// Every endpoint that has been recorded (none in a checkpoint older than schema 3).
    func endpoints() throws(ChatBatchError) -> [Endpoint] {
        guard version >= 3 else { return [] }
        return try db.rows(
            "SELECT id, identity, label, fake, first_success_at IS NOT NULL AS proven FROM endpoints ORDER BY id"
        ).map { row in
            Endpoint(
                id: row["id"].int ?? 0, identity: row["identity"].text ?? "", label: row["label"].text ?? "",
                fake: row["fake"].int == 1, proven: row["proven"].int == 1)
        }
    }

    /// Records a run's start and returns its id.
    func beginRun() throws(ChatBatchError) -> Int {
        try db.query("INSERT INTO runs(started_at) VALUES(?)", [.double(Date().timeIntervalSince1970)])
        return db.lastInsertedRow
    }

    func endRun(id: Int, exitCode: Int32, summary: JSON) throws(ChatBatchError) {
        try db.query(
            "UPDATE runs SET ended_at=?, exit_code=?, summary=? WHERE id=?",
            [.double(Date().timeIntervalSince1970), .int(Int(exitCode)), .text(summary.serialized()), .int(id)])
    }
}
