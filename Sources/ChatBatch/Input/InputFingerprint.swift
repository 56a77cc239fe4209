import ChatBatchCore
import Foundation

/// What proves that an input, and every setting that shapes its requests, is what a finished run saw: the
/// file's size, modification time and a hash of its bytes, and a hash of the request-shaping settings.
///
/// A run that finished every line records it in the checkpoint; a later run with the same fingerprint (and
/// nothing pending since) skips reading the input line by line. Anything else, a changed byte, a new
/// `--set`, another shard, falls back to the line-level check.
enum InputFingerprint {
    /// The fingerprint of `config`'s input, or nil when the file cannot be read.
    static func of(_ config: RunConfiguration, endpoints: [String]) -> String? {
        var st = stat()
        let input = config.files.input
        guard stat(input, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { return nil }
        guard let content = contentHash(input) else { return nil }
        let mtime = Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec)
        return
            "v2:\(st.st_size):\(mtime):\(StableHash.hex(content)):\(StableHash.hex(shapeHash(config, endpoints: endpoints)))"
    }

    /// The settings that decide which lines are sent and what their bodies are (the whole `RequestShape`), the
    /// input's path, and the endpoints that may answer.
    static func shapeHash(_ config: RunConfiguration, endpoints: [String]) -> UInt64 {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        var bytes = Array((try? encoder.encode(config.shape)) ?? Data())
        bytes += Array(config.files.input.utf8) + [0]
        for endpoint in endpoints.sorted() { bytes += Array(endpoint.utf8) + [0] }
        return StableHash.of(bytes)
    }

    /// A 64-bit hash of the file's bytes, eight at a time (FNV-1a's step on words), read in 1 MiB blocks.
    static func contentHash(_ path: String) -> UInt64? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        let prime: UInt64 = 0x0000_0100_0000_01B3
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 8)
        defer { buffer.deallocate() }
        while true {
            let n = read(fd, buffer.baseAddress, buffer.count)
            if n < 0 {
                if errno == EINTR { continue }
                return nil
            }
            if n == 0 { break }
            var i = 0
            while i + 8 <= n {
                h = (h ^ buffer.loadUnaligned(fromByteOffset: i, as: UInt64.self)) &* prime
                i += 8
            }
            while i < n {
                h = (h ^ UInt64(buffer[i])) &* prime
                i += 1
            }
            h = (h ^ UInt64(n)) &* prime  // block boundaries count, so the same bytes read differently cannot collide
        }
        return h
    }
}
