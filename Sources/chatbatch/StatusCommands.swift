import ArgumentParser
import ChatBatch
import Foundation

/// Finds the checkpoint of a job file, or takes the argument as a checkpoint path.
func checkpointPath(_ argument: String, date: String?) throws -> String {
    guard argument.hasSuffix(".yaml") || argument.hasSuffix(".yml") else { return argument }
    return try JobFile.load(path: argument, date: date).resolve().files.checkpoint
}

/// The store and job a target names: a store address given as it is, or a job file with `store:`; nil for a
/// checkpoint.
func storeTarget(_ argument: String, date: String?, jobName: String?) throws -> (store: String, job: String?)? {
    if StoreStatus.isStore(argument) { return (argument, jobName) }
    guard argument.hasSuffix(".yaml") || argument.hasSuffix(".yml") else { return nil }
    let files = try JobFile.load(path: argument, date: date).resolve().files
    return files.store.map { ($0, jobName ?? files.jobName) }
}

/// `chatbatch status`: where a job stands.
struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Counts by state, spend so far, the last run, and whether a run holds the checkpoint now.")

    @Argument(help: "A checkpoint file, a job file, or a store (postgres://…).") var target: String
    @Option(help: "What {date} in the job file's paths becomes (default: today, YYYY-MM-DD).") var date: String?
    @Option(help: "The job in the store (default: the job file's, or the store's only job).") var jobName: String?
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        if let (store, job) = try storeTarget(target, date: date, jobName: jobName) {
            let status = try StoreStatus.status(store: store, job: job)
            print(json ? status.serialized() : StoreStatus.text(status))
            return
        }
        let status = try CheckpointReport.status(checkpoint: try checkpointPath(target, date: date))
        print(json ? status.serialized() : CheckpointReport.statusText(status))
    }
}

/// `chatbatch report`: latency, answers, retries, money and throughput of a job, from its checkpoint or its store.
struct ReportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report",
        abstract:
            "Latency p50/p90/p99/max, answers by status, retries, ambiguous sends, tokens, cost, and throughput over time; --html for a page with charts."
    )

    @Argument(help: "A checkpoint file, a job file, or a store (postgres://…).") var target: String
    @Option(help: "What {date} in the job file's paths becomes (default: today, YYYY-MM-DD).") var date: String?
    @Option(help: "The job in the store (default: the job file's, or the store's only job).") var jobName: String?
    @Flag(help: "Print JSON.") var json = false
    @Option(
        help: "Write the report as one self-contained HTML page (charts as inline SVG, nothing fetched) to this file.")
    var html: String?

    func run() throws {
        if let (store, job) = try storeTarget(target, date: date, jobName: jobName) {
            if let html {
                try HTMLReport.write(store: store, job: job, to: html)
                print("wrote \(html)")
            } else {
                let report = try CheckpointReport.report(store: store, job: job)
                print(json ? report.serialized() : CheckpointReport.reportText(report))
            }
            return
        }
        let checkpoint = try checkpointPath(target, date: date)
        if let html {
            try HTMLReport.write(checkpoint: checkpoint, to: html)
            print("wrote \(html)")
            return
        }
        let report = try CheckpointReport.report(checkpoint: checkpoint)
        print(json ? report.serialized() : CheckpointReport.reportText(report))
    }
}
