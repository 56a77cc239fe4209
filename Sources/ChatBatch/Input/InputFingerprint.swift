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
    static func of(_ config: RunConfiguration) -> String? {
        var st = stat()
        guard stat(config.input, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { return nil }
        guard let content = contentHash(config.input) else { return nil }
        let mtime = Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec)
        return "v1:\(st.st_size):\(mtime):\(StableHash.hex(content)):\(StableHash.hex(shapeHash(config)))"
    }

    /// The settings that decide which lines are sent and what their bodies are.
    static func shapeHash(_ config: RunConfiguration) -> UInt64 {
        let shape: JSON = [
            "input": .string(config.input), "model": config.model.map(JSON.string) ?? .null,
            "default_model": config.defaultModel.map(JSON.string) ?? .null, "id_field": .string(config.idField),
            "max_output_tokens": .int(config.limits.maxOutputTokens), "context_tokens": .int(config.limits.contextTokens),
            "request": .object(config.requestDefaults), "system": config.system.map(JSON.string) ?? .null,
            "template": config.template.map(JSON.string) ?? .null, "stream": .bool(config.stream),
            "shard": config.shard.map { .string("\($0.index)/\($0.count)") } ?? .null,
        ]
        return StableHash.of(shape.serialized())
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
            if n < 0 { if errno == EINTR { continue }; return nil }
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
