extension Sequence where Element == UInt8 {
    /// The bytes as lower-case hex digits, two a byte (a digest shown, a `bytea` value sent). Written straight into
    /// the string's storage: a store's worker sends every answer this way.
    @inlinable
    public var hexDigits: String {
        let bytes = Array(self)
        return String(unsafeUninitializedCapacity: bytes.count * 2) { out in
            let digits: StaticString = "0123456789abcdef"
            digits.withUTF8Buffer { digit in
                bytes.withUnsafeBufferPointer { source in
                    var i = 0
                    for b in source {
                        out[i] = digit[Int(b >> 4)]
                        out[i + 1] = digit[Int(b & 15)]
                        i += 2
                    }
                }
            }
            return bytes.count * 2
        }
    }
}
