import ChatBatch
import ChatBatchCore
import Foundation

/// `-` as the input: standard input is written to a file beside the outputs, so the run (and a resume) has a file
/// to read, fingerprint and report lines of.
enum StandardInput {
    static func spool(to path: String) throws -> String {
        let folder = (path as NSString).deletingLastPathComponent
        makeFolders(folder)
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw ChatBatchError(
                .unreadableInput, "cannot write \(path) to keep standard input: \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = read(0, &buffer, buffer.count)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            var offset = 0
            while offset < n {
                let w = buffer.withUnsafeBytes { write(fd, $0.baseAddress! + offset, n - offset) }
                guard w > 0 else {
                    throw ChatBatchError(.writeFailed, "cannot write \(path): \(String(cString: strerror(errno)))")
                }
                offset += w
            }
        }
        return path
    }
}
