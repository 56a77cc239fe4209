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

/// The loop the transport thread runs: libcurl's sockets and the wake-up pipe, waited on by epoll or curl_multi_poll.
final class TransportLoop {
    let multi: UnsafeMutableRawPointer
    let shared: CurlTransport.Shared
    let eventLoop: TransportEventLoop
    /// The epoll descriptor (-1 with the poll loop).
    var epoll: Int32 = -1
    var active: [UnsafeMutableRawPointer: Transfer] = [:]
    var spare: [UnsafeMutableRawPointer] = []
    /// When libcurl next wants `CURL_SOCKET_TIMEOUT`, in uptime nanoseconds; nil when it wants none.
    var timerDeadline: UInt64? = nil
    /// What the server speaks, learnt from answers: over HTTP/2 (and nothing else) connections per host are capped,
    /// so that after a GOAWAY the waiting transfers share a few new connections instead of opening one each.
    var sawHTTP1 = false
    var cappedForHTTP2 = false

    init(shared: CurlTransport.Shared, maxConnections: Int, eventLoop: TransportEventLoop) {
        self.shared = shared
        self.eventLoop = eventLoop
        multi = curl_multi_init()!
        cb_curl_multi_setopt_long(multi, CURLMOPT_MAXCONNECTS, max(8, maxConnections))
        cb_curl_multi_setopt_long(multi, CURLMOPT_PIPELINING, Int(CURLPIPE_MULTIPLEX))
        // HTTP/2: as many streams on one connection as the server allows (libcurl's own cap is 100).
        cb_curl_multi_setopt_long(multi, CURLMOPT_MAX_CONCURRENT_STREAMS, 1000)
        #if os(Linux)
            if eventLoop == .epoll {
                epoll = cb_epoll_create()
                cb_epoll_add(epoll, shared.wakeRead, cb_EPOLLIN)
                let context = Unmanaged.passUnretained(self).toOpaque()
                cb_curl_multi_setopt_socketfunction(multi, socketCallback)
                cb_curl_multi_setopt_pointer(multi, CURLMOPT_SOCKETDATA, context)
                cb_curl_multi_setopt_timerfunction(multi, timerCallback)
                cb_curl_multi_setopt_pointer(multi, CURLMOPT_TIMERDATA, context)
            }
        #endif
    }

    static func now() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

    func run() {
        #if os(Linux)
            var fds = [Int32](repeating: 0, count: 256)
            var events = [UInt32](repeating: 0, count: 256)
        #endif
        while true {
            let (items, cancel, stop) = shared.inbox.withLock { box in
                let taken = (box.items, box.cancelAll, box.stop)
                box.items = []
                box.cancelAll = false
                return taken
            }
            for (request, completion) in items {
                if stop { completion(Self.cancelled()) } else { start(request, completion) }
            }
            if cancel {
                for (easy, transfer) in active {
                    curl_multi_remove_handle(multi, easy)
                    recycle(easy)
                    if let list = transfer.headerList { curl_slist_free_all(list) }
                    transfer.completion(Self.cancelled())
                }
                active.removeAll()
            }
            if stop && active.isEmpty { break }
            #if os(Linux)
                if eventLoop == .epoll { waitEpoll(&fds, &events) } else { waitPoll() }
            #else
                waitPoll()
            #endif
            finishCompleted()
        }
        for easy in spare { curl_easy_cleanup(easy) }
        curl_multi_cleanup(multi)
        if epoll >= 0 { close(epoll) }
    }

    /// Hands every transfer libcurl reports done to its completion.
    func finishCompleted() {
        var left: Int32 = 0
        while let message = curl_multi_info_read(multi, &left) {
            guard message.pointee.msg == CURLMSG_DONE, let easy = message.pointee.easy_handle else { continue }
            finish(easy, code: message.pointee.data.result)
        }
    }

    /// The portable wait: `curl_multi_poll` over libcurl's sockets and the wake-up pipe, then `curl_multi_perform`.
    func waitPoll() {
        var running: Int32 = 0
        curl_multi_perform(multi, &running)
        finishCompleted()  // before waiting: a transfer that just ended must not wait for the next wake-up
        var wake = curl_waitfd(fd: shared.wakeRead, events: Int16(CURL_WAIT_POLLIN), revents: 0)
        curl_multi_poll(multi, &wake, 1, 1000, nil)
        if wake.revents != 0 { drainWakePipe() }
        curl_multi_perform(multi, &running)
    }

    func drainWakePipe() {
        var sink = [UInt8](repeating: 0, count: 256)
        while read(shared.wakeRead, &sink, sink.count) > 0 {}
    }

    #if os(Linux)
        /// The Linux wait: epoll over the sockets libcurl asked for, then `curl_multi_socket_action` on the ready ones.
        func waitEpoll(_ fds: inout [Int32], _ events: inout [UInt32]) {
            var running: Int32 = 0
            var wait: Int32 = 1000
            if let deadline = timerDeadline {
                let now = Self.now()
                wait = deadline <= now ? 0 : Int32(min(1000, (deadline - now + 999_999) / 1_000_000))
            }
            let n = cb_epoll_wait(epoll, &fds, &events, Int32(fds.count), wait)
            for k in 0..<max(0, Int(n)) {
                let fd = fds[k]
                if fd == shared.wakeRead {
                    drainWakePipe()
                    continue
                }
                let e = events[k]
                var flags: Int32 = 0
                if e & cb_EPOLLIN != 0 { flags |= CURL_CSELECT_IN }
                if e & cb_EPOLLOUT != 0 { flags |= CURL_CSELECT_OUT }
                if e & (cb_EPOLLERR | cb_EPOLLHUP) != 0 { flags |= CURL_CSELECT_ERR }
                curl_multi_socket_action(multi, fd, flags, &running)
            }
            if let deadline = timerDeadline, deadline <= Self.now() {
                timerDeadline = nil
                curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &running)
            }
        }

    #endif

    #if os(Linux)
        /// libcurl tells which events it wants on a socket.
        func watch(_ fd: Int32, what: Int32) {
            if what == CURL_POLL_REMOVE {
                cb_epoll_del(epoll, fd)
                return
            }
            var events: UInt32 = 0
            if what & CURL_POLL_IN != 0 { events |= cb_EPOLLIN }
            if what & CURL_POLL_OUT != 0 { events |= cb_EPOLLOUT }
            if cb_epoll_mod(epoll, fd, events) != 0 && errno == ENOENT {
                cb_epoll_add(epoll, fd, events)
            }
        }

        /// libcurl asks to be called back in `ms` milliseconds (-1: never).
        func setTimer(_ ms: Int) {
            timerDeadline = ms < 0 ? nil : Self.now() + UInt64(ms) * 1_000_000
        }
    #endif

    static func cancelled() -> HTTPResponse {
        HTTPResponse(
            status: 0, headers: [:], body: [],
            failure: TransportFailure(kind: .cancelled, curlCode: 0, message: "cancelled"),
            firstByteSeconds: 0, totalSeconds: 0)
    }

    /// HTTP/2 answers only: at most 8 connections per host (multiplexed); any HTTP/1.1 answer lifts the cap again.
    func learnProtocol(_ version: Int) {
        if version == Int(CURL_HTTP_VERSION_1_1) || version == Int(CURL_HTTP_VERSION_1_0) {
            if !sawHTTP1 {
                sawHTTP1 = true
                cb_curl_multi_setopt_long(multi, CURLMOPT_MAX_HOST_CONNECTIONS, 0)
            }
        } else if version == Int(CURL_HTTP_VERSION_2_0) && !sawHTTP1 && !cappedForHTTP2 {
            cappedForHTTP2 = true
            cb_curl_multi_setopt_long(multi, CURLMOPT_MAX_HOST_CONNECTIONS, 8)
        }
    }

    func recycle(_ easy: UnsafeMutableRawPointer) {
        curl_easy_reset(easy)
        spare.append(easy)
    }

    func start(_ request: HTTPRequest, _ completion: @escaping CurlTransport.Completion) {
        let easy = spare.popLast() ?? curl_easy_init()!
        let transfer = Transfer(easy: easy, body: request.body, completion: completion)
        transfer.limit = request.maxResponseBytes
        // A declared length past the cap stops before a byte of it is read (the write callback checks the rest).
        cb_curl_easy_setopt_off(easy, CURLOPT_MAXFILESIZE_LARGE, curl_off_t(request.maxResponseBytes))
        let context = Unmanaged.passUnretained(transfer).toOpaque()
        cb_curl_easy_setopt_string(easy, CURLOPT_URL, request.url)
        cb_curl_easy_setopt_long(easy, CURLOPT_NOSIGNAL, 1)
        if request.method == "GET" {
            cb_curl_easy_setopt_long(easy, CURLOPT_HTTPGET, 1)
        } else {
            cb_curl_easy_setopt_long(easy, CURLOPT_POST, 1)
            cb_curl_easy_setopt_off(easy, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(request.body.count))
            cb_curl_easy_setopt_callback(easy, CURLOPT_READFUNCTION, readBody)
            cb_curl_easy_setopt_pointer(easy, CURLOPT_READDATA, context)
        }
        cb_curl_easy_setopt_callback(easy, CURLOPT_WRITEFUNCTION, writeBody)
        cb_curl_easy_setopt_pointer(easy, CURLOPT_WRITEDATA, context)
        cb_curl_easy_setopt_callback(easy, CURLOPT_HEADERFUNCTION, writeHeader)
        cb_curl_easy_setopt_pointer(easy, CURLOPT_HEADERDATA, context)
        cb_curl_easy_setopt_pointer(easy, CURLOPT_PRIVATE, context)
        cb_curl_easy_setopt_long(easy, CURLOPT_CONNECTTIMEOUT_MS, Int(request.connectTimeout * 1000))
        cb_curl_easy_setopt_long(easy, CURLOPT_TIMEOUT_MS, Int(request.timeout * 1000))
        cb_curl_easy_setopt_long(easy, CURLOPT_HTTP_VERSION, Int(CURL_HTTP_VERSION_2TLS))
        if request.url.hasPrefix("https:") { cb_curl_easy_setopt_long(easy, CURLOPT_PIPEWAIT, 1) }
        cb_curl_easy_setopt_long(easy, CURLOPT_TCP_KEEPALIVE, 1)
        // every encoding libcurl can decode (gzip, deflate, …)
        cb_curl_easy_setopt_string(easy, CURLOPT_ACCEPT_ENCODING, "")
        transfer.errorBuffer[0] = 0
        cb_curl_easy_setopt_pointer(easy, CURLOPT_ERRORBUFFER, transfer.errorBuffer)
        if let caInfo = request.connection.caInfo { cb_curl_easy_setopt_string(easy, CURLOPT_CAINFO, caInfo) }
        if let caPath = request.connection.caPath { cb_curl_easy_setopt_string(easy, CURLOPT_CAPATH, caPath) }
        if let proxy = request.connection.proxy { cb_curl_easy_setopt_string(easy, CURLOPT_PROXY, proxy) }
        var list: UnsafeMutablePointer<curl_slist>? = nil
        for header in request.headers { list = curl_slist_append(list, header) }
        list = curl_slist_append(list, "Expect:")
        transfer.headerList = list
        cb_curl_easy_setopt_slist(easy, CURLOPT_HTTPHEADER, list)
        active[easy] = transfer
        curl_multi_add_handle(multi, easy)
    }

    func finish(_ easy: UnsafeMutableRawPointer, code: CURLcode) {
        curl_multi_remove_handle(multi, easy)
        guard let transfer = active.removeValue(forKey: easy) else { return }
        var status = 0
        var requestSize = 0
        var firstByte: curl_off_t = 0
        var total: curl_off_t = 0
        cb_curl_easy_getinfo_long(easy, CURLINFO_RESPONSE_CODE, &status)
        cb_curl_easy_getinfo_long(easy, CURLINFO_REQUEST_SIZE, &requestSize)
        cb_curl_easy_getinfo_off(easy, CURLINFO_STARTTRANSFER_TIME_T, &firstByte)
        cb_curl_easy_getinfo_off(easy, CURLINFO_TOTAL_TIME_T, &total)
        var version = 0
        cb_curl_easy_getinfo_long(easy, CURLINFO_HTTP_VERSION, &version)
        learnProtocol(version)
        var failure: TransportFailure? = nil
        if code != CURLE_OK {
            let detail = String(cString: transfer.errorBuffer)
            let message = detail.isEmpty ? String(cString: curl_easy_strerror(code)) : detail
            // Possibly billed unless it surely never left: once libcurl has read the body, the request may have reached
            // the server whatever the error says (over HTTP/2 a multiplexed request on a connection that is reset comes
            // back as "couldn't connect", curl 7, yet the server had it). A connect or resolve failure's header count
            // is not trusted, since a proxy's CONNECT is counted there.
            let connectFailure =
                code == CURLE_COULDNT_CONNECT || code == CURLE_COULDNT_RESOLVE_HOST
                || code == CURLE_COULDNT_RESOLVE_PROXY
            let reached = transfer.sent > 0 || (!connectFailure && requestSize > 0)
            let certificate = [
                CURLE_PEER_FAILED_VERIFICATION, CURLE_SSL_CERTPROBLEM, CURLE_SSL_CACERT_BADFILE, CURLE_SSL_ISSUER_ERROR,
                CURLE_SSL_PINNEDPUBKEYNOTMATCH, CURLE_SSL_INVALIDCERTSTATUS
            ].contains(code)
            var kind: TransportFailure.Kind =
                certificate && !reached ? .tlsRefused : (reached ? .sentNoAnswer : .notSent)
            var said = message
            var connectCode = 0
            cb_curl_easy_getinfo_long(easy, CURLINFO_HTTP_CONNECTCODE, &connectCode)
            if connectCode >= 300 {
                kind = .proxyRefused
                said = "the proxy refused to open a tunnel to the server (it answered CONNECT with HTTP \(connectCode))"
            } else if transfer.tooLarge || code == CURLE_FILESIZE_EXCEEDED {
                kind = .tooLarge
                said = "the answer is larger than \(transfer.limit) bytes (max_response_bytes); it was not read further"
            }
            failure = TransportFailure(kind: kind, curlCode: Int(code.rawValue), message: said)
            status = 0
        }
        if let list = transfer.headerList { curl_slist_free_all(list) }
        recycle(easy)
        transfer.completion(
            HTTPResponse(
                status: status, headers: transfer.headers, body: transfer.response, failure: failure,
                firstByteSeconds: Double(firstByte) / 1e6, totalSeconds: Double(total) / 1e6))
    }
}

#if os(Linux)
    private let socketCallback: curl_socket_callback = { _, fd, what, userp, _ in
        Unmanaged<TransportLoop>.fromOpaque(userp!).takeUnretainedValue().watch(fd, what: what)
        return 0
    }

    private let timerCallback: curl_multi_timer_callback = { _, ms, userp in
        Unmanaged<TransportLoop>.fromOpaque(userp!).takeUnretainedValue().setTimer(ms)
        return 0
    }
#endif

private func transfer(_ userdata: UnsafeMutableRawPointer?) -> Transfer {
    Unmanaged<Transfer>.fromOpaque(userdata!).takeUnretainedValue()
}

private let readBody: cb_curl_data_callback = { buffer, size, count, userdata in
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

private let writeBody: cb_curl_data_callback = { buffer, size, count, userdata in
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
    ([
        "retry-after", "retry-after-ms", "x-should-retry", "x-tera-request-id", "x-request-id", "x-litellm-call-id",
        "content-type"
    ] + RateLimitHint.headerNames).map { Array($0.utf8) }

private let writeHeader: cb_curl_data_callback = { buffer, size, count, userdata in
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
