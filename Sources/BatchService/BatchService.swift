import ChatBatch
import ChatBatchCore
import Foundation
import Synchronization

/// An HTTP request as the service reads it: the method, the path without its query, the query's items, the headers
/// (names lower-cased) and the whole body.
struct ServiceRequest: Sendable {
    var method: String
    var path: String
    var query: [String: String]
    var headers: [String: String]
    var body: [UInt8]
    /// Where an upload's body was written as it arrived (`POST /v1/files`), instead of `body`.
    var spool: String? = nil
}

/// What the service answers: a status, a body and its type.
struct ServiceResponse: Sendable {
    var status: Int
    var body: [UInt8]
    var contentType = "application/json"
    /// A file sent as the body instead, from disk as it is (an output can be gigabytes).
    var file: (path: String, size: Int)? = nil

    static func json(_ value: JSON, status: Int = 200) -> ServiceResponse {
        ServiceResponse(status: status, body: Array(value.serialized().utf8))
    }
}

/// `chatbatch serve`: OpenAI's Files and Batch APIs over chatbatch's runner, for providers that have none.
///
/// Files and batches live in the data folder (`BatchFolder`), so a server started again finds every batch where it
/// stood; each batch's lines run through `RunSession` on a checkpoint of their own (`BatchRunner`), one batch at a time
/// in the order they were created, so the provider's key is never shared between two runs that each learn its
/// limits alone.
public final class BatchService: Sendable {
    /// What the server is started with.
    public struct Settings: Sendable {
        public var dataFolder: String
        /// The job file's settings: provider, base URL, key, concurrency, prices, retries (input and outputs are
        /// each batch's own).
        public var job: JobSettings
        /// The key clients must send as `Authorization: Bearer …`.
        public var clientKey: String
        public var maxFileBytes = 200 << 20
        public var maxLines = 50_000
        public var log: @Sendable (String) -> Void = { _ in }

        public init(dataFolder: String, job: JobSettings, clientKey: String) {
            self.dataFolder = dataFolder
            self.job = job
            self.clientKey = clientKey
        }
    }

    struct State {
        var files: [String: FileRecord] = [:]
        var batches: [String: BatchRecord] = [:]
    }

    let settings: Settings
    let folder: BatchFolder
    let state: Mutex<State>
    let runner: BatchRunner

    public init(_ settings: Settings) throws {
        self.settings = settings
        folder = try BatchFolder(root: settings.dataFolder)
        folder.clearUploads()
        let loaded = folder.load()
        var s = State()
        for f in loaded.files { s.files[f.id] = f }
        for b in loaded.batches { s.batches[b.id] = b }
        state = Mutex(s)
        runner = BatchRunner()
        runner.start(self, resuming: loaded.batches.filter { $0.status.isActive }.map(\.id))
    }

    /// Stops the batch running now (what is in flight finishes, the rest is left for the next start) and waits.
    public func drain() { runner.drain(self) }

    func handle(_ r: ServiceRequest) -> ServiceResponse {
        if r.method == "GET" && r.path == "/metrics" { return metrics() }
        guard authorized(r) else { return .json(APIError.unauthorized.json, status: 401) }
        do {
            return try route(r)
        } catch let error as APIError {
            return .json(error.json, status: error.status)
        } catch {
            return .json(APIError(500, "internal error: \(error)", type: "server_error").json, status: 500)
        }
    }

    /// The client's key, compared in constant time.
    func authorized(_ r: ServiceRequest) -> Bool {
        guard let header = r.headers["authorization"], header.hasPrefix("Bearer ") else { return false }
        let given = Array(header.dropFirst(7).utf8)
        let expected = Array(settings.clientKey.utf8)
        var difference = given.count ^ expected.count
        for i in 0..<given.count { difference |= Int(given[i] ^ expected[i % max(1, expected.count)]) }
        return difference == 0 && !expected.isEmpty
    }

    private func route(_ r: ServiceRequest) throws -> ServiceResponse {
        let parts = r.path.split(separator: "/").map(String.init)
        switch (r.method, parts.count > 1 && parts[0] == "v1" ? Array(parts.dropFirst()) : []) {
        case ("POST", ["files"]): return try uploadFile(r)
        case ("GET", ["files"]): return listFiles()
        case ("GET", let p) where p.count == 2 && p[0] == "files": return .json(try file(p[1]).json)
        case ("DELETE", let p) where p.count == 2 && p[0] == "files": return try deleteFile(p[1])
        case ("GET", let p) where p.count == 3 && p[0] == "files" && p[2] == "content": return try content(p[1])
        case ("POST", ["batches"]): return try createBatch(r)
        case ("GET", ["batches"]): return listBatches(r)
        case ("GET", let p) where p.count == 2 && p[0] == "batches": return .json(try batchJSON(p[1]))
        case ("POST", let p) where p.count == 3 && p[0] == "batches" && p[2] == "cancel": return try cancel(p[1])
        default:
            throw APIError(404, "Unknown request URL: \(r.method) \(r.path).", code: "unknown_url")
        }
    }

    func file(_ id: String) throws -> FileRecord {
        guard let f = state.withLock({ $0.files[id] }) else { throw APIError.notFound("file", id) }
        return f
    }

    func batch(_ id: String) throws -> BatchRecord {
        guard let b = state.withLock({ $0.batches[id] }) else { throw APIError.notFound("batch", id) }
        return b
    }

    /// Saves `batch` to the folder, then to memory.
    /// Changes batch `id` as it stands now, under the lock (so that a cancel and the runner never write over each
    /// other's change), and saves it: `change` returns false to leave it as it is. Returns the batch as it then is.
    @discardableResult
    func transition(_ id: String, _ change: (inout BatchRecord) -> Bool) -> (batch: BatchRecord, changed: Bool)? {
        state.withLock { s -> (batch: BatchRecord, changed: Bool)? in
            guard var b = s.batches[id] else { return nil }
            guard change(&b) else { return (b, false) }
            keep(b, in: &s)
            return (b, true)
        }
    }

    /// Saves `batch` to the folder and to `state` (under its lock); a save that fails is said, and the batch is kept
    /// in memory.
    func keep(_ batch: BatchRecord, in state: inout State) {
        do { try folder.save(batch) } catch { settings.log("chatbatch serve: cannot save batch \(batch.id): \(error)") }
        state.batches[batch.id] = batch
    }

    func register(_ file: FileRecord) throws {
        try folder.save(file)
        state.withLock { $0.files[file.id] = file }
    }

    static func now() -> Int { Int(Date().timeIntervalSince1970) }
}
