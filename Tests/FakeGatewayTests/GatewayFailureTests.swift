import ChatBatchCore
import FakeGateway
import Foundation
import Synchronization
import TestSupport
import Testing

@testable import ChatBatch

@Suite("Fake gateway: failure modes and the ledger")
struct GatewayFailureTests {
    @Test func scriptGivesEachAttemptItsAnswer() throws {
        let g = try FakeGateway.start {
            $0.script = try! ScriptedAction.parseScript("a=429,500,503,ok;b=400")
            $0.retryAfterSeconds = 3
        }
        defer { g.shutdown() }
        let statuses = (0..<5).map { _ in post(g, body: chat("x"), clientID: "a") }
        #expect(statuses.map(\.status) == [429, 500, 503, 200, 200])
        #expect(statuses[0].headers["retry-after"] == "3")
        #expect(json(statuses[0])["error"]?["type"] == "rate_limit_error")
        #expect(json(statuses[1])["error"]?["type"] == "server_error")
        #expect(json(statuses[2])["error"]?["type"] == "service_unavailable")
        #expect(post(g, body: chat("x"), clientID: "b").status == 400)
        #expect(post(g, body: chat("x"), clientID: "c").status == 200)
        #expect(throws: FakeGatewayError.self) { try ScriptedAction.parseScript("a=teapot") }
    }

    @Test func failureRatesApply() throws {
        let g = try FakeGateway.start { $0.fail500Rate = 1 }
        defer { g.shutdown() }
        #expect((0..<5).allSatisfy { _ in post(g, body: chat("x")).status == 500 })
        let h = try FakeGateway.start {
            $0.fail429Rate = 0.5
            $0.fail503Rate = 0.5
            $0.retryAfterSeconds = nil
        }
        defer { h.shutdown() }
        let s = (0..<40).map { _ in post(h, body: chat("x")) }
        #expect(s.allSatisfy { $0.status == 429 || $0.status == 503 })
        #expect(s.contains { $0.status == 429 } && s.contains { $0.status == 503 })
        #expect(s.allSatisfy { $0.headers["retry-after"] == nil })
    }

    @Test func coldStartAnswers503UntilTheBackendIsWarm() throws {
        let g = try FakeGateway.start { $0.coldStartSeconds = 0.4 }
        defer { g.shutdown() }
        let start = Date()
        var statuses: [Int] = []
        while statuses.last != 200 && Date().timeIntervalSince(start) < 10 {
            statuses.append(post(g, body: chat("x")).status)
            usleep(50_000)
        }
        #expect(statuses.first == 503)
        #expect(statuses.last == 200)
        #expect(Date().timeIntervalSince(start) >= 0.4)
        #expect(post(g, body: chat("x")).status == 200)  // warm now
    }

    @Test func perKeyConcurrencyLimitAnswers429WithRetryAfter() throws {
        let g = try FakeGateway.start {
            $0.maxInflightPerKey = 2
            $0.latencyMilliseconds = 1500
            $0.retryAfterSeconds = 2
        }
        defer { g.shutdown() }
        let results = Mutex<[HTTPResponse]>([])
        let group = DispatchGroup()
        for i in 0..<5 {
            group.enter()
            client.submit(
                HTTPRequest(
                    url: g.baseURL + "/chat/completions", headers: ["Authorization: Bearer sk-fake"],
                    body: Array(chat("x\(i)").serialized().utf8))
            ) { r in
                results.withLock { $0.append(r) }
                group.leave()
            }
        }
        group.wait()
        let all = results.withLock { $0 }
        #expect(all.filter { $0.status == 200 }.count == 2)
        #expect(all.filter { $0.status == 429 }.count == 3)
        #expect(all.filter { $0.status == 429 }.allSatisfy { $0.headers["retry-after"] == "2" })
    }

    @Test func perKeyTokenRateLimitAnswers429() throws {
        let g = try FakeGateway.start { $0.tokensPerSecondPerKey = 50 }
        defer { g.shutdown() }
        let long = String(repeating: "word ", count: 80)
        #expect(post(g, body: chat(long)).status == 200)
        let second = post(g, body: chat(long))
        #expect(second.status == 429)
        #expect(Int(second.headers["retry-after"] ?? "") ?? 0 >= 1)
    }

    @Test func resetClosesAfterReadingAndIsBilled() throws {
        let g = try FakeGateway.start { $0.script = ["r": [.reset]] }
        defer { g.shutdown() }
        let r = post(g, body: chat("x"), clientID: "r")
        #expect(r.status == 0)
        #expect(r.failure?.kind == .sentNoAnswer)
        #expect(eventually { g.ledger.snapshot().contains { $0.clientRequestID == "r" } })
        let entry = try #require(g.ledger.snapshot().first { $0.clientRequestID == "r" })
        #expect(entry.outcome == "reset" && entry.billed && entry.status == 0)
    }

    @Test func stallNeverAnswersAndTheClientTimesOut() throws {
        let g = try FakeGateway.start { $0.script = ["s": [.stall]] }
        defer { g.shutdown() }
        let r = post(g, body: chat("x"), clientID: "s", timeout: 0.5)
        #expect(r.failure?.kind == .sentNoAnswer)
        #expect(eventually { g.ledger.snapshot().contains { $0.clientRequestID == "s" } })
        #expect(g.ledger.snapshot().first { $0.clientRequestID == "s" }?.outcome == "stall")
    }

    @Test func slowStreamingIsCancelledWhenTheClientLeaves() throws {
        let g = try FakeGateway.start { $0.streamChunkDelayMilliseconds = 100 }
        defer { g.shutdown() }
        let r = post(g, body: chat("Count to five", [("stream", true)]), clientID: "slow", timeout: 0.5)
        #expect(r.failure?.kind == .sentNoAnswer)
        #expect(eventually { g.ledger.snapshot().contains { $0.clientRequestID == "slow" } })
        #expect(g.ledger.snapshot().first { $0.clientRequestID == "slow" }?.outcome == "cancelled")
    }

    @Test func latencyDelaysTheAnswer() throws {
        let g = try FakeGateway.start { $0.latencyMilliseconds = 200 }
        defer { g.shutdown() }
        let r = post(g, body: chat("x"))
        #expect(r.status == 200)
        #expect(r.totalSeconds >= 0.2)
    }

    @Test func ledgerRecordsEveryRequestInMemoryAndAsJSONL() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("ledger-\(UUID().uuidString).jsonl")
            .path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let g = try FakeGateway.start {
            $0.ledgerPath = path
            $0.script = ["b": [.rateLimited]]
        }
        defer { g.shutdown() }
        let a = post(g, body: chat("x"), clientID: "a")
        _ = post(g, body: chat("x"), clientID: "b")
        _ = post(g, body: chat("x"), clientID: "b")
        let entries = g.ledger.snapshot()
        #expect(entries.count == 3)
        #expect(entries.map(\.sequence) == [1, 2, 3])
        let first = entries[0]
        #expect(first.clientRequestID == "a" && first.billed && first.status == 200 && first.route == "tera")
        #expect(first.requestID == a.headers["x-tera-request-id"])
        #expect(first.totalTokens == json(a)["usage"]?["total_tokens"]?.intValue)
        #expect(first.receivedAt <= first.respondedAt)
        #expect(g.ledger.billedCounts() == ["a": 1, "b": 1])
        let lines = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n")
        #expect(lines.count == 3)
        #expect(try JSON.parse(String(lines[1]))["status"] == 429)
        let mode = try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int
        #expect(mode == 0o600)
    }
}
