import ChatBatchCore

/// Loads a job's input into its PostgreSQL store once, for every worker: streamed with the line reader (memory flat
/// in the file's size), a batch of lines per transaction, each batch committed with how far the input is loaded.
///
/// Only the worker holding the job's loading lock loads; the others claim what is loaded meanwhile. A loader that
/// dies releases the lock with its connection, and the next worker to try carries on from the last committed
/// batch. Lines go in as they are in the file (the worker that claims one builds its request and checks it, as a
/// run on a checkpoint does); the custom_id is read at loading so the store can name the line. A line over the size
/// limit is loaded as its size, and refused by the worker that claims it; a blank line is skipped, as the feed skips
/// it in the file.
enum StoreLoader {
    /// Loads `path` into `queue`'s job from where loading stopped, when this worker takes the loading lock and the
    /// input is not loaded yet. Returns the lines this call loaded, or nil when another worker holds the lock.
    /// `committed` is called after each batch is committed (this worker's feed need not wait for its next look).
    static func load(
        _ path: String, into queue: PostgresWorkQueue, batchSize: Int = 1000, committed: () -> Void = {}
    ) throws(ChatBatchError) -> Int? {
        let state = try queue.loaded()
        if state.all { return 0 }
        guard try queue.takeLoading() else { return nil }
        defer { try? queue.releaseLoading() }
        let reader = try LineReader(path: path)
        var batch: [InputLineRecord] = []
        var bytes = 0
        var loaded = 0
        // Read again under the lock: a loader that died may have got further since.
        let from = try queue.loaded().lines
        var through = from
        while let raw = try reader.next() {
            guard raw.number > from else { continue }
            through = raw.number
            // A blank line is no line, as in the file (the feed skips it too).
            if raw.isBlank { continue }
            // A custom_id PostgreSQL text cannot hold (a NUL) is left for the worker to read from the line.
            let customID = (try? JSON.parse(raw.bytes))?["custom_id"]?.stringValue.flatMap {
                $0.utf8.contains(0) ? nil : $0
            }
            batch.append(
                InputLineRecord(line: raw.number, customID: customID, request: raw.bytes, oversize: raw.oversize))
            bytes += raw.bytes.count
            // A batch is bounded in bytes too: lines of up to 8 MiB each must not make one parameter of gigabytes.
            if batch.count == batchSize || bytes >= Self.batchBytes {
                try queue.load(batch, through: through, last: false)
                committed()
                // The planner learns of the job as the first lines come in, and again when all of them are in.
                if loaded == 0 { queue.analyzeLines() }
                loaded += batch.count
                batch.removeAll(keepingCapacity: true)
                bytes = 0
            }
        }
        try queue.load(batch, through: through, last: true)
        committed()
        queue.analyzeLines()
        return loaded + batch.count
    }

    /// The most input bytes loaded in one transaction (a single longer line goes alone).
    static let batchBytes = 16 << 20
}
