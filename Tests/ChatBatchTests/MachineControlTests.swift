import ChatBatchCore
import Testing

@testable import ChatBatch

/// Controls (`chatbatch control`) as events of the run machine: what each changes, and what it records.
extension MachineTests {
    static func control(_ id: Int, _ words: [String], provider: String? = nil) throws -> ControlRequest {
        ControlRequest(
            id: id, action: try ControlAction(words: words), provider: provider, host: "h", pid: 1, at: 1_800_000_000)
    }

    /// What came of each control the machine settled so far, by id.
    static func outcomes(_ h: Harness) -> [Int: String] {
        var out: [Int: String] = [:]
        for op in h.records { if case .controlSettled(let id, let outcome) = op { out[id] = outcome } }
        return out
    }

    @Test func pauseSendsNothingNewUntilResumeAndDrainEndsTheRunResumably() throws {
        var h = try Harness()
        h.handle(.start)
        h.feed(["a", "b", "c", "d", "e", "f", "g", "h", "i"])
        #expect(h.sentIDs == ["a", "b", "c", "d"])
        h.handle(.control([try Self.control(1, ["pause"])]))
        #expect(h.machine.paused && Self.outcomes(h)[1]?.hasPrefix("applied") == true)
        for id in ["a", "b", "c", "d"] { h.answer(id, 200) }
        #expect(h.sentIDs.isEmpty && !h.finished)  // what was in flight finished; nothing new, no time limit
        h.handle(.control([try Self.control(2, ["resume"]), try Self.control(3, ["set", "concurrency=2"])]))
        #expect(h.sentIDs == ["e", "f"] && !h.machine.paused)
        h.handle(.control([try Self.control(4, ["drain"])]))
        #expect(h.sentIDs == ["e", "f"] && !h.finished)
        h.answer("e", 200)
        h.answer("f", 200)
        #expect(h.finished && h.conclude().exit == .interrupted)
        #expect(h.finishedIDs.count == 6)
        // Once stopping, a control is refused with the reason.
        var late = try Harness()
        late.handle(.start)
        late.feed(["a"])
        late.handle(.signal)
        late.handle(.control([try Self.control(5, ["resume"])]))
        #expect(Self.outcomes(late)[5]?.hasPrefix("refused: the run is already stopping") == true)
    }

    @Test func aLowerBudgetStopsTheRunAndAnUnknownProviderIsRefused() throws {
        var h = try Harness { $0.prices = Prices(inputPerMillion: 0, outputPerMillion: 36) }
        h.handle(.start)
        h.feed(["a", "b", "c", "d", "e", "f"])
        h.handle(.control([try Self.control(1, ["set", "max_cost=0"]), try Self.control(2, ["pause"], provider: "x")]))
        #expect(Self.outcomes(h)[2]?.hasPrefix("refused: this run has no provider named x") == true)
        for id in ["a", "b", "c", "d"] { h.answer(id, 200) }
        #expect(h.sentIDs.isEmpty && h.finished)
        #expect(h.conclude().exit == .stoppedEarly)
    }
}
