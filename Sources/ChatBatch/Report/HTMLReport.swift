import ChatBatchCore
import Foundation

/// `chatbatch report --html`: one self-contained page (inline SVG and CSS, nothing fetched, no script) about a
/// job's runs (a checkpoint's, or a store's workers), finished or still running: answers over time with the
/// in-flight limit, 429s and run starts; latency (and time to first token); answers by status over time; cost and
/// tokens against the budget; failures with examples; a row per model and per provider; each run's settings and exit.
public enum HTMLReport {
    /// What every report page holds, and what marks a file as one (a report is only ever replaced by a report).
    static let title = "<title>chatbatch report</title>"

    /// Renders the report of `checkpoint` into `path`, replacing it only if it is an earlier report.
    public static func write(checkpoint: String, to path: String) throws {
        try write(try CheckpointStore(path: checkpoint, create: false, lock: false), to: path)
    }

    /// Renders the report of job `name` (nil: the store's only job) in the PostgreSQL store at `address` into `path`:
    /// every worker's requests and lines on one page, each worker a run.
    public static func write(store address: String, job name: String?, to path: String) throws {
        try write(try PostgresJobHistory(store: address, job: name), to: path)
    }

    static func write(_ history: any JobHistory, to path: String) throws {
        if let existing = FileHandle(forReadingAtPath: path) {
            let head = String(decoding: existing.readData(ofLength: 512), as: UTF8.self)
            try? existing.close()
            guard head.contains(title) else {
                throw ChatBatchError(
                    .notOurFile,
                    "\(path) exists and is not a chatbatch report: choose another --html file (it was left as it is)")
            }
        }
        let page = try render(history)
        let folder = (path as NSString).deletingLastPathComponent
        makeFolders(folder, mode: 0o755)  // a report page is made to be shared
        try OutputFiles.replace(path, with: Array(page.utf8), mode: 0o644)
    }

    public static func render(checkpoint: String) throws -> String {
        try render(try CheckpointStore(path: checkpoint, create: false, lock: false))
    }

    static func render(_ store: any JobHistory) throws -> String {
        defer { store.release() }
        let runs = try store.runs()
        let attempts = try store.attemptEnds().map { (t: $0.t, status: $0.status, latency: $0.latencyMs) }
        let answered = try store.answeredLines()
        // The limit over every provider: each provider's latest window, summed at each sample.
        var samples: [(Double, Double)] = []
        var windows: [Int: Double] = [:]
        for sample in try store.windowSamples() {
            windows[sample.endpoint] = sample.window
            samples.append((sample.t, windows.values.reduce(0, +)))
        }
        let starts = runs.map(\.startedAt)
        let ends = runs.compactMap(\.endedAt)
        let t0 = (starts + attempts.prefix(1).map(\.t)).min() ?? Date().timeIntervalSince1970
        let t1 = max(
            t0 + 1, ([attempts.last?.t, answered.last?.t, samples.last?.0].compactMap { $0 } + ends).max() ?? t0 + 1)
        let span = t1 - t0
        let clock: (Double) -> String = { v in
            if span < 120 { return String(format: span < 10 ? "%.1f s" : "%.0f s", v) }
            let s = Int(v.rounded())
            return span >= 3600
                ? String(format: "%d:%02d:%02d", s / 3600, s % 3600 / 60, s % 60)
                : String(format: "%d:%02d", s / 60, s % 60)
        }
        var sections: [String] = []

        // 1. Answers over time, the in-flight limit, 429s and run starts on one time axis.
        var progress = SVGChart(title: "Prompts answered over time, with the in-flight limit and 429s")
        let done = answered.enumerated().map { ($0.element.t - t0, Double($0.offset + 1)) }
        // headroom: the limit's top is not the frame
        let windowMax = SVGChart.nice(max(1, (samples.map(\.1).max() ?? 1) * 1.1))
        let doneMax = SVGChart.nice(Double(max(1, answered.count)))
        progress.axes(
            xFrom: 0, to: span, xLabel: "time since the first run started", xFormat: clock, leftMax: doneMax,
            leftLabel: "answered", rightMax: windowMax, rightLabel: "in-flight limit")
        progress.line(done, xFrom: 0, to: span, yMax: doneMax, cls: "s-done")
        progress.line(
            samples.map { ($0.0 - t0, $0.1 * doneMax / windowMax) }, xFrom: 0, to: span, yMax: doneMax, cls: "s-limit",
            step: true)
        progress.marks(attempts.filter { $0.status == 429 }.map { $0.t - t0 }, xFrom: 0, to: span, cls: "s-429")
        progress.marks(
            starts.map { $0 - t0 }, xFrom: 0, to: span, cls: "s-run", full: true,
            labels: runs.map { "run \($0.id)" })
        // Controls the runs applied (chatbatch control), each a marker with what it was.
        let controls = try store.controls(limit: 200).filter {
            $0["applied_at"]?.doubleValue != nil && $0["outcome"]?.stringValue?.hasPrefix("applied") == true
        }
        progress.marks(
            controls.map { ($0["applied_at"]?.doubleValue ?? t0) - t0 }, xFrom: 0, to: span, cls: "s-control",
            full: true,
            labels: controls.map { $0["action"]?.stringValue ?? "" })
        sections.append(
            progress.svg(
                legend: [
                    ("s-done", "answered (cumulative)"), ("s-limit", "in-flight limit"), ("s-429", "429"),
                    ("s-run", "a run starts")
                ] + (controls.isEmpty ? [] : [("s-control", "a control (chatbatch control)")])))

        // 2. Latency, with its percentiles; time to first token for streamed lines.
        let latencies = attempts.filter { (200..<300).contains($0.status ?? 0) }.map(\.latency).sorted()
        sections.append(histogram("Latency of the 2xx answers (ms)", latencies, cls: "s-done"))
        let ttft = try store.firstTokenTimes()
        if !ttft.isEmpty {
            sections.append(histogram("Time to first token of streamed answers (ms)", ttft, cls: "s-limit"))
        }

        // 3. Answers by status over time.
        let slices = 48
        var byStatus = [[(Double, String)]](repeating: [], count: slices)
        var counts = [[Double]](repeating: [0, 0, 0, 0, 0], count: slices)
        for a in attempts {
            let i = min(slices - 1, max(0, Int((a.t - t0) / span * Double(slices))))
            let k: Int
            switch a.status {
            case .some(200..<300): k = 0
            case .some(429): k = 1
            case .some(500..<600): k = 2
            case .some: k = 3
            case nil: k = 4
            }
            counts[i][k] += 1
        }
        let classes = ["s-2xx", "s-429f", "s-5xx", "s-4xx", "s-none"]
        for i in 0..<slices { byStatus[i] = zip(counts[i], classes).map { ($0, $1) } }
        var status = SVGChart(title: "Answers by status over time")
        let peak = SVGChart.nice(max(1, counts.map { $0.reduce(0, +) }.max() ?? 1))
        status.axes(
            xFrom: 0, to: span, xLabel: "time since the first run started", xFormat: clock, leftMax: peak,
            leftLabel: "answers per slice")
        status.stacks(byStatus, yMax: peak)
        sections.append(
            status.svg(legend: [
                ("s-2xx", "2xx"), ("s-429f", "429"), ("s-5xx", "5xx"), ("s-4xx", "other 4xx"),
                ("s-none", "no answer (reset, timeout)")
            ]))

        // 4. Cost and tokens against the budget.
        let settings = (try? store.runSettings(runs.last?.id ?? 0)).flatMap { $0 }
        let cap = settings?["max_cost"]?.doubleValue
        let priced = try store.pricesKnown()
        var spent = SVGChart(
            title: (priced
                ? "Cost and tokens over time" : "Tokens over time (price unknown: the provider publishes none)")
                + (cap.map { String(format: " (max_cost $%.2f)", $0) } ?? ""))
        var cost = 0.0, tokens = 0.0
        let costs = answered.map { a -> (Double, Double, Double) in
            cost += a.cost
            tokens += Double(a.tokens)
            return (a.t - t0, cost, tokens)
        }
        let costMax = SVGChart.nice(max(cap ?? 0, cost, 1e-9) * 1.05)
        let tokensMax = SVGChart.nice(max(1, tokens))
        spent.axes(
            xFrom: 0, to: span, xLabel: "time since the first run started", xFormat: clock, leftMax: costMax,
            leftLabel: "USD",
            rightMax: tokensMax, rightLabel: "tokens")
        spent.line(costs.map { ($0.0, $0.1) }, xFrom: 0, to: span, yMax: costMax, cls: "s-cost")
        spent.line(costs.map { ($0.0, $0.2 / tokensMax * costMax) }, xFrom: 0, to: span, yMax: costMax, cls: "s-tokens")
        if let cap { spent.level(cap, yMax: costMax, label: String(format: "max_cost $%.2f", cap), cls: "s-cap") }
        sections.append(
            spent.svg(
                legend: [("s-cost", "cost (cumulative)"), ("s-tokens", "tokens (cumulative)")]
                    + (cap != nil ? [("s-cap", "max_cost")] : [])))

        let input = (settings?["input"]?.stringValue).map { ($0 as NSString).lastPathComponent } ?? "line"
        sections.append(try tables(store, input: input))
        sections.append(runsTable(runs, store))
        return try page(store, runs: runs.count, sections: sections)
    }

    /// A latency histogram (40 bins up to a little past p99) with p50, p90 and p99 marked.
    static func histogram(_ title: String, _ sorted: [Double], cls: String) -> String {
        var chart = SVGChart(title: title)
        guard let last = sorted.last else { return chart.svg() }
        func at(_ p: Double) -> Double { sorted.nearestRank(p) ?? last }
        let hi = SVGChart.nice(max(1, min(last, at(0.99) * 1.25)))
        var bins = [Double](repeating: 0, count: 40)
        for v in sorted { bins[min(39, Int(v / hi * 40))] += 1 }
        let peak = SVGChart.nice(max(1, bins.max() ?? 1))
        chart.axes(
            xFrom: 0, to: hi, xLabel: "ms (the last bar holds everything above)", xFormat: { SVGChart.number($0) },
            leftMax: peak, leftLabel: "answers")
        chart.stacks(bins.map { [($0, cls)] }, yMax: peak)
        for (row, (p, name)) in [(0.5, "p50"), (0.9, "p90"), (0.99, "p99")].enumerated() {
            chart.marker(
                min(hi, at(p)), xFrom: 0, to: hi, label: "\(name) \(SVGChart.number(at(p)))", cls: "s-pct", row: row)
        }
        return chart.svg()
    }

    /// Failures by code with a few example lines, and a row per model and per provider.
    static func tables(_ store: any JobHistory, input: String) throws -> String {
        var html = "<h2>Failures</h2>"
        let codes = try store.failuresByCode()
        if codes.isEmpty {
            html += "<p>No line failed.</p>"
        } else {
            html += "<table><tr><th>code</th><th>lines</th><th>examples (custom_id, file:line, message)</th></tr>"
            for (code, lines) in codes {
                let examples = try store.failedExamples(code: code, limit: 3).map {
                    "<div><code>\(SVGChart.escape($0.customID))</code> \(SVGChart.escape(input)):\($0.line): "
                        + "\(SVGChart.escape(String($0.message.prefix(200))))</div>"
                }
                html +=
                    "<tr><td><code>\(SVGChart.escape(code))</code></td><td>\(lines)</td><td>\(examples.joined())</td></tr>"
            }
            html += "</table>"
        }
        html +=
            "<h2>By model</h2><table><tr><th>model</th><th>lines</th><th>answered</th><th>failed</th><th>tokens</th><th>cost</th><th>latency (mean)</th></tr>"
        for m in try store.byModel() {
            html +=
                "<tr><td>\(SVGChart.escape(m.name))</td><td>\(m.lines)</td><td>\(m.done)</td><td>\(m.failed)</td>"
                + "<td>\(m.tokens)</td><td>\(String(format: "$%.6f", m.cost))</td>"
                + "<td>\(m.meanLatencyMs.map { String(format: "%.0f ms", $0) } ?? "-")</td></tr>"
        }
        html += "</table>"
        let providers = try CheckpointReport.providerRows(store)
        if !providers.isEmpty {
            html +=
                "<h2>By provider</h2><table><tr><th>provider</th><th>requests</th><th>answered</th><th>failed</th><th>429s</th><th>tokens</th><th>cost</th><th>p50</th><th>p99</th></tr>"
            for p in providers {
                func ms(_ v: JSON?) -> String { v?.doubleValue.map { String(format: "%.0f ms", $0) } ?? "-" }
                html +=
                    "<tr><td>\(SVGChart.escape(p["name"]?.stringValue ?? ""))</td><td>\(p["requests"]?.intValue ?? 0)</td><td>\(p["done"]?.intValue ?? 0)</td>"
                    + "<td>\(p["failed"]?.intValue ?? 0)</td><td>\(p["rate_limited"]?.intValue ?? 0)</td><td>\(p["tokens"]?.intValue ?? 0)</td>"
                    + "<td>\(String(format: "$%.6f", p["cost_usd"]?.doubleValue ?? 0))</td><td>\(ms(p["latency_ms_p50"]))</td><td>\(ms(p["latency_ms_p99"]))</td></tr>"
            }
            html += "</table>"
        }
        return html
    }

    /// Each run: when, how it ended, and the settings it ran with.
    static func runsTable(_ runs: [HistoryRun], _ store: any JobHistory) -> String {
        var html =
            "<h2>Runs</h2><table><tr><th>run</th><th>started</th><th>ended</th><th>exit</th><th>what happened</th><th>settings</th></tr>"
        for run in runs {
            let summary = run.summary.flatMap { try? JSON.parse($0) }
            let settings = (try? store.runSettings(run.id)).flatMap { $0 }.map(settingsText) ?? ""
            let place = run.place.map { "<br>\(SVGChart.escape($0))" } ?? ""
            html +=
                "<tr><td>\(run.id)\(place)</td><td>\(CheckpointReport.isoDate(run.startedAt).stringValue ?? "")</td>"
                + "<td>\(CheckpointReport.isoDate(run.endedAt).stringValue ?? "not ended")</td>"
                + "<td>\(run.exitCode.map(String.init) ?? "-")</td>"
                + "<td>\(SVGChart.escape(summary?["headline"]?.stringValue ?? summary?["exit"]?.stringValue ?? ""))</td>"
                + "<td>\(settings)</td></tr>"
        }
        return html + "</table>"
    }

    /// A run's settings as lines of `key value` (providers as `name url (concurrency N)`), HTML-escaped.
    static func settingsText(_ settings: JSON) -> String {
        guard let fields = settings.objectValue else { return "" }
        return fields.keys.sorted().compactMap { key -> String? in
            guard let value = fields[key], !value.isNull else { return nil }
            let text: String
            if key == "providers", let list = value.arrayValue {
                text = list.map {
                    "\($0["name"]?.stringValue ?? "") \($0["url"]?.stringValue ?? "") (concurrency \($0["concurrency"]?.intValue ?? 0))"
                }.joined(separator: ", ")
            } else {
                text = value.stringValue ?? value.serialized()
            }
            return "<code>\(SVGChart.escape(key))</code> \(SVGChart.escape(text))"
        }.joined(separator: "<br>")
    }

    static func page(_ store: any JobHistory, runs: Int, sections: [String]) throws -> String {
        let lines = try store.lineCounts()
        let totals = try store.totals()
        let facts = [
            ("answered", "\(lines.done)"), ("failed", "\(lines.failed)"), ("pending", "\(lines.pending)"),
            ("in flight", "\(lines.inflight)"), ("tokens", "\(totals.prompt + totals.completion)"),
            ("spent", String(format: "$%.6f", totals.cost)), ("runs", "\(runs)")
        ].map {
            "<div class=\"fact\"><div class=\"v\">\(SVGChart.escape($0.1))</div><div class=\"k\">\($0.0)</div></div>"
        }.joined()
        return """
            <!DOCTYPE html>
            <html lang="en"><head><meta charset="utf-8">\(title)
            <style>
            body { font: 14px/1.45 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #1d232b; margin: 24px auto; max-width: 960px; padding: 0 16px; }
            h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px; }
            .sub { color: #5b6672; margin-bottom: 16px; word-break: break-all; }
            .facts { display: flex; flex-wrap: wrap; gap: 10px; margin: 12px 0 8px; }
            .fact { border: 1px solid #d9dee4; border-radius: 6px; padding: 8px 12px; min-width: 90px; }
            .fact .v { font-size: 18px; font-weight: 600; } .fact .k { color: #5b6672; font-size: 12px; }
            figure.chart { margin: 18px 0; page-break-inside: avoid; } figcaption { font-weight: 600; margin-bottom: 4px; }
            svg text { font: 11px Helvetica, Arial, sans-serif; fill: #3b4550; } svg .label { fill: #5b6672; }
            .frame { fill: #fbfcfd; stroke: #c9d0d8; } .grid { stroke: #e6eaee; }
            .s-done, .s-limit, .s-cost, .s-tokens { fill: none; stroke-width: 2; }
            .s-done { stroke: #2f6fde; } .s-limit { stroke: #e08a1e; stroke-dasharray: 4 2; } .s-cost { stroke: #1c9a5a; } .s-tokens { stroke: #8a56d6; }
            rect.s-done { fill: #2f6fde; stroke: none; } rect.s-limit { fill: #e08a1e; stroke: none; }
            .s-429 { stroke: #d6322f; stroke-width: 2; } .s-run { stroke: #5b6672; stroke-dasharray: 3 3; }
            .s-control { stroke: #c77c02; stroke-dasharray: 6 3; } .swatch.s-control { background: #c77c02; }
            .s-pct { stroke: #d6322f; stroke-dasharray: 2 2; } .s-cap { stroke: #d6322f; stroke-width: 1.5; stroke-dasharray: 6 3; }
            .s-2xx { fill: #1c9a5a; } .s-429f { fill: #e08a1e; } .s-5xx { fill: #d6322f; } .s-4xx { fill: #8a56d6; } .s-none { fill: #39424c; }
            .legend { font-size: 12px; color: #3b4550; } .key { margin-right: 14px; white-space: nowrap; }
            .swatch { display: inline-block; width: 12px; height: 12px; margin-right: 4px; vertical-align: -2px; border-radius: 2px; }
            .swatch.s-done { background: #2f6fde; } .swatch.s-limit { background: #e08a1e; } .swatch.s-429, .swatch.s-pct, .swatch.s-cap { background: #d6322f; }
            .swatch.s-run { background: #5b6672; } .swatch.s-cost { background: #1c9a5a; } .swatch.s-tokens { background: #8a56d6; }
            .swatch.s-2xx { background: #1c9a5a; } .swatch.s-429f { background: #e08a1e; } .swatch.s-5xx { background: #d6322f; }
            .swatch.s-4xx { background: #8a56d6; } .swatch.s-none { background: #39424c; }
            table { border-collapse: collapse; width: 100%; font-size: 13px; } th, td { text-align: left; border-bottom: 1px solid #e6eaee; padding: 4px 6px; vertical-align: top; }
            code { font: 12px Menlo, Consolas, monospace; word-break: break-all; }
            @media print { body { margin: 0; } * { -webkit-print-color-adjust: exact; print-color-adjust: exact; } tr { break-inside: avoid; } }
            </style></head><body>
            <h1>chatbatch report</h1><div class="sub">\(SVGChart.escape(store.title))</div>
            <div class="facts">\(facts)</div>
            \(sections.joined(separator: "\n"))
            </body></html>
            """
    }
}
