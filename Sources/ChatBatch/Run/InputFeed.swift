import ChatBatchCore

/// What the feed hands the scheduler per batch, and what it did with the lines it did not hand over.
struct FeedBatch: Sendable {
    var requests: [PreparedRequest] = []
    var linesRead = 0
    var invalid = 0
    var alreadyDone = 0
    var alreadyFailed = 0
    var changed = 0
    var endOfInput = false
    var messages: [String] = []
    /// Requests the response cache answers: not sent.
    var cached: [(PreparedRequest, CachedAnswer)] = []
    /// Answers done in the checkpoint but missing from the cache (a run killed before storing them): to store.
    var backfill: [CacheWriter.Entry] = []
}

/// Reads the input and decides, line by line, what the run must send: new and pending lines go out;
/// lines done before are skipped (or, when their body changed, reported, and sent again only with `--force`);
/// invalid lines go straight to the errors file. Used only on the input queue.
///
/// Duplicate custom_ids are caught with a set of 64-bit hashes of the ids seen, so memory stays at about
/// 16 bytes a line rather than a copy of every id.
final class InputFeed {
    let path: String
    let reader: LineReader
    let builder: RequestBuilder
    let checkpoint: CheckpointReader?
    let writer: CheckpointWriter?
    let config: RunConfiguration
    let checkInvalidRows: Bool
    /// The response cache (nil without `--cache`): looked up unless refreshing; in a run (with a writer), backfilled unless read-only.
    let cache: ResponseCache?
    var seen = Set<UInt64>()
    var done = false

    init(
        config: RunConfiguration, checkpoint: CheckpointReader?, writer: CheckpointWriter?, hasInvalidRows: Bool, cache: ResponseCache? = nil
    ) throws(ChatBatchError) {
        self.cache = cache
        self.config = config
        self.path = config.input
        self.reader = try LineReader(path: config.input)
        self.builder = try RequestBuilder(config: config)
        self.checkpoint = checkpoint
        self.writer = writer
        self.checkInvalidRows = hasInvalidRows
    }

    /// Closes the checkpoint connection; the feed reads no more.
    func close() {
        checkpoint?.close()
        cache?.close()
    }

    /// Reads on until `limit` requests are ready to send or the input ends.
    func next(limit: Int) throws -> FeedBatch {
        if let checkpoint { return try checkpoint.batch { try read(limit: limit) } }
        return try read(limit: limit)
    }

    private func read(limit: Int) throws -> FeedBatch {
        var batch = FeedBatch()
        while batch.requests.count < limit {
            guard let raw = try reader.next() else {
                done = true
                batch.endOfInput = true
                break
            }
            if raw.oversize == nil && raw.bytes.allSatisfy({ $0 == 0x20 || $0 == 0x09 }) { continue }  // blank line
            let parsed = builder.parse(raw, file: path)
            if let shard = config.shard {
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
                if seen.contains(h) {
                    try recordInvalid(
                        key: "line-\(request.line)", customID: request.customID, line: request.line,
                        reason: "\(path):\(request.line): duplicate custom_id '\(request.customID)' (an earlier line has it)", into: &batch)
                    continue
                }
                seen.insert(h)
                var request = request
                guard try admit(&request, into: &batch) else { continue }
                if let cache, config.cacheMode.reads, let key = request.cacheKey, let answer = try cache.lookup(key) {
                    batch.cached.append((request, answer))
                } else {
                    batch.requests.append(request)
                }
            }
        }
        return batch
    }

    /// True when the request must be sent by this run.
    private func admit(_ request: inout PreparedRequest, into batch: inout FeedBatch) throws -> Bool {
        if checkInvalidRows, request.customID != "line-\(request.line)",
            let old = try checkpoint?.prior("line-\(request.line)"), old.state == .failed
        {
            writer?.submit(.supersede(customID: "line-\(request.line)"))  // the line was invalid before and is fixed now
        }
        guard let prior = try checkpoint?.prior(request.customID) else { return true }
        let sameBody = prior.bodyHash == request.bodyHash
        switch prior.state {
        case .pending, .inflight:
            request.resentAfterCrash = prior.crashResend
            return true
        case .done:
            if sameBody {
                batch.alreadyDone += 1
                if writer != nil, let cache, config.cacheMode.writes, let key = request.cacheKey, try !cache.contains(key),
                    let line = try checkpoint?.output(request.customID), let answer = CachedAnswer(resultLine: line)
                {
                    batch.backfill.append((key, request.model, answer))
                }
                return false
            }
            if config.force { writer?.submit(.supersede(customID: request.customID)); return true }
            batch.changed += 1
            batch.messages.append("\(path):\(request.line): custom_id '\(request.customID)' was answered before with a different request body; not sent again (pass --force to send it and replace the answer)")
            return false
        case .failed:
            if sameBody && !config.retryFailed { batch.alreadyFailed += 1; return false }
            writer?.submit(.supersede(customID: request.customID))
            return true
        }
    }

    private func recordInvalid(key: String, customID: String, line: Int, reason: String, into batch: inout FeedBatch) throws {
        if let prior = try checkpoint?.prior(key), prior.state == .failed || prior.state == .done {
            batch.alreadyFailed += 1
            return
        }
        batch.invalid += 1
        batch.messages.append(reason)
        let output = OutputLines.error(customID: customID, code: "invalid_line", message: reason)
        writer?.submit(.finish(FinishedRecord(
            customID: key, line: line, bodyHash: "", model: nil, state: .failed, errorCode: "invalid_line",
            errorMessage: reason, output: output.serialized(), kind: .errors), attempt: nil))
    }
}
