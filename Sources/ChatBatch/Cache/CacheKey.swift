import ChatBatchCore

/// The response cache's key for a request body: a 128-bit hash of its canonical form.
///
/// Canonical: object keys sorted at every level, no whitespace, and without `stream` and `stream_options`
/// (a streamed and a plain request get the same answer). `custom_id` and headers are not in the body. Answers the
/// fake gateway gave are keyed apart (`fake:` first), so a run against a real endpoint never finds them.
enum CacheKey {
    /// What starts the key of an answer the fake gateway gave: such an answer never answers a real endpoint's request.
    static let fakePrefix = "fake:"

    /// The key of `body`; `fake` (a run against the fake gateway) keys it apart from every real endpoint's answers.
    static func of(_ body: JSON, fake: Bool = false) -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(512)
        write(body, topLevel: true, to: &bytes)
        let a = StableHash.of(bytes)
        // A second, independent 64-bit FNV-1a (another offset basis, the bytes taken from the end) makes 128 bits.
        var b: UInt64 = 0x6c62_272e_07bb_0142
        bytes.withUnsafeBufferPointer { buffer in
            var i = buffer.count
            while i > 0 {
                i -= 1
                b = (b ^ UInt64(buffer[i])) &* 0x0000_0100_0000_01B3
            }
        }
        return (fake ? fakePrefix : "") + StableHash.hex(a) + StableHash.hex(b)
    }

    static func write(_ value: JSON, topLevel: Bool = false, to out: inout [UInt8]) {
        switch value {
        case .object(let object):
            out.append(0x7B)
            var first = true
            for key in object.keys.sorted() where !(topLevel && (key == "stream" || key == "stream_options")) {
                if !first { out.append(0x2C) }
                first = false
                JSON.string(key).write(to: &out)
                out.append(0x3A)
                write(object[key]!, to: &out)
            }
            out.append(0x7D)
        case .array(let items):
            out.append(0x5B)
            for (i, item) in items.enumerated() {
                if i > 0 { out.append(0x2C) }
                write(item, to: &out)
            }
            out.append(0x5D)
        default:
            value.write(to: &out)
        }
    }
}
