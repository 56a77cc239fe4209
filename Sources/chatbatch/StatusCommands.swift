import ArgumentParser
import ChatBatch
import Foundation

/// Finds the checkpoint of a job file, or takes the argument as a checkpoint path.
func checkpointPath(_ argument: String, date: String?) throws -> String {
    guard argument.hasSuffix(".yaml") || argument.hasSuffix(".yml") else { return argument }
    return try JobFile.load(path: argument, date: date).resolve().files.checkpoint
}

/// `chatbatch status`: where a job stands.
struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Counts by state, spend so far, the last run, and whether a run holds the checkpoint now.")

    @Argument(help: "A checkpoint file or a job file.") var target: String
    @Option(help: "What {date} in the job file's paths becomes (default: today, YYYY-MM-DD).") var date: String?
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        let status = try CheckpointReport.status(checkpoint: try checkpointPath(target, date: date))
        print(json ? status.serialized() : CheckpointReport.statusText(status))
    }
}

/// `chatbatch report`: latency, answers, retries, money and throughput of a job, from its checkpoint.
struct ReportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report",
        abstract:
            "Latency p50/p90/p99/max, answers by status, retries, ambiguous sends, tokens, cost, and throughput over time; --html for a page with charts."
    )

    @Argument(help: "A checkpoint file or a job file.") var target: String
    @Option(help: "What {date} in the job file's paths becomes (default: today, YYYY-MM-DD).") var date: String?
    @Flag(help: "Print JSON.") var json = false
    @Option(
        help: "Write the report as one self-contained HTML page (charts as inline SVG, nothing fetched) to this file.")
    var html: String?

    func run() throws {
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
