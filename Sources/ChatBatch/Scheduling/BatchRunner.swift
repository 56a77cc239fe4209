import ChatBatchCore
import Dispatch
import Foundation
import Synchronization

/// Runs one job: reads the input, sends what is not done yet with at most `concurrency` requests in flight,
/// retries by the seed's rules, commits every step to the checkpoint, and writes the output files.
///
/// All scheduling state lives on one serial queue; the input is read on a second, the checkpoint written
/// on a third, and HTTP happens on the transport's own thread. A request is committed as in flight
/// before it is sent, and its outcome is committed before its line is written.
public final class BatchRunner: @unchecked Sendable {
    // @unchecked Sendable: every `var` below is read and written only on `queue`.
    struct Job {
        var request: PreparedRequest
        var attempt = 0
        /// The most this request can cost (budget), and the tokens it is expected to use (tokens per minute).
        var worst = 0.0
        var estimate = 0.0
        /// The adaptive limit's epoch when it was sent, and whether it is the warm-up probe.
        var sentEpoch = 0
        var probe = false
        /// The first request for its model: until it is answered, the model's other lines wait (one request per refused model).
        var modelProbe = false
        /// Tokens and dollars already billed for this prompt (answers that failed their check), and how often it was asked again.
        var paidPrompt = 0
        var paidCompletion = 0
        var paidCost = 0.0
        var invalidRetries = 0
    }

    enum Stop {
        case auth(String)
        case budget(String)
        case interrupted
        case failed(String)
    }

    let config: RunConfiguration
    let store: CheckpointStore
    let writer: CheckpointWriter
    let feed: InputFeed
    let transport: CurlTransport
    let headers: [String]
    let policy: RetryPolicy
    let log: @Sendable (String) -> Void
    let runID: Int
    let queue = DispatchQueue(label: "chatbatch.run")
    let inputQueue = DispatchQueue(label: "chatbatch.input")
    let finished = DispatchSemaphore(value: 0)
    let abortNow = Atomic<Bool>(false)

    var summary = RunSummary()
    var ready: [PreparedRequest] = []
    var readyHead = 0
    var retryReady: [Job] = []
    var inflight = 0
    var waitingRetries = 0
    var inputDone = false
    var inputRequested = false
    var pausedUntil = DispatchTime(uptimeNanoseconds: 0)
    var stop: Stop? = nil
    /// Models the provider refused (this run or an earlier one): their lines go to the errors file unsent.
    var refusedModels: [String: ModelRefusal]
    /// Models a request has been answered for (not refused); a model not in here is probed by one request first.
    var provenModels = Set<String>()
    /// Models whose first request is out; their other lines wait in `heldForModel`.
    var probingModels = Set<String>()
    var heldForModel: [String: [Job]] = [:]
    var heldCount = 0
    var crashRecovered = 0
    var messagesShown = 0
    var ended = false
    var started = DispatchTime.now()
    var random = SystemRandomNumberGenerator()
    var signalSources: [any DispatchSourceSignal] = []
    var nextToken = 0
    var limiter: AdaptiveLimit
    var budget: Budget
    var requestBucket: TokenBucket?
    var tokenBucket: TokenBucket?
    /// Real tokens ÷ estimated tokens, smoothed: corrects the tokens-per-minute estimates as answers arrive.
    var tokenRatio = 1.0
    var warmedUp: Bool
    /// The warm-up probe is on the wire, or waiting to be retried (then only it may be sent).
    var probeInFlight = false
    var probeWaiting = false
    var wakeArmedAt: DispatchTime? = nil
    /// Jobs whose claims are being committed, by token (the writer's queue takes them out).
    let pendingClaims = Mutex<[Int: Job]>([:])
    /// Answers waiting for the run queue.
    let completions = Mutex<(items: [(Job, HTTPResponse, Double)], scheduled: Bool)>(([], false))

    /// Opens the checkpoint (refusing a busy, foreign or damaged one), reconciles the output files with it,
    /// and gets ready to run. Nothing is sent until `run()`.
    let progress: ProgressOptions?
    var progressTotal: Int? = nil
    var recentFinishes: [(UInt64, Int)] = []

    public init(config: RunConfiguration, apiKey: String?, progress: ProgressOptions? = nil, log: @escaping @Sendable (String) -> Void) throws {
        self.config = config
        self.log = log
        self.progress = progress
        signal(SIGXFSZ, SIG_IGN)  // a file-size limit must fail a write, not kill the run
        for path in [config.checkpoint, config.output, config.errors] {
            let folder = (path as NSString).deletingLastPathComponent
            if !folder.isEmpty {
                try? FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            }
        }
        store = try CheckpointStore(path: config.checkpoint)
        let outputs = OutputFiles(resultsPath: config.output, errorsPath: config.errors, format: config.format)
        try outputs.reconcile(store: store, log: log)
        crashRecovered = try store.recoverInflight()
        runID = try store.beginRun()
        if config.retryFailed { try store.clearRefusedModels() }
        refusedModels = try store.refusedModels()
        let hasInvalid = (try store.db.query("SELECT count(*) FROM requests WHERE error_code='invalid_line'").first?.first?.int ?? 0) > 0
        let failureBox = Mutex<(@Sendable (any Error) -> Void)?>(nil)
        let claimsBox = Mutex<(@Sendable ([Int], Bool) -> Void)?>(nil)
        writer = CheckpointWriter(
            store: store, outputs: outputs, runID: runID,
            onFailure: { error in failureBox.withLock { $0 }?(error) },
            onClaims: { tokens, committed in claimsBox.withLock { $0 }?(tokens, committed) })
        // A fresh checkpoint holds nothing to look up: the feed then skips the per-line lookups.
        let reader = try store.isEmpty() ? nil : try CheckpointReader(path: config.checkpoint)
        feed = try InputFeed(config: config, checkpoint: reader, writer: writer, hasInvalidRows: hasInvalid)
        transport = CurlTransport(maxConnections: config.concurrency + 8)
        limiter = AdaptiveLimit(maximum: config.concurrency, adaptive: config.adaptiveConcurrency)
        budget = Budget(cap: config.maxCost, spent: try store.totals().cost)
        let now = DispatchTime.now().uptimeNanoseconds
        requestBucket = config.requestsPerMinute.map { TokenBucket(perMinute: $0, now: now) }
        tokenBucket = config.tokensPerMinute.map { TokenBucket(perMinute: $0, now: now) }
        warmedUp = !config.warmup
        policy = RetryPolicy(baseDelay: config.retryBaseDelay, maxDelay: config.retryMaxDelay)
        var h = ["Content-Type: application/json", "Accept: application/json, text/event-stream", "User-Agent: chatbatch/0.1"]
        if let apiKey, !apiKey.isEmpty { h.append("Authorization: Bearer \(apiKey)") }
        for (name, value) in config.headers.sorted(by: { $0.key < $1.key }) { h.append("\(name): \(value)") }
        headers = h
        failureBox.withLock {
            $0 = { [weak self] error in
                guard let runner = self else { return }
                runner.queue.async { runner.stopRun(.failed("\(error)")) }
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
    public func run(handleSignals: Bool = true) -> RunSummary {
        started = .now()
        if handleSignals { installSignalHandlers() }
        if let progress {
            if config.shard == nil { inputQueue.async { let n = countLines(self.config.input); self.queue.async { self.progressTotal = n } } }
            scheduleProgress(progress.interval)
        }
        queue.async { self.requestInput() }
        finished.wait()
        return summary
    }

    // MARK: input

    func requestInput() {
        guard !inputDone, !inputRequested, stop == nil else { return }
        inputRequested = true
        let limit = max(256, config.concurrency * 2)
        inputQueue.async {
            let batch: FeedBatch
            do {
                batch = try self.feed.next(limit: limit)
            } catch {
                self.queue.async { self.stopRun(.failed("\(error)")) }
                return
            }
            self.queue.async { self.accept(batch) }
        }
    }

    func accept(_ batch: FeedBatch) {
        inputRequested = false
        inputDone = batch.endOfInput
        summary.inputLines += batch.linesRead
        summary.invalid += batch.invalid
        summary.alreadyDone += batch.alreadyDone
        summary.alreadyFailed += batch.alreadyFailed
        summary.changed += batch.changed
        for m in batch.messages {
            messagesShown += 1
            if messagesShown <= 50 { log(m) } else if messagesShown == 51 { log("chatbatch: more input problems; see the errors file") }
        }
        if readyHead > 4096 { ready.removeFirst(readyHead); readyHead = 0 }
        ready.append(contentsOf: batch.requests)
        pump()
    }

    // MARK: sending

    /// Sends while there is room, work, and no pause, limit, budget or stop in the way.
    func pump() {
        defer { checkFinished() }
        guard stop == nil else { return }
        if DispatchTime.now() < pausedUntil {
            armWake(at: pausedUntil)
            return
        }
        var room = limiter.limit
        if !warmedUp {
            if probeInFlight { room = 0 } else if probeWaiting { room = retryReady.first?.probe == true ? 1 : 0 } else { room = 1 }
        }
        while inflight < room {
            var job: Job
            let fromRetry = !retryReady.isEmpty
            if fromRetry {
                job = retryReady[0]
            } else if readyHead < ready.count {
                job = Job(request: ready[readyHead])
            } else {
                break
            }
            let r = job.request
            if let model = r.model, let refusal = refusedModels[model] {
                take(fromRetry)
                refuseUnsent(job, refusal)
                continue
            }
            let probesModel = config.warmup && r.model.map { !provenModels.contains($0) } == true
            if probesModel && !job.modelProbe && probingModels.contains(r.model!) {
                take(fromRetry)
                heldForModel[r.model!, default: []].append(job)
                heldCount += 1
                continue
            }
            job.worst = config.worstCost(promptTokens: r.promptTokens, maxTokens: r.maxTokens)
            if !budget.allows(job.worst) {
                let cap = budget.cap ?? 0
                stopRun(.budget(String(format: "budget: $%.6f spent and $%.6f at most in flight; one more request could pass the $%.6f cap. Run again with a larger --max-cost to carry on", budget.spent, budget.inflightWorst, cap)))
                return
            }
            job.estimate = Double(r.promptTokens + config.completionBound(r.maxTokens)) * tokenRatio
            let now = DispatchTime.now().uptimeNanoseconds
            var wait = requestBucket?.wait(for: 1, now: now) ?? 0
            wait = max(wait, tokenBucket?.wait(for: job.estimate, now: now) ?? 0)
            if wait > 0 {
                armWake(at: .now() + wait)
                break
            }
            take(fromRetry)
            requestBucket?.take(1)
            tokenBucket?.take(job.estimate)
            budget.inflightWorst += job.worst
            job.sentEpoch = limiter.epoch
            if probesModel {
                job.modelProbe = true
                probingModels.insert(r.model!)
            }
            if !warmedUp {
                job.probe = true
                probeInFlight = true
                probeWaiting = false
            }
            send(job)
            if !warmedUp { break }
        }
        if ready.count - readyHead < config.concurrency { requestInput() }
    }

    /// Removes the job `pump` just looked at from its queue.
    private func take(_ fromRetry: Bool) {
        if fromRetry { retryReady.removeFirst() } else { readyHead += 1 }
    }

    /// Calls `pump` again at `deadline` (a pause, or a rate bucket refilling).
    func armWake(at deadline: DispatchTime) {
        if let armed = wakeArmedAt, armed <= deadline { return }
        wakeArmedAt = deadline
        queue.asyncAfter(deadline: deadline) {
            if self.wakeArmedAt == deadline { self.wakeArmedAt = nil }
            self.pump()
        }
    }

    func send(_ next: Job) {
        var job = next
        job.attempt += 1
        inflight += 1
        summary.attempts += 1
        if job.attempt == 1 {
            summary.sent += 1
            if job.request.resentAfterCrash { summary.resentAfterCrash += 1 }
        }
        let r = job.request
        nextToken += 1
        let token = nextToken
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
            let request = HTTPRequest(
                url: config.endpoint, headers: headers + ["X-Client-Request-Id: \(r.customID)"], body: r.body,
                connectTimeout: config.connectTimeout, timeout: config.timeout)
            return (request, { [self] response in completed(job, response, startedAt: startedAt) })
        })
    }

    /// Queues an answer for the run queue; answers that arrive together are handled in one hop.
    func completed(_ job: Job, _ response: HTTPResponse, startedAt: Double) {
        let schedule = completions.withLock { c -> Bool in
            c.items.append((job, response, startedAt))
            if c.scheduled { return false }
            c.scheduled = true
            return true
        }
        if schedule {
            queue.async {
                let items = self.completions.withLock { c -> [(Job, HTTPResponse, Double)] in
                    c.scheduled = false
                    defer { c.items = [] }
                    return c.items
                }
                for (job, response, startedAt) in items { self.handle(job, response, startedAt: startedAt) }
                self.pump()
            }
        }
    }
}

extension BatchRunner {
    /// The answer a claimed request gets when it was never handed to libcurl.
    static let withheld = HTTPResponse(
        status: 0, headers: [:], body: [], failure: TransportFailure(kind: .withheld, curlCode: 0, message: "not sent"),
        firstByteSeconds: 0, totalSeconds: 0)
}
