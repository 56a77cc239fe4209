import ArgumentParser
import ChatBatch
import ChatBatchCore
import Foundation

/// `chatbatch validate`: everything a run would check and estimate, without sending anything.
struct ValidateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "validate",
        abstract:
            "Read a job or JSONL file and send nothing: invalid lines, counts, estimated tokens, a cost range, and what a resume would still send.",
        discussion: "Exit code 0 when every line is valid, 2 when some are not.")

    @OptionGroup var job: JobOptions
    @Flag(help: "Print the report as JSON.") var json = false
    @Flag(
        help:
            "Judge the job as a `run --fake-gateway` would: the fake gateway's answers (in the checkpoint and the cache) count."
    )
    var fakeGateway = false

    func run() throws {
        var settings = try job.jobSettings()
        if fakeGateway { settings.fakeGateway = true }
        let config = try settings.resolve()
        let report = try BatchValidator.validate(config)
        print(json ? report.json.serialized() : report.text)
        if report.invalid > 0 { throw ExitCode(RunExit.usageOrInput.rawValue) }
    }
}
