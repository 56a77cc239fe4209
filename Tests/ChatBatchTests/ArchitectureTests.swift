@testable import ChatBatch
import Foundation
import Testing

/// The shape of the code: data flows one way, and what the README promises matches the code.
@Suite("Architecture: one-way folders, exit codes written once")
struct ArchitectureTests {
    /// `Sources/ChatBatch`'s folders, upstream first: each may use only names declared in itself or above it.
    static let layers = ["Errors", "SQLite", "Providers", "Job", "Input", "Transport", "Answers", "Scheduling", "Checkpoint", "Cache", "Feed", "Output", "Report", "Machine", "Run"]

    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// A file's text without comments and string literals, so only code is read.
    static func code(_ path: String) -> String {
        var text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
        text = text.replacingOccurrences(of: #"//[^\n]*"#, with: "", options: .regularExpression)
        text = text.replacingOccurrences(of: #""""[\s\S]*?""""#, with: "\"\"", options: .regularExpression)
        text = text.replacingOccurrences(of: #""(\\.|[^"\\\n])*""#, with: "\"\"", options: .regularExpression)
        return text
    }

    /// Swift files per folder of `Sources/ChatBatch`.
    static func files() throws -> [String: [String]] {
        let base = root.appendingPathComponent("Sources/ChatBatch").path
        var out: [String: [String]] = [:]
        for folder in try FileManager.default.contentsOfDirectory(atPath: base) {
            let dir = base + "/" + folder
            out[folder] = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasSuffix(".swift") }.map { dir + "/" + $0 }
        }
        return out
    }

    /// Top-level names a file declares: types, protocols, free functions and globals.
    static func declarations(_ text: String) -> Set<String> {
        let pattern = #"(?m)^(?:(?:public|internal|private|fileprivate|final|nonisolated\(unsafe\))\s+)*(?:struct|class|enum|protocol|typealias|actor|func|let|var)\s+([A-Za-z_][A-Za-z0-9_]*)"#
        let regex = try! NSRegularExpression(pattern: pattern)
        let range = NSRange(text.startIndex..., in: text)
        return Set(regex.matches(in: text, range: range).compactMap { Range($0.range(at: 1), in: text).map { String(text[$0]) } })
    }

    @Test func everyFolderDependsOnlyOnFoldersUpstreamOfIt() throws {
        let files = try Self.files()
        #expect(Set(files.keys) == Set(Self.layers), "folders: \(files.keys.sorted())")
        var owner: [String: Int] = [:]
        for (folder, paths) in files {
            guard let layer = Self.layers.firstIndex(of: folder) else { continue }
            for path in paths { for name in Self.declarations(Self.code(path)) { owner[name] = layer } }
        }
        var violations: [String] = []
        for (folder, paths) in files {
            guard let layer = Self.layers.firstIndex(of: folder) else { continue }
            for path in paths {
                let text = Self.code(path)
                let words = Set(text.split { !($0.isLetter || $0.isNumber || $0 == "_") }.map(String.init))
                for word in words {
                    if let declaredIn = owner[word], declaredIn > layer {
                        violations.append("\(folder)/\(URL(fileURLWithPath: path).lastPathComponent) uses \(word) from \(Self.layers[declaredIn])")
                    }
                }
            }
        }
        #expect(violations.isEmpty, "\(violations.sorted().joined(separator: "\n"))")
    }

    @Test func onlyTheSQLiteWrapperCallsSQLite() throws {
        let sources = Self.root.appendingPathComponent("Sources").path
        let enumerator = FileManager.default.enumerator(atPath: sources)
        var offenders: [String] = []
        while let path = enumerator?.nextObject() as? String {
            guard path.hasSuffix(".swift"), !path.hasPrefix("ChatBatch/SQLite/") else { continue }
            let text = Self.code(sources + "/" + path)
            if text.contains("sqlite3_") || text.contains("import CSQLite") { offenders.append(path) }
        }
        #expect(offenders.isEmpty, "\(offenders)")
    }

    @Test func theRunMachineDoesNoIO() throws {
        let files = try Self.files()["Machine"] ?? []
        #expect(!files.isEmpty)
        let forbidden = ["import Foundation", "import Dispatch", "import Glibc", "import Darwin", "DispatchQueue", "Date(", "FileManager",
                         "FileHandle", "usleep", "sleep(", "fopen", "Thread", "CurlTransport", "SQLiteDatabase", "ProcessInfo"]
        for path in files {
            let text = Self.code(path)
            for word in forbidden where text.contains(word) {
                Issue.record("\(URL(fileURLWithPath: path).lastPathComponent) uses \(word): the machine takes events and returns actions, it does no I/O")
            }
        }
    }

    @Test func noSourceFileIsLongerThanFourHundredLines() throws {
        let sources = Self.root.appendingPathComponent("Sources").path
        let enumerator = FileManager.default.enumerator(atPath: sources)
        var long: [String] = []
        while let path = enumerator?.nextObject() as? String {
            guard path.hasSuffix(".swift") || path.hasSuffix(".h") else { continue }
            let lines = try String(contentsOfFile: sources + "/" + path, encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false).count
            if lines > 400 { long.append("\(path): \(lines)") }
        }
        #expect(long.isEmpty, "\(long)")
    }

    @Test func readmeAndHelpListExactlyTheExitCodesOfRunExit() throws {
        let readme = try String(contentsOf: Self.root.appendingPathComponent("README.md"), encoding: .utf8)
        let section = try #require(readme.components(separatedBy: "## Exit codes").dropFirst().first?.components(separatedBy: "\n## ").first)
        var rows: [Int32: String] = [:]
        for line in section.split(separator: "\n") where line.hasPrefix("| ") {
            let cells = line.split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) }
            if cells.count == 2, let code = Int32(cells[0]) { rows[code] = cells[1] }
        }
        #expect(rows == Dictionary(uniqueKeysWithValues: RunExit.allCases.map { ($0.rawValue, $0.meaning) }))
        let (_, help) = try runToEnd(chatbatchBinary(), ["run", "--help"], captureStdout: true)
        let flat = help.replacingOccurrences(of: "\n", with: " ").replacingOccurrences(of: #" +"#, with: " ", options: .regularExpression)
        for exit in RunExit.allCases { #expect(flat.contains("\(exit.rawValue) \(exit.meaning)"), "--help lacks exit code \(exit.rawValue)") }
        // Every error code maps to one of them.
        #expect(Set(ChatBatchError.Code.allCases.map(\.exit)).isSubset(of: Set(RunExit.allCases)))
    }
}
