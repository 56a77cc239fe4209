import ChatBatchCore
import Dispatch
import Foundation

/// Everything a run needs, opened and checked before anything is sent: the checkpoint (refusing a busy, foreign
/// or damaged one), output paths that would destroy a file the run did not write, the output files brought in
/// line with the checkpoint, the input feed, the response cache, and the machine's starting state.
struct PreparedRun: Sendable {
    let config: RunConfiguration
    let machine: RunMachine
    /// Used only on the run queue once the run starts; before, only by the thread that opened it.
    nonisolated(unsafe) let writer: CheckpointWriter
    /// Used only on the input queue once the run starts.
    nonisolated(unsafe) let feed: InputFeed
    let cacheWriter: CacheWriter?
    let call: RequestCall
    /// The input's fingerprint as the run started (nil if unreadable), and, when it matches the last run that
    /// finished every line, that run's record: then the input is not read at all.
    let fingerprint: String?
    let finishedInput: CheckpointStore.FinishedInput?

    init(config: RunConfiguration, apiKey: String?, log: @escaping @Sendable (String) -> Void) throws {
        self.config = config
        if let caCert = config.endpoint.caCert, !FileManager.default.isReadableFile(atPath: caCert) {
            throw ChatBatchError(.badCACert, "cannot read the CA bundle \(caCert) given with --ca-cert (job key ca_cert)")
        }
        signal(SIGXFSZ, SIG_IGN)  // a file-size limit must fail a write, not kill the run
        try InputFeed.refuseIfNotJSONL(config.files.input)
        let files = config.files
        for path in [files.checkpoint, files.output, files.errors] {
            let folder = (path as NSString).deletingLastPathComponent
            if !folder.isEmpty {
                try? FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            }
        }
        let store = try CheckpointStore(path: files.checkpoint)
        try OutputFiles.checkTargets(
            input: files.input, checkpoint: files.checkpoint,
            recorded: [.results: try store.outputPosition(.results)?.path, .errors: try store.outputPosition(.errors)?.path].compactMapValues { $0 },
            overwrite: files.overwrite, [.results: files.output, .errors: files.errors])
        let outputs = OutputFiles(resultsPath: files.output, errorsPath: files.errors, format: files.format)
        let endpoint = config.endpoint
        let skipInput = !(config.choices.force || config.choices.retryFailed || config.choices.otherEndpointAnswers == .resend)
        var fingerprint: String? = nil
        let opened = try store.openRun(
            sink: outputs, forgetRefusedModels: config.choices.retryFailed,
            endpoints: [(endpoint.identity, endpoint.fake ? "the fake gateway" : endpoint.url, endpoint.provider.rawValue, endpoint.url, endpoint.fake)],
            fingerprint: { identities in
                fingerprint = InputFingerprint.of(config, endpoints: identities)
                return skipInput ? fingerprint : nil
            },
            log: log)
        self.fingerprint = fingerprint
        finishedInput = opened.finishedInput
        writer = CheckpointWriter(store: store, sink: outputs, runID: opened.runID, endpointIDs: opened.endpoints.map(\.id))
        // A fresh checkpoint holds nothing to look up: the feed then skips the per-line lookups.
        let reader = opened.isEmpty || opened.finishedInput != nil ? nil : try CheckpointReader(path: files.checkpoint)
        var cacheReader: ResponseCache? = nil
        var cacheWriter: CacheWriter? = nil
        if let path = config.cache.path {
            if config.cache.mode.writes {
                cacheWriter = CacheWriter(cache: try ResponseCache(path: path, create: true), replace: config.cache.mode == .refresh, log: log)
            }
            cacheReader = try ResponseCache(path: path, create: true)
        }
        self.cacheWriter = cacheWriter
        var claims = EndpointClaims(current: Set(opened.endpoints.map(\.id)), runIsFake: endpoint.fake, choice: config.choices.otherEndpointAnswers)
        for e in opened.endpoints + opened.otherEndpoints {
            if e.fake { claims.fakes.insert(e.id) }
            claims.names[e.id] = e.fake ? "the fake gateway" : e.label
        }
        feed = try InputFeed(
            config: config, checkpoint: reader, hasInvalidRows: opened.hasInvalidRows, cache: cacheReader, backfills: true, endpoints: claims)
        call = RequestCall(
            url: endpoint.url, authorization: apiKey.flatMap { $0.isEmpty ? nil : endpoint.profile.authorization($0) }, key: apiKey,
            extra: endpoint.headers, connectTimeout: endpoint.connectTimeout, timeout: endpoint.timeout,
            connection: ConnectionOptions.resolve(caCert: endpoint.caCert, proxy: endpoint.proxy, environment: ProcessInfo.processInfo.environment))
        machine = RunMachine(
            config: config, spent: opened.spent, refusedModels: opened.refusedModels, endpointProven: opened.endpoints.allSatisfy(\.proven),
            finishedInput: opened.finishedInput, crashRecovered: opened.crashRecovered, now: DispatchTime.now().uptimeNanoseconds)
    }
}
