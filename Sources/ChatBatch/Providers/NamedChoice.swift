/// A setting whose values are a fixed set of names (`--provider tera`, `format: flat`): it parses itself and
/// writes its own "one of …" message from its cases, so no message lists the names by hand.
public protocol NamedChoice: RawRepresentable, CaseIterable, Sendable where RawValue == String {}

extension NamedChoice {
    /// The names, as a message lists them: `tera, tir or openai-compatible`.
    public static var choices: String {
        let names = allCases.map(\.rawValue)
        guard names.count > 1 else { return names.first ?? "" }
        return names.dropLast().joined(separator: ", ") + " or " + names.last!
    }

    /// The case named `text`, or an error naming `setting` (a flag or a job key) and the choices.
    public static func parse(_ text: String, for setting: String) throws(ChatBatchError) -> Self {
        guard let value = Self(rawValue: text) else {
            throw ChatBatchError(.badChoice, "\(setting) must be \(choices), not '\(text)'")
        }
        return value
    }
}
