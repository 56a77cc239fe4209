/// The demo job (`chatbatch demo`): 200 short questions against the built-in fake gateway. The same files are in the
/// repository as `jobs/demo.yaml` and `jobs/data/demo-questions.jsonl` (a test keeps them equal), so the demo runs
/// with nothing but the installed binary.
public enum DemoJob {
    /// `demo.yaml`.
    public static let yaml = """
        # The README's demo: 200 short questions against the built-in fake gateway.
        #   chatbatch run jobs/demo.yaml --fake-gateway      (or: chatbatch demo)
        input: data/demo-questions.jsonl
        output: out/demo.results.jsonl
        provider: tera
        concurrency: 32
        max_attempts: 5
        system: You are a concise assistant. Answer in one sentence.
        request:
          max_tokens: 256
          temperature: 0.2

        """

    static let topics = [
        "the moon", "tea", "rivers", "compilers", "bees", "glaciers", "jazz", "volcanoes", "bread", "satellites",
        "owls", "chess",
        "copper", "tides", "maps", "violins", "deserts", "ferns", "trains", "clouds"
    ]
    static let shapes = [
        "Why is {t} interesting?", "Give one fact about {t}.", "How would you explain {t} to a child?",
        "What is a common misconception about {t}?", "Name a word related to {t}.",
        "What changed about {t} in the last century?",
        "Describe {t} in five words.", "What is the history of {t} in one sentence?", "Who studies {t}?",
        "What sound do you associate with {t}?"
    ]

    /// `data/demo-questions.jsonl`: every shape of question about every topic.
    public static var questions: String {
        var lines: [String] = []
        for topic in topics {
            for shape in shapes {
                let id =
                    "q" + String(repeating: "0", count: 4 - String(lines.count + 1).count) + String(lines.count + 1)
                lines.append(
                    #"{"custom_id": "\#(id)", "prompt": "\#(shape.replacingOccurrences(of: "{t}", with: topic))"}"#)
            }
        }
        return lines.joined(separator: "\n") + "\n"
    }
}
