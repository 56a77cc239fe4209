import CLibPQ

/// Rows sent with `COPY … FROM STDIN (FORMAT binary)`: the fastest way into PostgreSQL (no statement per row, no
/// text escaping; a `bytea` goes as its bytes). Built by `PostgresCopyRows`, sent by `PostgresConnection.copy`.
struct PostgresCopyRows {
    private(set) var bytes: [UInt8] = Array("PGCOPY\n".utf8) + [0xFF, 0x0D, 0x0A, 0x00] + [0, 0, 0, 0] + [0, 0, 0, 0]

    /// Starts a row of `fields` fields.
    mutating func row(fields: Int) { append16(Int16(fields)) }

    mutating func bigint(_ value: Int?) {
        guard let value else { return null() }
        append32(8)
        withUnsafeBytes(of: Int64(value).bigEndian) { bytes += $0 }
    }

    mutating func text(_ value: String?) {
        guard let value else { return null() }
        bytea(Array(value.utf8))
    }

    mutating func bytea(_ value: [UInt8]) {
        append32(Int32(value.count))
        bytes += value
    }

    mutating func null() { append32(-1) }

    /// The rows with the trailer that ends them.
    var finished: [UInt8] { bytes + [0xFF, 0xFF] }

    private mutating func append16(_ v: Int16) { withUnsafeBytes(of: v.bigEndian) { bytes += $0 } }
    private mutating func append32(_ v: Int32) { withUnsafeBytes(of: v.bigEndian) { bytes += $0 } }
}

extension PostgresConnection {
    /// Runs `copy` (a `COPY … FROM STDIN (FORMAT binary)`) with `rows` as its data; returns when the server has
    /// taken them all (or refused them: thrown, naming the store, as a failed statement is).
    func copy(_ copy: String, _ rows: PostgresCopyRows) throws(ChatBatchError) {
        try begin(copy)
        let data = rows.finished
        var offset = 0
        while offset < data.count {
            let n = min(1 << 20, data.count - offset)
            let sent = data.withUnsafeBytes { raw in
                PQputCopyData(handle, raw.baseAddress!.assumingMemoryBound(to: CChar.self) + offset, Int32(n))
            }
            guard sent == 1 else { break }
            offset += n
        }
        PQputCopyEnd(handle, offset == data.count ? nil : "chatbatch could not send the rows")
        try end(copy)
    }
}
