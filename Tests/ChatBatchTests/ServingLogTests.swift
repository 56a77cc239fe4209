import Testing

@testable import ChatBatch

/// What a lane's key served at a recent moment, counted once the answers are in: requests sent by then and out
/// then, not those sent after it, nor those the key refused.
struct ServingLogTests {
    let ms: UInt64 = 1_000_000

    @Test func theKeyServedWhatWasSentByThenAndAnsweredAfterOrIsStillOut() {
        var log = ServingLog()
        for t in [100, 100, 120, 150, 200, 260] { log.sent(at: UInt64(t) * ms) }
        log.returned(sent: 100 * ms, at: 140 * ms)  // answered before the moment: not out at 180
        log.returned(sent: 100 * ms, at: 250 * ms)
        log.returned(sent: 150 * ms, at: 190 * ms)
        log.refused(sent: 150 * ms)  // the key refused it: it never served it
        log.returned(sent: 200 * ms, at: 300 * ms)  // sent after the moment
        // At 180 ms: the second of 100 (answered at 250) and 120 (still out).
        #expect(log.serving(at: 180 * ms) == 2)
        #expect(log.serving(at: 120 * ms) == 3)
        #expect(log.refused == [150 * ms])
        // A request taken back before it left is forgotten, not counted as answered.
        log.returned(sent: 260 * ms, at: nil)
        #expect(log.serving(at: 280 * ms) == 2 && log.out == [120 * ms: 1])
    }

    @Test func answersOlderThanTheLogKeepsAreForgotten() {
        var log = ServingLog()
        log.sent(at: 1 * ms)
        log.returned(sent: 1 * ms, at: 2 * ms)
        log.refused(sent: 1 * ms)
        log.sent(at: 3 * ms)
        log.returned(sent: 3 * ms, at: 4 * ms)
        #expect(log.serving(at: 3 * ms) == 1)
        log.sent(at: ServingLog.keep + 10 * ms)
        log.returned(sent: ServingLog.keep + 10 * ms, at: ServingLog.keep + 20 * ms)
        #expect(log.serving(at: 3 * ms) == 0 && log.refused.isEmpty)
    }
}
