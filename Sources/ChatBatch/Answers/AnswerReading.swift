import ChatBatchCore

/// What a 2xx answer's bytes turned out to hold: its endpoint's answer (a chat completion, embeddings, a text
/// completion, a response), or why it is not one.
///
/// A server may ignore `stream: true` and answer with plain JSON (accepted once, as the answer), send an
/// `error` inside a 200 or inside a stream, send no `choices`, or send bytes that are not JSON at all: none of
/// those is an answer, and each says what came back.
struct AnswerReading {
    /// The completion body (a stream put back together), when there is one.
    var body: JSON?
    /// Why the bytes are not an answer: `error_in_answer`, `no_choices`, `bad_response`, `stream_cut` for a
    /// stream that ended before `data: [DONE]`, or `broken_stream` for one with an event that is not JSON.
    var problem: (code: String, message: String)?
    /// Text that could not be decoded was replaced with U+FFFD.
    var repaired = false
    /// The answer came streamed (SSE), so the body was reassembled rather than received whole.
    var wasStreamed = false

    /// How much of an unreadable answer the errors file keeps.
    static let keptBytes = 4096

    init(
        status: Int, headers: [String: String], bytes: [UInt8], askedToStream: Bool, endpoint: APIEndpoint = .chat
    ) {
        if askedToStream && !Self.looksLikeJSON(headers: headers, bytes: bytes) {
            wasStreamed = true
            let assembled =
                endpoint == .responses ? ResponsesStreamAssembler.assemble(bytes) : StreamAssembler.assemble(bytes)
            repaired = assembled.repaired
            if let error = assembled.error {
                problem = ("error_in_answer", "the stream carried an error: \(Self.describe(error))")
                body = assembled.body
                return
            }
            guard assembled.complete else {
                let end = endpoint == .responses ? "response.completed" : "[DONE]"
                problem = ("stream_cut", "stream cut off before \(end)")
                return
            }
            guard assembled.chunks > 0 else {
                problem = ("no_choices", "HTTP \(status) with a stream of no chunks")
                return
            }
            // An event that cannot be read leaves a gap in the answer: the stream is broken, never taken as whole.
            guard assembled.unreadable == 0 else {
                problem = (
                    "broken_stream",
                    "the stream held \(assembled.unreadable) events that are not JSON (the first: \(assembled.firstUnreadable)…); a piece of the answer would be missing"
                )
                return
            }
            body = assembled.body
        } else {
            guard let (value, fixed) = try? JSON.parseRepairing(bytes), value.objectValue != nil else {
                let type = headers["content-type"].map { " (\($0))" } ?? ""
                problem = (
                    "bad_response",
                    "HTTP \(status) with a body that is not a JSON object\(type): \(ServerError.excerpt(bytes, 200))"
                )
                return
            }
            repaired = fixed
            body = value
        }
        guard let body else { return }
        if let error = body["error"], !error.isNull {
            problem = ("error_in_answer", "HTTP \(status) carrying an error: \(Self.describe(error))")
        } else if let missing = endpoint.missingAnswer(body) {
            problem = ("no_choices", "HTTP \(status) with \(missing) in the answer")
        }
    }

    /// The body as the errors file keeps it: the JSON when it parsed, else the start of the raw bytes as text.
    static func kept(_ bytes: [UInt8]) -> JSON? {
        if bytes.isEmpty { return nil }
        if let (value, _) = try? JSON.parseRepairing(bytes) { return value }
        return .string(ServerError.excerpt(bytes, keptBytes))
    }

    /// A server that ignored `stream: true`: a JSON content type, or a body that starts like an object.
    static func looksLikeJSON(headers: [String: String], bytes: [UInt8]) -> Bool {
        if let type = headers["content-type"]?.lowercased() {
            if type.contains("event-stream") { return false }
            if type.contains("json") { return true }
        }
        return bytes.first { $0 != 0x20 && $0 != 0x0A && $0 != 0x0D && $0 != 0x09 } == UInt8(ascii: "{")
    }

    static func describe(_ error: JSON) -> String {
        if let message = error["message"]?.stringValue ?? error.stringValue { return message }
        return String(error.serialized().prefix(300))
    }

    /// Usage as the server reported it, or estimated (chatbatch's token estimate) where it sent none.
    static func usage(
        _ body: JSON, promptEstimate: Int, endpoint: APIEndpoint = .chat
    ) -> (prompt: Int, completion: Int, estimated: Bool) {
        let (prompt, completion) = endpoint.reportedUsage(body)
        if let prompt, let completion { return (prompt, completion, false) }
        return (prompt ?? promptEstimate, completion ?? completionEstimate(body, endpoint: endpoint), true)
    }

    /// Tokens of what the answer wrote: content, reasoning and tool-call arguments.
    static func completionEstimate(_ body: JSON, endpoint: APIEndpoint = .chat) -> Int {
        let written = endpoint.written(body)
        var text = (written.text ?? "") + (written.reasoning ?? "")
        for call in written.toolCalls { text += call.name + call.arguments }
        return TokenEstimate.tokens(text)
    }

    /// The provider's id for the answer: the run's profile's headers, then every profile's
    /// (`ProviderKind.requestIDHeaders`), then the body's `id`.
    static func requestID(headers: [String: String], body: JSON?, profileHeaders: [String]) -> String? {
        func first(_ names: [String]) -> String? { names.lazy.compactMap { headers[$0] }.first { !$0.isEmpty } }
        return first(profileHeaders) ?? first(ProviderKind.requestIDHeaders) ?? body?["id"]?.stringValue
    }
}
