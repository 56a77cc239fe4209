import CCurl
import Foundation

/// One transfer's state, owned by the transport thread.
final class Transfer {
    let easy: UnsafeMutableRawPointer
    let body: [UInt8]
    var sent = 0
    var response: [UInt8] = []
    /// The most bytes `response` may hold; past it the write callback stops the transfer.
    var limit = EndpointSettings.defaultMaxResponseBytes
    var tooLarge = false
    var headers: [String: String] = [:]
    var headerList: UnsafeMutablePointer<curl_slist>?
    /// libcurl's detailed message for a failure (CURLOPT_ERRORBUFFER), e.g. why a certificate was refused.
    let errorBuffer = UnsafeMutablePointer<CChar>.allocate(capacity: Int(CURL_ERROR_SIZE) + 1)
    let completion: CurlTransport.Completion

    deinit { errorBuffer.deallocate() }

    init(easy: UnsafeMutableRawPointer, body: [UInt8], completion: @escaping CurlTransport.Completion) {
        self.easy = easy
        self.body = body
        self.completion = completion
    }
}

private func transfer(_ userdata: UnsafeMutableRawPointer?) -> Transfer {
    Unmanaged<Transfer>.fromOpaque(userdata!).takeUnretainedValue()
}

let readBody: cb_curl_data_callback = { buffer, size, count, userdata in
    let t = transfer(userdata)
    let n = min(size * count, t.body.count - t.sent)
    if n > 0 {
        t.body.withUnsafeBytes { raw in
            UnsafeMutableRawPointer(buffer!).copyMemory(from: raw.baseAddress! + t.sent, byteCount: n)
        }
        t.sent += n
    }
    return n
}

let writeBody: cb_curl_data_callback = { buffer, size, count, userdata in
    let n = size * count
    let t = transfer(userdata)
    // Decoded bytes (gzip inflated) count too: a small body that inflates to gigabytes stops here.
    guard t.response.count + n <= t.limit else {
        t.tooLarge = true
        return 0  // libcurl ends the transfer (CURLE_WRITE_ERROR)
    }
    t.response.append(contentsOf: UnsafeRawBufferPointer(start: buffer, count: n))
    return n
}

/// The response headers anything reads; the others are skipped without building strings (this callback runs
/// for every header line of every answer).
private let keptHeaders: [[UInt8]] =
    (["retry-after", "retry-after-ms", "x-should-retry", "content-type"] + RateLimitHint.headerNames
    + ProviderKind.requestIDHeaders).map { Array($0.utf8) }

let writeHeader: cb_curl_data_callback = { buffer, size, count, userdata in
    let n = size * count
    let t = transfer(userdata)
    let line = UnsafeRawBufferPointer(start: buffer, count: n)
    // "HTTP/"
    if n >= 5 && line[0] == 0x48 && line[1] == 0x54 && line[2] == 0x54 && line[3] == 0x50 && line[4] == 0x2F {
        t.headers = [:]  // a new response (after 100 Continue or a redirect)
        return n
    }
    guard let colon = line.firstIndex(of: 0x3A) else { return n }
    wanted: for name in keptHeaders where name.count == colon {
        for i in 0..<colon where line[i] | 0x20 != name[i] { continue wanted }  // ASCII case-insensitive
        var start = colon + 1, end = n
        while start < end, line[start] == 0x20 || line[start] == 0x09 { start += 1 }
        while end > start,
            line[end - 1] == 0x0A || line[end - 1] == 0x0D || line[end - 1] == 0x20 || line[end - 1] == 0x09
        { end -= 1 }
        t.headers[String(decoding: name, as: UTF8.self)] = String(
            decoding: UnsafeRawBufferPointer(rebasing: line[start..<end]), as: UTF8.self)
        break
    }
    return n
}
