import Foundation

/// The process's limit on open files, against the requests a run keeps in flight (each holds a socket).
enum OpenFileLimit {
    /// Files a run holds besides its sockets: the checkpoint and its log, the cache, the outputs, the event loop.
    static let reserve = 64

    /// Raises the soft limit on open files to the hard one (as Go's runtime and nginx do at start), and returns the
    /// configuration with its concurrency capped to what still fits, saying so: a socket that cannot be opened
    /// must never be taken for an unreachable server.
    static func fit(_ config: RunConfiguration, log: (String) -> Void) -> RunConfiguration {
        #if os(Linux)
            let files = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
        #else
            let files = RLIMIT_NOFILE
        #endif
        var limit = rlimit()
        guard getrlimit(files, &limit) == 0 else { return config }
        if limit.rlim_cur < limit.rlim_max {
            var raised = limit
            // rlim_t.max: RLIM_INFINITY
            raised.rlim_cur = limit.rlim_max == rlim_t.max ? max(limit.rlim_cur, 1 << 20) : limit.rlim_max
            if setrlimit(files, &raised) == 0 { limit = raised }
        }
        let room = Int(min(limit.rlim_cur, 1 << 20)) - reserve
        let wanted = config.concurrency
        guard wanted > room else { return config }
        var fitted = config
        let share = max(1, room)
        for i in fitted.routes.indices {
            fitted.routes[i].concurrency = max(1, fitted.routes[i].concurrency * share / wanted)
        }
        log(
            "chatbatch: warning: \(wanted) requests in flight need about \(wanted + reserve) open files, and this process may open "
                + "\(limit.rlim_cur) (ulimit -n, its hard limit included); sending at most \(fitted.concurrency) at once. "
                + "Raise the limit (ulimit -n) for more")
        return fitted
    }
}
