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
            var keys: [String?] = []
            for route in config.routes {
                let key = try apiKeyOverride ?? APIKeySource.resolve(route.endpoint)
                if let key, !key.isEmpty, let host = APIKeySource.plainTextHost(endpoint: route.endpoint.url) {
                    guard route.endpoint.allowHTTP else {
                        throw ChatBatchError(.plainHTTP, "refusing to send the API key unencrypted over plain http to \(host): use an https:// base URL, or pass --allow-http (job key allow_http: true) if the network between is yours")
                    }
                    log("chatbatch: warning: the API key travels unencrypted over plain http to \(host) (--allow-http)")
                }
                keys.append(key)
            }
            let redactor = Redactor(secrets: keys.compactMap { $0 })
            let log: @Sendable (String) -> Void = { log(redactor.scrub($0)) }
            if config.choices.strict {
                // Invalid lines are counted as `validate` and a run count them; warnings (an unknown field) are said, not counted.
                let report = try BatchValidator.validate(config, useCheckpoint: false)
                if report.invalid > 0 {
                    for p in report.problems.prefix(50) { log(p) }
                    refused.exit = .usageOrInput
                    refused.invalid = report.invalid
                    refused.stopReason = "--strict: \(report.invalid) invalid lines"
                    return refused
                }
            }
            try SideFiles.check(config, logFile: nil)
            if let path = config.files.summaryJSON { try checkWritable(path, holding: "the summary", code: .unwritableSummary) }
            if let path = config.files.metricsFile { try checkWritable(path, holding: "the metrics", code: .unwritableMetrics) }
            let config = OpenFileLimit.fit(config, log: log)
            let prepared = try PreparedRun(config: config, keys: keys, log: log)
            let summary = RunDriver(prepared, progress: progress, log: log).run(handleSignals: handleSignals)
            if let path = config.files.summaryJSON {
                if summary.sentNothingNew && FileManager.default.fileExists(atPath: path) {
                    log("chatbatch: \(path) kept as the last run that did some work wrote it (this run had nothing to do)")
                } else {
                    do {
                        try writeSummary(summary, to: path)
                    } catch {
                        log("chatbatch: warning: could not write the summary to \(path) (\(error.message)); the run itself \(summary.exit == .allDone ? "finished" : "ended") as said below")
                    }
                }
            }
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
        var bytes = [UInt8]()
        summary.json.write(to: &bytes)
        bytes.append(0x0A)
        try OutputFiles.replace(path, with: bytes)
    }

    /// Refuses, before anything is sent, a summary or metrics path that cannot be written (its folder is created).
    static func checkWritable(_ path: String, holding what: String, code: ChatBatchError.Code) throws(ChatBatchError) {
        let folder = (path as NSString).deletingLastPathComponent
        if !folder.isEmpty { try? FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true) }
        let probe = OutputFiles.isRegularOrMissing(path) ? OutputFiles.temporaryPath(for: path) : path
        let fd = open(probe, O_WRONLY | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw ChatBatchError(code, "cannot write \(what) to \(path): \(String(cString: strerror(errno))); nothing was sent")
        }
        close(fd)
        if probe != path { unlink(probe) }
    }
}

/// Where the API key comes from: an environment variable or a file, never a flag's value.
enum APIKeySource {
    /// The key, or nil when the provider needs none and none is set.
    static func resolve(_ endpoint: EndpointSettings) throws(ChatBatchError) -> String? {
        if let file = endpoint.apiKeyFile {
            guard let data = FileManager.default.contents(atPath: file), let text = String(data: data, encoding: .utf8) else {
                throw ChatBatchError(.unreadableKeyFile, "cannot read the API key file \(file)")
            }
            let key = text.trimmingCharacters(in: .whitespacesAndNewlines)
            guard !key.isEmpty else { throw ChatBatchError(.emptyKeyFile, "the API key file \(file) is empty") }
            return key
        }
        if let key = ProcessInfo.processInfo.environment[endpoint.apiKeyEnv], !key.isEmpty { return key }
        if endpoint.profile.requiresKey && !endpoint.fake {
            throw ChatBatchError(
                .missingKey,
                "no API key: set \(endpoint.apiKeyEnv) in the environment (or name another variable with --api-key-env, or use --api-key-file PATH)")
        }
        return nil
    }

    /// The host a key would travel to unencrypted (plain http to a host that is not this machine), or nil.
    static func plainTextHost(endpoint: String) -> String? {
        guard endpoint.lowercased().hasPrefix("http://") else { return nil }
        let host = URLComponents(string: endpoint)?.host ?? ""
        if host == "localhost" || host == "::1" || host == "[::1]" || host.hasPrefix("127.") { return nil }
        return host
    }
}
