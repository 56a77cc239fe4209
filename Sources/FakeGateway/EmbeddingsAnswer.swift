import ChatBatchCore

/// `/v1/embeddings` as OpenAI serves it: one vector per input (a string, or an array of up to 2,048 strings),
/// `dimensions` long (1,536 by default, 3,072 at most), the same input always giving the same vector; usage bills
/// input tokens only.
enum EmbeddingsAnswer {
    static let maxInputs = 2_048
    static let defaultDimensions = 1_536
    static let maxDimensions = 3_072

    /// The request's inputs, or why it is refused (a 400 with OpenAI's wording).
    static func inputs(_ request: JSON) -> Result<[String], GatewayErrorAnswer> {
        let inputs: [String]
        switch request["input"] {
        case .string(let text)?: inputs = [text]
        case .array(let items)?:
            let texts = items.compactMap(\.stringValue)
            guard texts.count == items.count else {
                return .failure(.invalid("'input' must be a string or an array of strings."))
            }
            inputs = texts
        default: return .failure(.invalid("'input' is required: a string or an array of strings."))
        }
        guard !inputs.isEmpty, inputs.allSatisfy({ !$0.isEmpty }) else {
            return .failure(.invalid("'input' cannot be an empty string or an empty array."))
        }
        guard inputs.count <= maxInputs else {
            return .failure(.invalid("'input' holds \(inputs.count) items; at most \(maxInputs) are allowed."))
        }
        if let d = request["dimensions"], d.intValue.map({ !(1...maxDimensions).contains($0) }) ?? true {
            return .failure(.invalid("'dimensions' must be an integer from 1 to \(maxDimensions)."))
        }
        return .success(inputs)
    }

    /// Prompt tokens the inputs bill.
    static func tokens(_ inputs: [String]) -> Int { inputs.reduce(0) { $0 + TokenEstimate.tokens($1) } }

    /// The answer for `inputs`: each vector drawn from its input's hash and scaled to length 1.
    static func body(_ inputs: [String], request: JSON, model: String) -> JSON {
        let dimensions = request["dimensions"]?.intValue ?? defaultDimensions
        let data = inputs.enumerated().map { index, text -> JSON in
            var rng = SplitMix64(seed: StableHash.of(text))
            var vector = (0..<dimensions).map { _ in Double(rng.next() >> 11) / Double(1 << 53) * 2 - 1 }
            let norm = max(1e-12, vector.reduce(0) { $0 + $1 * $1 }.squareRoot())
            vector = vector.map { ($0 / norm * 1e6).rounded() / 1e6 }
            return ["object": "embedding", "index": .int(index), "embedding": .array(vector.map(JSON.double))]
        }
        let tokens = tokens(inputs)
        return [
            "object": "list", "data": .array(data), "model": .string(model),
            "usage": ["prompt_tokens": .int(tokens), "total_tokens": .int(tokens)]
        ]
    }
}
