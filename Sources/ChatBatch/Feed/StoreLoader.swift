import ChatBatchCore

/// Loads a job's input into its PostgreSQL store once, for every worker: streamed with the line reader (memory flat
/// in the file's size), a batch of lines per transaction, each batch committed with how far the input is loaded.
///
/// Only the worker holding the job's loading lock loads; the others claim what is loaded meanwhile. A loader that
/// dies releases the lock with its connection, and the next worker to try carries on from the last committed
/// batch. Lines go in as they are in the file (the worker that claims one builds its request and checks it, as a
/// run on a checkpoint does); the custom_id is read at loading so the store can name the line. A line over the size
/// limit is loaded empty, and refused by the worker that claims it.
enum StoreLoader {
    /// Loads `path` into `queue`'s job from where loading stopped, when this worker takes the loading lock and the
    /// input is not loaded yet. Returns the lines this call loaded, or nil when another worker holds the lock.
    static func load(_ path: String, into queue: PostgresWorkQueue, batchSize: Int = 1000) throws(ChatBatchError)
        -> Int?
    {
        let state = try queue.loaded()
        if state.all { return 0 }
        guard try queue.takeLoading() else { return nil }
        defer { try? queue.releaseLoading() }
        let reader = try LineReader(path: path)
        var batch: [(line: Int, customID: String?, request: [UInt8])] = []
        batch.reserveCapacity(batchSize)
        var loaded = 0
        // Read again under the lock: a loader that died may have got further since.
        let from = try queue.loaded().lines
        while let raw = try reader.next() {
            guard raw.number > from else { continue }
            let customID = (try? JSON.parse(raw.bytes))?["custom_id"]?.stringValue
            batch.append((raw.number, customID, raw.bytes))
            if batch.count == batchSize {
                try queue.load(batch, last: false)
                loaded += batch.count
                batch.removeAll(keepingCapacity: true)
            }
        }
        try queue.load(batch, last: true)
        return loaded + batch.count
    }
}
