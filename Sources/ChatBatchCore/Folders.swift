#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Makes `path` and any missing folders above it with `mode` (0700 unless others must read what goes in, as
/// node_exporter does the metrics file); the mode is asked for explicitly, so a umask of 000 never widens it.
/// Folders that exist are left as they are. Returns false when one could not be made.
@discardableResult
public func makeFolders(_ path: String, mode: mode_t = 0o700) -> Bool {
    guard !path.isEmpty else { return true }
    var st = stat()
    if stat(path, &st) == 0 { return (st.st_mode & S_IFMT) == S_IFDIR }
    var parent = path
    while parent.hasSuffix("/") && parent.count > 1 { parent.removeLast() }
    if let slash = parent.lastIndex(of: "/") {
        let above = String(parent[..<slash])
        if !above.isEmpty && !makeFolders(above, mode: mode) { return false }
    }
    if mkdir(path, mode) != 0 && errno != EEXIST { return false }
    return chmod(path, mode) == 0 || errno == EPERM
}
