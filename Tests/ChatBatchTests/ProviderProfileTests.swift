import Testing

@testable import ChatBatch

/// Each provider's facts live in its profile; adding a provider is adding a profile and a case here.
@Suite("Provider profiles")
struct ProviderProfileTests {
    @Test func teraBuildsItsURLAndNamesItsHeaderKeyAndPrices() throws {
        let tera = ProviderKind.tera.profile
        #expect(
            try tera.endpoint(baseURL: nil, projectID: nil, model: nil) == "https://api.tera.gw/v1/chat/completions")
        #expect(
            try tera.endpoint(baseURL: "https://gw.example/v1/", projectID: nil, model: nil)
                == "https://gw.example/v1/chat/completions")
        #expect(
            tera.keyVariable == "TERA_API_KEY" && tera.requiresKey && tera.requestIDHeaders == ["x-tera-request-id"])
        #expect(
            tera.defaultModel == "openai/gpt-oss-120b"
                && tera.prices == Prices(inputPerMillion: 0.09, outputPerMillion: 0.36))
        #expect(tera.authorization("k") == "Authorization: Bearer k")
    }

    @Test func tirPutsTheProjectInPathAndQueryAndTheModelInThePath() throws {
        let tir = ProviderKind.tir.profile
        #expect(
            try tir.endpoint(baseURL: nil, projectID: "42", model: nil)
                == "https://infer.e2enetworks.net/project/p-42/genai/gpt_oss_120b/v1/chat/completions?project_id=42")
        #expect(
            try tir.endpoint(baseURL: "https://x", projectID: "42", model: "llama_3_8b")
                == "https://x/project/p-42/genai/llama_3_8b/v1/chat/completions?project_id=42")
        #expect(throws: ChatBatchError.self) { try tir.endpoint(baseURL: nil, projectID: nil, model: nil) }
        #expect(throws: ChatBatchError.self) { try tir.endpoint(baseURL: nil, projectID: "4x", model: nil) }
        #expect(throws: ChatBatchError.self) { try tir.endpoint(baseURL: nil, projectID: "42", model: "a/b") }
        #expect(tir.keyVariable == "TIR_API_KEY" && tir.defaultModel == "gpt_oss_120b")
    }

    @Test func openAICompatibleNeedsABaseURLAndNoKey() throws {
        let any = ProviderKind.openAICompatible.profile
        #expect(throws: ChatBatchError.self) { try any.endpoint(baseURL: nil, projectID: nil, model: nil) }
        #expect(try any.endpoint(baseURL: "http://h/v1/", projectID: nil, model: nil) == "http://h/v1/chat/completions")
        #expect(
            try any.endpoint(baseURL: "http://h/v1/chat/completions", projectID: nil, model: nil)
                == "http://h/v1/chat/completions")
        #expect(!any.requiresKey && any.keyVariable == "OPENAI_API_KEY")
    }

    @Test func choicesWriteTheirOwnOneOfMessages() throws {
        #expect(ProviderKind.choices == "tera, tir or openai-compatible")
        #expect(CacheMode.choices == "read-write, read-only or refresh")
        #expect(throws: ChatBatchError.self) { try ProviderKind.parse("openai", for: "--provider") }
        let error = #expect(throws: ChatBatchError.self) { try OutputFormat.parse("csv", for: "format") }
        #expect(error?.message == "format must be batch or flat, not 'csv'" && error?.code.exit == .usageOrInput)
        // Every kind has a profile of its own kind.
        for kind in ProviderKind.allCases { #expect(kind.profile.kind == kind) }
    }
}
