import Testing

@testable import ChatBatch

/// The lines a store worker records ahead as about to leave: at most `size` that hold, the lowest lines first,
/// each used once and only until its reservation lapses, and every one left given back when the worker stops.
struct SendReserveTests {
    let second: UInt64 = 1_000_000_000

    @Test func reservationsAreTheLowestFreeLinesUpToTheSizeAndEachLeavesOnce() {
        var reserve = SendReserve(validitySeconds: 15)
        reserve.size = 3
        #expect(reserve.wanted(from: [9, 4, 7, 5, 6], now: 0) == [4, 5, 6])
        reserve.reserved([4, 5], sentAt: 0)  // line 6's lease did not hold: it is not reserved
        // Two of three hold: more are wanted only once fewer than half do.
        #expect(reserve.wanted(from: [9, 4, 7, 5, 6], now: second).isEmpty)
        let taken = [reserve.take(4, now: second), reserve.take(4, now: second), reserve.take(7, now: second)]
        // A reservation is used once; a line never reserved waits for its own record.
        #expect(taken == [true, false, false])
        // Line 4 left and its send is not recorded yet: it is not reserved again meanwhile.
        #expect(reserve.wanted(from: [4, 5, 6, 7], now: second) == [6, 7])
        reserve.drop(4)
        #expect(reserve.wanted(from: [4, 5, 6, 7], now: second) == [4, 6])
    }

    @Test func aReservationLapsesBeforeTheLeaseMayAndIsMadeAgain() {
        var reserve = SendReserve(validitySeconds: 15)
        reserve.size = 2
        reserve.reserved([1, 2], sentAt: 10 * second)
        #expect(reserve.wanted(from: [1, 2, 3], now: 24 * second).isEmpty)
        // Fifteen seconds after the statement was sent the reservations no longer hold: those lines are wanted
        // again, and one taken now is recorded again as it leaves rather than sent at once.
        #expect(reserve.wanted(from: [1, 2, 3], now: 25 * second) == [1, 2])
        let taken = reserve.take(1, now: 25 * second)
        #expect(!taken)
    }

    @Test func whatLeftOrWasSettledIsNoLongerReservedAndTheRestGoesBackAtTheEnd() {
        var reserve = SendReserve(validitySeconds: 15)
        reserve.size = 4
        reserve.reserved([1, 2, 3, 4], sentAt: 0)
        reserve.drop(2)  // sent after its reservation was made on another path, or refused without a send
        let taken = reserve.take(1, now: second)
        let back = reserve.removeAll(), again = reserve.removeAll()
        #expect(taken && back == [3, 4] && reserve.lines.isEmpty && again.isEmpty)
    }
}
