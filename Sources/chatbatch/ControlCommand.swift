import ArgumentParser
import ChatBatch
import Foundation

/// `chatbatch control`: steer a running job.
struct ControlCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "control",
        abstract:
            "Steer a running job: pause, resume, drain, or set concurrency, max_cost, rpm or tpm without a restart.",
        discussion: """
            The run holding the checkpoint takes the control within a second, says so in its log, and records it \
            (with the time and the host) for status, the metrics file and report --html.
              pause                  nothing new is sent; what is in flight finishes; the run waits without a \
            time limit (SIGTERM still stops it)
              resume                 carry on after a pause
              drain                  what is in flight finishes, then the run ends with exit 4 (resumable)
              set concurrency=N      the most requests in flight from now on (the adaptive limit's top)
              set max_cost=USD|off   the budget cap; below what is spent and in flight, the run stops with exit 3 \
            (resumable)
              set rpm=N|off          requests per minute
              set tpm=N|off          tokens per minute
            A control holds for the run it is given to; the job file decides the next run (or give the control \
            with --next-run while no run holds the checkpoint). Exit 0 when the run applied it (or has not taken it \
            within --wait), 2 when it was refused or no run holds the checkpoint.
            On a store (a job file with store:, or postgres://… --job-name NAME), every worker running the job \
            takes it (concurrency, rpm and tpm are each worker's own; max_cost is the job's) and the answer says \
            what each made of it; a worker that starts later runs with the job's settings.
            """)

    @Argument(help: "A checkpoint file, a job file, or a store (postgres://…).") var target: String
    @Argument(help: "pause | resume | drain | set KEY=VALUE") var words: [String] = []
    @Option(help: "Only this provider of a several-provider job (its name in the job's providers list).")
    var provider: String?
    @Flag(help: "When no run holds the checkpoint, keep the control for the next run (applied before it sends).")
    var nextRun = false
    @Option(help: "Seconds to wait for the run to take the control.") var wait: Double = 5
    @Option(help: "What {date} in the job file's paths becomes (default: today, YYYY-MM-DD).") var date: String?
    @Option(help: "The job in the store (default: the job file's, or the store's only job).") var jobName: String?

    func run() throws {
        let action = try ControlAction(words: words)
        if let (store, job) = try storeTarget(target, date: date, jobName: jobName) {
            guard !nextRun else {
                throw ChatBatchError(
                    .badControl,
                    "--next-run is for a checkpoint file: on a store, a worker that starts later runs with the job's "
                        + "settings; change them in the job file")
            }
            print(try JobControl.give(action, provider: provider, store: store, job: job, wait: wait))
            return
        }
        let message = try JobControl.give(
            action, provider: provider, checkpoint: try checkpointPath(target, date: date), nextRun: nextRun,
            wait: wait)
        print(message)
    }
}
