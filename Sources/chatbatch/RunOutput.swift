import ArgumentParser
import CTerminal
import ChatBatch
import ChatBatchCore
import Foundation
import Logging
import Synchronization

/// Writes to a file descriptor and ignores failures: a full disk or a closed pipe under a log must never stop
/// or crash a run (`FileHandle.write` traps on them).
enum Stream {
    static func write(_ text: String, to fd: Int32 = 2) {
        var bytes = Array(text.utf8)
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeMutableBytes { Glibc.write(fd, $0.baseAddress! + offset, $0.count - offset) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return }
            offset += n
        }
    }
}

/// Where a run's messages and progress go: a redrawn line on a terminal, or log lines otherwise.
struct RunOutput: Sendable {
    let terminal: Bool
    let quiet: Bool
    let logger: Logger

    /// Terminal mode when stderr is a terminal and no log file is set (and the format is text); log lines to
    /// stderr or the log file otherwise.
    init(quiet: Bool, logFile: String?, format: LogFormat = .text) throws {
        self.quiet = quiet
        terminal = logFile == nil && format == .text && isatty(2) == 1
        let handler = try LineLogHandler(path: logFile, format: format)
        logger = Logger(label: "chatbatch", factory: { _ in handler })
    }

    /// A message from the run (an invalid line, a warning, a stop).
    func message(_ text: String) {
        if terminal {
            Stream.write("\r\u{1B}[2K" + text + "\n")
        } else {
            let (level, plain) = LineLogHandler.leveled(text)
            logger.log(level: level, "\(plain)")
        }
    }

    /// Progress: redrawn in place on a terminal (at most 4 times a second, fitted to its width), a plain line per
    /// interval otherwise.
    func progress(interval: Double?) -> ProgressOptions? {
        if quiet { return nil }
        let every = interval ?? (terminal ? 0.25 : 30)
        let terminal = self.terminal
        let logger = self.logger
        return ProgressOptions(interval: max(terminal ? 0.25 : 0.05, every)) { snapshot, final in
            if terminal {
                // The width is read at every redraw, so a resized window (SIGWINCH) is fitted by the next one.
                let columns = Int(cb_terminal_columns(2))
                Stream.write("\r\u{1B}[2K" + snapshot.line(width: columns > 0 ? columns : 80) + (final ? "\n" : ""))
            } else if !final {
                logger.info("progress: \(snapshot.line)")
            }
        }
    }

    /// The summary at the end: on stderr, and in the log file when there is one (JSON log lines on stderr carry it
    /// as events only, so that a shipper reading stderr gets nothing but JSON).
    /// In the log, one event a line (every line timestamped), at a level the exit code gives: notice when all is
    /// done, warning when some lines failed, error otherwise.
    func summary(_ text: String, logFile: String?, format: LogFormat = .text, exit: RunExit) {
        if logFile != nil || format == .text { Stream.write(text + "\n") }
        guard logFile != nil || format == .json else { return }
        let level: Logger.Level = exit == .allDone ? .notice : exit == .doneWithFailures ? .warning : .error
        for line in text.split(separator: "\n") {
            logger.log(level: level, "\(LineLogHandler.unprefixed(String(line)))")
        }
    }
}

/// How log lines are written: `text` (`time chatbatch level: message`) or `json` (one object a line, for log shippers).
enum LogFormat: String, ExpressibleByArgument, CaseIterable, Sendable {
    case text, json
}

/// A swift-log handler writing one event a line, as text or JSON, to stderr or appended to a file (created
/// owner-only). A failed write is dropped, never raised.
struct LineLogHandler: LogHandler {
    let fd: Int32
    let format: LogFormat
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .info

    init(path: String?, format: LogFormat = .text) throws {
        self.format = format
        guard let path else {
            fd = 2
            return
        }
        let opened = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o600)
        guard opened >= 0 else {
            throw ChatBatchError(
                .unwritableLog, "cannot write the log file \(path): \(String(cString: strerror(errno)))")
        }
        fd = opened
    }

    /// Library messages start with "chatbatch: "; the log line names chatbatch once already.
    static func unprefixed(_ text: String) -> String {
        text.hasPrefix("chatbatch: ") ? String(text.dropFirst("chatbatch: ".count)) : text
    }

    /// A library message's level from its words ("chatbatch: warning: …", "chatbatch: error: …"), with those
    /// words taken off: the log line says the level once.
    static func leveled(_ text: String) -> (Logger.Level, String) {
        let plain = unprefixed(text)
        for (word, level) in [("warning: ", Logger.Level.warning), ("error: ", .error)] where plain.hasPrefix(word) {
            return (level, String(plain.dropFirst(word.count)))
        }
        return (.notice, plain)
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let time = ISO8601DateFormatter().string(from: Date())
        switch format {
        case .text:
            Stream.write("\(time) chatbatch \(event.level): \(event.message)\n", to: fd)
        case .json:
            let line: JSON = [
                "time": .string(time), "level": .string("\(event.level)"), "program": "chatbatch",
                "message": .string("\(event.message)")
            ]
            Stream.write(line.serialized() + "\n", to: fd)
        }
    }
}
