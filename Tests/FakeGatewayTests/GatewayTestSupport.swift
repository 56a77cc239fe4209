import ChatBatchCore
import FakeGateway
import Foundation
import TestSupport

@testable import ChatBatch

/// One libcurl transport for every gateway test: tests talk to the gateway over real HTTP.
let client = CurlTransport(maxConnections: 64)

/// POSTs `body` to `path` on the gateway.
func post(
    _ gateway: FakeGateway, path: String = "/v1/chat/completions", key: String? = "sk-fake", body: JSON,
    clientID: String? = nil, timeout: Double = 10
) -> HTTPResponse {
    var headers = ["Content-Type: application/json"]
    if let key { headers.append("Authorization: Bearer \(key)") }
    if let clientID { headers.append("X-Client-Request-Id: \(clientID)") }
    return client.send(
        HTTPRequest(
            url: gateway.rootURL + path, headers: headers, body: Array(body.serialized().utf8), timeout: timeout))
}

/// A GET of `path` on the gateway.
func get(_ gateway: FakeGateway, _ path: String, key: String?) -> (status: Int, body: JSON) {
    var request = HTTPRequest(
        url: gateway.rootURL + path, headers: key.map { ["Authorization: Bearer \($0)"] } ?? [], body: [])
    request.method = "GET"
    let r = client.send(request)
    return (r.status, json(r))
}

/// A request body for `model` with `fields` set in order (a later one replaces an earlier).
func requestBody(model: String = "openai/gpt-oss-120b", _ fields: [(String, JSON)]) -> JSON {
    var body: JSON = ["model": .string(model)]
    for (k, v) in fields { body[k] = v }
    return body
}

func chat(_ text: String, model: String = "openai/gpt-oss-120b", _ extra: [(String, JSON)] = []) -> JSON {
    requestBody(model: model, [("messages", [["role": "user", "content": .string(text)]])] + extra)
}

func json(_ r: HTTPResponse) -> JSON { (try? JSON.parse(r.body)) ?? .null }

/// The SSE `data:` payloads of a streamed body.
func events(_ r: HTTPResponse) -> [String] {
    String(decoding: r.body, as: UTF8.self).components(separatedBy: "\n\n")
        .filter { $0.hasPrefix("data: ") }.map { String($0.dropFirst(6)) }
}

/// Checks a value against the subset of JSON Schema the gateway promises to satisfy.
func satisfies(_ value: JSON, _ schema: JSON) -> Bool {
    if let options = schema["enum"]?.arrayValue { return options.contains(value) }
    switch schema["type"]?.stringValue {
    case "object":
        guard let o = value.objectValue else { return false }
        for req in schema["required"]?.arrayValue ?? [] where o[req.stringValue ?? ""] == nil { return false }
        let props = schema["properties"]?.objectValue ?? JSONObject()
        for (k, v) in o {
            if let sub = props[k] {
                if !satisfies(v, sub) { return false }
            } else if schema["additionalProperties"]?.boolValue == false {
                return false
            }
        }
        return true
    case "array":
        guard let a = value.arrayValue else { return false }
        if let min = schema["minItems"]?.intValue, a.count < min { return false }
        if let max = schema["maxItems"]?.intValue, a.count > max { return false }
        return a.allSatisfy { satisfies($0, schema["items"] ?? .object(JSONObject())) }
    case "string": return value.stringValue != nil
    case "integer":
        guard case .int(let i) = value else { return false }
        if let min = schema["minimum"]?.intValue, i < min { return false }
        if let max = schema["maximum"]?.intValue, i > max { return false }
        return true
    case "number": return value.doubleValue != nil
    case "boolean": return value.boolValue != nil
    default: return true
    }
}
