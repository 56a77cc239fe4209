import CCurl
import Foundation

#if os(Linux)
    /// The Linux backend: epoll over the sockets libcurl asks for (its socket callback) and the wake-up pipe, and
    /// libcurl's timer kept here; ready sockets go to `curl_multi_socket_action`. One system call per wait,
    /// however many transfers are in flight.
    final class EpollEventLoop: TransportEventLoopBackend {
        let multi: UnsafeMutableRawPointer
        let wakeRead: Int32
        let epoll: Int32
        /// When libcurl next wants `CURL_SOCKET_TIMEOUT`, in uptime nanoseconds; nil when it wants none.
        var timerDeadline: UInt64? = nil
        var fds = [Int32](repeating: 0, count: 256)
        var events = [UInt32](repeating: 0, count: 256)

        init(multi: UnsafeMutableRawPointer, wakeRead: Int32) {
            self.multi = multi
            self.wakeRead = wakeRead
            epoll = cb_epoll_create()
            cb_epoll_add(epoll, wakeRead, cb_EPOLLIN)
            let context = Unmanaged.passUnretained(self).toOpaque()
            cb_curl_multi_setopt_socketfunction(multi, socketCallback)
            cb_curl_multi_setopt_pointer(multi, CURLMOPT_SOCKETDATA, context)
            cb_curl_multi_setopt_timerfunction(multi, timerCallback)
            cb_curl_multi_setopt_pointer(multi, CURLMOPT_TIMERDATA, context)
        }

        func wait(finishing finish: () -> Void) {
            var running: Int32 = 0
            var wait: Int32 = 1000
            if let deadline = timerDeadline {
                let now = TransportLoop.now()
                wait = deadline <= now ? 0 : Int32(min(1000, (deadline - now + 999_999) / 1_000_000))
            }
            let n = cb_epoll_wait(epoll, &fds, &events, Int32(fds.count), wait)
            for k in 0..<max(0, Int(n)) {
                let fd = fds[k]
                if fd == wakeRead {
                    TransportLoop.drain(wakeRead)
                    continue
                }
                let e = events[k]
                var flags: Int32 = 0
                if e & cb_EPOLLIN != 0 { flags |= CURL_CSELECT_IN }
                if e & cb_EPOLLOUT != 0 { flags |= CURL_CSELECT_OUT }
                if e & (cb_EPOLLERR | cb_EPOLLHUP) != 0 { flags |= CURL_CSELECT_ERR }
                curl_multi_socket_action(multi, fd, flags, &running)
            }
            if let deadline = timerDeadline, deadline <= TransportLoop.now() {
                timerDeadline = nil
                curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &running)
            }
        }

        func close() { Glibc.close(epoll) }

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
            timerDeadline = ms < 0 ? nil : TransportLoop.now() + UInt64(ms) * 1_000_000
        }
    }

    private let socketCallback: curl_socket_callback = { _, fd, what, userp, _ in
        Unmanaged<EpollEventLoop>.fromOpaque(userp!).takeUnretainedValue().watch(fd, what: what)
        return 0
    }

    private let timerCallback: curl_multi_timer_callback = { _, ms, userp in
        Unmanaged<EpollEventLoop>.fromOpaque(userp!).takeUnretainedValue().setTimer(ms)
        return 0
    }
#endif
