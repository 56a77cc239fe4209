import ArgumentParser
import ChatBatch
import Foundation

/// `chatbatch export`: rebuild the output files from a checkpoint alone.
struct ExportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Rebuild the results and errors files from a checkpoint alone (nothing is sent).",
        discussion:
            "By default the files are written where the last run wrote them; a lost or damaged output never means paying again."
    )

    @Argument(help: "The checkpoint file, or a store (postgres://…).") var checkpoint: String
    @Option(help: "With a store: the job (default: the store's only job).") var jobName: String?
    @Option(help: "Results file (default: the one the last run wrote).") var output: String?
    @Option(help: "Errors file (default: beside --output as X.errors.jsonl, else the one the last run wrote).")
    var errors: String?
    @Option(help: "Line order.") var order = CheckpointExport.Order.completion
    @Option(help: "Results format.") var format = OutputFormat.batch
    @Flag(help: "Replace existing files that this checkpoint did not write (refused otherwise).") var overwrite = false

    func run() throws {
        if StoreStatus.isStore(checkpoint) {
            guard let output else { throw ValidationError("exporting from a store needs --output") }
            let n = try StoreStatus.export(
                store: checkpoint, job: jobName, results: output, errors: errors, overwrite: overwrite)
            print("wrote \(n.results) results to \(output) and \(n.errors) errors to \(n.errorsPath)")
            return
        }
        let report = try CheckpointExport.export(
            checkpoint: checkpoint, results: output, errors: errors, order: order, format: format, overwrite: overwrite)
        print(
            "wrote \(report.results) results to \(report.resultsPath) and \(report.errors) errors to \(report.errorsPath)"
        )
    }
}
