/// How a command ended, and the exit code that says so. The README's table and `run --help` are checked against it.
public enum RunExit: Int32, Sendable, CaseIterable {
    /// Every line is done.
    case allDone = 0
    /// Finished; some lines failed (or their model was refused) and are in the errors file.
    case doneWithFailures = 1
    /// Bad flags, job file, input (`--strict`, a changed line without `--force`), key or checkpoint.
    case usageOrInput = 2
    /// Stopped early: the key (401) or the server's certificate was refused, or the budget cap was reached. Resumable.
    case stoppedEarly = 3
    /// Interrupted (SIGINT/SIGTERM), drained (`chatbatch control … drain`) or an output or checkpoint write failed.
    /// Resumable: run the same command again.
    case interrupted = 4
    /// Another run holds the checkpoint (an overlapping cron job).
    case checkpointBusy = 5

    /// One line for `--help`, the README and the summary.
    public var meaning: String {
        switch self {
        case .allDone: return "all lines done"
        case .doneWithFailures:
            return
                "done; some lines failed or their model was refused: see the errors file (0 with --exit-zero-when-done)"
        case .usageOrInput:
            return
                "usage or input error: flags, job, input, changed lines, another endpoint's answers, no key, an output or checkpoint that is not chatbatch's"
        case .stoppedEarly:
            return
                "stopped early, resumable: key or certificate refused, endpoint unreachable or URL wrong, first answers all failed alike, --max-cost or --max-wait"
        case .interrupted:
            return
                "interrupted (SIGINT/SIGTERM/SIGHUP), drained (chatbatch control) or a write failed (disk full); resumable"
        case .checkpointBusy: return "another run holds the checkpoint"
        }
    }

    /// The exit codes as `--help` lists them: one per line, wrapped at `width` with continuation lines indented.
    public static func helpTable(width: Int = 80) -> String {
        allCases.map { exit in
            var lines: [String] = []
            var line = "  \(exit.rawValue)  "
            for word in exit.meaning.split(separator: " ") {
                if line.count + word.count + 1 > width && line.count > 5 {
                    lines.append(line)
                    line = "     "
                }
                line += (line.hasSuffix(" ") ? "" : " ") + word
            }
            lines.append(line)
            return lines.joined(separator: "\n")
        }.joined(separator: "\n")
    }
}

/// Every error chatbatch reports: a stable code, a message a user can act on, and the exit code it means.
///
/// Messages name the file (and line) at fault and say what to do; codes are stable and never matched as text.
public struct ChatBatchError: Error, Sendable, CustomStringConvertible {
    /// What went wrong, as a stable identifier (the raw value appears in logs and JSON).
    public enum Code: String, Sendable, CaseIterable {
        // The job: flags, job file, input, key.
        case missingInput = "missing_input"
        case unreadableInput = "unreadable_input"
        case inputIsDirectory = "input_is_directory"
        case missingJob = "missing_job"
        case badJob = "bad_job"
        case badTemplate = "bad_template"
        case badConcurrency = "bad_concurrency"
        case badMaxAttempts = "bad_max_attempts"
        case badTimeout = "bad_timeout"
        case badRate = "bad_rate"
        case badMaxCost = "bad_max_cost"
        case badShard = "bad_shard"
        case missingBaseURL = "missing_base_url"
        case missingProjectID = "missing_project_id"
        case badProjectID = "bad_project_id"
        case missingKey = "missing_key"
        case unreadableKeyFile = "unreadable_key_file"
        case emptyKeyFile = "empty_key_file"
        case unwritableLog = "unwritable_log"
        case badHeader = "bad_header"
        case badChoice = "bad_choice"
        case notJSONL = "not_jsonl"
        case unwritableSummary = "unwritable_summary"
        case unwritableMetrics = "unwritable_metrics"
        case plainHTTP = "plain_http"
        case outputClash = "output_clash"
        case notOurFile = "not_our_file"
        case otherInput = "other_input"
        case badURL = "bad_url"
        case badKey = "bad_key"
        // Steering a running job.
        case badControl = "bad_control"
        case notRunning = "not_running"
        case unknownProvider = "unknown_provider"
        // Merging shards.
        case badOutput = "bad_output"
        case badSummary = "bad_summary"
        case duplicateAcrossShards = "duplicate_across_shards"
        case noOutputPath = "no_output_path"
        // The checkpoint.
        case checkpointBusy = "busy"
        case missingCheckpoint = "missing"
        case notAFile = "not_a_file"
        case unreadableCheckpoint = "unreadable"
        case notACheckpoint = "not_a_checkpoint"
        case damaged = "damaged"
        case foreign = "foreign"
        case newerSchema = "newer_schema"
        case unknownSchema = "unknown_schema"
        case openFailed = "open_failed"
        case sqliteError = "sqlite_error"
        // The response cache.
        /// A store address that cannot be read, or a database that is not one chatbatch can use.
        case badStore = "bad_store"
        /// The store's server refused the login (a wrong or missing password, an unknown user).
        case storeRefused = "store_refused"
        /// The store's server cannot be reached (down, restarting, the network): resumable.
        case storeUnreachable = "store_unreachable"
        /// The store's server answered a statement with an error.
        case storeError = "store_error"
        case badCache = "bad_cache"
        case cacheBusy = "cache_busy"
        case badDuration = "bad_duration"
        case badCACert = "bad_ca_cert"
        // Files being written.
        case unwritable = "unwritable"
        case writeFailed = "write_failed"
        case renameFailed = "rename_failed"

        /// The exit code a command ends with when this stops it.
        public var exit: RunExit {
            switch self {
            case .checkpointBusy: return .checkpointBusy
            case .unwritable, .writeFailed, .renameFailed: return .interrupted
            case .storeUnreachable: return .stoppedEarly
            default: return .usageOrInput
            }
        }
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }

    /// What replaces a secret (a key, a password) in anything shown or kept; holds no quote or backslash, so JSON
    /// around it stays valid.
    public static let redacted = "[redacted]"
}
