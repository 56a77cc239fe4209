import ArgumentParser
import ChatBatch
import Foundation

/// `chatbatch cache`: look after a response cache file.
struct CacheCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cache",
        abstract: "Look after a response cache (--cache PATH): what it holds, and pruning old answers.",
        subcommands: [Stats.self, Prune.self])

    /// `chatbatch cache stats PATH`.
    struct Stats: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Answers, bytes, tokens paid for once, age and models in a cache.")
        @Argument(help: "The cache file.") var path: String
        @Flag(help: "Print JSON.") var json = false

        func run() throws {
            let stats = try CacheMaintenance.stats(path: path)
            print(json ? stats.json.serialized() : stats.text)
        }
    }

    /// `chatbatch cache prune PATH --older-than 30d`.
    struct Prune: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Delete the answers stored longer ago than a duration.")
        @Argument(help: "The cache file.") var path: String
        @Option(help: "Delete answers older than this: 30d, 12h, 90m or 3600s.") var olderThan: String

        func run() throws {
            let n = try CacheMaintenance.prune(path: path, olderThan: olderThan)
            print("pruned \(n) answers older than \(olderThan) from \(path)")
        }
    }
}
