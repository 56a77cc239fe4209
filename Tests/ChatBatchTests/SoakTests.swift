import ChatBatchCore
import FakeGateway
import Foundation
import Testing

@testable import ChatBatch

@Suite("Soak: ten thousand requests under failures")
struct SoakTests {
    @Test func soakOfTenThousandRequestsUnderFailuresLosesNothing() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start {
            $0.fail429Rate = 0.02
            $0.fail500Rate = 0.02
            $0.fail503Rate = 0.02
            $0.resetRate = 0.02
            $0.retryAfterSeconds = nil
            $0.randomSeed = 99
            $0.threads = 1
        }
        defer { g.shutdown() }
        let n = 10_000
        scratch.write("in.jsonl", lines: promptLines(n))
        var s = settings(scratch, g)
        s.concurrency = 128
        s.maxAttempts = 30
        s.retryMaxDelay = 0.05
        let (summary, _) = try runJob(s)
        #expect(summary.exit == .allDone && summary.done == n)
        #expect(summary.retries > 0)
        try expectExactlyOnce(scratch, ids: (1...n).map { String(format: "p%04d", $0) }, gateway: g)
    }
}
