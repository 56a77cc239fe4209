/// Request durations in the buckets the metrics file reports (Prometheus histogram buckets, in seconds).
public struct LatencyHistogram: Sendable, Equatable {
    public static let bounds: [Double] = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120]
    /// Counts per bucket (not cumulative), the last one past every bound.
    public private(set) var counts = [Int](repeating: 0, count: LatencyHistogram.bounds.count + 1)
    public private(set) var sum = 0.0
    public private(set) var count = 0

    public init() {}

    public mutating func add(seconds: Double) {
        let i = Self.bounds.firstIndex { seconds <= $0 } ?? Self.bounds.count
        counts[i] += 1
        sum += seconds
        count += 1
    }
}
