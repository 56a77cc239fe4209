import ChatBatchCore
import Foundation

/// One `chatbatch run` from start to summary: key, pre-flight checks, the run itself, the summary file.
public enum RunSession {
    /// Runs the job and returns its summary; errors before the run (bad input with `--strict`, no key,
    /// a busy or foreign checkpoint) come back as a summary with the matching exit code and a reason.
    public static func execute(
        _ config: RunConfiguration, apiKeyOverride: String? = nil, handleSignals: Bool = true,
        progress: ProgressOptions? = nil, log: @escaping @Sendable (String) -> Void
    ) -> RunSummary {
        var refused = RunSummary()
        refused.refused = true
        do {
            let key = try apiKeyOverride ?? APIKeySource.resolve(config)
            if let key, !key.isEmpty, let warning = APIKeySource.plainTextWarning(endpoint: config.endpoint) { log(warning) }
            if config.strict {
                let problems = try BatchValidator.validate(config, useCheckpoint: false).problems
                if !problems.isEmpty {
                    for p in problems.prefix(50) { log(p) }
                    refused.exit = .usageOrInput
                    refused.invalid = problems.count
                    refused.stopReason = "--strict: \(problems.count) invalid lines"
                    return refused
                }
            }
            let runner = try RunDriver(config: config, apiKey: key, progress: progress, log: log)
            let summary = runner.run(handleSignals: handleSignals)
            if let path = config.summaryJSON { try writeSummary(summary, to: path) }
            return summary
        } catch let error as ChatBatchError {
            refused.exit = error.code.exit
            refused.stopReason = error.message
        } catch {
            refused.exit = .usageOrInput
            refused.stopReason = "\(error)"
        }
        return refused
    }

    static func writeSummary(_ summary: RunSummary, to path: String) throws(ChatBatchError) {
        let fd = try OutputFiles.openForWriting(path, truncate: true)
        defer { close(fd) }
        var bytes = [UInt8]()
        summary.json.write(to: &bytes)
        bytes.append(0x0A)
        try OutputFiles.writeAll(fd, bytes, path: path)
    }
}

/// Where the API key comes from: an environment variable or a file, never a flag's value.
enum APIKeySource {
    /// The key, or nil when the provider needs none and none is set.
    static func resolve(_ config: RunConfiguration) throws(ChatBatchError) -> String? {
        if let file = config.apiKeyFile {
            guard let data = FileManager.default.contents(atPath: file), let text = String(data: data, encoding: .utf8) else {
                throw ChatBatchError(.unreadableKeyFile, "cannot read the API key file \(file)")
            }
            let key = text.trimmingCharacters(in: .whitespacesAndNewlines)
            guard !key.isEmpty else { throw ChatBatchError(.emptyKeyFile, "the API key file \(file) is empty") }
            return key
        }
        if let key = ProcessInfo.processInfo.environment[config.apiKeyEnv], !key.isEmpty { return key }
        if config.provider.requiresKey {
            throw ChatBatchError(
                .missingKey,
                "no API key: set \(config.apiKeyEnv) in the environment (or name another variable with --api-key-env, or use --api-key-file PATH)")
        }
        return nil
    }

    /// A warning when a key would travel unencrypted to a host that is not this machine.
    static func plainTextWarning(endpoint: String) -> String? {
        guard endpoint.lowercased().hasPrefix("http://") else { return nil }
        let host = URLComponents(string: endpoint)?.host ?? ""
        if host == "localhost" || host == "::1" || host == "[::1]" || host.hasPrefix("127.") { return nil }
        return "chatbatch: warning: the API key will travel unencrypted over plain http to \(host); use https"
    }
}
