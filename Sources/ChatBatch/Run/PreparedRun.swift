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
    /// How each provider is called, by route.
    let calls: [RequestCall]
    /// Takes every provider's key out of what comes back.
    let redactor: Redactor
    /// The input's fingerprint as the run started (nil if unreadable), and, when it matches the last run that
    /// finished every line, that run's record: then the input is not read at all.
    let fingerprint: String?
    let finishedInput: CheckpointStore.FinishedInput?
    /// Controls given for this run before it started (`chatbatch control --next-run`).
    let controlsForThisRun: [ControlRequest]
    /// With `--store`: this worker's part in the job the store holds (its lines come from there, its outcomes go
    /// there).
    let storeWorker: StoreWorker?

    /// What the report shows of a run's settings (never a key).
    static func settings(_ config: RunConfiguration) -> JSON {
        [
            "input": .string(config.files.input), "output": .string(config.files.output),
            "format": .string(config.files.format.rawValue),
            "model": config.shape.model.map(JSON.string) ?? .null, "stream": .bool(config.shape.stream),
            "max_cost": config.limits.maxCost.map(JSON.double) ?? .null, "adaptive": .bool(config.limits.adaptive),
            "warmup": .bool(config.limits.warmup),
            "max_attempts": .int(config.retry.maxAttempts), "route": .string(config.routing.rawValue),
            "providers": .array(
                config.routes.map {
                    [
                        "name": .string($0.name),
                        "url": .string($0.endpoint.fake ? "fake gateway" : $0.endpoint.shownURL),
                        "concurrency": .int($0.concurrency)
                    ]
                })
        ]
    }

    /// `keys` holds each provider's key (nil: none), in the run's order.
    init(config: RunConfiguration, keys: [String?], log: @escaping @Sendable (String) -> Void) throws {
        var config = config
        var worker: StoreWorker? = nil
        if let store = config.files.store {
            worker = try Self.joinStore(config, store: store, log: log)
            config = worker!.local(config)
        }
        do {
            try self.init(config: config, keys: keys, worker: worker, log: log)
        } catch {
            if let worker {
                _ = worker.stop()
                worker.removeFolder()
            }
            throw error
        }
    }

    /// Registers this worker on the job in the store, after the checks a store job needs.
    private static func joinStore(_ config: RunConfiguration, store: String, log: @escaping @Sendable (String) -> Void)
        throws -> StoreWorker
    {
        guard config.shape.shard == nil else {
            throw ChatBatchError(
                .badShard, "--shard and --store do not go together: workers on a store claim lines, no slice is theirs")
        }
        guard config.files.format == .batch else {
            throw ChatBatchError(.badChoice, "--store writes the Batch output shape only (--format batch)")
        }
        guard !config.choices.force else {
            throw ChatBatchError(
                .badChoice,
                "--force and --store do not go together: a store's job is its input as first loaded, and a changed "
                    + "input is refused rather than sent again; give the changed input another --job-name")
        }
        let worker = try StoreWorker(config, store: store, log: log)
        do {
            try StoreExport.checkTargets(
                worker.runSide, results: config.files.output, errors: config.files.errors,
                overwrite: config.files.overwrite)
        } catch {
            _ = worker.stop()
            worker.removeFolder()
            throw error
        }
        return worker
    }

    private init(
        config: RunConfiguration, keys: [String?], worker: StoreWorker?, log: @escaping @Sendable (String) -> Void
    ) throws {
        self.config = config
        storeWorker = worker
        try worker?.useKeys(config.routes, keys: keys)
        for route in config.routes {
            if let caCert = route.endpoint.caCert, !FileManager.default.isReadableFile(atPath: caCert) {
                throw ChatBatchError(
                    .badCACert, "cannot read the CA bundle \(caCert) given with --ca-cert (job key ca_cert)")
            }
        }
        signal(SIGXFSZ, SIG_IGN)  // a file-size limit must fail a write, not kill the run
        // A worker on a store may run without the input: another worker loads it.
        if worker == nil || FileManager.default.isReadableFile(atPath: config.files.input) {
            try InputFeed.refuseIfNotJSONL(config.files.input)
        }
        let files = config.files
        for path in [files.checkpoint, files.output, files.errors] {
            let folder = (path as NSString).deletingLastPathComponent
            if !folder.isEmpty {
                makeFolders(folder)
            }
        }
        let created = !FileManager.default.fileExists(atPath: files.checkpoint)
        let store = try CheckpointStore(path: files.checkpoint)
        do {
            try store.claim(input: files.input, label: files.inputLabel, shard: config.shape.shard)
            try OutputFiles.checkTargets(
                input: files.input, checkpoint: files.checkpoint,
                recorded: [
                    .results: try store.outputPosition(.results)?.path, .errors: try store.outputPosition(.errors)?.path
                ]
                .compactMapValues { $0 },
                overwrite: files.overwrite, [.results: files.output, .errors: files.errors])
        } catch {
            // A run refused before it began leaves no checkpoint of its own behind.
            store.closeAndUnlock()
            if created { unlink(files.checkpoint) }
            throw error
        }
        let outputs = OutputFiles(resultsPath: files.output, errorsPath: files.errors, format: files.format)
        // A run that stores in a response cache reads the input even when it finished before: answers the checkpoint
        // holds and the cache lacks (a cache given only now, or a run killed before storing) are stored from it.
        let storesInCache = config.cache.path != nil && config.cache.mode.writes
        let skipInput =
            !(config.choices.force || config.choices.retryFailed || config.choices.otherEndpointAnswers == .resend
            || storesInCache)
        var fingerprint: String? = nil
        let opened = try store.openRun(
            sink: outputs, forgetRefusedModels: config.choices.retryFailed,
            endpoints: config.routes.map { r in
                let place = r.endpoint.fake ? "the fake gateway" : r.endpoint.shownURL
                return (
                    r.endpoint.identity, config.routes.count > 1 ? "\(r.name) (\(place))" : place,
                    r.endpoint.provider.rawValue, r.endpoint.shownURL,
                    r.endpoint.fake
                )
            },
            fingerprint: { identities in
                fingerprint = InputFingerprint.of(config, endpoints: identities)
                return skipInput ? fingerprint : nil
            },
            log: log)
        self.fingerprint = fingerprint
        finishedInput = opened.finishedInput
        try? store.setMeta("run.\(opened.runID).settings", Self.settings(config).serialized())
        // status, report and the page say "price unknown" rather than $0 for a provider that publishes none.
        try? store.setMeta(
            "prices.unknown", config.routes.filter { !$0.pricesKnown }.map(\.name).joined(separator: ","))
        writer = CheckpointWriter(
            store: store, sink: outputs, runID: opened.runID, endpointIDs: opened.endpoints.map(\.id))
        // Controls kept for this run (`--next-run`) are applied before anything is sent; any other left untaken was
        // meant for a run that has ended.
        try store.expireStaleControls()
        controlsForThisRun = try CheckpointStore.pendingControls(in: store.db, after: 0)
        // A fresh checkpoint holds nothing to look up: the feed then skips the per-line lookups.
        let reader = opened.isEmpty || opened.finishedInput != nil ? nil : try CheckpointReader(path: files.checkpoint)
        var cacheReader: ResponseCache? = nil
        var cacheWriter: CacheWriter? = nil
        if let path = config.cache.path {
            if config.cache.mode.writes {
                cacheWriter = CacheWriter(
                    cache: try ResponseCache(path: path, create: true), replace: config.cache.mode == .refresh, log: log
                )
            }
            cacheReader = try ResponseCache(path: path, create: true)
        }
        self.cacheWriter = cacheWriter
        var claims = EndpointClaims(
            current: Set(opened.endpoints.map(\.id)), runIsFake: config.endpoint.fake,
            choice: config.choices.otherEndpointAnswers)
        for e in opened.endpoints + opened.otherEndpoints {
            if e.fake { claims.fakes.insert(e.id) }
            claims.names[e.id] = e.fake ? "the fake gateway" : e.label
        }
        feed = try InputFeed(
            config: config, checkpoint: reader, hasInvalidRows: opened.hasInvalidRows, cache: cacheReader,
            backfills: true, endpoints: claims, source: worker?.source)
        let secrets = keys.compactMap { $0 } + config.routes.flatMap(\.endpoint.urlSecrets)
        redactor = Redactor(secrets: secrets)
        let environment = ProcessInfo.processInfo.environment
        calls = zip(config.routes, keys).map { route, key in
            let e = route.endpoint
            return RequestCall(
                url: e.url, authorization: key.flatMap { $0.isEmpty ? nil : e.profile.authorization($0) }, key: key,
                extra: e.headers,
                connectTimeout: e.connectTimeout, timeout: e.timeout, maxResponseBytes: e.maxResponseBytes,
                connection: ConnectionOptions.resolve(caCert: e.caCert, proxy: e.proxy, environment: environment),
                model: route.model,
                redactor: Redactor(secrets: secrets))
        }
        let jobSpent = try worker.map { w throws(ChatBatchError) in try w.runSide.jobRow().double("spent") ?? 0 } ?? 0
        let keys = worker?.startingKeys()
        var machine = RunMachine(
            config: config,
            spent: opened.endpoints.map { opened.spentByEndpoint[$0.id] ?? 0 } + [
                max(0, opened.spent - opened.spentByEndpoint.values.reduce(0, +)) + jobSpent
            ],
            refusedModels: opened.refusedModels, proven: opened.endpoints.map(\.proven),
            remembered: keys?.map(\.share) ?? opened.ceilings,
            finishedInput: opened.finishedInput, crashRecovered: opened.crashRecovered,
            now: DispatchTime.now().uptimeNanoseconds)
        machine.jobSpentAtStart = jobSpent
        if let keys { machine.scheduler.startShared(workers: keys.map(\.users)) }
        self.machine = machine
    }
}
