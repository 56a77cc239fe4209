/// Where the input feed reads its lines from: the input file (`LineReader`), or a job's store, whose lines any
/// number of workers claim (`StoreLineSource`). The feed builds, checks and deduplicates lines the same way
/// whichever it reads.
protocol LineSource: AnyObject {
    /// The next line, or nil when there is none (the end of the file; nothing left to claim).
    func next() throws(ChatBatchError) -> RawLine?
    /// False when `next()` would wait for a line rather than read one: the feed then hands over what it has first.
    func hasLineNow() throws(ChatBatchError) -> Bool
    /// A request for the line was on the wire when its last holder lost it: sending it again may bill it twice.
    func resentAfterCrash(line: Int) -> Bool
    /// The feed is about to read up to `lines` lines: a source that claims its lines claims no more than that.
    func expect(_ lines: Int)
    /// An earlier line with the same custom_id that the feed has not read (another worker's): `line` is a duplicate.
    func earlierLine(sameIDAs line: Int) -> Int?
}

extension LineReader: LineSource {
    func hasLineNow() -> Bool { true }
    func expect(_ lines: Int) {}
    /// A file's feed reads every line itself, and knows its earlier custom_ids.
    func earlierLine(sameIDAs line: Int) -> Int? { nil }
    /// A file's line knows nothing of earlier sends (the checkpoint does).
    func resentAfterCrash(line: Int) -> Bool { false }
}
