import Foundation
import Testing

@testable import ChatBatch

/// The shape of the code: data flows one way, and what the README promises matches the code.
@Suite("Architecture: one-way folders, exit codes written once")
struct ArchitectureTests {
    /// `Sources/ChatBatch`'s folders, upstream first: each may use only names declared in itself or above it.
    static let layers = [
        "Errors", "SQLite", "Postgres", "Control", "Providers", "Job", "Cache", "Input", "Transport", "Answers",
        "Scheduling",
        "Checkpoint",
        "Feed", "Output", "Report", "Machine", "Run"
    ]

    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

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
            out[folder] = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasSuffix(".swift") }.map
            { dir + "/" + $0 }
        }
        return out
    }

    /// Top-level names a file declares: types, protocols, free functions and globals.
    static func declarations(_ text: String) -> Set<String> {
        let pattern =
            #"(?m)^(?:(?:public|internal|private|fileprivate|final|nonisolated\(unsafe\))\s+)*(?:struct|class|enum|protocol|typealias|actor|func|let|var)\s+([A-Za-z_][A-Za-z0-9_]*)"#
        let regex = try! NSRegularExpression(pattern: pattern)
        let range = NSRange(text.startIndex..., in: text)
        return Set(
            regex.matches(in: text, range: range).compactMap {
                Range($0.range(at: 1), in: text).map { String(text[$0]) }
            })
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
                        violations.append(
                            "\(folder)/\(URL(fileURLWithPath: path).lastPathComponent) uses \(word) from \(Self.layers[declaredIn])"
                        )
                    }
                }
            }
        }
        #expect(violations.isEmpty, "\(violations.sorted().joined(separator: "\n"))")
    }

    /// Each database's C library is called from its wrapper's folder only.
    @Test(arguments: [
        ("ChatBatch/SQLite/", ["sqlite3_", "import CSQLite"]), ("ChatBatch/Postgres/", ["PQ", "import CLibPQ"])
    ])
    func onlyTheWrapperCallsItsDatabaseLibrary(folder: String, marks: [String]) throws {
        let sources = Self.root.appendingPathComponent("Sources").path
        let enumerator = FileManager.default.enumerator(atPath: sources)
        var offenders: [String] = []
        while let path = enumerator?.nextObject() as? String {
            guard path.hasSuffix(".swift"), !path.hasPrefix(folder) else { continue }
            let text = Self.code(sources + "/" + path)
            let calls = marks.contains { mark in
                mark == "PQ" ? text.range(of: #"\bPQ[a-z]"#, options: .regularExpression) != nil : text.contains(mark)
            }
            if calls { offenders.append(path) }
        }
        #expect(offenders.isEmpty, "\(offenders)")
    }

    /// SQL is written only in the store layer (`SQLite/`, `Postgres/`, `Checkpoint/`, `Cache/`): the report, the
    /// outputs, the run and the commands ask the store for values by name, never for rows (a second store backend
    /// then has one place to answer).
    @Test func sqlIsWrittenOnlyInTheStoreLayer() throws {
        let sources = Self.root.appendingPathComponent("Sources").path
        let enumerator = FileManager.default.enumerator(atPath: sources)
        let store = ["ChatBatch/SQLite/", "ChatBatch/Postgres/", "ChatBatch/Checkpoint/", "ChatBatch/Cache/"]
        let sql = [
            #"SELECT\s[\s\S]*?\sFROM\s"#, #"INSERT\s+(OR\s+\w+\s+)?INTO\s"#, #"DELETE\s+FROM\s"#,
            #"UPDATE\s+\w+\s+SET\s"#, #"CREATE\s+(TABLE|INDEX)\s"#, #"PRAGMA\s"#
        ].map { #"\b"# + $0 }.joined(separator: "|")
        var offenders: [String] = []
        while let path = enumerator?.nextObject() as? String {
            guard path.hasSuffix(".swift"), !store.contains(where: { path.hasPrefix($0) }) else { continue }
            let text = (try? String(contentsOfFile: sources + "/" + path, encoding: .utf8)) ?? ""
            if text.range(of: sql, options: .regularExpression) != nil { offenders.append(path) }
        }
        #expect(offenders.isEmpty, "SQL outside the store layer: \(offenders)")
    }

    /// The run machine and the rules it applies (`Scheduling/`) take events and time as values and return decisions:
    /// no clock, queue, file, socket or database of their own. The machine also does without Foundation.
    @Test func theRunMachineAndTheSchedulingRulesDoNoIO() throws {
        let io = [
            "import Dispatch", "import Glibc", "import Darwin", "DispatchQueue", "DispatchTime", "Date(", "Date.now",
            "FileManager", "FileHandle", "usleep", "sleep(", "fopen", "Thread", "CurlTransport", "SQLiteDatabase",
            "ProcessInfo", "clock_gettime", "uptimeNanoseconds"
        ]
        let folders = try Self.files()
        for (folder, forbidden) in [("Machine", io + ["import Foundation"]), ("Scheduling", io)] {
            let files = folders[folder] ?? []
            #expect(!files.isEmpty, "\(folder) has no files")
            for path in files {
                let text = Self.code(path)
                for word in forbidden where text.contains(word) {
                    let file = URL(fileURLWithPath: path).lastPathComponent
                    Issue.record("\(folder)/\(file) uses \(word): it takes events and time as values and does no I/O")
                }
            }
        }
    }

    @Test func noSourceFileIsLongerThanFourHundredLines() throws {
        let sources = Self.root.appendingPathComponent("Sources").path
        let enumerator = FileManager.default.enumerator(atPath: sources)
        var long: [String] = []
        while let path = enumerator?.nextObject() as? String {
            guard path.hasSuffix(".swift") || path.hasSuffix(".h") else { continue }
            let lines = try String(contentsOfFile: sources + "/" + path, encoding: .utf8).split(
                separator: "\n", omittingEmptySubsequences: false
            ).count
            if lines > 400 { long.append("\(path): \(lines)") }
        }
        #expect(long.isEmpty, "\(long)")
    }

    /// The house style's 120 columns, outside string literals (a message or an SQL statement may run longer; the
    /// formatter leaves those alone, and so does this test).
    @Test func noSourceLineIsWiderThanOneHundredTwentyColumnsOutsideStringLiterals() throws {
        var wide: [String] = []
        for folder in ["Sources", "Tests"] {
            let base = Self.root.appendingPathComponent(folder).path
            let enumerator = FileManager.default.enumerator(atPath: base)
            while let path = enumerator?.nextObject() as? String {
                guard path.hasSuffix(".swift") else { continue }
                var inMultilineString = false
                let lines = try String(contentsOfFile: base + "/" + path, encoding: .utf8).split(
                    separator: "\n", omittingEmptySubsequences: false)
                for (index, line) in lines.enumerated() {
                    let quotes = line.components(separatedBy: "\"\"\"").count - 1
                    if line.count > 120 && !inMultilineString && !line.contains("\"") {
                        wide.append("\(folder)/\(path):\(index + 1)")
                    }
                    if quotes % 2 == 1 { inMultilineString.toggle() }
                }
            }
        }
        #expect(wide.isEmpty, "wider than 120 columns: \(wide)")
    }

    @Test func readmeAndHelpListExactlyTheExitCodesOfRunExit() throws {
        let readme = try String(contentsOf: Self.root.appendingPathComponent("README.md"), encoding: .utf8)
        let section = try #require(
            readme.components(separatedBy: "## Exit codes").dropFirst().first?.components(separatedBy: "\n## ").first)
        var rows: [Int32: String] = [:]
        for line in section.split(separator: "\n") where line.hasPrefix("| ") {
            let cells = line.split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) }
            if cells.count == 2, let code = Int32(cells[0]) { rows[code] = cells[1] }
        }
        #expect(rows == Dictionary(uniqueKeysWithValues: RunExit.allCases.map { ($0.rawValue, $0.meaning) }))
        let (_, help) = try runToEnd(chatbatchBinary(), ["run", "--help"], captureStdout: true)
        let flat = help.replacingOccurrences(of: "\n", with: " ").replacingOccurrences(
            of: #" +"#, with: " ", options: .regularExpression)
        for exit in RunExit.allCases {
            #expect(flat.contains("\(exit.rawValue) \(exit.meaning)"), "--help lacks exit code \(exit.rawValue)")
        }
        // Every error code maps to one of them.
        #expect(Set(ChatBatchError.Code.allCases.map(\.exit)).isSubset(of: Set(RunExit.allCases)))
    }
}
