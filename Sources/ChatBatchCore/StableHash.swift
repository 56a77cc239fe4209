/// FNV-1a, 64 bit: a hash that is the same on every machine and every run.
///
/// Used where a hash is stored or shared: request-body fingerprints in the checkpoint,
/// `--shard i/n` assignment, and duplicate-id detection without keeping every id in memory.
public struct StableHash: Sendable {
    public private(set) var value: UInt64 = 0xcbf2_9ce4_8422_2325

    public init() {}

    public mutating func combine<C: Sequence>(_ bytes: C) where C.Element == UInt8 {
        for b in bytes {
            value ^= UInt64(b)
            value = value &* 0x0000_0100_0000_01B3
        }
    }

    public static func of(_ s: String) -> UInt64 {
        var h = StableHash()
        h.combine(s.utf8)
        return h.value
    }

    public static func of(_ bytes: [UInt8]) -> UInt64 {
        var h = StableHash()
        h.combine(bytes)
        return h.value
    }

    /// Sixteen lower-case hex digits.
    public static func hex(_ v: UInt64) -> String {
        let s = String(v, radix: 16)
        return String(repeating: "0", count: 16 - s.count) + s
    }
}
