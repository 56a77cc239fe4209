import ArgumentParser
import ChatBatch
import Foundation

/// `chatbatch demo`: writes the demo job into a folder and runs it against the built-in fake gateway.
struct DemoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract:
            "Write the demo job (200 questions) into a folder and run it against the built-in fake gateway: no key, no network, no cost.",
        discussion:
            "Run it again: nothing is sent, everything is already done. Then try `chatbatch status DIR/demo.yaml` and `chatbatch report DIR/demo.yaml`."
    )

    @Argument(help: "The folder to write the demo into (created if needed).") var folder = "chatbatch-demo"

    func run() throws {
        let data = (folder as NSString).appendingPathComponent("data")
        try FileManager.default.createDirectory(atPath: data, withIntermediateDirectories: true)
        let job = (folder as NSString).appendingPathComponent("demo.yaml")
        for (path, text) in [
            (job, DemoJob.yaml), ((data as NSString).appendingPathComponent("demo-questions.jsonl"), DemoJob.questions)
        ]
        where !FileManager.default.fileExists(atPath: path) {
            try text.write(toFile: path, atomically: true, encoding: .utf8)
        }
        Stream.write("chatbatch: the demo job is \(job); running it against the built-in fake gateway\n")
        let run = try RunCommand.parse([job, "--fake-gateway"])
        try run.run()
    }
}
