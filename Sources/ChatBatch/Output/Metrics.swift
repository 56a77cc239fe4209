import ChatBatchCore
import Foundation

/// What the metrics file says about a run at one moment: taken from the run's machine, written by the executor.
public struct MetricsSnapshot: Sendable {
    /// One provider's figures.
    public struct Provider: Sendable {
        public var name: String
        public var statusCounts: [Int: Int] = [:]
        public var noAnswer = 0
        public var promptTokens = 0
        public var completionTokens = 0
        public var cost = 0.0
        /// Its prices are known: without them the cost series is left out rather than written as 0.
        public var priceKnown = true
        public var inflight = 0
        public var limit = 0
        public var pauses = 0
        public var latency = LatencyHistogram()
    }

    /// The label naming the job. Not `job`: Prometheus sets `job` itself on every scrape (node_exporter's), and
    /// would rename ours to `exported_job`.
    public static let jobLabel = "chatbatch_job"

    public var job: String
    public var prompts: [(state: String, count: Int)] = []
    /// Input lines read so far (all of them once the input has been read through).
    public var linesRead = 0
    public var providers: [Provider] = []
    public var possiblyBilledTwice = 0
    public var cacheHits = 0
    /// Paused by `chatbatch control`, and the controls applied so far.
    public var paused = false
    public var controlsApplied = 0
    public var startTime = 0.0
    /// Set once the run has ended.
    public var endTime: Double? = nil
    public var exitCode: Int32? = nil
    /// When a run on this file last ended with exit 0: this run's end, or carried from the file it replaces.
    public var lastSuccessTime: Double? = nil
    /// When the file was written: a run that still says it is running but stopped writing was killed.
    public var writtenTime = 0.0

    /// The Prometheus text exposition format (what node_exporter's textfile collector reads).
    public var text: String {
        var out: [String] = []
        func sample(_ name: String, _ labels: [(String, String)], _ value: String) {
            out.append("\(name){\(labels.map { "\($0.0)=\"\(Self.escape($0.1))\"" }.joined(separator: ","))} \(value)")
        }
        func family(
            _ name: String, _ type: String, _ help: String, _ samples: [(labels: [(String, String)], value: String)]
        ) {
            out.append("# HELP \(name) \(help)")
            out.append("# TYPE \(name) \(type)")
            for s in samples { sample(name, s.labels, s.value) }
        }
        let j = (Self.jobLabel, job)
        func n(_ v: Double) -> String {
            v.isFinite ? (v == v.rounded() && abs(v) < 1e15 ? String(Int(v)) : String(format: "%.10g", v)) : "NaN"
        }
        family(
            "chatbatch_build_info", "gauge", "The chatbatch version that wrote this file.",
            [([j, ("version", ChatBatchVersion.current)], "1")])
        family(
            "chatbatch_prompts", "gauge", "Prompts of the run by state.",
            prompts.map { ([j, ("state", $0.state)], String($0.count)) })
        family(
            "chatbatch_input_lines_read", "gauge", "Input lines read so far (the whole file once read through).",
            [([j], String(linesRead))])
        family(
            "chatbatch_requests_total", "counter", "Requests answered, by provider and HTTP status (0: no answer).",
            providers.flatMap { p in
                p.statusCounts.keys.sorted().map {
                    ([j, ("provider", p.name), ("code", String($0))], String(p.statusCounts[$0]!))
                }
                    + [([j, ("provider", p.name), ("code", "0")], String(p.noAnswer))]
            })
        family(
            "chatbatch_tokens_total", "counter", "Tokens billed, by provider and kind.",
            providers.flatMap { p in
                [
                    ([j, ("provider", p.name), ("kind", "prompt")], String(p.promptTokens)),
                    ([j, ("provider", p.name), ("kind", "completion")], String(p.completionTokens))
                ]
            })
        let priced = providers.filter(\.priceKnown)
        if !priced.isEmpty {
            family(
                "chatbatch_cost_usd_total", "counter", "US dollars spent at the provider's prices.",
                priced.map { ([j, ("provider", $0.name)], n($0.cost)) })
        }
        family(
            "chatbatch_requests_in_flight", "gauge", "Requests in flight now.",
            providers.map { ([j, ("provider", $0.name)], String($0.inflight)) })
        family(
            "chatbatch_inflight_limit", "gauge", "The current in-flight limit (adaptive).",
            providers.map { ([j, ("provider", $0.name)], String($0.limit)) })
        family(
            "chatbatch_rate_limit_pauses_total", "counter", "429 answers (each pauses the provider's key).",
            providers.map { ([j, ("provider", $0.name)], String($0.pauses)) })
        family(
            "chatbatch_possibly_billed_twice_total", "counter",
            "Sends that may have been billed twice (a reset, a cut stream, a crash resend).",
            [([j], String(possiblyBilledTwice))])
        family(
            "chatbatch_cache_hits_total", "counter", "Lines answered from the response cache.",
            [([j], String(cacheHits))])
        family(
            "chatbatch_paused", "gauge", "1 while `chatbatch control … pause` holds the run (nothing new is sent).",
            [([j], paused ? "1" : "0")])
        family(
            "chatbatch_controls_applied_total", "counter", "Controls (`chatbatch control`) the run applied.",
            [([j], String(controlsApplied))])
        out.append("# HELP chatbatch_request_duration_seconds Time from sending a request to its whole answer.")
        out.append("# TYPE chatbatch_request_duration_seconds histogram")
        for p in providers {
            let labels = [j, ("provider", p.name)]
            var cumulative = 0
            for (i, bound) in (LatencyHistogram.bounds.map { n($0) } + ["+Inf"]).enumerated() {
                cumulative += p.latency.counts[i]
                sample("chatbatch_request_duration_seconds_bucket", labels + [("le", bound)], String(cumulative))
            }
            sample("chatbatch_request_duration_seconds_sum", labels, n(p.latency.sum))
            sample("chatbatch_request_duration_seconds_count", labels, String(p.latency.count))
        }
        family("chatbatch_run_start_time_seconds", "gauge", "When the run started (Unix time).", [([j], n(startTime))])
        if let endTime {
            family("chatbatch_run_end_time_seconds", "gauge", "When the run ended (Unix time).", [([j], n(endTime))])
        }
        family(
            "chatbatch_running", "gauge", "1 while the run goes on, 0 once it ended.",
            [([j], endTime == nil ? "1" : "0")])
        if let exitCode {
            family("chatbatch_last_exit_code", "gauge", "The exit code the run ended with.", [([j], String(exitCode))])
        }
        if let lastSuccessTime {
            family(
                "chatbatch_last_success_time_seconds", "gauge",
                "When a run last ended with exit 0 (Unix time; kept across runs).",
                [([j], n(lastSuccessTime))])
        }
        family(
            "chatbatch_metrics_written_time_seconds", "gauge",
            "When this file was written (every interval while a run goes).",
            [([j], n(writtenTime))])
        return out.joined(separator: "\n") + "\n"
    }

    /// The last success a metrics file at `path` recorded (nil when there is none, or no file).
    public static func lastSuccessTime(inFileAt path: String) -> Double? {
        guard let data = FileManager.default.contents(atPath: path), data.count < 1 << 20 else { return nil }
        let prefix = "chatbatch_last_success_time_seconds{"
        for line in String(decoding: data, as: UTF8.self).split(separator: "\n") where line.hasPrefix(prefix) {
            if let value = line.split(separator: " ").last.flatMap({ Double($0) }), value.isFinite { return value }
        }
        return nil
    }

    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
            .replacingOccurrences(of: "\n", with: "\\n")
    }
}
