import ChatBatchCore
import Foundation
import Synchronization
import TestSupport
import Testing

@testable import ChatBatch

/// `chatbatch fake-gateway` as a process: it must stop when told, as every harness expects.
@Suite("The fake gateway binary stops on SIGTERM and SIGINT", .serialized)
struct FakeGatewayProcessTests {
    /// A running `chatbatch fake-gateway`, its base URL, and its stderr.
    struct Server {
        let process: Process
        let baseURL: String
        let stderr: Pipe

        init(_ arguments: [String]) throws {
            let out = Pipe(), err = Pipe()
            process = Process()
            process.executableURL = URL(fileURLWithPath: chatbatchBinary())
            process.arguments = ["fake-gateway"] + arguments
            process.standardOutput = out
            process.standardError = err
            try process.run()
            var line = [UInt8]()
            while let byte = try out.fileHandleForReading.read(upToCount: 1)?.first, byte != 0x0A { line.append(byte) }
            baseURL = String(decoding: line, as: UTF8.self)
            stderr = err
        }

        /// Waits (bounded) for the process to end; kills it if it does not.
        func exited(within seconds: Double) -> Bool {
            let ended = eventually(timeout: seconds) { !process.isRunning }
            if !ended { kill(process.processIdentifier, SIGKILL) }
            process.waitUntilExit()
            return ended
        }
    }

    /// The statuses of requests as they come back, by client request id (0: no answer).
    final class Statuses: Sendable {
        let byID = Mutex<[String: Int]>([:])
        func withLock<T>(_ body: (inout [String: Int]) -> T) -> T { byID.withLock { body(&$0) } }
    }

    /// Sends `n` chat requests at once.
    func send(_ n: Int, to baseURL: String, transport: CurlTransport, statuses: Statuses) {
        transport.submit(
            (1...n).map { i in
                let body: JSON = [
                    "model": "openai/gpt-oss-120b", "messages": [["role": "user", "content": .string("q\(i)")]]
                ]
                let request = HTTPRequest(
                    url: baseURL + "/chat/completions",
                    headers: [
                        "Content-Type: application/json", "Authorization: Bearer sk-fake", "X-Client-Request-Id: r\(i)"
                    ],
                    body: Array(body.serialized().utf8), timeout: 10)
                return (request, { response in statuses.withLock { $0["r\(i)"] = response.status } })
            })
    }

    /// The gateway's own count of requests in flight.
    func inFlight(_ server: Server, _ transport: CurlTransport) -> Int? {
        let root = String(server.baseURL.dropLast("/v1".count))
        var request = HTTPRequest(url: root + "/fake/stats", headers: [], body: [], timeout: 5)
        request.method = "GET"
        let r = transport.send(request)
        return (try? JSON.parse(r.body))?["in_flight"]?.intValue
    }

    func ledgerEntries(_ path: String) -> [JSON] {
        let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").compactMap { try? JSON.parse(String($0)) }
    }

    @Test(arguments: [SIGTERM, SIGINT])
    func signalClosesTheListenerLetsAnswersFinishAndExitsZeroWithEveryAnswerInTheLedger(signal: Int32) throws {
        let scratch = Scratch()
        let ledger = scratch.file("ledger.jsonl")
        let server = try Server(["--latency-ms", "50", "--jitter-ms", "500", "--ledger", ledger])
        let transport = CurlTransport(maxConnections: 16)
        defer { transport.shutdown() }
        let statuses = Statuses()
        send(8, to: server.baseURL, transport: transport, statuses: statuses)
        // Signal as soon as the first answer is back: the others are still in flight.
        #expect(eventually(timeout: 10) { !statuses.withLock { $0.isEmpty } })
        kill(server.process.processIdentifier, signal)
        #expect(server.exited(within: 10))
        #expect(server.process.terminationStatus == 0)
        #expect(eventually(timeout: 10) { statuses.withLock { $0.count } == 8 })
        // Every request answered is in the ledger with the status the client saw; in-flight ones finished within the
        // grace.
        let answered = statuses.withLock { $0 }.filter { $0.value == 200 }
        #expect(answered.count == 8)
        let entries = ledgerEntries(ledger)
        for (id, status) in answered {
            #expect(
                entries.contains { $0["client_request_id"]?.stringValue == id && $0["status"]?.intValue == status },
                "\(id) missing")
        }
        // The listener is closed: a new request is not answered.
        #expect(
            transport.send(
                HTTPRequest(url: server.baseURL + "/models", headers: [], body: [], connectTimeout: 2, timeout: 2)
            ).status == 0)
    }

    @Test func stalledRequestsAreDroppedAfterTheGraceAndASecondSignalExitsAtOnce() throws {
        let scratch = Scratch()
        let ledger = scratch.file("ledger.jsonl")
        // Stalled requests are never answered: the first signal waits 1 s for them, then drops them.
        let server = try Server(["--stall", "1", "--ledger", ledger])
        let transport = CurlTransport(maxConnections: 16)
        defer { transport.shutdown() }
        let statuses = Statuses()
        send(3, to: server.baseURL, transport: transport, statuses: statuses)
        #expect(eventually(timeout: 10) { inFlight(server, transport) == 3 })
        kill(server.process.processIdentifier, SIGTERM)
        #expect(server.exited(within: 10))
        #expect(server.process.terminationStatus == 0)
        #expect(eventually(timeout: 10) { statuses.withLock { $0.count } == 3 })
        #expect(statuses.withLock { $0 }.values.allSatisfy { $0 == 0 })
        // Dropped after the grace, and recorded as billed (the requests were read).
        let dropped = ledgerEntries(ledger).filter { ($0["client_request_id"]?.stringValue ?? "").hasPrefix("r") }
        #expect(dropped.count == 3 && dropped.allSatisfy { $0["billed"] == true && $0["status"] == 0 })

        let again = try Server(["--stall", "1"])
        send(2, to: again.baseURL, transport: transport, statuses: Statuses())
        #expect(eventually(timeout: 10) { inFlight(again, transport) == 2 })
        kill(again.process.processIdentifier, SIGINT)
        // Once it says it is stopping, a second signal ends it at once, with 128 + the signal.
        // (The first line says which keys it accepts; the next one is the stop's.)
        var said = [UInt8]()
        while !String(decoding: said, as: UTF8.self).contains("stopping"),
            let byte = try again.stderr.fileHandleForReading.read(upToCount: 1)?.first
        { said.append(byte) }
        #expect(String(decoding: said, as: UTF8.self).contains("fake-gateway: stopping"))
        kill(again.process.processIdentifier, SIGTERM)
        #expect(again.exited(within: 10))
        #expect(again.process.terminationStatus == 128 + SIGTERM)
    }
}
