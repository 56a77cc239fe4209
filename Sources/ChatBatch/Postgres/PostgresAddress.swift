import Foundation

/// A PostgreSQL database given as a store (`--store`, job key `store:`): a `postgres://` or `postgresql://` URL as
/// libpq reads it, or a libpq keyword string (`host=… dbname=…`). What the address leaves out comes from libpq's
/// environment (`PGHOST`, `PGUSER`, `PGPASSWORD`, `PGPASSFILE`, `PGSSLMODE`, a service file), as for `psql`.
///
/// The password never leaves this value but to libpq: `shown` is the address with it taken out, and
/// `scrub(_:)` takes it out of any text (a server's message) before that text is shown or kept.
struct PostgresAddress: Sendable, Equatable, CustomStringConvertible {
    /// What libpq is given (it may hold a password).
    let connectionString: String
    /// The address as messages, logs and the store show it: `postgres://user@host:5432/db`, no password.
    let shown: String
    /// The password the address itself holds (percent-decoded), if any: taken out of every message.
    private let password: String?

    /// True when `text` names a PostgreSQL database rather than a file: a URL with the `postgres` or `postgresql`
    /// scheme, or a libpq keyword string (`host=…`, `dbname=…`, `service=…`).
    static func isAddress(_ text: String) -> Bool {
        let lower = text.lowercased()
        if lower.hasPrefix("postgres://") || lower.hasPrefix("postgresql://") { return true }
        return keywordPairs(text) != nil
    }

    init(_ text: String) throws(ChatBatchError) {
        connectionString = text
        let lower = text.lowercased()
        if lower.hasPrefix("postgres://") || lower.hasPrefix("postgresql://") {
            guard let url = URLComponents(string: text) else {
                throw ChatBatchError(
                    .badStore,
                    "store: '\(Self.withoutUserInfo(text))' is not a URL libpq can read: write "
                        + "postgres://USER@HOST:PORT/DATABASE (the password in PGPASSWORD or ~/.pgpass)")
            }
            var decoded = url.percentEncodedPassword.map { $0.removingPercentEncoding ?? $0 }
            var shown = url
            shown.password = nil
            if var items = shown.queryItems {
                for (i, item) in items.enumerated() where item.name.lowercased() == "password" {
                    decoded = decoded ?? item.value
                    items[i].value = ChatBatchError.redacted
                }
                shown.queryItems = items
            }
            password = decoded
            self.shown = shown.string ?? Self.withoutUserInfo(text)
        } else if let pairs = Self.keywordPairs(text) {
            password = pairs.first { $0.key == "password" }?.value
            self.shown = pairs.map {
                $0.key == "password" ? "password=\(ChatBatchError.redacted)" : "\($0.key)=\($0.value)"
            }
            .joined(separator: " ")
        } else {
            throw ChatBatchError(
                .badStore,
                "store: '\(text)' is neither a postgres:// URL nor libpq keywords (host=… dbname=…)")
        }
    }

    var description: String { shown }

    /// `text` with the address's password taken out (a password under 4 characters would match ordinary words: it
    /// is not searched for, and a server does not echo one).
    func scrub(_ text: String) -> String {
        guard let password, password.count >= 4 else { return text }
        var out = text.replacingOccurrences(of: password, with: ChatBatchError.redacted)
        if let encoded = password.addingPercentEncoding(withAllowedCharacters: .alphanumerics), encoded != password {
            out = out.replacingOccurrences(of: encoded, with: ChatBatchError.redacted)
        }
        return out
    }

    /// A URL cut down to its scheme, host and path: for a message about a URL that could not be read.
    private static func withoutUserInfo(_ text: String) -> String {
        guard let scheme = text.range(of: "://") else { return text }
        let rest = text[scheme.upperBound...]
        guard let at = rest.lastIndex(of: "@") else { return text }
        return String(text[..<scheme.upperBound]) + rest[rest.index(after: at)...]
    }

    /// `key=value` pairs separated by spaces (values may be single-quoted), when every word of `text` is one and
    /// at least one key is libpq's; nil otherwise.
    private static func keywordPairs(_ text: String) -> [(key: String, value: String)]? {
        var pairs: [(key: String, value: String)] = []
        var rest = Substring(text.trimmingCharacters(in: .whitespaces))
        while !rest.isEmpty {
            guard let eq = rest.firstIndex(of: "=") else { return nil }
            let key = rest[..<eq].trimmingCharacters(in: .whitespaces)
            guard !key.isEmpty, key.allSatisfy({ $0.isLetter || $0 == "_" }) else { return nil }
            rest = rest[rest.index(after: eq)...].drop { $0 == " " }
            var value = ""
            if rest.first == "'" {
                rest = rest.dropFirst()
                while let c = rest.first, c != "'" {
                    if c == "\\", let next = rest.dropFirst().first {
                        value.append(next)
                        rest = rest.dropFirst(2)
                    } else {
                        value.append(c)
                        rest = rest.dropFirst()
                    }
                }
                rest = rest.dropFirst()
            } else {
                let end = rest.firstIndex(of: " ") ?? rest.endIndex
                value = String(rest[..<end])
                rest = rest[end...]
            }
            pairs.append((key, value))
            rest = rest.drop { $0 == " " }
        }
        let known: Set<String> = ["host", "hostaddr", "port", "dbname", "user", "service", "sslmode"]
        return pairs.contains { known.contains($0.key) } ? pairs : nil
    }
}
