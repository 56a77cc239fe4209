import ChatBatchCore
import Dispatch

/// What a worker last told the store of its keys, and last heard, by route.
struct KeysHeard {
    var pausedUntil: [Int: UInt64] = [:]
    var share: [Int: Int] = [:]
    var rateLimits: [Int: Int] = [:]
    /// When this worker last saw the key refuse (or raised its level): the level is looked above after `raiseAfter`
    /// seconds quiet (30 s at first, doubled each time a look is refused, as a run's own looks are).
    var quietSince: [Int: UInt64] = [:]
    var raiseAfter: [Int: Double] = [:]
    var raisedAt: [Int: UInt64] = [:]
}

/// One lane as the machine has it, for sharing its key: its pause (uptime), requests out, window, and 429s so far.
struct LaneLook: Sendable {
    let pausedUntil: UInt64
    let inflight: Int
    let window: Int
    let rateLimits: Int
    let acceptedAtLast429: Int
}

/// A provider key's limits shared by every worker of a store that uses it, whatever its job: a 429 at one worker
/// pauses all of them for its wait, and the level the key allows is one figure its live workers divide.
///
/// The level is learnt when a worker is refused: what the key was then serving over all its workers, from what each
/// says in the two seconds after (what it has out, or what it still had out at its refusal), never below one each;
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
        for (r, hash) in keyHashes.enumerated() where r < lanes.count {
            let lane = lanes[r]
            do throws(ChatBatchError) {
                // Refused since the last look: what the key was still serving here when it refused, else what is out.
                let refused = lane.rateLimits > keysHeard.rateLimits[r, default: 0]
                let said = refused ? lane.acceptedAtLast429 : lane.inflight
                try renewals.sayInflight(hash, said)
                if lane.pausedUntil > now, lane.pausedUntil > keysHeard.pausedUntil[r, default: 0] + slack {
                    try renewals.pauseKey(hash, seconds: Double(lane.pausedUntil - now) / 1e9)
                    keysHeard.pausedUntil[r] = lane.pausedUntil
                }
                var state = try renewals.keyState(hash, liveWithin: lease)
                if refused || state.roundOpen {
                    // The key was serving what every worker had out when it refused (here or at another worker):
                    // that is its level, from what each says in the round.
                    if refused {
                        keysHeard.rateLimits[r] = lane.rateLimits
                        keysHeard.quietSince[r] = now
                        if let raised = keysHeard.raisedAt[r], now &- raised < 5_000_000_000 {
                            keysHeard.raiseAfter[r] = min(3600, keysHeard.raiseAfter[r, default: 30] * 2)
                        }
                    }
                    try renewals.learnLimit(hash, inflight: said, workers: state.liveWorkers, liveWithin: lease)
                    state = try renewals.keyState(hash, liveWithin: lease)
                } else if let level = state.learnedLimit, state.pausedFor == 0,
                    Double(now &- keysHeard.quietSince[r, default: now]) / 1e9 > keysHeard.raiseAfter[r, default: 30]
                {
                    try renewals.raiseLimit(hash, from: level, quiet: keysHeard.raiseAfter[r, default: 30])
                    keysHeard.quietSince[r] = now
                    keysHeard.raisedAt[r] = now
                    state = try renewals.keyState(hash, liveWithin: lease)
                }
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
