import ChatBatchCore
import Foundation

/// Writes a store job's results and errors files from the store alone, in input order, every finished line once
/// (`chatbatch export` on a store, and the worker that finds the job complete). Each file is written whole to a
/// temporary file beside it and renamed over the old one, so a reader never sees half a file, and two workers that
/// finish together leave one whole file.
enum StoreExport {
    /// Refuses, before a worker sends anything, output paths that hold a file this job did not write (`overwrite`
    /// allows it): a file recorded as the job's own outputs may be replaced, an empty or missing one too.
    static func checkTargets(
        _ queue: PostgresWorkQueue, results: String, errors: String, overwrite: Bool
    ) throws(ChatBatchError) {
        guard !overwrite else { return }
        let row = try queue.jobRow()
        let own = [row["results_path"], row["errors_path"]].compactMap { $0 }
        for path in [results, errors] {
            let absolute = OutputFiles.absolute(path)
            var st = stat()
            guard stat(absolute, &st) == 0, st.st_size > 0, !own.contains(absolute) else { continue }
            throw ChatBatchError(
                .outputClash,
                "\(path) exists and was not written for job '\(row["name"] ?? "")' in the store: move it, name other "
                    + "outputs (--output, --errors), or pass --overwrite to replace it")
        }
    }

    /// Writes both files; returns how many lines each holds.
    @discardableResult
    static func write(_ queue: PostgresWorkQueue, results: String, errors: String) throws(ChatBatchError) -> (
        results: Int, errors: Int
    ) {
        let paths = [OutputFiles.absolute(results), OutputFiles.absolute(errors)]
        for path in paths { makeFolders((path as NSString).deletingLastPathComponent) }
        var counts: [Int] = []
        for (i, path) in paths.enumerated() {
            counts.append(try writeOne(queue, failed: i == 1, to: path))
        }
        try queue.recordOutputs(results: paths[0], errors: paths[1])
        return (counts[0], counts[1])
    }

    private static func writeOne(_ queue: PostgresWorkQueue, failed: Bool, to path: String) throws(ChatBatchError)
        -> Int
    {
        let tmp = OutputFiles.temporaryPath(for: path) + ".\(getpid())"
        let fd = try OutputFiles.openForWriting(tmp, truncate: true, mode: 0o644)
        var buffer: [UInt8] = []
        var count = 0
        do throws(ChatBatchError) {
            try queue.eachOutput(failed: failed) { (line: [UInt8]) throws(ChatBatchError) in
                buffer += line
                buffer.append(0x0A)
                count += 1
                if buffer.count >= 1 << 20 {
                    try OutputFiles.writeAll(fd, buffer, path: path)
                    buffer.removeAll(keepingCapacity: true)
                }
            }
            try OutputFiles.writeAll(fd, buffer, path: path)
            guard fsync(fd) == 0 else {
                throw ChatBatchError(.writeFailed, "cannot write \(path): \(String(cString: strerror(errno)))")
            }
        } catch {
            close(fd)
            unlink(tmp)
            throw error
        }
        close(fd)
        guard rename(tmp, path) == 0 else {
            unlink(tmp)
            throw ChatBatchError(.renameFailed, "cannot write \(path): \(String(cString: strerror(errno)))")
        }
        return count
    }
}
