/// Uptime arithmetic that no value can crash: waits come from servers (Retry-After) and may be anything.
enum Clock {
    /// Nanoseconds in `seconds`, clamped to [0, about 292 years]; NaN is 0.
    static func nanoseconds(_ seconds: Double) -> UInt64 {
        guard seconds > 0 else { return 0 }
        return seconds >= 9.2e9 ? UInt64(9.2e18) : UInt64(seconds * 1e9)
    }
}
