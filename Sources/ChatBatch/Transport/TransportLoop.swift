import CCurl
import Foundation

/// How the transport thread waits for libcurl's sockets and the wake-up pipe, one backend per file:
/// `EpollEventLoop` (Linux) and `PollEventLoop` (everywhere). `TransportEventLoop.selected` chooses.
protocol TransportEventLoopBackend: AnyObject {
    /// Waits up to a second for a socket or the wake-up pipe, and lets libcurl act on what is ready; `finish` hands
    /// the transfers libcurl reports done to their completions (the loop also calls it after each wait).
    func wait(finishing finish: () -> Void)
    /// Frees what the backend holds, once the loop has ended.
    func close()
}

/// The loop the transport thread runs: it starts and cancels transfers from the inbox, waits through its backend,
/// and hands finished transfers to their completions.
final class TransportLoop {
    let multi: UnsafeMutableRawPointer
    let shared: CurlTransport.Shared
    /// How it waits: epoll on Linux, curl_multi_poll elsewhere or when asked.
    let backend: any TransportEventLoopBackend
    var active: [UnsafeMutableRawPointer: Transfer] = [:]
    var spare: [UnsafeMutableRawPointer] = []
    /// What the server speaks, learnt from answers: over HTTP/2 (and nothing else) connections per host are capped,
    /// so that after a GOAWAY the waiting transfers share a few new connections instead of opening one each.
    var sawHTTP1 = false
    var cappedForHTTP2 = false

    init(shared: CurlTransport.Shared, maxConnections: Int, eventLoop: TransportEventLoop) {
        self.shared = shared
        let multi = curl_multi_init()!
        self.multi = multi
        cb_curl_multi_setopt_long(multi, CURLMOPT_MAXCONNECTS, max(8, maxConnections))
        cb_curl_multi_setopt_long(multi, CURLMOPT_PIPELINING, Int(CURLPIPE_MULTIPLEX))
        // HTTP/2: as many streams on one connection as the server allows (libcurl's own cap is 100).
        cb_curl_multi_setopt_long(multi, CURLMOPT_MAX_CONCURRENT_STREAMS, 1000)
        #if os(Linux)
            backend =
                eventLoop == .epoll
                ? EpollEventLoop(multi: multi, wakeRead: shared.wakeRead)
                : PollEventLoop(multi: multi, wakeRead: shared.wakeRead)
        #else
            backend = PollEventLoop(multi: multi, wakeRead: shared.wakeRead)
        #endif
    }

    static func now() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

    func run() {
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
            backend.wait(finishing: finishCompleted)
            finishCompleted()
        }
        for easy in spare { curl_easy_cleanup(easy) }
        curl_multi_cleanup(multi)
        backend.close()
    }

    /// Hands every transfer libcurl reports done to its completion.
    func finishCompleted() {
        var left: Int32 = 0
        while let message = curl_multi_info_read(multi, &left) {
            guard message.pointee.msg == CURLMSG_DONE, let easy = message.pointee.easy_handle else { continue }
            finish(easy, code: message.pointee.data.result)
        }
    }

    /// Empties the wake-up pipe (its bytes only say "look at the inbox").
    static func drain(_ wakeRead: Int32) {
        var sink = [UInt8](repeating: 0, count: 256)
        while read(wakeRead, &sink, sink.count) > 0 {}
    }

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
