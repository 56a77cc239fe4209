import ChatBatchCore
import Foundation

/// `chatbatch control`: gives a control to the run that holds a checkpoint, and waits for the run to take it.
///
/// The control is a row in the checkpoint's `controls` table; the run reads new rows four times a second, applies
/// them between two turns of its machine, and records what came of each (applied, or refused and why). A checkpoint
/// no run holds takes no control, unless `nextRun` keeps it for the next run, which applies it before it sends.
public enum JobControl {
    /// Gives `action` (for `provider`, or every provider) to the run holding `checkpoint`; returns what the run
    /// made of it, or says it is waiting when the run has not taken it within `wait` seconds.
    public static func give(
        _ action: ControlAction, provider: String?, checkpoint: String, nextRun: Bool, wait: Double
    ) throws(ChatBatchError) -> String {
        guard FileManager.default.fileExists(atPath: checkpoint) else {
            throw ChatBatchError(
                .missingCheckpoint,
                "no checkpoint at \(checkpoint): no run of this job has started, so there is nothing to control")
        }
        // A checkpoint is owner-only: another account can neither tell whether a run holds it nor write a control.
        guard access(checkpoint, R_OK | W_OK) == 0 else {
            throw ChatBatchError(
                .openFailed,
                "cannot write to checkpoint \(checkpoint) (\(String(cString: strerror(errno)))): give the control as "
                    + "the user that runs the job (a checkpoint is readable and writable by its owner only)")
        }
        if !CheckpointStore.isHeld(path: checkpoint) {
            guard nextRun else {
                throw ChatBatchError(
                    .notRunning,
                    "no run holds \(checkpoint) now: nothing changed. Add --next-run to keep '\(action.text)' for the "
                        + "next run of this job (it is applied before that run sends anything)")
            }
            do {
                let store = try CheckpointStore(path: checkpoint, create: false, lock: true)
                defer { store.closeAndUnlock() }
                let id = try store.recordControl(action, provider: provider, nextRun: true)
                return "control #\(id) '\(action.text)' kept for the next run of \(checkpoint): it is applied before "
                    + "that run sends anything"
            } catch  where error.code == .checkpointBusy {
                // A run took the checkpoint meanwhile: it is given to that run.
            }
        }
        let store = try CheckpointStore(path: checkpoint, create: false, lock: false)
        defer { store.db.close() }
        guard store.version >= 5 else {
            throw ChatBatchError(
                .notRunning,
                "the run holding \(checkpoint) is an older chatbatch (checkpoint schema \(store.version)) that takes no "
                    + "controls: nothing changed")
        }
        let id = try store.recordControl(action, provider: provider, nextRun: false)
        let deadline = Date().addingTimeInterval(max(0, wait))
        while true {
            let outcome = try store.controlOutcome(id: id)
            if let text = outcome.text {
                guard !outcome.refused else {
                    throw ChatBatchError(.badControl, "control #\(id) '\(action.text)' \(text)")
                }
                let by =
                    (outcome.runID.map { " by run #\($0)" } ?? "")
                    + (outcome.appliedAt.map { " at " + RunMachine.clockTime($0) + "Z" } ?? "")
                return "control #\(id) '\(action.text)' applied\(by): \(applied(text))"
            }
            if !CheckpointStore.isHeld(path: checkpoint) {
                // The run ended before it took the control: it is marked so and never applied by a later run.
                try store.expireStaleControls()
                throw ChatBatchError(
                    .notRunning, "the run holding \(checkpoint) ended before it took control #\(id): nothing changed")
            }
            if Date() >= deadline {
                return "control #\(id) '\(action.text)' recorded; the run has not taken it yet (it reads controls "
                    + "four times a second; `chatbatch status \(checkpoint)` shows when it does)"
            }
            usleep(20_000)
        }
    }

    /// Gives `action` to every worker that runs job `job` (nil: the store's only job) in the store at `address` now,
    /// and waits up to `wait` seconds for each to take it; returns what they made of it. A worker that joins later
    /// starts from the job's settings. Refused (nothing recorded) when no worker runs the job.
    public static func give(
        _ action: ControlAction, provider: String?, store address: String, job: String?, wait: Double
    ) throws(ChatBatchError) -> String {
        let queue = try PostgresWorkQueue.reading(try PostgresAddress(address), job: job)
        let name = try queue.jobRow()["name"] ?? ""
        // A worker renews its heartbeat every third of its lease; two minutes covers the default lease twice over.
        let liveWithin = 120.0
        guard
            let given = try queue.giveControl(
                action: action.text, provider: provider, host: CheckpointStore.hostName, pid: Int(getpid()),
                at: Date().timeIntervalSince1970, liveWithin: liveWithin)
        else {
            throw ChatBatchError(
                .notRunning,
                "no worker runs job '\(name)' in the store \(queue.connection.address) now: nothing changed (a worker "
                    + "that starts later runs with the job's settings)")
        }
        let deadline = Date().addingTimeInterval(max(0, wait))
        while true {
            let outcomes = try queue.controlOutcomes(id: given.id)
            let taken = Set(outcomes.map(\.worker))
            // A worker that stopped (or was killed) before taking it is not waited for.
            let live = Set(try queue.liveWorkers(within: liveWithin))
            let waiting = given.workers.filter { !taken.contains($0) && live.contains($0) }
            if waiting.isEmpty || Date() >= deadline {
                return try storeOutcome(action, id: given.id, job: name, outcomes: outcomes, waiting: waiting.count)
            }
            usleep(50_000)
        }
    }

    /// What the workers made of a control, said as one answer: refused when every worker that took it refused it.
    private static func storeOutcome(
        _ action: ControlAction, id: Int, job: String,
        outcomes: [(worker: Int, host: String, pid: Int, outcome: String)], waiting: Int
    ) throws(ChatBatchError) -> String {
        let refused = outcomes.filter { $0.outcome.hasPrefix("refused") }
        if !outcomes.isEmpty && refused.count == outcomes.count && waiting == 0 {
            throw ChatBatchError(.badControl, "control #\(id) '\(action.text)' \(refused[0].outcome)")
        }
        let each = outcomes.map { "\($0.host) pid \($0.pid): \(applied($0.outcome))" }
        var text =
            "control #\(id) '\(action.text)' for job '\(job)': taken by \(outcomes.count) "
            + (outcomes.count == 1 ? "worker" : "workers")
        if !each.isEmpty { text += " (" + each.joined(separator: "; ") + ")" }
        if waiting > 0 {
            text +=
                "; \(waiting) not yet (a worker reads controls four times a second; `chatbatch status` lists "
                + "the workers)"
        }
        return text
    }

    /// What a run said it did with a control, without its `applied: ` (a refusal is said as it is).
    private static func applied(_ outcome: String) -> String {
        outcome.hasPrefix("applied: ") ? String(outcome.dropFirst("applied: ".count)) : outcome
    }
}
