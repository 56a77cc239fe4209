/// Where the input feed reads its lines from: the input file (`LineReader`), or a job's store, whose lines any
/// number of workers claim (`StoreLineSource`). The feed builds, checks and deduplicates lines the same way
/// whichever it reads.
protocol LineSource: AnyObject {
    /// The next line, or nil when there is none (the end of the file; nothing left to claim).
    func next() throws(ChatBatchError) -> RawLine?
}

extension LineReader: LineSource {}
