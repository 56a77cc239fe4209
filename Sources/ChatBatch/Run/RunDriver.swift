import ChatBatchCore
import Dispatch
import Foundation
import Synchronization

/// Runs one job: feeds the input to the `Scheduler`, sends what it allows through the transport, turns each
/// answer into an effect with `AnswerPolicy`, and hands every change to the checkpoint writer.
///
/// Data flows one way: input → scheduler → transport → checkpoint → output. The driver's own state is one
/// `RunState` behind a mutex, touched only from its serial queue (so the lock is never contended); the input
/// is read on a second queue, the checkpoint written on a third, and HTTP happens on the transport's thread.
/// A request is committed as in flight before it is sent, and its outcome is committed before its line is written.
final class RunDriver: Sendable {
    /// Why a run stopped before its input was done.
    enum Stop: Sendable {
        /// The key (401) or the server's certificate was refused: nothing else can succeed.
        case auth(String)
        case budget(String)
        case interrupted
        /// The checkpoint could not be written: what is in flight is cancelled (it cannot be recorded).
        case failed(String)
        /// An output file could not be written: sending stops, what is in flight finishes into the checkpoint.
        case outputFailed(String)
    }

    /// Everything the driver changes as the run goes; only touched on `queue`.
    struct RunState {
        var scheduler: Scheduler
        var summary = RunSummary()
        var stop: Stop? = nil
        var ended = false
        var inputDone = false
        var inputRequested = false
        var wakeArmedAt: UInt64? = nil
        var messagesShown = 0
        var random = SystemRandomNumberGenerator()
        var nextToken = 0
        var progressTotal: Int? = nil
        var recentFinishes: [(UInt64, Int)] = []
        /// The longest pause already announced (a long Retry-After is said once, not per 429).
        var announcedPause = 0.0
    }

    let config: RunConfiguration
    let writer: CheckpointWriter
    /// The input reader; used only on `inputQueue` (the lock is never contended).
    let feed: Mutex<InputFeed>
    /// SIGINT and SIGTERM, while the run handles them.
    let signalSources = Mutex<[any DispatchSourceSignal]>([])
    let transport: CurlTransport
    let headers: [String]
    /// TLS trust and proxy for every request.
    let connection: ConnectionOptions
    let policy: RetryPolicy
    /// Takes the API key out of every answer before anything reads it.
    let redactor: Redactor
    let log: @Sendable (String) -> Void
    let progress: ProgressOptions?
    let crashRecovered: Int
    /// The input's fingerprint as the run started (nil if unreadable), and, when it matches the last run that
    /// finished every line, that run's record: then the input is not read at all.
    let fingerprint: String?
    let finishedInput: CheckpointStore.FinishedInput?
    /// Stores new answers in the response cache (with `--cache`, unless read-only).
    let cacheWriter: CacheWriter?
    let started = DispatchTime.now().uptimeNanoseconds
    let queue = DispatchQueue(label: "chatbatch.run")
    let inputQueue = DispatchQueue(label: "chatbatch.input")
    let finished = DispatchSemaphore(value: 0)
    let abortNow = Atomic<Bool>(false)
    let state: Mutex<RunState>
    /// Jobs whose claims are being committed, by token (the writer's queue takes them out).
    let pendingClaims = Mutex<[Int: ScheduledJob]>([:])
    /// Answers waiting for the run queue.
    let completions = Mutex<(items: [(ScheduledJob, HTTPResponse, Double)], scheduled: Bool)>(([], false))

    /// Opens the checkpoint (refusing a busy, foreign or damaged one), reconciles the output files with it,
    /// and gets ready to run. Nothing is sent until `run()`.
    init(config: RunConfiguration, apiKey: String?, progress: ProgressOptions? = nil, log: @escaping @Sendable (String) -> Void) throws {
        self.config = config
        self.log = log
        self.progress = progress
        if let caCert = config.caCert, !FileManager.default.isReadableFile(atPath: caCert) {
            throw ChatBatchError(.badCACert, "cannot read the CA bundle \(caCert) given with --ca-cert (job key ca_cert)")
        }
        signal(SIGXFSZ, SIG_IGN)  // a file-size limit must fail a write, not kill the run
        for path in [config.checkpoint, config.output, config.errors] {
            let folder = (path as NSString).deletingLastPathComponent
            if !folder.isEmpty {
                try? FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            }
        }
        let store = try CheckpointStore(path: config.checkpoint)
        try OutputFiles.checkTargets(
            input: config.input, checkpoint: config.checkpoint,
            recorded: [.results: try store.outputPosition(.results)?.path, .errors: try store.outputPosition(.errors)?.path].compactMapValues { $0 },
            overwrite: config.overwrite, [.results: config.output, .errors: config.errors])
        let outputs = OutputFiles(resultsPath: config.output, errorsPath: config.errors, format: config.format)
        fingerprint = InputFingerprint.of(config)
        let opened = try store.openRun(
            sink: outputs, forgetRefusedModels: config.retryFailed, fingerprint: config.force || config.retryFailed ? nil : fingerprint, log: log)
        crashRecovered = opened.crashRecovered
        finishedInput = opened.finishedInput
        let failureBox = Mutex<(@Sendable (any Error, Bool) -> Void)?>(nil)
        let claimsBox = Mutex<(@Sendable ([Int], Bool) -> Void)?>(nil)
        writer = CheckpointWriter(
            store: store, sink: outputs, runID: opened.runID,
            onFailure: { error, outputOnly in failureBox.withLock { $0 }?(error, outputOnly) },
            onClaims: { tokens, committed in claimsBox.withLock { $0 }?(tokens, committed) })
        // A fresh checkpoint holds nothing to look up: the feed then skips the per-line lookups.
        let reader = opened.isEmpty || opened.finishedInput != nil ? nil : try CheckpointReader(path: config.checkpoint)
        var cacheReader: ResponseCache? = nil
        var cacheWriter: CacheWriter? = nil
        if let path = config.cache {
            if config.cacheMode.writes {
                cacheWriter = CacheWriter(cache: try ResponseCache(path: path, create: true), replace: config.cacheMode == .refresh, log: log)
            }
            cacheReader = try ResponseCache(path: path, create: true)
        }
        self.cacheWriter = cacheWriter
        feed = Mutex(try InputFeed(config: config, checkpoint: reader, writer: writer, hasInvalidRows: opened.hasInvalidRows, cache: cacheReader))
        transport = CurlTransport(maxConnections: config.concurrency + 8)
        policy = RetryPolicy(baseDelay: config.retryBaseDelay, maxDelay: config.retryMaxDelay)
        connection = ConnectionOptions.resolve(caCert: config.caCert, proxy: config.proxy, environment: ProcessInfo.processInfo.environment)
        state = Mutex(RunState(scheduler: Scheduler(
            config: config, spent: opened.spent, refusedModels: opened.refusedModels, now: DispatchTime.now().uptimeNanoseconds)))
        var h = ["Content-Type: application/json", "Accept: application/json, text/event-stream", "User-Agent: chatbatch/0.1"]
        if let apiKey, !apiKey.isEmpty { h.append("Authorization: Bearer \(apiKey)") }
        redactor = Redactor(secrets: [apiKey].compactMap { $0 })
        for (name, value) in config.headers.sorted(by: { $0.key < $1.key }) { h.append("\(name): \(value)") }
        headers = h
        failureBox.withLock {
            $0 = { [weak self] error, outputOnly in
                guard let driver = self else { return }
                driver.queue.async { driver.withState { driver.stopRun(outputOnly ? .outputFailed("\(error)") : .failed("\(error)"), &$0) } }
            }
        }
        claimsBox.withLock {
            $0 = { [weak self] tokens, committed in self?.claimed(tokens, committed: committed) }
        }
        if crashRecovered > 0 {
            log("chatbatch: \(crashRecovered) prompts were in flight when a previous run stopped; they will be sent again and counted as possibly billed twice")
        }
    }

    /// Runs to the end (or to a stop) and returns the summary; its `exit` is the process exit code.
    func run(handleSignals: Bool = true) -> RunSummary {
        if handleSignals { installSignalHandlers() }
        if let progress {
            if config.shard == nil && finishedInput == nil {
                inputQueue.async {
                    let n = countLines(self.config.input)
                    self.queue.async { self.withState { $0.progressTotal = n } }
                }
            }
            scheduleProgress(progress.interval)
        }
        queue.async {
            self.withState { s in
                if let known = self.finishedInput {
                    // Unchanged since a run that finished every line: every line is done or failed already.
                    s.inputDone = true
                    s.summary.inputUnchanged = true
                    s.summary.inputLines = known.done + known.failed
                    s.summary.alreadyDone = known.done
                    s.summary.alreadyFailed = known.failed
                    self.checkFinished(&s)
                } else {
                    self.requestInput(&s)
                }
            }
        }
        finished.wait()
        return state.withLock { $0.summary }
    }

    /// Runs `body` on the state; called only on `queue`, so the lock is never contended.
    func withState<T>(_ body: (inout RunState) -> T) -> T {
        dispatchPrecondition(condition: .onQueue(queue))
        return state.withLock { body(&$0) }
    }

    static func uptime() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

    // MARK: input

    func requestInput(_ s: inout RunState) {
        guard !s.inputDone, !s.inputRequested, s.stop == nil else { return }
        s.inputRequested = true
        let limit = max(256, config.concurrency * 2)
        inputQueue.async {
            let batch: FeedBatch
            do {
                batch = try self.feed.withLock { try $0.next(limit: limit) }
            } catch {
                self.queue.async { self.withState { self.stopRun(.failed("\(error)"), &$0) } }
                return
            }
            self.queue.async { self.withState { self.accept(batch, &$0) } }
        }
    }

    func accept(_ batch: FeedBatch, _ s: inout RunState) {
        s.inputRequested = false
        s.inputDone = batch.endOfInput
        s.summary.inputLines += batch.linesRead
        s.summary.invalid += batch.invalid
        s.summary.alreadyDone += batch.alreadyDone
        s.summary.alreadyFailed += batch.alreadyFailed
        s.summary.changed += batch.changed
        for m in batch.messages {
            s.messagesShown += 1
            if s.messagesShown <= 50 { log(m) } else if s.messagesShown == 51 { log("chatbatch: more input problems; see the errors file") }
        }
        for (request, answer) in batch.cached { answerFromCache(request, answer, &s) }
        for entry in batch.backfill { cacheWriter?.submit(entry) }
        s.scheduler.enqueue(batch.requests)
        pump(&s)
    }

    // MARK: sending

    /// Sends whatever the scheduler allows now, and arranges to be called again when it next may.
    func pump(_ s: inout RunState) {
        defer { checkFinished(&s) }
        guard s.stop == nil else { return }
        var claims: [ScheduledJob] = []
        decide: while true {
            switch s.scheduler.next(now: Self.uptime()) {
            case .send(let job):
                s.summary.attempts += 1
                if job.attempt == 1 {
                    s.summary.sent += 1
                    if config.cache != nil && config.cacheMode.reads { s.summary.cacheMisses += 1 }
                    if job.request.resentAfterCrash { s.summary.resentAfterCrash += 1 }
                }
                claims.append(job)
            case .refuse(let job, let refusal):
                refuseUnsent(job, refusal, &s)
            case .overBudget:
                stopRun(.budget(s.scheduler.budgetMessage), &s)
                break decide
            case .wait(let until):
                if let until { armWake(at: until, &s) }
                break decide
            }
        }
        for job in claims { claim(job, &s) }
        if s.scheduler.queuedFresh < config.concurrency { requestInput(&s) }
    }

    /// Calls `pump` again at `deadline` (a pause, a rate bucket refilling, a retry coming due).
    func armWake(at deadline: UInt64, _ s: inout RunState) {
        if let armed = s.wakeArmedAt, armed <= deadline { return }
        s.wakeArmedAt = deadline
        queue.asyncAfter(deadline: DispatchTime(uptimeNanoseconds: deadline)) {
            self.withState { s in
                if s.wakeArmedAt == deadline { s.wakeArmedAt = nil }
                self.pump(&s)
            }
        }
    }

    /// Commits the claim before the request may leave; `claimed` sends it once the commit is done.
    func claim(_ job: ScheduledJob, _ s: inout RunState) {
        let r = job.request
        s.nextToken += 1
        let token = s.nextToken
        pendingClaims.withLock { $0[token] = job }
        writer.submit(.claim(customID: r.customID, line: r.line, bodyHash: r.bodyHash, model: r.model, token: token))
    }

    /// Called by the writer once claims are committed (or refused): sends the committed ones in one batch.
    /// Runs on the writer's queue.
    func claimed(_ tokens: [Int], committed: Bool) {
        let jobs = pendingClaims.withLock { p in tokens.compactMap { p.removeValue(forKey: $0) } }
        if !committed || abortNow.load(ordering: .relaxed) {
            for job in jobs { completed(job, Self.withheld, startedAt: 0) }
            return
        }
        let startedAt = Date().timeIntervalSince1970
        transport.submit(jobs.map { job in
            let r = job.request
            var request = HTTPRequest(
                url: config.endpoint, headers: headers + ["X-Client-Request-Id: \(r.customID)"], body: r.body,
                connectTimeout: config.connectTimeout, timeout: config.timeout)
            request.connection = connection
            return (request, { [self] response in completed(job, response, startedAt: startedAt) })
        })
    }

    /// Queues an answer for the run queue; answers that arrive together are handled in one hop.
    func completed(_ job: ScheduledJob, _ response: HTTPResponse, startedAt: Double) {
        let schedule = completions.withLock { c -> Bool in
            c.items.append((job, response, startedAt))
            if c.scheduled { return false }
            c.scheduled = true
            return true
        }
        if schedule {
            queue.async {
                let items = self.completions.withLock { c -> [(ScheduledJob, HTTPResponse, Double)] in
                    c.scheduled = false
                    defer { c.items = [] }
                    return c.items
                }
                self.withState { s in
                    for (job, response, startedAt) in items { self.handle(job, response, startedAt: startedAt, &s) }
                    self.pump(&s)
                }
            }
        }
    }

    /// The answer a claimed request gets when it was never handed to libcurl.
    static let withheld = HTTPResponse(
        status: 0, headers: [:], body: [], failure: TransportFailure(kind: .withheld, curlCode: 0, message: "not sent"),
        firstByteSeconds: 0, totalSeconds: 0)
}
