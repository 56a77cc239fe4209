import ChatBatchCore
import Dispatch
import Foundation

/// What a worker last told the store of its keys, and last heard, by route.
struct KeysHeard {
    var pausedUntil: [Int: UInt64] = [:]
    var share: [Int: Int] = [:]
    /// When this worker last saw the key refuse (or raised its level): the level is looked above after `raiseAfter`
    /// seconds quiet (30 s at first, doubled each time a look is refused, as a run's own looks are).
    var quietSince: [Int: UInt64] = [:]
    var raiseAfter: [Int: Double] = [:]
    var raisedAt: [Int: UInt64] = [:]
    /// The send time of the latest refused request already told (uptime).
    var refusedUpTo: [Int: UInt64] = [:]
}

/// One lane as the machine has it, for sharing its key: its pause (uptime), requests out, window, 429s so far, and
/// what the key served it over the last few seconds.
struct LaneLook: Sendable {
    let pausedUntil: UInt64
    let inflight: Int
    let window: Int
    let serving: ServingLog
}

/// A provider key's limits shared by every worker of a store that uses it, whatever its job: a 429 at one worker
/// pauses all of them for its wait, and the level the key allows is one figure its live workers divide.
///
/// The level is learnt when a worker is refused: what the key was serving over all its workers when the first refused
/// request was sent, from what each counts of its own in the two seconds after (`ServingLog`), never below one each;
/// the shares add up to it. After 30 s at it without a refusal, a worker looks one higher for all of them (one look
/// at a time, whoever makes it), less often each time a look is refused.
extension StoreWorker {
    /// Names each route's key in the store (a hash of the endpoint and the key, never the key) and registers this
    /// worker as a user of each.
    func useKeys(_ routes: [RouteSettings], keys: [String?]) throws(ChatBatchError) {
        keyHashes = zip(routes, keys).map { route, key in
            SHA256.hex("chatbatch-key-v1\n" + route.endpoint.url + "\n" + (key ?? ""))
        }
        for hash in Set(keyHashes) { try runSide.useKey(hash) }
        history.name(routes: routes.map(\.name))
    }

    /// Each route's key as the store knows it as this worker starts: this worker's share of the level learnt (where
    /// a new worker starts, rather than looking for it again; nil where none is learnt), and how many workers use the
    /// key, this one included (1 where the store cannot say), which a limit not yet learnt ramps up beside.
    func startingKeys() -> [(share: Int?, users: Int)] {
        keyHashes.map { hash in
            let state = try? renewals.keyState(hash, liveWithin: lease)
            return (state?.share, max(1, state?.users ?? 1))
        }
    }

    /// Publishes this worker's news (what it has out, a pause its own 429 started, a refusal) and returns what the
    /// store knows beyond it: a longer pause, a new share. On the store queue; a store that cannot be reached tells
    /// nothing (renewals say so).
    func shareKeys(_ lanes: [LaneLook], now: UInt64) -> [SharedKeyNews] {
        var news: [SharedKeyNews] = []
        let slack: UInt64 = 50_000_000
        let wall = Date().timeIntervalSince1970
        for (r, hash) in keyHashes.enumerated() where r < lanes.count {
            let lane = lanes[r]
            do throws(ChatBatchError) {
                var state = try renewals.keyState(hash, liveWithin: lease)
                var round = state.roundOpen ? state.refusedAt : nil
                // Refused since the last look: a round opens (or this worker joins the open one).
                let fresh = lane.serving.refused.filter { $0 > keysHeard.refusedUpTo[r, default: 0] }
                if let first = fresh.min(), let last = fresh.max() {
                    keysHeard.refusedUpTo[r] = last
                    keysHeard.quietSince[r] = now
                    if let raised = keysHeard.raisedAt[r], now &- raised < 5_000_000_000 {
                        keysHeard.raiseAfter[r] = min(3600, keysHeard.raiseAfter[r, default: 30] * 2)
                    }
                    round = try renewals.openRound(hash, refusedAt: wall - Double(now &- first) / 1e9)
                }
                if let round {
                    // What this worker was serving when the round's first refused request was sent (at any worker).
                    let at = now &- UInt64(max(0, wall - round) * 1e9)
                    let serving = lane.serving.serving(at: at)
                    let refused = lane.serving.refused.filter { $0 >= at && $0 &- at < 1_000_000_000 }.count
                    try renewals.learnLimit(
                        hash, serving: serving, refused: refused, workers: state.liveWorkers, liveWithin: lease)
                } else {
                    try renewals.sayInflight(hash, lane.inflight)
                }
                var changed = round != nil
                if lane.pausedUntil > now, lane.pausedUntil > keysHeard.pausedUntil[r, default: 0] + slack {
                    try renewals.pauseKey(hash, seconds: Double(lane.pausedUntil - now) / 1e9)
                    keysHeard.pausedUntil[r] = lane.pausedUntil
                    changed = true
                }
                if round == nil, let level = state.learnedLimit, state.pausedFor == 0,
                    Double(now &- keysHeard.quietSince[r, default: now]) / 1e9 > keysHeard.raiseAfter[r, default: 30]
                {
                    try renewals.raiseLimit(hash, from: level, quiet: keysHeard.raiseAfter[r, default: 30])
                    keysHeard.quietSince[r] = now
                    keysHeard.raisedAt[r] = now
                    changed = true
                }
                if changed { state = try renewals.keyState(hash, liveWithin: lease) }
                if keysHeard.quietSince[r] == nil { keysHeard.quietSince[r] = now }
                let pauseEnd = now + UInt64(state.pausedFor * 1e9)
                let known = max(lane.pausedUntil, keysHeard.pausedUntil[r, default: 0])
                let longer = state.pausedFor > 0 && pauseEnd > known + slack
                if longer { keysHeard.pausedUntil[r] = pauseEnd }
                let newShare = state.share.flatMap { $0 == keysHeard.share[r] ? nil : $0 }
                if let newShare { keysHeard.share[r] = newShare }
                if longer || newShare != nil {
                    news.append(SharedKeyNews(route: r, pausedFor: longer ? state.pausedFor : 0, share: newShare))
                }
            } catch {
                continue
            }
        }
        return news
    }
}
