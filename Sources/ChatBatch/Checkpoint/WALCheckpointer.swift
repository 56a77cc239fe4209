import Dispatch
import Synchronization

/// Moves the checkpoint's write-ahead log into its database file on a queue of its own, so that no commit waits
/// for it.
///
/// SQLite's automatic checkpoint runs inside the commit that crosses its threshold (1,000 pages), and a run's next
/// requests wait for that commit: every few megabytes of answers, one turn stalled on copying pages and an fsync.
/// Embeddings answers, five times chat's bytes, crossed it five times as often (measured: 10,000 lines at 64 × 20 ms
/// took 4.0 s on disk, 3.5 s with no automatic checkpoint). Here a second connection runs a passive checkpoint (one
/// that never waits for the writer) at most every 100 ms; SQLite's own stays as a backstop at 16 MB of log.
final class WALCheckpointer: @unchecked Sendable {
    /// SQLite's automatic checkpoint, in pages, for the writer's connection: only reached when this one falls behind.
    static let backstopPages = 4_096
    static let interval: UInt64 = 100_000_000

    private let db: SQLiteDatabase
    private let queue = DispatchQueue(label: "chatbatch.wal-checkpoint", qos: .utility)
    private let running = Atomic<Bool>(false)
    /// When the last checkpoint was started (uptime nanoseconds); touched on the writer's queue only.
    private var lastStarted: UInt64 = 0

    /// A connection of its own to the checkpoint at `path`; the writer's connection `writer` gets the backstop.
    init(path: String, writer: SQLiteDatabase) throws(ChatBatchError) {
        db = try SQLiteDatabase(path: path, busyTimeout: 0)
        try writer.execute("PRAGMA wal_autocheckpoint=\(Self.backstopPages)")
    }

    /// After each commit: starts a passive checkpoint when none is running and the last began 100 ms ago or more.
    func committed() {
        let now = DispatchTime.now().uptimeNanoseconds
        guard now &- lastStarted >= Self.interval,
            running.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged
        else { return }
        lastStarted = now
        queue.async { [self] in
            try? db.execute("PRAGMA wal_checkpoint(PASSIVE)")
            running.store(false, ordering: .releasing)
        }
    }

    /// Waits for a checkpoint under way and closes the connection (before the writer's, whose close then folds in the
    /// rest of the log and removes it).
    func close() {
        queue.sync {}
        db.close()
    }
}
