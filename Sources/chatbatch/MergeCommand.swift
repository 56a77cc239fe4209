import ArgumentParser
import ChatBatch
import Foundation

/// `chatbatch merge`: one results file, errors file and summary from the shards of a batch.
struct MergeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "merge",
        abstract: "Combine the results, errors and summaries of shards (runs with --shard i/n).",
        discussion:
            "Each shard's errors file is found beside its results file (X.jsonl → X.errors.jsonl). A custom_id found in two shards is refused."
    )

    @Argument(help: "The shards' results files.") var results: [String]
    @Option(help: "Merged results file.") var output: String
    @Option(help: "Merged errors file (default: beside --output).") var errors: String?
    @Option(name: .customLong("summary"), help: "A shard's --summary-json file (repeatable).") var summaries: [String] =
        []
    @Option(help: "Write the summed summary here.") var summaryJSON: String?

    func run() throws {
        let report = try OutputMerge.merge(
            results: results, output: output, errors: errors, summaries: summaries, summaryOutput: summaryJSON)
        print(
            "merged \(results.count) shards: \(report.results) results, \(report.errors) errors, \(report.summaries) summaries"
        )
    }
}
