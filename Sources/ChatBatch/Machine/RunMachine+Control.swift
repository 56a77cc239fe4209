import ChatBatchCore

/// Steering a running job (`chatbatch control`): the machine takes each control as an event, changes what it sends
/// from then on, and records what came of it (applied, or refused with the reason) for the command, `status` and the
/// report.
extension RunMachine {
    /// Applies `controls` in the order they were given, then sends what the new state allows.
    mutating func steer(_ controls: [ControlRequest], _ now: Moment) -> [RunAction] {
        var out: [RunAction] = []
        for control in controls {
            var effects: [RunAction] = []
            let outcome = apply(control, now, effects: &effects)
            if !outcome.hasPrefix("refused") { controlsApplied += 1 }
            // Said before what it leads to (a drain's stopping line).
            out.append(.log("chatbatch: control \(control.description): \(outcome)"))
            out += effects
            out.append(.record(.controlSettled(id: control.id, outcome: outcome)))
        }
        out += pump(now)
        return out
    }

    /// True while `chatbatch control … pause` holds every provider.
    var paused: Bool { pausedSince != nil }

    /// What `control` changes; returns what came of it, and adds what the change makes happen to `effects`.
    private mutating func apply(_ control: ControlRequest, _ now: Moment, effects: inout [RunAction]) -> String {
        if let stop { return "refused: the run is already stopping (\(stop.message))" }
        let routes: [Int]
        if let name = control.provider {
            guard let r = scheduler.lanes.firstIndex(where: { $0.name == name }) else {
                let names = scheduler.lanes.map(\.name).joined(separator: ", ")
                return "refused: this run has no provider named \(name) (its providers: \(names))"
            }
            routes = [r]
        } else {
            routes = Array(scheduler.lanes.indices)
        }
        switch control.action {
        case .pause:
            for r in routes { scheduler.lanes[r].pausedByControl = true }
            if pausedSince == nil && scheduler.lanes.allSatisfy({ $0.pausedByControl || $0.stopped != nil }) {
                pausedSince = now.wall
            }
            let inflight = routes.reduce(0) { $0 + scheduler.lanes[$1].inflight }
            return "applied: nothing new is sent\(control.provider.map { " to \($0)" } ?? ""); the \(inflight) "
                + "requests in flight finish. The run waits without a time limit: `chatbatch control … resume` "
                + "carries on (SIGTERM still stops it)"
        case .resume:
            let wasPaused = routes.contains { scheduler.lanes[$0].pausedByControl }
            for r in routes { scheduler.lanes[r].pausedByControl = false }
            pausedSince = nil
            return wasPaused ? "applied: sending again" : "applied: it was not paused; nothing changed"
        case .drain:
            guard control.provider == nil else {
                return "refused: drain ends the whole run; to stop one provider, pause it (--provider NAME pause)"
            }
            let inflight = scheduler.inflight
            effects += halt(.drained(RunMessages.drained(host: control.host, inflight: inflight)), now)
            return "applied: the \(inflight) requests in flight finish, then the run ends with exit 4 (resumable)"
        case .set(let setting, let value):
            if setting == .maxCost && control.provider == nil {
                scheduler.setBudgetCap(value)
            } else {
                for r in routes { scheduler.lanes[r].set(setting, value, now: now.uptime) }
            }
            if setting == .concurrency { effects += sample(onlyChanged: true) }
            return "applied: \(setting.rawValue) is \(value.map(ControlAction.figure) ?? "off") from now on"
                + (setting == .concurrency ? " (the most the adaptive limit may reach)" : "")
        }
    }
}
