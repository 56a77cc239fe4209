/// How many single-character edits turn one word into another (Levenshtein): for "did you mean …?" suggestions.
public enum EditDistance {
    public static func between(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        guard !a.isEmpty else { return b.count }
        var row = Array(0...b.count)
        for i in 1...a.count {
            var previous = row[0]
            row[0] = i
            for j in stride(from: 1, through: b.count, by: 1) {
                let old = row[j]
                row[j] = min(row[j] + 1, row[j - 1] + 1, previous + (a[i - 1] == b[j - 1] ? 0 : 1))
                previous = old
            }
        }
        return row[b.count]
    }

    /// The candidate nearest to `word`, if it is at most `within` edits away (the first in order on a tie).
    public static func nearest(to word: String, among candidates: [String], within: Int = 2) -> String? {
        var best: (name: String, distance: Int)? = nil
        for candidate in candidates {
            let d = between(candidate, word)
            if d <= within && d < (best?.distance ?? .max) { best = (candidate, d) }
        }
        return best?.name
    }
}
