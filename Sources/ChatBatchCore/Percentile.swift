extension Array where Element == Double {
    /// The nearest-rank percentile of an ascending array: the smallest value with at least `fraction` of the values at
    /// or below it (`fraction` 0.5 is the median, 0.99 is p99); nil when the array is empty.
    public func nearestRank(_ fraction: Double) -> Double? {
        guard !isEmpty else { return nil }
        return self[Swift.min(count - 1, Swift.max(0, Int((fraction * Double(count)).rounded(.up)) - 1))]
    }
}
