extension Sequence where Element == UInt8 {
    /// The bytes as lower-case hex digits, two a byte (a digest shown, a `bytea` value sent).
    public var hexDigits: String {
        var out: [UInt8] = []
        out.reserveCapacity(underestimatedCount * 2)
        for b in self {
            out.append(JSON.hexDigits[Int(b >> 4)])
            out.append(JSON.hexDigits[Int(b & 15)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}
