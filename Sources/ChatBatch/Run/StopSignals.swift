import Dispatch
import Foundation
import Synchronization

/// The signals that stop a run, caught from the start of the process, so that none finds it unprepared.
///
/// SIGINT, SIGTERM and SIGHUP (a closed terminal) stop sending and let what is in flight finish (a second one stops
/// at once); SIGQUIT stops at once. A signal that arrives before the run has started (while the checkpoint is being
/// opened) is kept and handed to the run as it starts, which then sends nothing and exits 4.
public enum StopSignals {
    /// The signals caught, and how many stop events each stands for (SIGQUIT: the first and the second at once).
    static let caught: [(signal: Int32, events: Int)] = [(SIGINT, 1), (SIGTERM, 1), (SIGHUP, 1), (SIGQUIT, 2)]

    private struct State: ~Copyable {
        var installed = false
        var sources: [any DispatchSourceSignal] = []
        /// Stop events that came before a run was there to take them.
        var early = 0
        var handler: (@Sendable () -> Void)?
    }

    private static let state = Mutex(State())

    /// Catches the stop signals from now on (once; later calls do nothing).
    public static func install() {
        state.withLock { s in
            guard !s.installed else { return }
            s.installed = true
            // libdispatch reads them through a signalfd, which wants them blocked (then the default action, which
            // would end the process, never runs). `chatbatch run` blocked them before Swift started (CTerminal), so
            // one may be pending already: setting SIG_IGN would discard it, so only a signal not pending is ignored
            // (for threads started before this, in a process that did not block them first).
            var set = sigset_t()
            sigemptyset(&set)
            for (sig, _) in caught { sigaddset(&set, sig) }
            pthread_sigmask(SIG_BLOCK, &set, nil)
            var pending = sigset_t()
            sigpending(&pending)
            for (sig, events) in caught {
                if sigismember(&pending, sig) == 0 { signal(sig, SIG_IGN) }
                let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
                source.setEventHandler { for _ in 0..<events { deliver() } }
                source.resume()
                s.sources.append(source)
            }
        }
    }

    private static func deliver() {
        let handler = state.withLock { s -> (@Sendable () -> Void)? in
            if s.handler == nil { s.early += 1 }
            return s.handler
        }
        handler?()
    }

    /// Hands every stop event to `handler` from now on, and first the ones that came before (installs if needed).
    static func attach(_ handler: @escaping @Sendable () -> Void) {
        install()
        let early = state.withLock { s -> Int in
            s.handler = handler
            defer { s.early = 0 }
            return s.early
        }
        for _ in 0..<early { handler() }
    }

    /// The run is over: later signals are kept, not handed on.
    static func detach() {
        state.withLock { $0.handler = nil }
    }
}
