import ChatBatchCore
import FakeGateway
import Foundation
import Testing

@testable import ChatBatch

@Suite("Fake gateway: routes and the seed's error table")
struct GatewayRouteAndErrorTests {
    @Test func teraRouteAnswersAChatCompletionWithAUniqueRequestID() throws {
        let g = try FakeGateway.start()
        defer { g.shutdown() }
        let a = post(g, body: chat("Hello there"))
        let b = post(g, body: chat("Hello there"))
        #expect(a.status == 200)
        let body = json(a)
        #expect(body["object"] == "chat.completion")
        #expect(body["model"] == "openai/gpt-oss-120b")
        let choice = body["choices"]?.arrayValue?.first
        #expect(choice?["message"]?["content"]?.stringValue?.isEmpty == false)
        #expect(choice?["message"]?["reasoning"]?.stringValue?.isEmpty == false)
        #expect(choice?["finish_reason"] == "stop")
        let usage = body["usage"]
        #expect(
            usage?["total_tokens"]?.intValue == (usage?["prompt_tokens"]?.intValue ?? -1)
                + (usage?["completion_tokens"]?.intValue ?? -1))
        #expect(usage?["prompt_tokens"]?.intValue == TokenEstimate.promptTokens(body: chat("Hello there")))
        let idA = try #require(a.headers["x-tera-request-id"])
        #expect(idA != b.headers["x-tera-request-id"])
        // Same request, same answer.
        #expect(json(a)["choices"] == json(b)["choices"])
    }

    @Test func tirRouteChecksTheProjectInPathAndQuery() throws {
        let g = try FakeGateway.start { $0.projectID = "77" }
        defer { g.shutdown() }
        let ok = post(
            g, path: "/project/p-77/genai/gpt_oss_120b/v1/chat/completions?project_id=77",
            body: chat("hi", model: "gpt_oss_120b"))
        #expect(ok.status == 200)
        #expect(json(ok)["model"] == "gpt_oss_120b")
        let mismatch = post(
            g, path: "/project/p-77/genai/gpt_oss_120b/v1/chat/completions?project_id=78",
            body: chat("hi", model: "gpt_oss_120b"))
        #expect(mismatch.status == 400)
        let other = post(
            g, path: "/project/p-78/genai/gpt_oss_120b/v1/chat/completions?project_id=78",
            body: chat("hi", model: "gpt_oss_120b"))
        #expect(other.status == 403)
        #expect(json(other)["error"]?["type"] == "permission_error")
        let ledger = g.ledger.snapshot()
        #expect(ledger.filter { $0.route == "tir" }.count == 3)
    }

    @Test func modelsRouteListsTheCatalog() throws {
        let g = try FakeGateway.start()
        defer { g.shutdown() }
        let r = get(g, "/v1/models", key: "sk-fake")
        #expect(r.status == 200)
        let ids = r.body["data"]?.arrayValue?.compactMap { $0["id"]?.stringValue } ?? []
        #expect(ids == ["openai/gpt-oss-120b", "gpt_oss_120b"])
        #expect(get(g, "/v1/models", key: nil).status == 401)
        #expect(get(g, "/v1/nothing", key: "sk-fake").status == 404)
    }

    @Test(arguments: [
        // (key, body, status, error.type)
        ("none", "{}", 401, "authentication_error"),
        ("sk-wrong", "{}", 401, "authentication_error"),
        (
            "sk-unscoped", #"{"model":"openai/gpt-oss-120b","messages":[{"role":"user","content":"x"}]}"#, 403,
            "permission_error"
        ),
        ("sk-fake", #"{"model":"gpt-4o","messages":[{"role":"user","content":"x"}]}"#, 404, "model_not_found"),
        ("sk-fake", #"{"model":"openai/gpt-oss-120b","messages":[{"role":"user""#, 400, "invalid_request_error"),
        ("sk-fake", #"{"model":"openai/gpt-oss-120b","messages":[]}"#, 400, "invalid_request_error"),
        (
            "sk-fake", #"{"model":"openai/gpt-oss-120b","messages":[{"role":"user","content":"x"}],"temperature":7}"#,
            400, "invalid_request_error"
        ),
        (
            "sk-fake", #"{"model":"openai/gpt-oss-120b","messages":[{"role":"user","content":"x"}],"max_tokens":5000}"#,
            400, "invalid_request_error"
        ),
        (
            "sk-fake", #"{"model":"openai/gpt-oss-120b","messages":[{"role":"robot","content":"x"}]}"#, 400,
            "invalid_request_error"
        )
    ])
    func errorsFollowTheSeedsTable(key: String, body: String, status: Int, type: String) throws {
        let g = try FakeGateway.start { $0.unscopedKeys = ["sk-unscoped"] }
        defer { g.shutdown() }
        var headers = ["Content-Type: application/json"]
        if key != "none" { headers.append("Authorization: Bearer \(key)") }
        let r = client.send(HTTPRequest(url: g.baseURL + "/chat/completions", headers: headers, body: Array(body.utf8)))
        #expect(r.status == status)
        let error = json(r)["error"]
        #expect(error?["type"]?.stringValue == type)
        #expect(error?["message"]?.stringValue?.isEmpty == false)
        #expect(error?["code"]?.stringValue?.isEmpty == false)
        #expect(r.headers["x-tera-request-id"] != nil)
        #expect(g.ledger.snapshot().allSatisfy { !$0.billed })
    }
}
