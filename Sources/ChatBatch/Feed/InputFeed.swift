import ChatBatchCore
import Dispatch

/// What the feed hands the run per batch, and what it settled without sending.
struct FeedBatch: Sendable {
    var requests: [PreparedRequest] = []
    var linesRead = 0
    var invalid = 0
    var alreadyDone = 0
    var alreadyFailed = 0
    var changed = 0
    /// Lines answered by another endpoint, not sent (`--other-endpoint-answers ask`).
    var otherEndpoint = 0
    var endOfInput = false
    var messages: [String] = []
    /// Invalid lines, as their errors-file records.
    var settled: [FinishedRecord] = []
    /// Rows whose answers are to be replaced (a forced resend, a retried failure, another endpoint's answer).
    var superseded: [String] = []
    /// `line-N` rows of lines that were invalid and are fixed now (they have their own id).
    var forgotten: [String] = []
    /// Requests the response cache answers: not sent.
    var cached: [(PreparedRequest, CachedAnswer)] = []
    /// Answers done in the checkpoint but missing from the cache (a run killed before storing them): to store.
    var backfill: [CacheWriter.Entry] = []
}

/// Reads the input and gathers, line by line, the facts the run's rules need: the request built from the line (or why
/// it is invalid, settled as an errors-file record), what the checkpoint holds of its custom_id, and the response
/// cache's answer. What to do with a line the checkpoint knows is `ResumePolicy`'s verdict; the feed carries it out
/// (a lookup in the cache only for a line to send, a backfill only for a line done). It only reads: every change
/// comes back in the batch, for the run to record. Used only on the input queue.
///
/// Duplicate custom_ids are caught with a set of 64-bit hashes of the ids seen, so memory stays at about
/// 16 bytes a line rather than a copy of every id.
final class InputFeed {
    let path: String
    let reader: any LineSource
    let builder: RequestBuilder
    let checkpoint: CheckpointReader?
    let config: RunConfiguration
    let checkInvalidRows: Bool
    /// The response cache (nil without `--cache`): looked up unless refreshing.
    let cache: ResponseCache?
    /// Backfill the cache from the checkpoint (a run, not `validate`).
    let backfills: Bool
    /// The resume rules, with the run's choices and endpoints.
    let policy: ResumePolicy
    /// `validate`: a line that is invalid is counted so even when a run recorded it already (a gate before a nightly
    /// run must not pass a broken file because the last run saw the same break).
    let recountsInvalid: Bool
    var seen = Set<UInt64>()
    var done = false
    /// Reasons already said, with how many more lines had the same one (said as one count at the end).
    private var repeats: [String: Int] = [:]
    private var unknownFields: Set<String> = []
    /// The first embeddings line without a price was said.
    private var saidUnpriced = false
    private var fakeResends = 0
    /// Warnings to give with the first batch (request defaults with fields that are not Chat Completions fields).
    private var startWarnings: [String] = []

    init(
        config: RunConfiguration, checkpoint: CheckpointReader?, hasInvalidRows: Bool, cache: ResponseCache? = nil,
        backfills: Bool = false,
        endpoints: EndpointClaims = EndpointClaims(), recountsInvalid: Bool = false, source: (any LineSource)? = nil
    ) throws(ChatBatchError) {
        self.recountsInvalid = recountsInvalid
        self.cache = cache
        self.config = config
        self.path = config.files.inputLabel
        // The input file, unless the lines come from elsewhere (a job's store).
        if let source { self.reader = source } else { self.reader = try LineReader(path: config.files.input) }
        self.builder = try RequestBuilder(config: config)
        self.checkpoint = checkpoint
        self.checkInvalidRows = hasInvalidRows
        self.backfills = backfills
        policy = ResumePolicy(
            force: config.choices.force, retryFailed: config.choices.retryFailed, endpoints: endpoints)
        for key in config.shape.requestDefaults.keys where !RequestFields.known.contains(key) {
            unknownFields.insert(key)
            startWarnings.append(FeedMessages.unknownDefault(key, guess: RequestFields.suggestion(for: key)))
        }
    }

    /// Closes the checkpoint connection; the feed reads no more.
    func close() {
        checkpoint?.close()
        cache?.close()
    }

    /// Reads on until `limit` lines are ready to send, answered by the cache or settled as invalid, or the input ends.
    func next(limit: Int) throws -> FeedBatch {
        // One read transaction per batch on each database the batch looks lines up in.
        let inCache: () throws -> FeedBatch = { [self] in
            if let cache, config.cache.mode.reads { return try cache.batch { try read(limit: limit) } }
            return try read(limit: limit)
        }
        if let checkpoint { return try checkpoint.batch(inCache) }
        return try inCache()
    }

    private func read(limit: Int) throws -> FeedBatch {
        var batch = FeedBatch()
        batch.messages = startWarnings
        startWarnings = []
        // Lines the cache answers and invalid lines count too: an input the cache answers whole, or one whose every
        // line
        // is invalid (a missing setting), is not one batch the size of the input held in memory.
        reader.expect(limit)
        while batch.requests.count + batch.cached.count + batch.settled.count < limit {
            // Lines another worker holds may take minutes: what is read goes now, not after them.
            if batch.linesRead > 0, try !reader.hasLineNow() { break }
            guard let raw = try reader.next() else {
                done = true
                batch.endOfInput = true
                sayCounts(into: &batch)
                break
            }
            if raw.isBlank { continue }
            let parsed = builder.parse(raw, file: path)
            if let shard = config.shape.shard {
                switch parsed {
                case .invalid(let key, _, _, _): if !shard.contains(key) { continue }
                case .request(let r): if !shard.contains(r.customID) { continue }
                }
            }
            batch.linesRead += 1
            switch parsed {
            case .invalid(let key, let customID, let line, let reason):
                try recordInvalid(key: key, customID: customID, line: line, reason: reason, into: &batch)
            case .request(let request):
                let h = StableHash.of(request.customID)
                // An earlier line has the id: read here, or (a store's job) held by any worker.
                if seen.contains(h) || reader.earlierLine(sameIDAs: request.line) != nil {
                    try recordInvalid(
                        key: "line-\(request.line)", customID: request.customID, line: request.line,
                        reason: FeedMessages.duplicateCustomID("\(path):\(request.line)", customID: request.customID),
                        into: &batch)
                    continue
                }
                seen.insert(h)
                for field in request.unknownFields ?? [] where !unknownFields.contains(field) {
                    unknownFields.insert(field)
                    batch.messages.append(
                        FeedMessages.unknownField(
                            "\(path):\(request.line)", field: field,
                            guess: RequestFields.suggestion(for: field, in: request.endpoint),
                            endpoint: request.endpoint))
                }
                if request.endpoint == .embeddings && !saidUnpriced && !config.embeddingsPriced {
                    saidUnpriced = true
                    batch.messages.append(FeedMessages.unpricedEmbeddings("\(path):\(request.line)"))
                }
                var request = request
                request.unknownFields = nil
                guard try admit(&request, into: &batch) else { continue }
                if let cache, config.cache.mode.reads, let key = request.cacheKey, let answer = try cache.lookup(key) {
                    batch.cached.append((request, answer))
                } else {
                    batch.requests.append(request)
                }
            }
        }
        return batch
    }

    /// How many lines still to send the rest of the input holds that the checkpoint has no row for (after a stopped
    /// run), reading for at most `seconds`; nil when it could not finish in time.
    func countRest(seconds: Double) -> Int? {
        let deadline = DispatchTime.now().uptimeNanoseconds + UInt64(seconds * 1e9)
        var count = 0
        while !done {
            guard DispatchTime.now().uptimeNanoseconds < deadline, let batch = try? next(limit: 1024) else {
                return nil
            }
            count += batch.requests.filter { !$0.hasRow }.count
        }
        return count
    }

    /// Refuses, in one message and before anything is read or sent, a file whose first lines are not JSON
    /// objects at all (a CSV given by mistake).
    static func refuseIfNotJSONL(_ path: String) throws(ChatBatchError) {
        let reader = try LineReader(path: path)
        var looked = 0
        var sample = ""
        while looked < 3, let raw = try reader.next() {
            guard let first = raw.bytes.first(where: { $0 != 0x20 && $0 != 0x09 }) else { continue }  // blank
            if first == UInt8(ascii: "{") || raw.oversize != nil { return }
            looked += 1
            if sample.isEmpty {
                sample = "line \(raw.number): " + String(decoding: raw.bytes.prefix(60), as: UTF8.self)
            }
        }
        guard looked == 3 else { return }
        throw ChatBatchError(.notJSONL, FeedMessages.notJSONL(path, sample: sample))
    }

    /// True when the request must be sent by this run, as `ResumePolicy` decides from what the checkpoint holds.
    private func admit(_ request: inout PreparedRequest, into batch: inout FeedBatch) throws -> Bool {
        if checkInvalidRows, request.customID != "line-\(request.line)",
            let old = try checkpoint?.prior("line-\(request.line)"), old.state == .failed
        {
            batch.forgotten.append("line-\(request.line)")  // the line was invalid before and is fixed now
        }
        let prior = try checkpoint?.prior(request.customID)
        request.hasRow = prior != nil
        switch policy.verdict(bodyHash: request.bodyHash, prior: prior) {
        case .send(let resentAfterCrash, let supersede, let fakeAnswer):
            request.resentAfterCrash = resentAfterCrash || reader.resentAfterCrash(line: request.line)
            if supersede { batch.superseded.append(request.customID) }
            if fakeAnswer { fakeResends += 1 }
            return true
        case .alreadyDone:
            batch.alreadyDone += 1
            if backfills, let cache, config.cache.mode.writes, let key = request.cacheKey, try !cache.contains(key),
                let line = try checkpoint?.output(request.customID), let answer = CachedAnswer(resultLine: line)
            {
                batch.backfill.append((key, request.model, answer))
            }
        case .alreadyFailed:
            batch.alreadyFailed += 1
        case .changed:
            batch.changed += 1
            // Said three times, then counted at the end of the input (a replaced input changes every line).
            let seenBefore = repeats[FeedMessages.changedBody, default: 0]
            repeats[FeedMessages.changedBody] = seenBefore + 1
            if seenBefore < 3 {
                batch.messages.append(FeedMessages.changedBody("\(path):\(request.line)", customID: request.customID))
            }
        case .otherEndpoint(let endpoint):
            batch.otherEndpoint += 1
            if batch.otherEndpoint + (repeats["other-endpoint"] ?? 0) == 1 {
                batch.messages.append(
                    FeedMessages.otherEndpoint(
                        "\(path):\(request.line)", customID: request.customID,
                        endpoint: policy.endpoints.names[endpoint] ?? "another endpoint"))
            }
            repeats["other-endpoint", default: 0] += 1
        }
        return false
    }

    private func recordInvalid(key: String, customID: String, line: Int, reason: String, into batch: inout FeedBatch)
        throws
    {
        if !recountsInvalid, let prior = try checkpoint?.prior(key), prior.state == .failed || prior.state == .done {
            batch.alreadyFailed += 1
            return
        }
        batch.invalid += 1
        // The same problem on many lines (no model on any line) is said a few times, then as one count.
        let problem = reason.split(separator: ":", maxSplits: 2).dropFirst(2).joined(separator: ":")
        let seenBefore = repeats[problem, default: 0]
        repeats[problem] = seenBefore + 1
        if seenBefore < 3 { batch.messages.append(reason) }
        let output = OutputLines.error(customID: customID, code: "invalid_line", message: reason)
        batch.settled.append(
            FinishedRecord(
                customID: key, line: line, bodyHash: "", model: nil, state: .failed, errorCode: "invalid_line",
                errorMessage: reason, output: output.serialized(), kind: .errors))
    }

    /// At the end of the input: how many more lines had a problem already said, and how many fake answers are resent.
    private func sayCounts(into batch: inout FeedBatch) {
        for (problem, count) in repeats.sorted(by: { $0.key < $1.key }) where count > 3 && problem != "other-endpoint" {
            batch.messages.append(FeedMessages.moreWithSameProblem(path, count: count - 3, problem: problem))
        }
        if fakeResends > 0 {
            batch.messages.append(FeedMessages.fakeAnswersResent(fakeResends, to: config.endpoint.shownURL))
        }
    }
}
