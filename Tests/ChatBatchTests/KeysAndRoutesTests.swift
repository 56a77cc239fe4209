import ChatBatchCore
import FakeGateway
import Foundation
import Testing

@testable import ChatBatch

@Suite("Keys and routes: where a key comes from, the TIR URL")
struct KeysAndRoutesTests {
    @Test func keysComeFromTheEnvironmentOrAFileAndPlainHTTPIsFlagged() throws {
        let scratch = Scratch()
        var s = JobSettings()
        s.input = "x.jsonl"
        s.apiKeyEnv = "CHATBATCH_TEST_SURELY_UNSET"
        #expect { try APIKeySource.resolve(try s.resolve().endpoint) } throws: {
            ($0 as? ChatBatchError)?.message.contains("CHATBATCH_TEST_SURELY_UNSET") == true
        }
        _ = FileManager.default.createFile(atPath: scratch.file("key"), contents: Data("sk-from-file\n".utf8))
        s.apiKeyFile = scratch.file("key")
        #expect(try APIKeySource.resolve(try s.resolve().endpoint) == "sk-from-file")
        #expect(APIKeySource.plainTextHost(endpoint: "http://127.0.0.1:8000/v1/chat/completions") == nil)
        #expect(APIKeySource.plainTextHost(endpoint: "https://api.tera.gw/v1/chat/completions") == nil)
        #expect(
            APIKeySource.plainTextHost(endpoint: "http://gpu-box.internal:8000/v1/chat/completions")
                == "gpu-box.internal")
    }

    @Test func tirProviderRunsAgainstTheTIRRoute() throws {
        let scratch = Scratch()
        let g = try FakeGateway.start { $0.projectID = "4242" }
        defer { g.shutdown() }
        scratch.write("in.jsonl", lines: promptLines(5))
        var s = settings(scratch, g)
        s.provider = .tir
        s.baseURL = g.rootURL
        s.projectID = "4242"
        let (summary, _) = try runJob(s)
        #expect(summary.exit == .allDone && summary.done == 5)
        #expect(g.ledger.snapshot().allSatisfy { $0.route == "tir" && $0.path.hasSuffix("?project_id=4242") })
        #expect(scratch.lines("out.jsonl").first?["response"]?["body"]?["model"] == "gpt_oss_120b")
    }
}
