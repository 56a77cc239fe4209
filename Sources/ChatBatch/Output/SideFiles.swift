import ChatBatchCore
import Foundation

/// The files a run writes besides its outputs (the summary, the metrics file, the log) follow the outputs' rule:
/// never the input, the checkpoint, an output, the response cache or one another, and never an existing file that
/// chatbatch did not write. A device or a pipe (`/dev/stderr`) is written as a stream and not judged by its content.
public enum SideFiles {
    /// What a side file is, its flag, and how an existing file of that kind written by chatbatch begins.
    enum Role: CaseIterable {
        case summary, metrics, log

        var flag: String {
            switch self {
            case .summary: return "--summary-json"
            case .metrics: return "--metrics-file"
            case .log: return "--log-file"
            }
        }

        var what: String {
            switch self {
            case .summary: return "the summary"
            case .metrics: return "the metrics"
            case .log: return "the log"
            }
        }

        /// True when `head` (the file's first bytes) is what chatbatch writes there.
        func isOurs(_ head: [UInt8]) -> Bool {
            let text = String(decoding: head, as: UTF8.self)
            switch self {
            case .summary: return text.hasPrefix("{") && text.contains("\"exit_code\"")
            case .metrics: return text.hasPrefix("# HELP chatbatch_")
            case .log:
                // "2026-12-02T05:01:10Z chatbatch notice: …"
                let firstLine = text.split(separator: "\n", maxSplits: 1).first ?? ""
                return firstLine.count > 21 && firstLine.dropFirst(20).hasPrefix(" chatbatch ")
                    && firstLine.hasPrefix("20")
            }
        }
    }

    /// Refuses, before anything is opened or sent, a summary, metrics or log path that is one of the run's other
    /// files, or an existing file chatbatch did not write.
    public static func check(_ config: RunConfiguration, logFile: String?) throws(ChatBatchError) {
        let files = config.files
        var taken: [(path: String, what: String)] = [
            (files.input, "the input"), (files.checkpoint, "the checkpoint"),
            (files.checkpoint + "-wal", "the checkpoint's log"),
            (files.checkpoint + "-shm", "the checkpoint's index"), (files.output, "the results file"),
            (files.errors, "the errors file")
        ]
        if let cache = config.cache.path { taken.append((cache, "the response cache")) }
        let given: [(Role, String?)] = [(.summary, files.summaryJSON), (.metrics, files.metricsFile), (.log, logFile)]
        for (role, path) in given {
            guard let path else { continue }
            for (other, what) in taken where same(path, other) {
                throw ChatBatchError(
                    .outputClash,
                    "\(path) is \(what); refusing to write \(role.what) over it. Pass another \(role.flag)")
            }
            var link = stat()
            if role == .log && lstat(path, &link) == 0 && (link.st_mode & S_IFMT) == S_IFLNK {
                var target = stat()
                let device = stat(path, &target) == 0 && (target.st_mode & S_IFMT) != S_IFREG
                if !device {  // /dev/stderr is a link to a device, and is fine
                    throw ChatBatchError(
                        .notOurFile,
                        "\(path) is a symbolic link; refusing to append the log through it. Pass the file itself")
                }
            }
            try refuseForeign(path, role)
            taken.append((path, "the file given with \(role.flag)"))
        }
    }

    /// True when `a` and `b` name one file: the same path once links and `..` are resolved, or the same inode.
    static func same(_ a: String, _ b: String) -> Bool {
        if OutputFiles.canonical(a) == OutputFiles.canonical(b) { return true }
        var sa = stat(), sb = stat()
        return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino
    }

    private static func refuseForeign(_ path: String, _ role: Role) throws(ChatBatchError) {
        var st = stat()
        guard stat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG, st.st_size > 0 else { return }
        guard let handle = FileHandle(forReadingAtPath: path) else { return }
        let head = Array((try? handle.read(upToCount: 256)) ?? Data())
        try? handle.close()
        guard role.isOurs(head) else {
            throw ChatBatchError(
                .notOurFile,
                "\(path) exists and chatbatch did not write it; refusing to write \(role.what) over it. Pass another \(role.flag)"
            )
        }
    }
}
