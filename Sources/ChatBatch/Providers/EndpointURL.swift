import Foundation

/// What a base URL must be, how a path joins it, and what in it is secret.
///
/// A URL may carry credentials (`https://user:pass@host/v1`, `?api_key=…`): they are secrets like the key, never
/// stored, shown or logged; the path goes before the query (`/v1?api_key=x` + `/chat/completions` →
/// `/v1/chat/completions?api_key=x`).
enum EndpointURL {
    /// Query items whose values are secrets (compared lower-cased, `-` read as `_`).
    static let secretQueryNames: Set<String> = [
        "key", "api_key", "apikey", "token", "access_token", "auth", "password", "secret", "sig", "signature"
    ]

    /// Refuses a URL that is not `http://` or `https://` with a host (`host:port/v1`, `http:/host/v1`).
    static func check(_ url: String, what: String) throws(ChatBatchError) {
        let lower = url.lowercased()
        guard lower.hasPrefix("http://") || lower.hasPrefix("https://"), let host = URLComponents(string: url)?.host,
            !host.isEmpty
        else {
            throw ChatBatchError(
                .badURL,
                "\(what) \(shown(url)) is not an http:// or https:// URL with a host (for example https://api.tera.gw/v1)"
            )
        }
    }

    /// `base` with `path` added to its path, before its query.
    static func appending(_ path: String, to base: String) -> String {
        guard let q = base.firstIndex(of: "?") else { return base + path }
        return String(base[..<q]) + path + String(base[q...])
    }

    /// The secrets `url` carries: the user info's password (and the user name with it), and secret query values.
    static func secrets(in url: String) -> [String] {
        guard let c = URLComponents(string: url) else { return [] }
        var out: [String] = []
        if let password = c.password, !password.isEmpty {
            out.append(password)
            if let encoded = c.percentEncodedPassword, encoded != password { out.append(encoded) }
        }
        for item in c.queryItems ?? [] where isSecret(item.name) {
            if let v = item.value, !v.isEmpty { out.append(v) }
        }
        for item in c.percentEncodedQueryItems ?? [] where isSecret(item.name) {
            if let v = item.value, !v.isEmpty { out.append(v) }
        }
        return out
    }

    /// The URL as it may be shown and stored: user info and secret query values replaced.
    static func shown(_ url: String) -> String {
        guard var c = URLComponents(string: url) else { return url }
        var changed = false
        if c.user != nil || c.password != nil {
            c.user = nil
            c.password = nil
            changed = true
        }
        if let items = c.percentEncodedQueryItems, items.contains(where: { isSecret($0.name) }) {
            c.percentEncodedQueryItems = items.map {
                isSecret($0.name) ? URLQueryItem(name: $0.name, value: "%5Bredacted%5D") : $0
            }
            changed = true
        }
        return changed ? (c.string ?? url) : url
    }

    static func isSecret(_ name: String) -> Bool {
        secretQueryNames.contains(name.lowercased().replacingOccurrences(of: "-", with: "_"))
    }
}
