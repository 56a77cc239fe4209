/// Text from outside (a server's message, an error code, a model name from the input) made safe to print on a
/// terminal or as one log line: control characters (C0 with line breaks and ESC, DEL, C1) and the bidirectional
/// overrides that reorder what is shown are written as visible `\u{…}` escapes, so nothing can clear a screen,
/// set a window title, forge a line or hide text.
extension String {
    public var terminalSafe: String {
        guard unicodeScalars.contains(where: Self.isUnsafe) else { return self }
        var out = String.UnicodeScalarView()
        for scalar in unicodeScalars {
            if Self.isUnsafe(scalar) {
                out.append(contentsOf: "\\u{\(String(scalar.value, radix: 16, uppercase: true))}".unicodeScalars)
            } else {
                out.append(scalar)
            }
        }
        return String(out)
    }

    static func isUnsafe(_ s: Unicode.Scalar) -> Bool {
        let v = s.value
        return v < 0x20 || v == 0x7F || (0x80...0x9F).contains(v) || (0x202A...0x202E).contains(v)
            || (0x2066...0x2069).contains(v)
            || v == 0x200E || v == 0x200F || v == 0x061C
    }
}
