import ChatBatchCore
import Foundation

/// The server's data folder: every file and batch it holds, as files that survive a restart.
///
/// `files/ID.jsonl` is an uploaded file's bytes and `files/ID.json` what the Files API says of it;
/// `batches/ID/batch.json` is a batch, beside its checkpoint and its output and errors files. Each JSON record is
/// replaced atomically (written beside, then renamed), so a kill leaves the old record or the new one.
struct BatchFolder: Sendable {
    let root: String

    init(root: String) throws(APIError) {
        self.root = root
        for sub in ["files", "batches", "uploads"] {
            do {
                try FileManager.default.createDirectory(
                    atPath: root + "/" + sub, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            } catch {
                throw APIError(500, "cannot create the data folder \(root)/\(sub): \(error)", type: "server_error")
            }
        }
    }

    /// Uploads and spools a killed server left half written: nothing refers to them.
    func clearUploads() {
        let folder = root + "/uploads"
        for name in (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? [] {
            try? FileManager.default.removeItem(atPath: folder + "/" + name)
        }
    }

    func filePath(_ id: String) -> String { root + "/files/\(id).jsonl" }
    func batchFolder(_ id: String) -> String { root + "/batches/\(id)" }
    /// Where an upload is written while it is checked (moved into `files/` once it is good).
    func uploadPath(_ id: String) -> String { root + "/uploads/\(id).jsonl" }

    func save(_ file: FileRecord) throws {
        try write(JSONEncoder().encode(file), to: root + "/files/\(file.id).json")
    }

    func save(_ batch: BatchRecord) throws {
        try FileManager.default.createDirectory(atPath: batchFolder(batch.id), withIntermediateDirectories: true)
        try write(JSONEncoder().encode(batch), to: batchFolder(batch.id) + "/batch.json")
    }

    func remove(file id: String) {
        try? FileManager.default.removeItem(atPath: root + "/files/\(id).json")
        try? FileManager.default.removeItem(atPath: filePath(id))
    }

    /// Every file and batch recorded, oldest first.
    func load() -> (files: [FileRecord], batches: [BatchRecord]) {
        let fm = FileManager.default
        let decoder = JSONDecoder()
        let files = ((try? fm.contentsOfDirectory(atPath: root + "/files")) ?? []).filter { $0.hasSuffix(".json") }
            .compactMap { name in
                (try? Data(contentsOf: URL(fileURLWithPath: root + "/files/" + name)))
                    .flatMap { try? decoder.decode(FileRecord.self, from: $0) }
            }
        let batches = ((try? fm.contentsOfDirectory(atPath: root + "/batches")) ?? []).compactMap { id in
            (try? Data(contentsOf: URL(fileURLWithPath: batchFolder(id) + "/batch.json")))
                .flatMap { try? decoder.decode(BatchRecord.self, from: $0) }
        }
        return (
            files.sorted { ($0.createdAt, $0.id) < ($1.createdAt, $1.id) },
            batches.sorted { ($0.createdAt, $0.id) < ($1.createdAt, $1.id) }
        )
    }

    private func write(_ data: Data, to path: String) throws {
        try data.write(to: URL(fileURLWithPath: path), options: .atomic)
    }

    /// A new id: `prefix` and 24 hex digits drawn at random.
    static func newID(_ prefix: String) -> String {
        var rng = SystemRandomNumberGenerator()
        return prefix
            + (0..<3).map { _ in String(format: "%08x", UInt32.random(in: .min ... .max, using: &rng)) }
            .joined()
    }
}
