#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

extension Array where Element == UInt8 {
    /// The bytes hold a CR or an LF (they cannot be spliced into one JSONL line as they are). `memchr` scans a word
    /// at a time: an embeddings answer is tens of kilobytes, checked on every answer.
    public var containsLineBreak: Bool {
        withUnsafeBytes { raw in
            guard let base = raw.baseAddress, !raw.isEmpty else { return false }
            return memchr(base, 0x0A, raw.count) != nil || memchr(base, 0x0D, raw.count) != nil
        }
    }
}
