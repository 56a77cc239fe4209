import ChatBatchCore
import FakeGateway
import Foundation
import Testing

@testable import ChatBatch

@Suite("JSON: key order, integers, escapes")
struct JSONTests {
    @Test func jsonKeepsKeyOrderIntegersAndEscapes() throws {
        let text = #"{"b":1,"a":[true,null,2.5,-0.0001,1e3],"s":"x\"\\\n\u00e9\ud83d\ude00","n":-12}"#
        let v = try JSON.parse(text)
        #expect(v.objectValue?.keys == ["b", "a", "s", "n"])
        #expect(v["b"] == .int(1))
        #expect(v["s"]?.stringValue == "x\"\\\né😀")
        #expect(try JSON.parse(v.serialized()) == v)
        let control = JSON.string("a\u{01}b\tc\r\n\"\\d")
        #expect(control.serialized() == #""a\u0001b\tc\r\n\"\\d""#)
        #expect(try JSON.parse(control.serialized()) == control)
        #expect(v.serialized().hasPrefix(#"{"b":1,"a":[true,null,2.5,"#))
        for bad in ["{", "[1,]", "{\"a\" 1}", "01", "\"\\x\"", "nul", "{} {}", "\"\u{01}\""] {
            #expect(throws: JSONParseError.self, "\(bad)") { try JSON.parse(bad) }
        }
        #expect(throws: JSONParseError.self) { try JSON.parse([0x22, 0xC3, 0x28, 0x22]) }  // invalid UTF-8
    }

    /// Decimals parse to exactly the Double `strtod` gives, on the fast path (up to 15 digits, scale up to 22) and past
    /// it: an embedding written back byte for byte is a second concern; the numbers read must be the numbers sent.
    @Test func decimalsParseToTheSameDoubleAsStrtod() throws {
        var rng = SplitMix64(seed: 7)
        var texts = [
            "0.5", "-0.0", "0.1", "-0.746528", "123456789012345.5", "0.0000000000000000000001", "1.7976931348623157",
            "9007199254740993.0", "0.30000000000000004", "1e-7", "2.5E+3", "-12.000"
        ]
        for _ in 0..<20_000 {
            let digits = Int(rng.next() % 17) + 1
            var text = rng.next() % 2 == 0 ? "-" : ""
            var body = String(rng.next() % 9 + 1)
            for _ in 1..<digits { body += String(rng.next() % 10) }
            let point = Int(rng.next() % UInt64(digits + 8))
            if point >= digits {
                text += "0." + String(repeating: "0", count: point - digits) + body
            } else {
                text += body.prefix(max(1, point)) + "." + body.dropFirst(max(1, point)) + (point == 0 ? "0" : "")
            }
            texts.append(text)
        }
        for text in texts {
            let parsed = try JSON.parse("[\(text)]").arrayValue?.first?.doubleValue
            #expect(parsed?.bitPattern == Double(text)?.bitPattern, "\(text)")
        }
    }
}
