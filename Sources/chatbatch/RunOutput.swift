import ChatBatch
import Foundation
import Logging
import Synchronization

/// Where a run's messages and progress go: a redrawn line on a terminal, or swift-log lines otherwise.
struct RunOutput: Sendable {
    let terminal: Bool
    let quiet: Bool
    let logger: Logger

    /// Terminal mode when stderr is a terminal and no log file is set; swift-log to stderr or the log file otherwise.
    init(quiet: Bool, logFile: String?) throws {
        self.quiet = quiet
        terminal = logFile == nil && isatty(2) == 1
        var handler: any LogHandler = StreamLogHandler.standardError(label: "chatbatch")
        if let logFile {
            handler = try FileLogHandler(path: logFile)
        }
        logger = Logger(label: "chatbatch", factory: { _ in handler })
    }

    /// A message from the run (an invalid line, a warning, a stop).
    func message(_ text: String) {
        if terminal {
            FileHandle.standardError.write(Data(("\r\u{1B}[2K" + text + "\n").utf8))
        } else {
            logger.notice("\(text)")
        }
    }

    /// Progress: redrawn in place on a terminal (at most 4 times a second), a plain line per interval otherwise.
    func progress(interval: Double?) -> ProgressOptions? {
        if quiet { return nil }
        let every = interval ?? (terminal ? 0.25 : 30)
        let terminal = self.terminal
        let logger = self.logger
        return ProgressOptions(interval: max(terminal ? 0.25 : 0.05, every)) { snapshot, final in
            if terminal {
                FileHandle.standardError.write(Data(("\r\u{1B}[2K" + snapshot.line + (final ? "\n" : "")).utf8))
            } else if !final {
                logger.info("progress: \(snapshot.line)")
            }
        }
    }

    /// The summary at the end: on stderr, and in the log file when there is one.
    func summary(_ text: String, logFile: String?) {
        FileHandle.standardError.write(Data((text + "\n").utf8))
        if logFile != nil { logger.notice("\(text)") }
    }
}

/// A swift-log handler appending lines to a file (created owner-only).
struct FileLogHandler: LogHandler {
    final class Sink: Sendable {
        let handle: Mutex<FileHandle>
        init(_ handle: FileHandle) { self.handle = Mutex(handle) }
        func write(_ line: String) { handle.withLock { $0.write(Data(line.utf8)) } }
    }

    let sink: Sink
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .info

    init(path: String) throws {
        if !FileManager.default.fileExists(atPath: path) {
            _ = FileManager.default.createFile(atPath: path, contents: nil, attributes: [.posixPermissions: 0o600])
        }
        guard let handle = FileHandle(forWritingAtPath: path) else {
            throw ChatBatchError(.unwritableLog, "cannot write the log file \(path)")
        }
        handle.seekToEndOfFile()
        sink = Sink(handle)
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let time = ISO8601DateFormatter().string(from: Date())
        sink.write("\(time) \(event.level) \(event.message)\n")
    }
}
