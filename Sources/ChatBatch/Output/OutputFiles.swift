import ChatBatchCore
import Foundation

/// The results and errors files of a run, kept in step with the checkpoint.
///
/// The checkpoint records, for each file, its path, format, the bytes written and the last line's
/// sequence number, in the same transaction as later changes. On open, a file longer than recorded
/// loses its unrecorded tail (a torn line from a crash, or lines whose record did not commit), a file
/// shorter than recorded, missing, moved or of another format is rebuilt from the checkpoint, and the
/// lines committed since are appended. Not thread-safe: used only on the checkpoint writer's queue.
final class OutputFiles: OutputSink {
    struct File {
        var path: String
        var fd: Int32 = -1
        var bytes = 0
        var seq = 0
        var recordedBytes = -1
        var recordedSeq = -1
    }

    let format: OutputFormat
    var files: [File]

    init(resultsPath: String, errorsPath: String, format: OutputFormat) {
        self.format = format
        files = [File(path: Self.absolute(resultsPath)), File(path: Self.absolute(errorsPath))]
    }

    /// Paths are recorded absolute, so `export` and `status` find them from any folder.
    static func absolute(_ path: String) -> String {
        path.hasPrefix("/") ? path : (FileManager.default.currentDirectoryPath as NSString).appendingPathComponent(path)
    }

    deinit { for f in files where f.fd >= 0 { close(f.fd) } }

    static func openForWriting(_ path: String, truncate: Bool) throws(ChatBatchError) -> Int32 {
        let fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | (truncate ? O_TRUNC : 0), 0o600)
        guard fd >= 0 else {
            throw ChatBatchError(.unwritable, "cannot open \(path) for writing: \(String(cString: strerror(errno)))")
        }
        return fd
    }

    static func writeAll(_ fd: Int32, _ bytes: [UInt8], path: String) throws(ChatBatchError) {
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + offset, bytes.count - offset) }
            if n < 0 {
                if errno == EINTR { continue }
                let reason = errno == EFBIG || errno == ENOSPC ? "the disk is full or the file size limit was reached" : String(cString: strerror(errno))
                throw ChatBatchError(
                    .writeFailed,
                    "cannot write to \(path): \(reason). Every answer received so far is in the checkpoint; free space and run the same command again to resume (nothing is paid twice)")
            }
            offset += n
        }
    }

    /// Brings both files in line with the checkpoint before a run appends to them.
    func reconcile(with store: CheckpointStore, log: (String) -> Void) throws {
        for kind in OutputKind.allCases {
            var f = files[kind.rawValue]
            let recorded = try store.outputPosition(kind)
            let recordedBytes = recorded?.bytes ?? 0
            let size = Self.size(f.path)
            let sameFile = recorded?.path == f.path && (kind == .errors || recorded?.format == format.rawValue)
            if sameFile, let size, size >= recordedBytes {
                f.fd = try Self.openForWriting(f.path, truncate: false)
                if size > recordedBytes { ftruncate(f.fd, off_t(recordedBytes)) }
                lseek(f.fd, off_t(recordedBytes), SEEK_SET)
                f.bytes = recordedBytes
                f.seq = recorded?.seq ?? 0
                files[kind.rawValue] = f
                try catchUp(kind, store: store)
            } else {
                if recorded != nil && recordedBytes > 0 {
                    log("chatbatch: \(f.path) is missing, shorter than recorded or of another format; rebuilding it from the checkpoint")
                }
                try rebuild(kind, store: store)
            }
        }
    }

    static func size(_ path: String) -> Int? {
        var st = stat()
        return stat(path, &st) == 0 ? Int(st.st_size) : nil
    }

    /// Appends every line committed after the file's last recorded line.
    private func catchUp(_ kind: OutputKind, store: CheckpointStore) throws {
        for line in try store.storedLines(kind, after: files[kind.rawValue].seq) {
            let bytes = OutputLines.render(kind: kind, format: format, line)
            try Self.writeAll(files[kind.rawValue].fd, bytes, path: files[kind.rawValue].path)
            files[kind.rawValue].bytes += bytes.count
            files[kind.rawValue].seq = max(files[kind.rawValue].seq, line.seq)
        }
    }

    /// Rewrites a file from the checkpoint alone, in commit order.
    private func rebuild(_ kind: OutputKind, store: CheckpointStore) throws {
        if files[kind.rawValue].fd >= 0 { close(files[kind.rawValue].fd) }
        files[kind.rawValue].fd = try Self.openForWriting(files[kind.rawValue].path, truncate: true)
        files[kind.rawValue].bytes = 0
        files[kind.rawValue].seq = 0
        try catchUp(kind, store: store)
    }

    func rebuildAll(from store: CheckpointStore) throws {
        for kind in OutputKind.allCases { try rebuild(kind, store: store) }
    }

    /// Appends lines just committed (called right after their commit).
    func append(_ items: [(seq: Int, record: FinishedRecord)]) throws {
        var buffers: [[UInt8]] = [[], []]
        for item in items {
            let r = item.record
            buffers[r.kind.rawValue].append(contentsOf: OutputLines.render(
                kind: r.kind, format: format, canonical: r.output, attempts: r.attempts, latencyMs: r.latencyMs, cost: r.cost,
                ttftMs: r.ttftMs, cached: r.cached))
        }
        for kind in OutputKind.allCases where !buffers[kind.rawValue].isEmpty {
            try Self.writeAll(files[kind.rawValue].fd, buffers[kind.rawValue], path: files[kind.rawValue].path)
            files[kind.rawValue].bytes += buffers[kind.rawValue].count
            files[kind.rawValue].seq = items.filter { $0.record.kind == kind }.map(\.seq).max() ?? files[kind.rawValue].seq
        }
    }

    func positionsToRecord() -> [OutputPosition] {
        OutputKind.allCases.compactMap { kind in
            let f = files[kind.rawValue]
            guard f.fd >= 0, f.bytes != f.recordedBytes || f.seq != f.recordedSeq else { return nil }
            return OutputPosition(kind: kind, path: f.path, format: format.rawValue, bytes: f.bytes, seq: f.seq)
        }
    }

    func markRecorded(_ positions: [OutputPosition]) {
        for p in positions {
            files[p.kind.rawValue].recordedBytes = p.bytes
            files[p.kind.rawValue].recordedSeq = p.seq
        }
    }

    /// Flushes both files to disk.
    func sync() {
        for f in files where f.fd >= 0 { fsync(f.fd) }
    }
}

extension OutputLines {
    /// The bytes written for a row read back from the checkpoint, newline included.
    static func render(kind: OutputKind, format: OutputFormat, _ line: StoredLine) -> [UInt8] {
        render(kind: kind, format: format, canonical: line.output, attempts: line.attempts, latencyMs: line.latencyMs, cost: line.cost, ttftMs: line.ttftMs, cached: line.cached)
    }
}
