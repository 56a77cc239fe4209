import ChatBatchCore
import Foundation

/// A setting `chatbatch control … set KEY=VALUE` changes while a run goes on.
public enum ControlSetting: String, Sendable, CaseIterable {
    /// The most requests in flight (at each provider, or at the one named): the adaptive limit's top from now on.
    case concurrency
    /// The budget cap in US dollars over every run on the checkpoint (or one provider's share of it).
    case maxCost = "max_cost"
    /// Requests per minute sent (a bucket that refills continuously).
    case rpm
    /// Tokens per minute sent (estimated before the answer, corrected by it).
    case tpm

    /// The setting's value as a user wrote it, checked: nil means `off` (no limit). Concurrency has no `off`.
    func value(_ text: String) throws(ChatBatchError) -> Double? {
        let word = text.trimmingCharacters(in: .whitespaces).lowercased()
        if word == "off" || word == "none" {
            guard self != .concurrency else {
                throw ChatBatchError(.badControl, "concurrency cannot be off: give a number from 1 to 10000")
            }
            return nil
        }
        switch self {
        case .concurrency:
            guard let n = Int(word), (1...10_000).contains(n) else {
                throw ChatBatchError(.badControl, "concurrency must be a whole number from 1 to 10000, not '\(text)'")
            }
            return Double(n)
        case .maxCost:
            guard let v = Double(word.hasPrefix("$") ? String(word.dropFirst()) : word), v.isFinite, v >= 0 else {
                throw ChatBatchError(
                    .badControl, "max_cost must be a number of US dollars, 0 or more (or off), not '\(text)'")
            }
            return v
        case .rpm, .tpm:
            guard let v = Double(word), v.isFinite, v > 0 else {
                throw ChatBatchError(
                    .badControl, "\(rawValue) must be a number above 0 per minute (or off), not '\(text)'")
            }
            return v
        }
    }
}

/// What a control asks of a running job.
public enum ControlAction: Sendable, Equatable {
    /// Send nothing new; what is in flight finishes; wait without a time limit for `resume`.
    case pause
    /// Carry on after a pause.
    case resume
    /// Let what is in flight finish, then end the run with exit 4 (resumable).
    case drain
    /// A setting's new value from now on (nil: off).
    case set(ControlSetting, Double?)

    /// The words of `chatbatch control TARGET …`: `pause`, `resume`, `drain`, or `set KEY=VALUE`.
    public init(words: [String]) throws(ChatBatchError) {
        let keys = ControlSetting.allCases.map(\.rawValue).joined(separator: ", ")
        switch words.first?.lowercased() {
        case "pause" where words.count == 1: self = .pause
        case "resume" where words.count == 1: self = .resume
        case "drain" where words.count == 1: self = .drain
        case "set":
            let rest = words.dropFirst().joined(separator: "")
            let parts = rest.split(separator: "=", maxSplits: 1).map(String.init)
            guard words.count >= 2, parts.count == 2 else {
                throw ChatBatchError(.badControl, "set takes one KEY=VALUE (one of \(keys)), as in: set concurrency=4")
            }
            let key = parts[0].lowercased().replacingOccurrences(of: "-", with: "_")
            guard let setting = ControlSetting(rawValue: key) else {
                let guess = EditDistance.nearest(to: key, among: ControlSetting.allCases.map(\.rawValue))
                throw ChatBatchError(
                    .badControl,
                    "'\(parts[0])' is not a setting control can change" + (guess.map { " (did you mean \($0)?)" } ?? "")
                        + "; one of \(keys)")
            }
            self = .set(setting, try setting.value(parts[1]))
        default:
            throw ChatBatchError(
                .badControl,
                "'\(words.joined(separator: " "))' is not a control: give pause, resume, drain or set KEY=VALUE (KEY one of \(keys))"
            )
        }
    }

    /// The control as a user writes it (`set max_cost=2.5`, `set rpm=off`).
    public var text: String {
        switch self {
        case .pause: return "pause"
        case .resume: return "resume"
        case .drain: return "drain"
        case .set(let setting, let value):
            return "set \(setting.rawValue)=\(value.map(Self.figure) ?? "off")"
        }
    }

    /// A number as a user writes it: `4`, `2.5`, `0.000001` (never `1e-06`).
    static func figure(_ v: Double) -> String {
        if v == v.rounded() && abs(v) < 1e15 { return String(Int(v)) }
        var text = String(format: "%.12f", v)
        while text.hasSuffix("0") { text.removeLast() }
        return text
    }

    /// Read back from the checkpoint's text (`text` above).
    init?(recorded text: String) {
        guard let action = try? ControlAction(words: text.split(separator: " ").map(String.init)) else { return nil }
        self = action
    }
}

/// One control as the checkpoint records it: what, for which provider, from where and when.
public struct ControlRequest: Sendable, Equatable {
    /// The row in the checkpoint's `controls` table.
    public var id: Int
    public var action: ControlAction
    /// The provider it is for (a several-provider job), nil: every provider.
    public var provider: String?
    /// Where it was given: the host name and process id of `chatbatch control`.
    public var host: String
    public var pid: Int
    /// Wall-clock seconds when it was given.
    public var at: Double

    /// `set concurrency=4 for provider fast (from host, pid 12)`: how logs and status name it.
    public var description: String {
        action.text + (provider.map { " for provider \($0)" } ?? "") + " (from \(host), pid \(pid))"
    }
}
