extension Redactor {
    /// A response with the secrets taken out of its body, header values and failure message.
    func scrub(_ response: HTTPResponse) -> HTTPResponse {
        guard !secrets.isEmpty else { return response }
        var r = response
        r.body = scrub(r.body)
        for (name, value) in r.headers { r.headers[name] = scrub(value) }
        if let failure = r.failure { r.failure?.message = scrub(failure.message) }
        return r
    }
}
