/// The documented token estimate shared by the fake gateway (what it bills) and the runner
/// (what it expects to pay before sending).
///
/// A token is counted as four UTF-8 bytes of text, rounded up; every message adds 4 tokens of
/// framing and every request 3 more. Real tokenizers land within a small factor of this for
/// English text, which is all a budget check or a pre-flight check needs.
public enum TokenEstimate {
    public static let bytesPerToken = 4
    public static let perMessage = 4
    public static let perRequest = 3

    /// Tokens for a piece of text.
    public static func tokens(_ text: String) -> Int {
        (text.utf8.count + bytesPerToken - 1) / bytesPerToken
    }

    /// Prompt tokens for a chat request body: messages, plus tool and schema definitions.
    public static func promptTokens(body: JSON) -> Int {
        var total = perRequest
        for message in body["messages"]?.arrayValue ?? [] {
            total += perMessage
            if let content = message["content"] {
                total += contentTokens(content)
            }
            if let calls = message["tool_calls"] { total += tokens(calls.serialized()) }
        }
        if let tools = body["tools"], !tools.isNull { total += tokens(tools.serialized()) }
        if let format = body["response_format"]?["json_schema"] { total += tokens(format.serialized()) }
        return total
    }

    static func contentTokens(_ content: JSON) -> Int {
        switch content {
        case .string(let s): return tokens(s)
        case .array(let parts):
            return parts.reduce(0) { $0 + ($1["text"]?.stringValue.map(tokens) ?? 0) }
        default: return 0
        }
    }
}
