/// Where a line may go: the lanes open now, best first, and the tail of a run kept off a provider where it would
/// finish last.
extension Scheduler {
    /// The lanes that may take a line now, best first.
    func candidates(now: UInt64) -> [Int] {
        var open = lanes.indices.filter { lanes[$0].free > 0 && now >= lanes[$0].pausedUntil }
        if config.routing == .priority,
            let warming = lanes.firstIndex(where: { $0.stopped == nil && !$0.warmedUp && $0.health.outage == nil })
        {
            // A provider still warming up holds back the ones after it: they take what it cannot, not what it has not
            // tried.
            open = open.filter { $0 <= warming }
        }
        guard config.routing == .fill else { return open }
        if inputExhausted && lanes.count > 1 { open = open.filter { !slower(than: $0, now: now) } }
        return open.sorted { a, b in
            let fa = Double(lanes[a].free) / Double(max(1, lanes[a].room)),
                fb = Double(lanes[b].free) / Double(max(1, lanes[b].room))
            return fa != fb ? fa > fb : a < b
        }
    }

    /// True when the lines left would all be answered sooner by the faster providers than one more line would be
    /// by lane `r`: the tail of a run is not sent where it would be the last to finish (and never sent twice).
    func slower(than r: Int, now: UInt64) -> Bool {
        guard let own = lanes[r].answerSeconds else { return false }
        let faster = lanes.indices.filter { f in
            f != r && lanes[f].stopped == nil && now >= lanes[f].pausedUntil
                && (lanes[f].answerSeconds ?? .infinity) < own
        }
        let rate = faster.reduce(0.0) { $0 + (lanes[$1].answersPerSecond ?? 0) }
        guard rate > 0, let quickest = faster.compactMap({ lanes[$0].answerSeconds }).min() else { return false }
        let left = Double(unsent)
        return left / rate + quickest < own
    }
}
