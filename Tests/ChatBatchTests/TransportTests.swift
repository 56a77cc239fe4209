import ChatBatchCore
import FakeGateway
import Foundation
import Synchronization
import TestSupport
import Testing

@testable import ChatBatch

/// The transport through each event loop, over real HTTP to the fake gateway.
@Suite("Transport: epoll and the portable curl_multi_poll loop")
struct TransportTests {
    static var loops: [TransportEventLoop] {
        #if os(Linux)
            return [.epoll, .poll]
        #else
            return [.poll]
        #endif
    }

    final class Answers: Sendable {
        let statuses = Mutex<[Int]>([])
    }

    @Test(arguments: loops)
    func manyConcurrentRequestsAreAllAnsweredAndCancelAllEndsTheRest(loop: TransportEventLoop) throws {
        let g = try FakeGateway.start { $0.latencyMilliseconds = 20 }
        defer { g.shutdown() }
        let transport = CurlTransport(maxConnections: 32, eventLoop: loop)
        defer { transport.shutdown() }
        let answers = Answers()
        func request(_ i: Int) -> HTTPRequest {
            let body: JSON = [
                "model": "openai/gpt-oss-120b", "messages": [["role": "user", "content": .string("q\(i)")]]
            ]
            return HTTPRequest(
                url: g.baseURL + "/chat/completions", headers: ["Authorization: Bearer sk-fake"],
                body: Array(body.serialized().utf8))
        }
        transport.submit(
            (1...200).map { i in (request(i), { r in answers.statuses.withLock { $0.append(r.status) } }) })
        #expect(eventually(timeout: 20) { answers.statuses.withLock { $0.count } == 200 })
        #expect(answers.statuses.withLock { $0 }.allSatisfy { $0 == 200 })
        #expect(g.ledger.snapshot().count == 200)
        // Stalled requests end as cancelled when asked.
        let stalled = try FakeGateway.start { $0.stallRate = 1 }
        defer { stalled.shutdown() }
        let box = Answers()
        transport.submit(
            (1...5).map { _ in
                (
                    HTTPRequest(
                        url: stalled.baseURL + "/chat/completions", headers: ["Authorization: Bearer sk-fake"],
                        body: Array(#"{"model":"openai/gpt-oss-120b","messages":[{"role":"user","content":"x"}]}"#.utf8)
                    ),
                    { r in box.statuses.withLock { $0.append(r.failure?.kind == .cancelled ? -1 : r.status) } }
                )
            })
        var stats = HTTPRequest(url: stalled.rootURL + "/fake/stats", headers: [], body: [])
        stats.method = "GET"
        #expect(eventually(timeout: 10) { (try? JSON.parse(transport.send(stats).body))?["in_flight"] == 5 })
        transport.cancelAll()
        #expect(eventually(timeout: 10) { box.statuses.withLock { $0.count } == 5 })
        #expect(box.statuses.withLock { $0 }.allSatisfy { $0 == -1 })
    }
}
