import CCurl
import Foundation

/// The portable backend (macOS, the BSDs, and Linux with `CHATBATCH_EVENT_LOOP=poll`): `curl_multi_poll` over
/// libcurl's sockets and the wake-up pipe, then `curl_multi_perform`.
final class PollEventLoop: TransportEventLoopBackend {
    let multi: UnsafeMutableRawPointer
    let wakeRead: Int32

    init(multi: UnsafeMutableRawPointer, wakeRead: Int32) {
        self.multi = multi
        self.wakeRead = wakeRead
    }

    func wait(finishing finish: () -> Void) {
        var running: Int32 = 0
        curl_multi_perform(multi, &running)
        finish()  // before waiting: a transfer that just ended must not wait for the next wake-up
        var wake = curl_waitfd(fd: wakeRead, events: Int16(CURL_WAIT_POLLIN), revents: 0)
        curl_multi_poll(multi, &wake, 1, 1000, nil)
        if wake.revents != 0 { TransportLoop.drain(wakeRead) }
        curl_multi_perform(multi, &running)
    }

    func close() {}
}
