import ArgumentParser
import ChatBatch
import ChatBatchCore
import FakeGateway
import Foundation

/// `chatbatch`: the command line. Each subcommand only maps flags onto the ChatBatch library.
struct ChatBatchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chatbatch",
        abstract: "Run a JSONL batch of chat completions: bounded fan-out, correct retries, exactly-once checkpoint.",
        version: ChatBatchVersion.current,
        subcommands: [
            RunCommand.self, DemoCommand.self, ValidateCommand.self, ExportCommand.self, StatusCommand.self,
            ReportCommand.self, ControlCommand.self, MergeCommand.self, CacheCommand.self, FakeGatewayCommand.self,
            ServeCommand.self
        ])
}

func fail(_ message: String, code: Int32) -> Never {
    Stream.write("chatbatch: \(message)\n")
    exit(code)
}

/// A first word that is no command, no path and no flag (`chatbatch runn`): say which command it likely meant.
func refuseUnknownCommand(_ arguments: [String]) {
    guard let word = arguments.first, !word.hasPrefix("-"), !word.contains("/"), !word.contains(".") else { return }
    let names = ChatBatchCommand.configuration.subcommands.compactMap { $0.configuration.commandName } + ["help"]
    guard !names.contains(word) else { return }
    let guess = EditDistance.nearest(to: word, among: names).map { " Did you mean '\($0)'?" } ?? ""
    fail(
        "'\(word)' is not a chatbatch command.\(guess) The commands: \(names.dropLast().joined(separator: ", ")) (chatbatch --help)",
        code: RunExit.usageOrInput.rawValue)
}

// A run catches its stop signals before anything else: one that comes while it opens its files is not lost.
if ["run", "demo"].contains(CommandLine.arguments.dropFirst().first) { StopSignals.install() }
refuseUnknownCommand(Array(CommandLine.arguments.dropFirst()))
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
        Stream.write((ChatBatchCommand.fullMessage(for: error) + "\n"))
        exit(RunExit.usageOrInput.rawValue)
    }
    ChatBatchCommand.exit(withError: error)
}
