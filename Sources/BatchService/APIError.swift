import ChatBatchCore

/// An error answered in OpenAI's shape (`{"error":{"message","type","param","code"}}`), with its HTTP status.
/// A client's mistake is a 4xx that says what to change; nothing a client sends makes a 500.
public struct APIError: Error, Sendable {
    public var status: Int
    public var message: String
    public var type: String
    public var code: String?
    public var param: String?

    public init(
        _ status: Int, _ message: String, type: String = "invalid_request_error", code: String? = nil,
        param: String? = nil
    ) {
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
    }

    var json: JSON {
        [
            "error": [
                "message": .string(message), "type": .string(type), "param": param.map(JSON.string) ?? .null,
                "code": code.map(JSON.string) ?? .null
            ]
        ]
    }

    static func notFound(_ what: String, _ id: String) -> APIError {
        APIError(404, "No \(what) found with id '\(id)'.", code: "not_found")
    }

    static let unauthorized = APIError(
        401, "Incorrect API key provided. Send the key this server was started with as 'Authorization: Bearer KEY'.",
        code: "invalid_api_key")
}
