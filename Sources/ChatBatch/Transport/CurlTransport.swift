import CCurl
import Foundation
import Synchronization

/// How the transport thread waits for its sockets.
enum TransportEventLoop: String, Sendable, CaseIterable {
    /// `epoll_wait`, handing libcurl only the sockets that are ready (`curl_multi_socket_action`). Linux only.
    case epoll
    /// `curl_multi_poll` plus `curl_multi_perform`: portable (macOS, BSD), but libcurl looks at every transfer
    /// on every wake-up (25 `poll` calls per request measured at concurrency 64).
    case poll

    /// epoll on Linux, poll elsewhere; `CHATBATCH_EVENT_LOOP=poll` (or `epoll`) picks one on Linux.
    static var selected: TransportEventLoop {
        #if os(Linux)
            return ProcessInfo.processInfo.environment["CHATBATCH_EVENT_LOOP"].flatMap(Self.init(rawValue:)) ?? .epoll
        #else
            return .poll
        #endif
    }
}

/// Sends HTTP requests over one libcurl multi handle, driven by one dedicated thread.
///
/// Dispatch's global queues run only about two blocking jobs per core on Linux, so blocking calls
/// there cannot keep hundreds of requests in flight; one thread driving a multi handle can, with
/// keep-alive and HTTP/2 multiplexing. On Linux the thread waits in `epoll_wait` and hands libcurl only
/// the sockets that are ready (`curl_multi_socket_action`); elsewhere it uses `curl_multi_poll` (see
/// `TransportEventLoop`).
/// `submit` may be called from any thread: it queues the request and wakes the thread through a pipe.
/// Completions run on the transport thread and must be quick.
///
/// Bodies go through a read callback without a seek callback, on purpose: when a reused connection dies
/// after the body was sent, libcurl would silently send the POST again on a new connection (up to five
/// times), and the server may bill every copy. Without a way to rewind, libcurl fails the transfer
/// instead (`CURLE_SEND_FAIL_REWIND`), and chatbatch retries it itself, counting it as possibly billed.
final class CurlTransport: Sendable {
    typealias Completion = @Sendable (HTTPResponse) -> Void

    struct Inbox {
        var items: [(HTTPRequest, Completion)] = []
        var cancelAll = false
        var stop = false
    }

    /// The queue of work handed to the transport thread, and the pipe that wakes it.
    final class Shared: Sendable {
        let inbox = Mutex(Inbox())
        let wakeRead: Int32
        let wakeWrite: Int32

        init() {
            var fds: [Int32] = [0, 0]
            pipe(&fds)
            for fd in fds {
                _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
                _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            }
            wakeRead = fds[0]
            wakeWrite = fds[1]
        }

        deinit {
            close(wakeRead)
            close(wakeWrite)
        }

        func wake() {
            var byte: UInt8 = 1
            _ = write(wakeWrite, &byte, 1)  // a full pipe already means "wake up"
        }
    }

    private let shared = Shared()
    private let finished = DispatchSemaphore(value: 0)

    static let globalInit: Bool = {
        signal(SIGPIPE, SIG_IGN)
        return curl_global_init(Int(CURL_GLOBAL_DEFAULT)) == CURLE_OK
    }()

    /// Starts the transport thread. `maxConnections` sizes libcurl's connection cache (keep-alive).
    init(maxConnections: Int = 64, eventLoop: TransportEventLoop = .selected) {
        _ = Self.globalInit
        let thread = Thread { [shared, finished] in
            let loop = TransportLoop(shared: shared, maxConnections: maxConnections, eventLoop: eventLoop)
            loop.run()
            finished.signal()
        }
        thread.name = "chatbatch.transport"
        thread.start()
    }

    /// Queues a request; `completion` runs once, on the transport thread, with the answer or the failure.
    func submit(_ request: HTTPRequest, completion: @escaping @Sendable (HTTPResponse) -> Void) {
        submit([(request, completion)])
    }

    /// Queues several requests with one wake-up of the transport thread.
    func submit(_ batch: [(HTTPRequest, @Sendable (HTTPResponse) -> Void)]) {
        guard !batch.isEmpty else { return }
        shared.inbox.withLock { $0.items.append(contentsOf: batch) }
        shared.wake()
    }

    /// Aborts every transfer under way; each completes with a `cancelled` failure.
    func cancelAll() {
        shared.inbox.withLock { $0.cancelAll = true }
        shared.wake()
    }

    /// Cancels what is under way and stops the thread; returns when it has stopped.
    func shutdown() {
        shared.inbox.withLock {
            $0.stop = true
            $0.cancelAll = true
        }
        shared.wake()
        finished.wait()
    }

    /// Sends one request and waits for its answer (tools and tests).
    func send(_ request: HTTPRequest) -> HTTPResponse {
        let box = Mutex<HTTPResponse?>(nil)
        let done = DispatchSemaphore(value: 0)
        submit(request) { r in
            box.withLock { $0 = r }
            done.signal()
        }
        done.wait()
        return box.withLock { $0! }
    }
}
