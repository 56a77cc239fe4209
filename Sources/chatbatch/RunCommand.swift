import ArgumentParser
import ChatBatch
import ChatBatchCore
import FakeGateway
import Foundation

/// `chatbatch run`: maps flags onto job settings and hands them to the library.
struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Send every prompt of a JSONL file (or job file) once, checkpointed, and write the results.",
        usage: """
            chatbatch run SOURCE [options]    (SOURCE: a job file, a JSONL file or -)
              Flags override the job file. Run the same command again to resume.

            EXIT CODES:
            \(RunExit.helpTable(width: 72))
            """)

    @OptionGroup var job: JobOptions
    @Flag(help: "Run against a fake gateway started in-process on loopback (no key, no network, no cost).")
    var fakeGateway = false
    @Option(parsing: .unconditional, help: "With --fake-gateway: its latency in ms (0 to 600000).") var fakeLatencyMs =
        20.0
    @Flag(help: "No progress output.") var quiet = false
    @Option(help: "Write messages and progress to this file, one line an event (the summary goes to stderr as well).")
    var logFile: String?
    @Option(
        help:
            "Log lines as text (time chatbatch level: message) or json (one object a line: time, level, program, message)."
    )
    var logFormat: LogFormat = .text
    @Option(
        parsing: .unconditional,
        help: "Seconds between progress reports (default: 0.25 redrawn on a terminal, 30 as log lines otherwise).")
    var progressInterval: Double?

    func validate() throws {
        guard fakeLatencyMs.isFinite, (0...600_000).contains(fakeLatencyMs) else {
            throw ValidationError("--fake-latency-ms must be a number from 0 to 600000, not \(fakeLatencyMs)")
        }
        if let p = progressInterval, !(p.isFinite && p > 0 && p <= 86_400) {
            throw ValidationError("--progress-interval must be a number of seconds from more than 0 to 86400, not \(p)")
        }
    }

    func run() throws {
        var settings = try job.jobSettings()
        var gateway: FakeGateway? = nil
        var keyOverride: String? = nil
        if fakeGateway {
            var c = FakeGatewayConfiguration()
            c.latencyMilliseconds = fakeLatencyMs
            // It serves whatever model the job names, so that any job can be tried for free.
            c.models += ([settings.model] + (settings.providers ?? []).map(\.model)).compactMap { $0 }.filter {
                !c.models.contains($0)
            }
            c.projectID = settings.projectID ?? settings.providers?.compactMap(\.projectID).first ?? "1234"
            settings.projectID = c.projectID
            let g = try FakeGateway(c)
            settings.baseURL = settings.provider == .tir ? g.rootURL : g.baseURL
            // Every provider of the job goes to the one fake gateway, each on its own route.
            settings.providers = settings.providers?.map { entry in
                var e = entry
                e.baseURL = e.provider == .tir ? g.rootURL : g.baseURL
                if e.provider == .tir { e.projectID = c.projectID }
                e.apiKeyFile = nil
                return e
            }
            settings.fakeGateway = true
            keyOverride = c.apiKeys[0]
            gateway = g

        }
        let config = try settings.resolve()
        try SideFiles.check(config, logFile: logFile)
        let output = try RunOutput(quiet: quiet, logFile: logFile, format: logFormat)
        if let gateway, !quiet { output.message("chatbatch: fake gateway on \(gateway.baseURL)") }
        let summary = RunSession.execute(
            config, apiKeyOverride: keyOverride, progress: output.progress(interval: progressInterval)
        ) { message in
            output.message(message)
        }
        gateway?.shutdown()
        output.summary(summary.text, logFile: logFile, format: logFormat, exit: summary.exit)
        throw ExitCode(summary.exit.rawValue)
    }
}

/// The flags `run` and `validate` share: the job, and every setting that can override it.
struct JobOptions: ParsableArguments {
    @Argument(
        help:
            "A job file (.yaml), or a JSONL file (or -, standard input) of Batch API, messages, prompt or record lines."
    )
    var source: String
    @OptionGroup(title: "Files") var file: FileOptions
    @OptionGroup(title: "Provider") var provider: ProviderOptions
    @OptionGroup(title: "Requests") var requests: RequestOptions
    @OptionGroup(title: "Concurrency, retries and waiting") var pacing: PacingOptions
    @OptionGroup(title: "Spending and earlier answers") var choice: ChoiceOptions

    /// The job file (if SOURCE is one) overridden by the flags.
    func jobSettings() throws -> JobSettings {
        var settings = JobSettings()
        if source.hasSuffix(".yaml") || source.hasSuffix(".yml") {
            settings = try JobFile.load(path: source, date: file.date)
        } else if source == "-" {
            guard let output = file.output else {
                throw ValidationError(
                    "reading the input from standard input (-) needs --output: it names the run's files")
            }
            settings.input = try StandardInput.spool(to: output + ".input.jsonl")
            settings.inputLabel = "standard input"
        } else {
            settings.input = source
        }
        var flags = JobSettings()
        try file.fill(&flags)
        try provider.fill(&flags, over: settings)
        try requests.fill(&flags, over: settings)
        pacing.fill(&flags)
        choice.fill(&flags)
        settings = settings.overridden(by: flags)

        return settings
    }
}
