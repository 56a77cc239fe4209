import Dispatch
import Foundation
import Synchronization

/// Stores answers in the response cache in groups, on its own queue, off the run's path.
///
/// Another run or shard may be writing the same file: a store that finds it busy past SQLite's busy timeout
/// is tried again a few times before it is given up with a warning (the run itself never fails for the cache).
final class CacheWriter: Sendable {
    typealias Entry = (key: String, model: String?, answer: CachedAnswer)

    let queue = DispatchQueue(label: "chatbatch.cache")
    let cache: ResponseCache
    /// `--cache-mode refresh`: a new answer replaces the stored one.
    let replace: Bool
    let log: @Sendable (String) -> Void
    private let pending = Mutex<(items: [Entry], scheduled: Bool)>(([], false))

    init(cache: ResponseCache, replace: Bool, log: @escaping @Sendable (String) -> Void) {
        self.cache = cache
        self.replace = replace
        self.log = log
    }

    func submit(_ entry: Entry) {
        let schedule = pending.withLock { p -> Bool in
            p.items.append(entry)
            if p.scheduled { return false }
            p.scheduled = true
            return true
        }
        if schedule { queue.async { self.flush() } }
    }

    /// Stores everything handed in so far, and closes the connection.
    func close() {
        queue.sync {
            flush()
            cache.close()
        }
    }

    private func flush() {
        let items = pending.withLock { p -> [Entry] in
            defer {
                p.items = []
                p.scheduled = false
            }
            return p.items
        }
        guard !items.isEmpty else { return }
        var lastError: ChatBatchError? = nil
        for attempt in 0..<5 {
            do {
                try cache.store(items, replace: replace)
                return
            } catch {
                lastError = error
                guard error.code == .cacheBusy else { break }
                usleep(useconds_t(100_000 << attempt))
            }
        }
        log(
            "chatbatch: warning: \(items.count) answers could not be stored in the cache (\(lastError?.message ?? "unknown error")); they are in the outputs, and a later run will pay for them again"
        )
    }
}
