import CLibPQ
import Foundation

/// A PostgreSQL database given as a store (`--store`, job key `store:`): a `postgres://` or `postgresql://` URL as
/// libpq reads it, or a libpq keyword string (`host=… dbname=…`). What the address leaves out comes from libpq's
/// environment (`PGHOST`, `PGUSER`, `PGPASSWORD`, `PGPASSFILE`, `PGSSLMODE`, a service file), as for `psql`.
///
/// The address is read by libpq's own parser (`PQconninfoParse`), so it is understood exactly as the connection
/// will be. Secrets never leave this value but to libpq: `shown` is built from the options libpq does not mark as
/// secret (it marks `password` and `sslpassword`), and `scrub(_:)` takes the secrets, in any encoding, out of any
/// text (a server's message) before that text is shown or kept.
struct PostgresAddress: Sendable, CustomStringConvertible {
    /// What libpq is given (it may hold a password).
    let connectionString: String
    /// The address as messages, logs and the store show it: `postgres://user@host:5432/db?sslmode=…`, no secret.
    let shown: String
    /// Takes the secrets the address itself holds out of every message: as given, percent-encoded however they
    /// were typed, JSON-escaped or base64 (the project's one mechanism for secrets in text).
    private let redactor: Redactor

    /// True when `text` names a PostgreSQL database rather than a file: a URL with the `postgres` or `postgresql`
    /// scheme, or keywords libpq reads (`host=…`, `dbname=…`, `service=…`).
    static func isAddress(_ text: String) -> Bool {
        let lower = text.lowercased()
        if lower.hasPrefix("postgres://") || lower.hasPrefix("postgresql://") { return true }
        return text.contains("=") && options(text) != nil
    }

    init(_ text: String) throws(ChatBatchError) {
        guard let options = Self.options(text) else {
            // libpq's own message may quote the text, secret included: it is not repeated.
            throw ChatBatchError(
                .badStore,
                "store: the address is not one libpq can read: write postgres://USER@HOST:PORT/DATABASE (the password "
                    + "in PGPASSWORD or ~/.pgpass) or libpq keywords such as 'host=db dbname=jobs'")
        }
        connectionString = text
        redactor = Redactor(secrets: options.filter { $0.secret }.map(\.value))
        let value = { (key: String) in options.first { $0.key == key }?.value }
        var shown = "postgres://"
        if let user = value("user") { shown += user + "@" }
        shown += value("host") ?? value("hostaddr") ?? ""
        if let port = value("port") { shown += ":" + port }
        shown += "/" + (value("dbname") ?? "")
        let rest = options.filter {
            !$0.secret && !["user", "host", "hostaddr", "port", "dbname"].contains($0.key)
        }
        if !rest.isEmpty { shown += "?" + rest.map { "\($0.key)=\($0.value)" }.joined(separator: "&") }
        self.shown = shown
    }

    var description: String { shown }

    /// `text` with the address's secrets taken out (one under 4 characters would match ordinary words: it is not
    /// searched for, and a server does not echo one).
    func scrub(_ text: String) -> String { redactor.scrub(text) }

    /// The options `text` sets, as libpq reads them (nil when it cannot), each with whether libpq marks it secret.
    private static func options(_ text: String) -> [(key: String, value: String, secret: Bool)]? {
        var error: UnsafeMutablePointer<CChar>? = nil
        guard let parsed = PQconninfoParse(text, &error) else {
            PQfreemem(error)
            return nil
        }
        defer { PQconninfoFree(parsed) }
        var out: [(key: String, value: String, secret: Bool)] = []
        var option = parsed
        while let keyword = option.pointee.keyword {
            if let value = option.pointee.val {
                let secret = option.pointee.dispchar.map { String(cString: $0) == "*" } ?? false
                out.append((String(cString: keyword), String(cString: value), secret))
            }
            option += 1
        }
        return out
    }
}
