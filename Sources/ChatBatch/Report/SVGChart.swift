import Foundation

/// Small inline SVG charts for the HTML report: no script, no font or file fetched, printable.
struct SVGChart {
    let width = 900.0
    let height = 240.0
    let left = 64.0, right = 64.0, top = 16.0, bottom = 36.0
    var plotWidth: Double { width - left - right }
    var plotHeight: Double { height - top - bottom }
    private(set) var parts: [String] = []
    let title: String

    init(title: String) { self.title = title }

    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(
            of: ">", with: "&gt;"
        )
        .replacingOccurrences(of: "\"", with: "&quot;")
    }

    /// The smallest of 1, 1.2, 1.6, 2, 2.4, 3, 4, 5, 6, 8 × 10^k at or above `v`: an axis maximum whose quarters read
    /// well.
    static func nice(_ v: Double) -> Double {
        guard v > 0, v.isFinite else { return 1 }
        let scale = pow(10, floor(log10(v)))
        let m = [1, 1.2, 1.6, 2, 2.4, 3, 4, 5, 6, 8, 10].first { $0 * scale >= v * (1 - 1e-9) } ?? 10
        return m * scale
    }

    /// A tick's value with the decimals the step between ticks needs (every tick of an axis alike); 10000 and up in k.
    static func tick(_ v: Double, step: Double) -> String {
        if v == 0 { return "0" }
        if abs(v) >= 10_000 { return number(v) }
        let decimals =
            (0...6).first { d in
                let scaled = step * pow(10, Double(d))
                return abs(scaled - scaled.rounded()) < 1e-6 * max(1, scaled)
            } ?? 6
        return String(format: "%.\(decimals)f", v)
    }

    static func number(_ v: Double) -> String {
        if v == 0 { return "0" }
        if abs(v) >= 1_000_000 { return String(format: "%.1fM", v / 1_000_000) }
        if abs(v) >= 10_000 { return String(format: "%.0fk", v / 1000) }
        if abs(v) >= 100 { return String(format: "%.0f", v) }
        if abs(v) >= 1 { return String(format: "%.1f", v) }
        if abs(v) >= 0.01 { return String(format: "%.2f", v) }
        return String(format: "%.2g", v)
    }

    func x(_ v: Double, _ lo: Double, _ hi: Double) -> Double {
        left + (hi > lo ? (v - lo) / (hi - lo) : 0) * plotWidth
    }
    func y(_ v: Double, _ hi: Double) -> Double { top + plotHeight - (hi > 0 ? v / hi : 0) * plotHeight }

    /// The frame, a time (or value) axis with `xLabel`, and left (and right) value axes.
    mutating func axes(
        xFrom lo: Double, to hi: Double, xLabel: String, xFormat: (Double) -> String, leftMax: Double,
        leftLabel: String,
        rightMax: Double? = nil, rightLabel: String? = nil
    ) {
        parts.append(#"<rect x="\#(left)" y="\#(top)" width="\#(plotWidth)" height="\#(plotHeight)" class="frame"/>"#)
        for i in 0...4 {
            let f = Double(i) / 4
            let yy = top + plotHeight * (1 - f)
            parts.append(#"<line x1="\#(left)" y1="\#(yy)" x2="\#(left + plotWidth)" y2="\#(yy)" class="grid"/>"#)
            parts.append(
                #"<text x="\#(left - 6)" y="\#(yy + 4)" class="tick" text-anchor="end">\#(Self.tick(leftMax * f, step: leftMax / 4))</text>"#
            )
            if let rightMax {
                parts.append(
                    #"<text x="\#(left + plotWidth + 6)" y="\#(yy + 4)" class="tick right">\#(Self.tick(rightMax * f, step: rightMax / 4))</text>"#
                )
            }
            let xx = left + plotWidth * f
            parts.append(
                #"<text x="\#(xx)" y="\#(top + plotHeight + 16)" class="tick" text-anchor="middle">\#(Self.escape(xFormat(lo + (hi - lo) * f)))</text>"#
            )
        }
        parts.append(
            #"<text x="\#(left + plotWidth / 2)" y="\#(height - 4)" class="label" text-anchor="middle">\#(Self.escape(xLabel))</text>"#
        )
        parts.append(
            #"<text x="14" y="\#(top + plotHeight / 2)" class="label" transform="rotate(-90 14 \#(top + plotHeight / 2))" text-anchor="middle">\#(Self.escape(leftLabel))</text>"#
        )
        if let rightLabel {
            parts.append(
                #"<text x="\#(width - 10)" y="\#(top + plotHeight / 2)" class="label right" transform="rotate(90 \#(width - 10) \#(top + plotHeight / 2))" text-anchor="middle">\#(Self.escape(rightLabel))</text>"#
            )
        }
    }

    /// A polyline of (x, y) points in data units; `step` draws it as steps.
    mutating func line(
        _ points: [(Double, Double)], xFrom lo: Double, to hi: Double, yMax: Double, cls: String, step: Bool = false
    ) {
        guard !points.isEmpty else { return }
        var coords: [String] = []
        var last: (Double, Double)? = nil
        for p in points {
            if step, let l = last { coords.append("\(x(p.0, lo, hi)),\(y(l.1, yMax))") }
            coords.append("\(x(p.0, lo, hi)),\(y(p.1, yMax))")
            last = p
        }
        parts.append(#"<polyline points="\#(coords.joined(separator: " "))" class="\#(cls)"/>"#)
    }

    /// Short vertical marks at the bottom of the plot (429s), or full-height dashed lines (run starts) with a label.
    mutating func marks(
        _ xs: [Double], xFrom lo: Double, to hi: Double, cls: String, full: Bool = false, labels: [String] = []
    ) {
        for (i, v) in xs.enumerated() {
            let xx = x(v, lo, hi)
            let y1 = full ? top : top + plotHeight - 10
            parts.append(#"<line x1="\#(xx)" y1="\#(y1)" x2="\#(xx)" y2="\#(top + plotHeight)" class="\#(cls)"/>"#)
            if i < labels.count {
                parts.append(#"<text x="\#(xx + 3)" y="\#(top + 11)" class="tick">\#(Self.escape(labels[i]))</text>"#)
            }
        }
    }

    /// Bars from `lo` to `hi` in `values.count` slices, each a stack of (value, class) from the bottom.
    mutating func stacks(_ values: [[(Double, String)]], yMax: Double) {
        let w = plotWidth / Double(max(1, values.count))
        for (i, stack) in values.enumerated() {
            var base = 0.0
            for (v, cls) in stack where v > 0 {
                let y0 = y(base + v, yMax), y1 = y(base, yMax)
                parts.append(
                    #"<rect x="\#(left + Double(i) * w + 0.5)" y="\#(y0)" width="\#(max(0.5, w - 1))" height="\#(max(0, y1 - y0))" class="\#(cls)"/>"#
                )
                base += v
            }
        }
    }

    /// A horizontal line across the plot at `value` (a cap), labelled.
    mutating func level(_ value: Double, yMax: Double, label: String, cls: String) {
        let yy = y(value, yMax)
        parts.append(#"<line x1="\#(left)" y1="\#(yy)" x2="\#(left + plotWidth)" y2="\#(yy)" class="\#(cls)"/>"#)
        parts.append(#"<text x="\#(left + 4)" y="\#(yy - 4)" class="tick">\#(Self.escape(label))</text>"#)
    }

    /// A vertical line at `value` on a value axis (a percentile), labelled.
    /// `row` sets the label's height (0, 1, 2 …), so that markers close together stay readable.
    mutating func marker(_ value: Double, xFrom lo: Double, to hi: Double, label: String, cls: String, row: Int = 0) {
        let xx = x(value, lo, hi)
        parts.append(#"<line x1="\#(xx)" y1="\#(top)" x2="\#(xx)" y2="\#(top + plotHeight)" class="\#(cls)"/>"#)
        parts.append(
            #"<text x="\#(xx + 3)" y="\#(top + 14 + 13 * Double(row))" class="tick">\#(Self.escape(label))</text>"#)
    }

    /// The finished figure, with its title and a legend of (class, text).
    func svg(legend: [(String, String)] = []) -> String {
        let keys = legend.map {
            #"<span class="key"><span class="swatch \#($0.0)"></span>\#(Self.escape($0.1))</span>"#
        }.joined()
        return """
            <figure class="chart"><figcaption>\(Self.escape(title))</figcaption>
            <svg viewBox="0 0 \(Int(width)) \(Int(height))" width="100%" role="img" aria-label="\(Self.escape(title))">\(parts.joined())</svg>
            <div class="legend">\(keys)</div></figure>
            """
    }
}
