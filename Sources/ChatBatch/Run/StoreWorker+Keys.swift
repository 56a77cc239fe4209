import ChatBatchCore
import Dispatch

/// What a worker last told the store of its keys, and last heard, by route.
struct KeysHeard {
    var pausedUntil: [Int: UInt64] = [:]
    var ceiling: [Int: Int] = [:]
    var share: [Int: Int] = [:]
}

/// A provider key's limits shared by every worker of a store that uses it, whatever its job: a 429 at one worker
/// pauses all of them for its wait, and the level the key was found to allow is one figure its live workers divide.
extension StoreWorker {
    /// Names each route's key in the store (a hash of the endpoint and the key, never the key) and registers this
    /// worker as a user of each.
    func useKeys(_ routes: [RouteSettings], keys: [String?]) throws(ChatBatchError) {
        keyHashes = zip(routes, keys).map { route, key in
            SHA256.hex("chatbatch-key-v1\n" + route.endpoint.url + "\n" + (key ?? ""))
        }
        for hash in Set(keyHashes) { try runSide.useKey(hash) }
    }

    /// Publishes this worker's news (a pause its own 429 started, a level it learnt) and returns what the store
    /// knows beyond it: a longer pause, a new share. `pausedUntil` is each lane's pause (uptime), `ceilings` the
    /// levels learnt here. On the store queue; a store that cannot be reached tells nothing (renewals say so).
    func shareKeys(pausedUntil: [UInt64], ceilings: [Int: Int], now: UInt64) -> [SharedKeyNews] {
        var news: [SharedKeyNews] = []
        let slack: UInt64 = 50_000_000
        for (r, hash) in keyHashes.enumerated() where r < pausedUntil.count {
            do throws(ChatBatchError) {
                if pausedUntil[r] > now, pausedUntil[r] > keysHeard.pausedUntil[r, default: 0] + slack {
                    try renewals.pauseKey(hash, seconds: Double(pausedUntil[r] - now) / 1e9)
                    keysHeard.pausedUntil[r] = pausedUntil[r]
                }
                var state = try renewals.keyState(hash, liveWithin: lease)
                if let ceiling = ceilings[r], ceiling != keysHeard.ceiling[r] {
                    // Learnt here with the others at work too: the key allows about this much for each of them.
                    try renewals.learnLimit(hash, ceiling * max(1, state.liveWorkers))
                    keysHeard.ceiling[r] = ceiling
                    state = try renewals.keyState(hash, liveWithin: lease)
                }
                let pauseEnd = now + UInt64(state.pausedFor * 1e9)
                let longer =
                    state.pausedFor > 0 && pauseEnd > max(pausedUntil[r], keysHeard.pausedUntil[r, default: 0]) + slack
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
