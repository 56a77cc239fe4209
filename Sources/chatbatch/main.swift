import ArgumentParser
import ChatBatch
import FakeGateway
import Foundation

/// `chatbatch`: the command line. Each subcommand only maps flags onto the ChatBatch library.
struct ChatBatchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chatbatch",
        abstract: "Run a JSONL batch of chat completions: bounded fan-out, correct retries, exactly-once checkpoint.",
        subcommands: [RunCommand.self, ValidateCommand.self, ExportCommand.self, StatusCommand.self, ReportCommand.self, MergeCommand.self, CacheCommand.self, FakeGatewayCommand.self])
}

func fail(_ message: String, code: Int32) -> Never {
    FileHandle.standardError.write(Data("chatbatch: \(message)\n".utf8))
    exit(code)
}

// Usage and input errors exit with 2 (ArgumentParser's own default for usage errors is 64).
do {
    var command = try ChatBatchCommand.parseAsRoot()
    try command.run()
} catch let error as ChatBatchError {
    fail(error.message, code: error.code.exit.rawValue)
} catch let error as FakeGatewayError {
    fail(error.message, code: RunExit.usageOrInput.rawValue)
} catch {
    let code = ChatBatchCommand.exitCode(for: error)
    if code == .validationFailure {
        FileHandle.standardError.write(Data((ChatBatchCommand.fullMessage(for: error) + "\n").utf8))
        exit(RunExit.usageOrInput.rawValue)
    }
    ChatBatchCommand.exit(withError: error)
}
