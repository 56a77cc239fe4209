/// What the input feed tells the user about lines, in one place: each names the file and line, says what was done
/// with the line, and what to do about it.
enum FeedMessages {
    /// What a line whose body changed since it was answered is told, after its file and line (also the key its
    /// repeats are counted by).
    static let changedBody =
        " was answered before with a different request body; not sent again (pass --force to send it and replace the "
        + "answer)"

    static func changedBody(_ place: String, customID: String) -> String {
        "\(place): custom_id '\(customID)'" + changedBody
    }

    static func duplicateCustomID(_ place: String, customID: String) -> String {
        "\(place): duplicate custom_id '\(customID)' (an earlier line has it)"
    }

    static func unknownDefault(_ key: String, guess: String?) -> String {
        "chatbatch: warning: the job's request defaults set `\(key)`, which is not a Chat Completions field"
            + (guess.map { " (did you mean \($0)?)" } ?? "") + "; it is sent as given"
    }

    static func unknownField(_ place: String, field: String, guess: String?, endpoint: APIEndpoint = .chat) -> String {
        "chatbatch: warning: \(place): `\(field)` is not a \(endpoint == .chat ? "Chat Completions" : endpoint.rawValue) field"
            + (guess.map { " (did you mean \($0)?)" } ?? "") + "; it is sent as given"
    }

    static func unpricedEmbeddings(_ place: String) -> String {
        "chatbatch: warning: \(place): /v1/embeddings lines are counted at $0: no embeddings price is known; set "
            + "prices.embeddings in the job (USD per million input tokens) or pass --price-embeddings"
    }

    static func otherEndpoint(_ place: String, customID: String, endpoint: String) -> String {
        "\(place): custom_id '\(customID)' was answered by \(endpoint), not by this run's endpoint; not sent again "
            + "(--other-endpoint-answers keep takes such answers, resend sends them again)"
    }

    static func moreWithSameProblem(_ path: String, count: Int, problem: String) -> String {
        "\(path): … and \(count) more lines with the same problem:\(problem)"
    }

    static func fakeAnswersResent(_ n: Int, to url: String) -> String {
        "chatbatch: \(n) lines were answered by the fake gateway (--fake-gateway); a fake answer never stands for a "
            + "real one, so they are sent to \(url)"
    }

    static func notJSONL(_ path: String, sample: String) -> String {
        "\(path) is not JSONL: its first lines are not JSON objects (\(sample)…). chatbatch reads one JSON object per "
            + "line; convert the file first (a CSV: one {\"custom_id\", \"prompt\"} object per row)"
    }
}
