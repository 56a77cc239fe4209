/// The lines a store worker has recorded in the store as about to leave before its run sends them, so that their
/// requests leave at once rather than after a round trip to the store.
///
/// A worker commits a line as "in flight" before its request leaves, so that a worker taking the line over after a
/// crash counts it as possibly billed twice. Doing it as the request is about to leave puts a commit (a few
/// milliseconds) in front of every request; doing it for a few lines ahead, in the statement the worker makes anyway,
/// takes it away. The price: after a crash, the lines recorded ahead but never sent are counted as possibly billed
/// twice too, at most `size` of them (an eighth of the worker's window); a worker that stops gives them back unsent.
///
/// A line recorded ahead leaves only while its lease surely holds: the statement recorded it only with more than
/// `validity` of its lease left, and the reservation is used only until `validity` after the statement was sent, by
/// this machine's clock. Past that the line is recorded again as it leaves, as any other.
struct SendReserve: Sendable {
    /// Line → when its reservation lapses (uptime, nanoseconds).
    private(set) var lines: [Int: UInt64] = [:]
    /// Lines taken to leave whose sends the store worker has not seen yet: not to be reserved again meanwhile.
    private(set) var leaving = Set<Int>()
    /// How long a reservation holds (nanoseconds), and the most lines reserved at once.
    let validity: UInt64
    var size = 1

    init(validitySeconds: Double) {
        validity = UInt64(validitySeconds * 1e9)
    }

    /// Whether `line` may leave at once (it was reserved, and its reservation holds at `now`); the reservation is
    /// used up either way.
    mutating func take(_ line: Int, now: UInt64) -> Bool {
        guard let until = lines.removeValue(forKey: line) else { return false }
        leaving.insert(line)
        return until > now
    }

    /// The lines to reserve now: once fewer than half of `size` reservations hold at `now`, the lowest of
    /// `candidates` (lines held and not on the wire) not reserved yet, up to `size` (a statement made for the
    /// reservations alone is a statement a turn would have made anyway a little later).
    func wanted(from candidates: [Int], now: UInt64) -> [Int] {
        let holding = lines.values.filter { $0 > now }.count
        guard holding * 2 < size || holding == 0 else { return [] }
        let free = candidates.filter { lines[$0].map { $0 <= now } ?? !leaving.contains($0) }
        return Array(free.sorted().prefix(size - holding))
    }

    /// `reserved` were recorded as about to leave by a statement sent at `sentAt`.
    mutating func reserved(_ reserved: [Int], sentAt: UInt64) {
        for line in reserved { lines[line] = sentAt + validity }
    }

    /// `line` left, or was settled without leaving: it is no longer reserved.
    mutating func drop(_ line: Int) {
        lines[line] = nil
        leaving.remove(line)
    }

    /// Every line still reserved (the worker stops: they go back unsent), and none is after.
    mutating func removeAll() -> [Int] {
        defer {
            lines = [:]
            leaving = []
        }
        return lines.keys.sorted()
    }
}
