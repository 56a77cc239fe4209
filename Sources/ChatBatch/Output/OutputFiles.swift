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

    static func openForWriting(_ path: String, truncate: Bool, mode: mode_t = 0o600) throws(ChatBatchError) -> Int32 {
        let fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | (truncate ? O_TRUNC : 0), mode)
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
                let reason =
                    errno == EFBIG || errno == ENOSPC
                    ? "the disk is full or the file size limit was reached" : String(cString: strerror(errno))
                throw ChatBatchError(
                    .writeFailed,
                    "cannot write to \(path): \(reason). Every answer received so far is in the checkpoint; free space and run the same command again to resume (nothing is paid twice)"
                )
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
            if sameFile, let size, size >= recordedBytes, Self.looksWhole(f.path, upTo: recordedBytes) {
                f.fd = try Self.openForWriting(f.path, truncate: false)
                if size > recordedBytes { ftruncate(f.fd, off_t(recordedBytes)) }
                lseek(f.fd, off_t(recordedBytes), SEEK_SET)
                f.bytes = recordedBytes
                f.seq = recorded?.seq ?? 0
                files[kind.rawValue] = f
                try catchUp(kind, store: store)
            } else {
                if recorded != nil && recordedBytes > 0 {
                    log(
                        "chatbatch: \(f.path) is missing, shorter than recorded or of another format; rebuilding it from the checkpoint"
                    )
                }
                try rebuild(kind, store: store)
            }
        }
    }

    /// A cheap check that the first `bytes` of a file are lines chatbatch wrote: it begins a JSON line and ends one
    /// (a file emptied under a running run fills with NUL bytes where its lines were).
    static func looksWhole(_ path: String, upTo bytes: Int) -> Bool {
        guard bytes > 0, isRegularOrMissing(path) else { return true }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var first: UInt8 = 0, last: UInt8 = 0
        return pread(fd, &first, 1, 0) == 1 && pread(fd, &last, 1, off_t(bytes - 1)) == 1 && first == UInt8(ascii: "{")
            && last == 0x0A
    }

    func damagedFiles() -> [String] {
        files.compactMap { f in
            guard f.fd >= 0, Self.isRegularOrMissing(f.path) else { return nil }
            var open = stat(), named = stat()
            let replaced =
                fstat(f.fd, &open) != 0 || stat(f.path, &named) != 0 || open.st_ino != named.st_ino
                || open.st_dev != named.st_dev
            return replaced || Int(named.st_size) != f.bytes || !Self.looksWhole(f.path, upTo: f.bytes) ? f.path : nil
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

    /// Rewrites a file from the checkpoint alone, in commit order: into a temporary file renamed over the old
    /// one once complete, so a failed rebuild leaves the old file as it was.
    private func rebuild(_ kind: OutputKind, store: CheckpointStore) throws {
        let path = files[kind.rawValue].path
        if !Self.isRegularOrMissing(path) {
            // A device or a pipe (/dev/stdout, /dev/full): written in place, never renamed over.
            if files[kind.rawValue].fd >= 0 { close(files[kind.rawValue].fd) }
            files[kind.rawValue].fd = try Self.openForWriting(path, truncate: true)
            files[kind.rawValue].bytes = 0
            files[kind.rawValue].seq = 0
            try catchUp(kind, store: store)
            return
        }
        let tmp = Self.temporaryPath(for: path)
        let fd = try Self.openForWriting(tmp, truncate: true)
        let old = files[kind.rawValue]
        files[kind.rawValue].fd = fd
        files[kind.rawValue].path = tmp
        files[kind.rawValue].bytes = 0
        files[kind.rawValue].seq = 0
        do {
            try catchUp(kind, store: store)
            fsync(fd)
            guard rename(tmp, path) == 0 else {
                throw ChatBatchError(.renameFailed, "cannot replace \(path): \(String(cString: strerror(errno)))")
            }
        } catch {
            close(fd)
            unlink(tmp)
            files[kind.rawValue] = old
            throw error
        }
        files[kind.rawValue].path = path
        if old.fd >= 0 { close(old.fd) }
    }

    /// True when `path` is a regular file or nothing: a file that may be replaced by renaming another over it.
    static func isRegularOrMissing(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) != 0 || (st.st_mode & S_IFMT) == S_IFREG
    }

    /// Writes `bytes` as the whole of `path`: into a temporary file renamed over it, so a reader never sees half
    /// of it (a device or a pipe is written in place, never renamed over).
    /// `mode` is the new file's (0600 unless it is meant for other readers, as the metrics file is for node_exporter).
    static func replace(_ path: String, with bytes: [UInt8], mode: mode_t = 0o600) throws(ChatBatchError) {
        guard isRegularOrMissing(path) else {
            let fd = try openForWriting(path, truncate: false)
            defer { close(fd) }
            try writeAll(fd, bytes, path: path)
            return
        }
        let tmp = temporaryPath(for: path)
        let fd = try openForWriting(tmp, truncate: true, mode: mode)
        do {
            try writeAll(fd, bytes, path: path)
            close(fd)
        } catch {
            close(fd)
            unlink(tmp)
            throw error
        }
        guard rename(tmp, path) == 0 else {
            unlink(tmp)
            throw ChatBatchError(.renameFailed, "cannot write \(path): \(String(cString: strerror(errno)))")
        }
    }

    /// Where a file is written before it is renamed into place (beside it, so the rename stays on one file system).
    static func temporaryPath(for path: String) -> String {
        let url = URL(fileURLWithPath: path)
        return url.deletingLastPathComponent().appendingPathComponent("." + url.lastPathComponent + ".chatbatch-tmp")
            .path
    }

    /// A path with symbolic links and `..` resolved (its folder's, when the file does not exist yet), for comparing
    /// paths.
    static func canonical(_ path: String) -> String {
        let absolute = absolute(path)
        if let real = realpath(absolute, nil) {
            defer { free(real) }
            return String(cString: real)
        }
        let url = URL(fileURLWithPath: absolute)
        let folder = url.deletingLastPathComponent().path
        guard let real = realpath(folder, nil) else { return absolute }
        defer { free(real) }
        return (String(cString: real) as NSString).appendingPathComponent(url.lastPathComponent)
    }

    /// Refuses output paths that would destroy a file the run did not write, before anything is sent: the input
    /// itself, the checkpoint, one file for both outputs, or an existing non-empty file that this checkpoint does
    /// not record as its own output (unless `overwrite`).
    static func checkTargets(
        input: String, checkpoint: String, recorded: [OutputKind: String], overwrite: Bool,
        _ targets: [OutputKind: String]
    ) throws(ChatBatchError) {
        let inputPath = input == "-" ? nil : canonical(input)
        let checkpointPath = canonical(checkpoint)
        var seen: [String: OutputKind] = [:]
        for kind in OutputKind.allCases {
            guard let target = targets[kind] else { continue }
            let path = canonical(target)
            let flag = kind == .results ? "--output" : "--errors"
            if path == inputPath {
                throw ChatBatchError(
                    .outputClash,
                    "\(target) is the input file; refusing to write the \(kind.name) over it. Pass another \(flag)")
            }
            if path == checkpointPath {
                throw ChatBatchError(
                    .outputClash,
                    "\(target) is the checkpoint; refusing to write the \(kind.name) over it. Pass another \(flag)")
            }
            if let other = seen[path] {
                throw ChatBatchError(
                    .outputClash,
                    "\(target) is given for both the \(other.name) and the \(kind.name); pass separate --output and --errors files"
                )
            }
            seen[path] = kind
            if overwrite || recorded[kind].map(canonical) == path { continue }
            var st = stat()
            if stat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG, st.st_size > 0 {
                throw ChatBatchError(
                    .notOurFile,
                    "\(target) exists and this checkpoint did not write it; refusing to overwrite it. Pass another \(flag), or --overwrite to replace it"
                )
            }
        }
    }

    func rebuildAll(from store: CheckpointStore) throws {
        for kind in OutputKind.allCases { try rebuild(kind, store: store) }
    }

    /// Appends lines just committed (called right after their commit).
    func append(_ items: [(seq: Int, record: FinishedRecord)]) throws {
        var buffers: [[UInt8]] = [[], []]
        for item in items {
            let r = item.record
            buffers[r.kind.rawValue].append(
                contentsOf: OutputLines.render(kind: r.kind, format: format, canonical: r.output, r.facts))
        }
        for kind in OutputKind.allCases where !buffers[kind.rawValue].isEmpty {
            try Self.writeAll(files[kind.rawValue].fd, buffers[kind.rawValue], path: files[kind.rawValue].path)
            files[kind.rawValue].bytes += buffers[kind.rawValue].count
            files[kind.rawValue].seq =
                items.filter { $0.record.kind == kind }.map(\.seq).max() ?? files[kind.rawValue].seq
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
        render(kind: kind, format: format, canonical: line.output, line.facts)
    }
}
