/// E2E Networks TIR: `/project/p-{id}/genai/{model}/v1/chat/completions?project_id={id}`, model `gpt_oss_120b`.
/// Its page lists no prices: cost shows as "price unknown", and `max_cost` is refused, until the job sets `prices`.
public struct TIRProfile: ProviderProfile {
    public var kind: ProviderKind { .tir }
    public var defaultBaseURL: String? { "https://infer.e2enetworks.net" }
    public var defaultModel: String? { "gpt_oss_120b" }
    public var keyVariable: String { "TIR_API_KEY" }
    public var requiresKey: Bool { true }
    public var prices: Prices { Prices(inputPerMillion: 0, outputPerMillion: 0) }
    public var limits: ModelLimits { .gptOSS120b }

    public func chatURL(base: String, projectID: String?, model: String?) throws(ChatBatchError) -> String {
        guard let id = projectID, !id.isEmpty else {
            throw ChatBatchError(
                .missingProjectID, "provider tir needs a project id: set project_id in the job or pass --project-id")
        }
        guard id.allSatisfy({ $0.isNumber }) else {
            throw ChatBatchError(.badProjectID, "project id '\(id)' must be a number (the p-{id} in your TIR URL)")
        }
        let slug = model ?? defaultModel!
        guard slug.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" || $0 == "-" || $0 == "." }) else {
            throw ChatBatchError(
                .badProjectID, "TIR model '\(slug)' cannot be part of a URL path (letters, digits, _ - . only)")
        }
        return "\(base)/project/p-\(id)/genai/\(slug)/v1/chat/completions?project_id=\(id)"
    }
}
