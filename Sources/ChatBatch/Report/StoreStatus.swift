import ChatBatchCore

/// Where a job held in a PostgreSQL store stands (`chatbatch status` on a store): its lines by state, what was sent
/// again after a worker died, tokens and cost, and its workers with their hosts, pids, lines held and heartbeats.
public enum StoreStatus {
    /// The status of job `name` (nil: the store's only job) in the store at `address`, as JSON.
    public static func status(store address: String, job name: String?) throws -> JSON {
        let queue = try PostgresWorkQueue.reading(try PostgresAddress(address), job: name)
        let job = try queue.jobRow()
        let counts = try queue.counts()
        let totals = try queue.totals()
        let workers = try queue.workers()
        return [
            "store": .string(queue.connection.address.shown), "job": .string(job["name"] ?? ""),
            "lines_loaded": .int(job.int("lines_loaded") ?? 0), "input_loaded": .bool(job.bool("loaded") == true),
            "queued": .int(counts["queued"] ?? 0), "leased": .int(counts["leased"] ?? 0),
            "done": .int(counts["done"] ?? 0), "failed": .int(counts["failed"] ?? 0),
            "resent_after_crash": .int(counts["resent_after_crash"] ?? 0),
            "prompt_tokens": .int(totals.prompt), "completion_tokens": .int(totals.completion),
            "cost": .double(totals.cost),
            "results_path": job["results_path"].map(JSON.string) ?? .null,
            "errors_path": job["errors_path"].map(JSON.string) ?? .null,
            "workers": .array(
                workers.map {
                    [
                        "host": .string($0.host), "pid": .int($0.pid), "concurrency": .int($0.concurrency),
                        "held": .int($0.held), "seconds_since_heartbeat": .double($0.quietSeconds),
                        "stopped": .bool($0.stopped)
                    ]
                })
        ]
    }

    /// The status as lines for a terminal.
    public static func text(_ s: JSON) -> String {
        let int = { (key: String) in s[key]?.intValue ?? 0 }
        var lines = [
            "job '\(s["job"]?.stringValue ?? "")' in the store \(s["store"]?.stringValue ?? "")",
            "  lines      \(int("lines_loaded")) loaded\(s["input_loaded"]?.boolValue == true ? " (all)" : " so far"): "
                + "\(int("done")) done, \(int("failed")) failed, \(int("queued")) queued, \(int("leased")) held by workers",
            "  resent     \(int("resent_after_crash")) after a worker died with them in flight (possibly billed twice)",
            "  tokens     \(int("prompt_tokens")) prompt, \(int("completion_tokens")) completion; cost $"
                + String(format: "%.6f", s["cost"]?.doubleValue ?? 0)
        ]
        let workers = s["workers"]?.arrayValue ?? []
        let live = workers.filter { $0["stopped"]?.boolValue != true }
        lines.append("  workers    \(live.count) live, \(workers.count - live.count) stopped")
        for w in workers.prefix(50) {
            let quiet = w["seconds_since_heartbeat"]?.doubleValue ?? 0
            lines.append(
                "    \(w["host"]?.stringValue ?? "") pid \(w["pid"]?.intValue ?? 0): "
                    + "concurrency \(w["concurrency"]?.intValue ?? 0), \(w["held"]?.intValue ?? 0) lines held, "
                    + (w["stopped"]?.boolValue == true
                        ? "stopped" : "last heartbeat \(String(format: "%.0f", quiet)) s ago"))
        }
        if let path = s["results_path"]?.stringValue { lines.append("  outputs    \(path)") }
        return lines.joined(separator: "\n")
    }

    /// Writes the job's results and errors files from the store (`chatbatch export` on a store).
    public static func export(
        store address: String, job name: String?, results: String, errors: String?, overwrite: Bool
    ) throws -> (results: Int, errors: Int, errorsPath: String) {
        let queue = try PostgresWorkQueue.reading(try PostgresAddress(address), job: name)
        let errorsPath = errors ?? JobSettings.defaultErrors(for: results)
        try StoreExport.checkTargets(queue, results: results, errors: errorsPath, overwrite: overwrite)
        let n = try StoreExport.write(queue, results: results, errors: errorsPath)
        return (n.results, n.errors, errorsPath)
    }

    /// True when `text` names a PostgreSQL store rather than a checkpoint file.
    public static func isStore(_ text: String) -> Bool { PostgresAddress.isAddress(text) }
}
