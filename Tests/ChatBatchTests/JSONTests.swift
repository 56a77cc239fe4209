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
}
