/// Numbers: integers as `Int`, the rest as `Double`, exactly as `strtod` reads them.
extension JSONParser {
    mutating func parseNumber() throws(JSONParseError) -> JSON {
        let start = i
        var isInteger = true
        // The digits as they are read, for the fast path below: at most 15 significant ones.
        var mantissa: UInt64 = 0
        var significant = 0
        var scale = 0
        func digit(_ b: UInt8, fraction: Bool) {
            if mantissa > 0 || b != UInt8(ascii: "0") { significant += 1 }
            if significant <= 15 { mantissa = mantissa &* 10 &+ UInt64(b &- UInt8(ascii: "0")) }
            if fraction { scale -= 1 }
        }
        if bytes[i] == UInt8(ascii: "-") { i += 1 }
        guard i < bytes.count, isDigit(bytes[i]) else { throw fail("invalid number") }
        if bytes[i] == UInt8(ascii: "0") {
            i += 1
        } else {
            while i < bytes.count && isDigit(bytes[i]) {
                digit(bytes[i], fraction: false)
                i += 1
            }
        }
        if i < bytes.count && bytes[i] == UInt8(ascii: ".") {
            isInteger = false
            i += 1
            guard i < bytes.count, isDigit(bytes[i]) else { throw fail("invalid number") }
            while i < bytes.count && isDigit(bytes[i]) {
                digit(bytes[i], fraction: true)
                i += 1
            }
        }
        var exponent = false
        if i < bytes.count && (bytes[i] == UInt8(ascii: "e") || bytes[i] == UInt8(ascii: "E")) {
            isInteger = false
            exponent = true
            i += 1
            if i < bytes.count && (bytes[i] == UInt8(ascii: "+") || bytes[i] == UInt8(ascii: "-")) { i += 1 }
            guard i < bytes.count, isDigit(bytes[i]) else { throw fail("invalid number") }
            while i < bytes.count && isDigit(bytes[i]) { i += 1 }
        }
        if !isInteger && !exponent && significant <= 15, let power = Self.exactPowerOfTen(-scale) {
            // Clinger's fast path: the digits and the power of ten are both exact Doubles, so one correctly rounded
            // division gives the correctly rounded value, as strtod would. Embedding vectors are thousands of such
            // numbers an answer.
            let value = Double(mantissa) / power
            return .double(bytes[start] == UInt8(ascii: "-") ? -value : value)
        }
        let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<i]), as: UTF8.self)
        if isInteger, let v = Int(text) { return .int(v) }
        guard let d = Double(text) else { throw JSONParseError(offset: start, reason: "invalid number") }
        return .double(d)
    }

    func isDigit(_ b: UInt8) -> Bool { b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9") }

    /// 10^k for the k whose power a Double holds exactly (0...22), else nil.
    static func exactPowerOfTen(_ k: Int) -> Double? {
        guard k >= 0 && k <= 22 else { return nil }
        var power = 1.0
        for _ in 0..<k { power *= 10 }  // every 10^j up to 10^22 is exact, so each product is too
        return power
    }
}
