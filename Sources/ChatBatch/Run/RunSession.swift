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
        // Credentials in a URL (user info, a key in the query) are never said, whatever says them; and a message is
        // one line of plain text, whatever a server put in it (escape sequences, line breaks, bidi overrides).
        let urls = Redactor(secrets: config.routes.flatMap(\.endpoint.urlSecrets))
        var summary = session(config, apiKeyOverride: apiKeyOverride, handleSignals: handleSignals, progress: progress)
        {
            log(urls.scrub($0).terminalSafe)
        }
        summary.stopReason = summary.stopReason.map { urls.scrub($0).terminalSafe }
        summary.blockedModels = Dictionary(
            summary.blockedModels.map { ($0.key.terminalSafe, $0.value.terminalSafe) }, uniquingKeysWith: { a, _ in a })
        summary.failuresByCode = Dictionary(
            summary.failuresByCode.map { ($0.key.terminalSafe, $0.value) }, uniquingKeysWith: +)
        return summary
    }

    private static func session(
        _ config: RunConfiguration, apiKeyOverride: String?, handleSignals: Bool, progress: ProgressOptions?,
        log: @escaping @Sendable (String) -> Void
    ) -> RunSummary {
        var refused = RunSummary()
        refused.refused = true
        do {
            var keys: [String?] = []
            for route in config.routes {
                let key = try apiKeyOverride ?? APIKeySource.resolve(route.endpoint, warn: log)
                if let key, !key.isEmpty,
                    let host = APIKeySource.plainTextHost(
                        endpoint: route.endpoint.url, proxy: route.endpoint.proxy,
                        environment: ProcessInfo.processInfo.environment)
                {
                    guard route.endpoint.allowHTTP else {
                        throw ChatBatchError(
                            .plainHTTP,
                            "refusing to send the API key unencrypted over plain http to \(host): use an https:// base URL, or pass --allow-http (job key allow_http: true) if the network between is yours"
                        )
                    }
                    log("chatbatch: warning: the API key travels unencrypted over plain http to \(host) (--allow-http)")
                }
                keys.append(key)
            }
            let redactor = Redactor(secrets: keys.compactMap { $0 } + config.routes.flatMap(\.endpoint.urlSecrets))
            let log: @Sendable (String) -> Void = { log(redactor.scrub($0)) }
            if config.choices.strict {
                // Invalid lines are counted as `validate` and a run count them; warnings (an unknown field) are said,
                // not counted.
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
            if let path = config.files.summaryJSON {
                try checkWritable(path, holding: "the summary", code: .unwritableSummary)
            }
            if let path = config.files.metricsFile {
                try checkWritable(path, holding: "the metrics", code: .unwritableMetrics)
            }
            let config = OpenFileLimit.fit(config, log: log)
            let prepared = try PreparedRun(config: config, keys: keys, log: log)
            let summary = RunDriver(prepared, progress: progress, log: log).run(handleSignals: handleSignals)
            if let path = config.files.summaryJSON {
                if summary.keeps(fileThatExisted: FileManager.default.fileExists(atPath: path)) {
                    log(
                        "chatbatch: \(path) kept as the last run that did some work wrote it (this run had nothing to do)"
                    )
                } else {
                    do {
                        try writeSummary(summary, to: path)
                    } catch {
                        log(
                            "chatbatch: warning: could not write the summary to \(path) (\(error.message)); the run itself \(summary.exit == .allDone ? "finished" : "ended") as said below"
                        )
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
        makeFolders(folder, mode: 0o755)  // node_exporter reads the metrics file from another account
        let probe = OutputFiles.isRegularOrMissing(path) ? OutputFiles.temporaryPath(for: path) : path
        let fd = open(probe, O_WRONLY | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw ChatBatchError(
                code, "cannot write \(what) to \(path): \(String(cString: strerror(errno))); nothing was sent")
        }
        close(fd)
        if probe != path { unlink(probe) }
    }
}

/// Where the API key comes from: an environment variable or a file, never a flag's value.
enum APIKeySource {
    /// The key, or nil when the provider needs none and none is set.
    static func resolve(_ endpoint: EndpointSettings, warn: (String) -> Void = { _ in }) throws(ChatBatchError)
        -> String?
    {
        if let file = endpoint.apiKeyFile {
            guard let data = FileManager.default.contents(atPath: file), let text = String(data: data, encoding: .utf8)
            else {
                throw ChatBatchError(.unreadableKeyFile, "cannot read the API key file \(file)")
            }
            var st = stat()
            if stat(file, &st) == 0, st.st_mode & 0o077 != 0 {
                warn(
                    "chatbatch: warning: the API key file \(file) can be read by others (mode \(String(st.st_mode & 0o777, radix: 8))); chmod 600 it"
                )
            }
            let key = try clean(text, source: "the API key file \(file)")
            guard !key.isEmpty else { throw ChatBatchError(.emptyKeyFile, "the API key file \(file) is empty") }
            return key
        }
        if let raw = ProcessInfo.processInfo.environment[endpoint.apiKeyEnv], !raw.isEmpty {
            let key = try clean(raw, source: "the environment variable \(endpoint.apiKeyEnv)")
            if !key.isEmpty { return key }
        }
        if endpoint.profile.requiresKey && !endpoint.fake {
            throw ChatBatchError(
                .missingKey,
                "no API key: set \(endpoint.apiKeyEnv) in the environment (or name another variable with --api-key-env, or use --api-key-file PATH)"
            )
        }
        return nil
    }

    /// A key as its source holds it, with the one trailing line end a file (a Kubernetes secret) has taken off;
    /// any other line break or control character is refused, naming the source (it would end the header early, or
    /// put a line of its own on the wire).
    static func clean(_ text: String, source: String) throws(ChatBatchError) -> String {
        var key = Substring(text)
        if key.hasSuffix("\r\n") { key = key.dropLast(2) } else if key.hasSuffix("\n") { key = key.dropLast() }
        key = key.drop(while: { $0 == " " || $0 == "\t" })
        while key.last == " " || key.last == "\t" { key = key.dropLast() }
        if key.unicodeScalars.contains(where: {
            $0.value < 0x20 || $0.value == 0x7F || (0x80...0x9F).contains($0.value)
        }) {
            throw ChatBatchError(
                .badKey,
                "the API key from \(source) holds a line break or control character (a second line?); a key is one line: fix \(source)"
            )
        }
        return String(key)
    }

    /// The host a key would travel to unencrypted (plain http to a host that is not this machine), or nil.
    ///
    /// Plain http through a proxy gives the key to the proxy in clear: its host must be this machine too. This
    /// machine is decided from the addresses a name resolves to (`127.attacker.example` is not loopback), every one.
    static func plainTextHost(endpoint: String, proxy: String? = nil, environment: [String: String] = [:]) -> String? {
        guard endpoint.lowercased().hasPrefix("http://") else { return nil }
        let host = URLComponents(string: endpoint)?.host ?? ""
        // libcurl's own choice for a plain http URL: the explicit proxy, else http_proxy or ALL_PROXY (NO_PROXY aside).
        let noProxy = (environment["NO_PROXY"] ?? environment["no_proxy"] ?? "").split(separator: ",").map {
            $0.trimmingCharacters(in: .whitespaces)
        }
        let bypassed =
            noProxy.contains("*")
            || noProxy.contains { !$0.isEmpty && (host == $0 || host.hasSuffix($0.hasPrefix(".") ? $0 : "." + $0)) }
        let hop =
            proxy
            ?? (bypassed ? nil : environment["http_proxy"] ?? environment["ALL_PROXY"] ?? environment["all_proxy"])
        if let hop, !hop.isEmpty {
            let proxyHost = URLComponents(string: hop.contains("://") ? hop : "http://" + hop)?.host ?? hop
            if !isLoopback(proxyHost) { return "\(proxyHost) (the proxy in front of \(host))" }
        }
        return isLoopback(host) ? nil : host
    }

    /// True when every address `host` resolves to is a loopback address (127.0.0.0/8, ::1).
    static func isLoopback(_ host: String) -> Bool {
        let name = host.trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
        guard !name.isEmpty else { return false }
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        #if os(Linux)
            hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        #else
            hints.ai_socktype = SOCK_STREAM
        #endif
        var list: UnsafeMutablePointer<addrinfo>? = nil
        guard getaddrinfo(name, nil, &hints, &list) == 0, let first = list else { return false }
        defer { freeaddrinfo(list) }
        var node: UnsafeMutablePointer<addrinfo>? = first
        var any = false
        while let n = node {
            guard let address = n.pointee.ai_addr else { return false }
            switch Int32(address.pointee.sa_family) {
            case AF_INET:
                let ip = address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) {
                    UInt32(bigEndian: $0.pointee.sin_addr.s_addr)
                }
                if ip >> 24 != 127 { return false }
            case AF_INET6:
                let loop = address.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { p -> Bool in
                    withUnsafeBytes(of: p.pointee.sin6_addr) { b in b.prefix(15).allSatisfy { $0 == 0 } && b[15] == 1 }
                }
                if !loop { return false }
            default: return false
            }
            any = true
            node = n.pointee.ai_next
        }
        return any
    }
}
