import ChatBatchCore
import Dispatch
import Foundation
import Synchronization

/// Carries out a run: owns the queues, the transport, the checkpoint writer, the input feed and the cache writer,
/// turns every callback into an event for the `RunMachine` on one queue, and does what the machine answers.
/// It decides nothing itself.
///
/// A turn on the run queue: the machine handles an event; the executor commits everything the turn recorded (claims
/// and answers together, one transaction), appends the committed lines to the output files, and only then hands
/// the turn's requests to the transport, so a crash can never hide a request that was sent.
final class RunDriver: Sendable {
    /// The machine and the writer, touched only on `queue` (the lock is never contended).
    struct Room {
        var machine: RunMachine
        let writer: CheckpointWriter
    }

    let opened: PreparedRun
    let queue = DispatchQueue(label: "chatbatch.run")
    let inputQueue = DispatchQueue(label: "chatbatch.input")
    let transport: CurlTransport
    let log: @Sendable (String) -> Void
    let progress: ProgressOptions?
    let room: Mutex<Room>
    /// The input reader; used only on `inputQueue`.
    let feed: Mutex<InputFeed>
    /// Answers waiting for the run queue: answers that arrive together are handled in one turn.
    let completions = Mutex<(items: [Answer], scheduled: Bool)>(([], false))
    let finished = DispatchSemaphore(value: 0)
    let result = Mutex<RunSummary?>(nil)
    /// Where the metrics file is written from (off the run queue); the wall clock when the run started.
    let metricsQueue = DispatchQueue(label: "chatbatch.metrics")
    let startTime = Date().timeIntervalSince1970
    let metricsWarned = Mutex(false)
    /// The metrics file as the run found it: there already (a run that has nothing to do keeps it as the last run that
    /// did work wrote it, as the summary does), and the last success it recorded (carried forward).
    let metricsBefore: (existed: Bool, lastSuccess: Double?)
    /// Where controls (`chatbatch control`) are read from: a connection of its own on a queue of its own, and the
    /// last control handed to the machine.
    let controlQueue = DispatchQueue(label: "chatbatch.control")
    let controls = Mutex<(db: SQLiteDatabase?, after: Int)>((nil, 0))

    init(_ opened: PreparedRun, progress: ProgressOptions?, log: @escaping @Sendable (String) -> Void) {
        self.opened = opened
        let metricsPath = opened.config.files.metricsFile
        metricsBefore = (
            metricsPath.map { FileManager.default.fileExists(atPath: $0) } ?? false,
            metricsPath.flatMap { MetricsSnapshot.lastSuccessTime(inFileAt: $0) }
        )
        self.progress = progress
        self.log = log
        transport = CurlTransport(maxConnections: opened.config.concurrency + 8)
        room = Mutex(Room(machine: opened.machine, writer: opened.writer))
        feed = Mutex(opened.feed)
    }

    static func now() -> Moment {
        Moment(uptime: DispatchTime.now().uptimeNanoseconds, wall: Date().timeIntervalSince1970)
    }

    /// Runs to the end (or to a stop) and returns the summary; its `exit` is the process exit code.
    func run(handleSignals: Bool = true) -> RunSummary {
        if let progress {
            let config = opened.config
            if config.shape.shard == nil && opened.finishedInput == nil && opened.storeWorker == nil {
                inputQueue.async { if let n = countLines(config.files.input) { self.deliver(.inputCounted(n)) } }
            }
            repeatEvery(progress.interval) { [self] in
                let snapshot = room.withLock { r in r.machine.finished ? nil : r.machine.snapshot(Self.now()) }
                if let snapshot { progress.sink(snapshot, false) }
                return snapshot != nil
            }
        }
        repeatEvery(1) { [self] in
            deliver(.tick)
            return !room.withLock { $0.machine.finished }
        }
        if let path = opened.config.files.metricsFile {
            let job = opened.config.files.jobName
            // Until it sends something, a run leaves an existing file alone: with nothing to do, it is kept.
            let holding: @Sendable (RunMachine) -> Bool = { [metricsBefore] in
                metricsBefore.existed && $0.summary.sentNothingNew
            }
            let first = room.withLock { holding($0.machine) ? nil : $0.machine.metrics(job: job, startTime: startTime) }
            if let first { metricsQueue.async { self.write(first, to: path) } }
            repeatEvery(opened.config.files.metricsInterval) { [self] in
                let snapshot = room.withLock { r in
                    r.machine.finished || holding(r.machine) ? nil : r.machine.metrics(job: job, startTime: startTime)
                }
                if let snapshot { metricsQueue.async { self.write(snapshot, to: path) } }
                return !room.withLock { $0.machine.finished }
            }
        }
        if !opened.controlsForThisRun.isEmpty {
            controls.withLock { $0.after = opened.controlsForThisRun.map(\.id).max() ?? 0 }
            deliver(.control(opened.controlsForThisRun))
        }
        if let worker = opened.storeWorker {
            worker.recorded = { [self] in storeRecorded($0) }
            worker.window = { [self] in room.withLock { $0.machine.readAhead } }
            worker.startRenewing(log: log)
            shareKeys(worker)
        }
        deliver(.start)
        watchControls()
        // After the start: a signal that came while the run was being prepared stops it as its first event.
        if handleSignals { installSignalHandlers() }
        finished.wait()
        return result.withLock { $0! }
    }

    /// Hands an event to the machine on the run queue and carries out what it answers.
    func deliver(_ event: RunEvent) {
        queue.async { self.turn(event) }
    }

    func turn(_ event: RunEvent) {
        dispatchPrecondition(condition: .onQueue(queue))
        var pending = [event]
        while !pending.isEmpty {
            let event = pending.removeFirst()
            let (actions, writer) = room.withLock { r in (r.machine.handle(event, at: Self.now()), r.writer) }
            pending += perform(actions, writer: writer)
        }
    }

    /// Does what one turn decided; returns the events its outcome makes (a failed commit).
    private func perform(_ actions: [RunAction], writer: CheckpointWriter) -> [RunEvent] {
        var ops: [CheckpointOp] = []
        let sends: [ScheduledJob] = actions.compactMap {
            if case .send(let job) = $0 { return job }
            return nil
        }
        for action in actions {
            switch action {
            case .record(let op): ops.append(op)
            case .send: continue
            case .store(let entry): opened.cacheWriter?.submit(entry)
            case .readInput(let limit): read(limit)
            case .wake(let at): queue.asyncAfter(deadline: DispatchTime(uptimeNanoseconds: at)) { self.turn(.timer) }
            case .log(let message): log(message)
            case .cancelInFlight(let after):
                if after <= 0 {
                    transport.cancelAll()
                } else {
                    queue.asyncAfter(deadline: .now() + after) { self.transport.cancelAll() }
                }
            case .finish:
                opened.storeWorker?.source.cancel()
                let readAll = room.withLock { $0.machine.inputDone }
                inputQueue.async { self.closeInput(readAll: readAll) }
            }
        }
        var events: [RunEvent] = []
        if !ops.isEmpty {
            switch writer.commit(ops) {
            case .committed: break
            case .outputFailed(let error): events.append(.writeFailed(error.message, outputOnly: true))
            case .checkpointFailed(let error):
                // Nothing of this turn is recorded: its requests must not leave.
                return [.notSent(sends), .writeFailed(error.message, outputOnly: false)]
            }
        }
        if let worker = opened.storeWorker {
            // The store records the turn (with the turns that came while it recorded the last) before its requests
            // leave: they are sent from `storeRecorded`, on the run queue.
            // A request whose line was recorded ahead as about to leave leaves now (see `SendReserve`).
            let now = worker.leavingNow(sends)
            let later = now.isEmpty ? sends : sends.filter { s in !now.contains { $0.request.line == s.request.line } }
            if !ops.isEmpty || !sends.isEmpty { worker.submit(ops, later, sentAhead: now) }
            if !now.isEmpty { send(now) }
        } else if !sends.isEmpty {
            send(sends)
        }
        return events
    }

    func send(_ jobs: [ScheduledJob]) {
        let startedAt = Date().timeIntervalSince1970
        let calls = opened.calls
        transport.submit(
            jobs.map { job in
                (
                    calls[job.route].request(for: job.request),
                    { [self] response in completed(Answer(job: job, response: response, startedAt: startedAt)) }
                )
            })
    }

    /// Queues an answer for the run queue (on the transport thread: kept short); the key is taken out of it there.
    private func completed(_ answer: Answer) {
        let schedule = completions.withLock { c -> Bool in
            c.items.append(answer)
            defer { c.scheduled = true }
            return !c.scheduled
        }
        guard schedule else { return }
        queue.async {
            let items = self.completions.withLock { c -> [Answer] in
                c.scheduled = false
                defer { c.items = [] }
                return c.items
            }
            let redactor = self.opened.redactor
            self.turn(
                .answered(
                    items.map {
                        var a = $0
                        a.response = redactor.scrubAnswer(a.response)
                        return a
                    }))
        }
    }

    private func read(_ limit: Int) {
        inputQueue.async {
            do {
                let batch = try self.feed.withLock { try $0.next(limit: limit) }
                self.deliver(.inputRead(batch))
            } catch {
                self.deliver(.inputFailed("\(error)"))
            }
        }
    }

    /// Replaces the metrics file (temporary file and rename); a failure is said once and never stops the run.
    private func write(_ snapshot: MetricsSnapshot, to path: String) {
        var metrics = snapshot
        // Only a run that ended with exit 0 moves the last success; otherwise the file it replaces said it.
        metrics.lastSuccessTime =
            metrics.exitCode == RunExit.allDone.rawValue ? metrics.endTime : metricsBefore.lastSuccess
        metrics.writtenTime = Date().timeIntervalSince1970
        do {
            try OutputFiles.replace(path, with: Array(metrics.text.utf8), mode: 0o644)
        } catch {
            let first = metricsWarned.withLock { warned in
                defer { warned = true }
                return !warned
            }
            if first {
                log("chatbatch: warning: cannot write the metrics to \(path) (\(error.message)); the run goes on")
            }
        }
    }

    /// Calls `body` every `interval` seconds on the run queue while it returns true.
    private func repeatEvery(_ interval: Double, _ body: @escaping @Sendable () -> Bool) {
        queue.asyncAfter(deadline: .now() + interval) { if body() { self.repeatEvery(interval, body) } }
    }

    /// Reads new controls four times a second (one indexed query on a read connection) until the run finishes, and
    /// hands them to the machine; the writer records what came of each.
    private func watchControls() {
        controlQueue.asyncAfter(deadline: .now() + 0.25) { [self] in
            guard !room.withLock({ $0.machine.finished }) else {
                controls.withLock { $0.db?.close() }
                return
            }
            let found =
                opened.storeWorker?.pendingControls()
                ?? controls.withLock { c -> [ControlRequest] in
                    if c.db == nil { c.db = try? SQLiteDatabase(path: opened.writer.store.path, readOnly: true) }
                    guard let db = c.db, let list = try? CheckpointStore.pendingControls(in: db, after: c.after) else {
                        return []
                    }
                    c.after = list.map(\.id).max() ?? c.after
                    return list
                }
            if !found.isEmpty { deliver(.control(found)) }
            watchControls()
        }
    }

    private func installSignalHandlers() {
        StopSignals.attach { [self] in queue.async { self.turn(.signal) } }
    }

    /// On the input queue (idle by then: the machine asks for no read once it finishes, and a read it asked for
    /// before is done, so closing the feed cannot race one): counts what a stopped run left unread, closes the feed,
    /// and hands the rest of the ending to the run queue.
    private func closeInput(readAll: Bool) {
        // A store's lines are not this worker's to count (counting would claim them).
        let unread = readAll ? 0 : opened.storeWorker != nil ? nil : feed.withLock { $0.countRest(seconds: 2) }
        feed.withLock { $0.close() }
        queue.async { self.windDown(unread: unread) }
    }

    /// Winds the run down on the run queue, where the machine and the writer live: stops the transport, ends the
    /// checkpoint's writing, records the summary, and writes the last metrics and progress.
    private func windDown(unread: Int?) {
        dispatchPrecondition(condition: .onQueue(queue))
        StopSignals.detach()
        transport.shutdown()
        opened.cacheWriter?.close()
        let (machine, writer) = room.withLock { ($0.machine, $0.writer) }
        let complete =
            machine.stop == nil && machine.summary.changed == 0 && machine.summary.otherEndpoint == 0
            && machine.inputDone
        let inputLines =
            machine.inputDone && machine.finishedInput == nil && opened.config.shape.shard == nil
            ? machine.summary.inputLines : nil
        let ending = writer.endRun(
            log: log, fingerprint: complete ? opened.fingerprint : nil, known: opened.finishedInput,
            inputLines: inputLines, ceilings: machine.learntCeilings)
        let summary = machine.conclude(ending, unread: unread, now: Self.now())
        writer.close(exitCode: summary.exit.rawValue, summary: summary.json)
        if let worker = opened.storeWorker {
            finishInStore(worker, exitCode: summary.exit.rawValue, summary: summary.json)
        }
        if let path = opened.config.files.metricsFile {
            if summary.keeps(fileThatExisted: metricsBefore.existed) {
                log("chatbatch: \(path) kept as the last run that did some work wrote it (this run had nothing to do)")
            } else {
                let last = machine.metrics(
                    job: opened.config.files.jobName, startTime: startTime,
                    ended: (summary, Date().timeIntervalSince1970))
                // After any periodic write still queued there, so the last one written is this one.
                metricsQueue.sync { write(last, to: path) }
            }
        }
        if let progress { progress.sink(room.withLock { $0.machine.snapshot(Self.now()) }, true) }
        result.withLock { $0 = summary }
        finished.signal()
    }
}
