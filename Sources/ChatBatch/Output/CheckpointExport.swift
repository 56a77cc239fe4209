import ChatBatchCore
import Foundation

/// Rebuilds the results and errors files from a checkpoint alone (`chatbatch export`).
public enum CheckpointExport {
    /// Line order in the rebuilt files.
    public enum Order: String, Sendable, CaseIterable {
        /// The order of the input file.
        case input
        /// The order answers were committed in (what a run writes).
        case completion
    }

    /// What an export wrote.
    public struct Report: Sendable {
        public var results: Int
        public var errors: Int
        public var resultsPath: String
        public var errorsPath: String
    }

    /// Writes every finished row to `results` and `errors` (default: the paths the last run used).
    ///
    /// `--output X` alone writes the errors beside it (`X.errors.jsonl`), never over the run's own errors file; a
    /// target that exists, is not empty and is not the run's own output is refused unless `overwrite`.
    public static func export(
        checkpoint: String, results: String?, errors: String?, order: Order, format: OutputFormat,
        overwrite: Bool = false
    ) throws -> Report {
        let probe = try CheckpointStore(path: checkpoint, create: false, lock: false)
        let recorded = [try probe.outputPosition(.results)?.path, try probe.outputPosition(.errors)?.path]
        if errors != nil && results == nil {
            throw ChatBatchError(
                .noOutputPath,
                "--errors needs --output too (export writes both files; without either it rewrites the run's own)")
        }
        if let results, errors == nil, !OutputFiles.isRegularOrMissing(results) {
            throw ChatBatchError(
                .noOutputPath,
                "\(results) is a device or a pipe, with no folder beside it for the errors file; give --errors too")
        }
        let targets = results.map { [$0, errors ?? JobSettings.defaultErrors(for: $0)] } ?? recorded
        guard let resultsPath = targets[0], let errorsPath = targets[1] else {
            throw ChatBatchError(.noOutputPath, "checkpoint \(checkpoint) records no output paths; pass --output")
        }
        for path in [resultsPath, errorsPath] {
            let folder = (path as NSString).deletingLastPathComponent
            makeFolders(folder)
        }
        try OutputFiles.checkTargets(
            input: "-", checkpoint: checkpoint,
            recorded: [.results: recorded[0], .errors: recorded[1]].compactMapValues { $0 }, overwrite: overwrite,
            [.results: resultsPath, .errors: errorsPath])
        // Replacing the files a run appends to needs the run's lock, and the recorded lengths must follow.
        let replacesRunFiles = targets[0] == recorded[0] || targets[1] == recorded[1]
        let store = replacesRunFiles ? try CheckpointStore(path: checkpoint, create: false, lock: true) : probe
        defer { if replacesRunFiles { store.releaseLock() } }
        for path in [resultsPath, errorsPath] where OutputFiles.isRegularOrMissing(path) {
            var st = stat()
            if lstat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFLNK {
                throw ChatBatchError(
                    .notOurFile,
                    "\(path) is a symbolic link; refusing to replace it (or the file it points to). Pass the file itself, or another path"
                )
            }
        }
        var counts = [0, 0]
        for kind in OutputKind.allCases {
            let path = kind == .results ? resultsPath : errorsPath
            // A device or a pipe (/dev/stdout, a FIFO) is written as a stream, never renamed over.
            let stream = !OutputFiles.isRegularOrMissing(path)
            let tmp = stream ? path : OutputFiles.temporaryPath(for: path)
            let fd = try OutputFiles.openForWriting(tmp, truncate: !stream)
            var bytes = 0
            var maxSeq = 0
            do {
                defer { close(fd) }
                let lines = try store.storedLines(kind, inputOrder: order == .input)
                var buffer: [UInt8] = []
                for line in lines {
                    buffer += OutputLines.render(kind: kind, format: format, line)
                    maxSeq = max(maxSeq, line.seq)
                    if buffer.count > 1 << 20 {
                        try OutputFiles.writeAll(fd, buffer, path: tmp)
                        bytes += buffer.count
                        buffer = []
                    }
                }
                try OutputFiles.writeAll(fd, buffer, path: tmp)
                bytes += buffer.count
                counts[kind.rawValue] = lines.count
                if !stream { fsync(fd) }
            }
            guard stream || rename(tmp, path) == 0 else {
                throw ChatBatchError(.renameFailed, "cannot replace \(path): \(String(cString: strerror(errno)))")
            }
            if path == recorded[kind.rawValue] {
                try store.recordOutputPosition(
                    OutputPosition(kind: kind, path: path, format: format.rawValue, bytes: bytes, seq: maxSeq))
            }
        }
        return Report(results: counts[0], errors: counts[1], resultsPath: resultsPath, errorsPath: errorsPath)
    }
}
