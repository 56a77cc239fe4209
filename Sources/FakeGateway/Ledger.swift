import ChatBatchCore
import Foundation
import Synchronization

/// One request the fake gateway received, and what became of it.
public struct LedgerEntry: Sendable {
    public var sequence: Int
    /// Wall-clock seconds since 1970 when the request head arrived, and when the answer (or its end) left.
    public var receivedAt: Double
    public var respondedAt: Double
    public var method: String
    public var path: String
    /// `tera`, `tir`, `models` or `unknown`.
    public var route: String
    /// HTTP status sent; 0 when no answer was sent (reset, stall).
    public var status: Int
    /// `ok`, `error`, `reset`, `stall`, or `cancelled` (the client went away mid-answer).
    public var outcome: String
    /// The client's `X-Client-Request-Id` header (chatbatch sends the custom_id there).
    public var clientRequestID: String?
    /// The `X-Tera-Request-ID` the gateway sent (or would have sent).
    public var requestID: String
    /// A 200 was produced, or the request was read and then dropped: either way it would be paid for.
    public var billed: Bool
    public var promptTokens: Int
    public var completionTokens: Int
    public var stream: Bool

    public var totalTokens: Int { promptTokens + completionTokens }

    public var json: JSON {
        [
            "seq": .int(sequence), "received_at": .double(receivedAt), "responded_at": .double(respondedAt),
            "method": .string(method), "path": .string(path), "route": .string(route), "status": .int(status),
            "outcome": .string(outcome), "client_request_id": clientRequestID.map(JSON.string) ?? .null,
            "request_id": .string(requestID), "billed": .bool(billed),
            "usage": [
                "prompt_tokens": .int(promptTokens), "completion_tokens": .int(completionTokens),
                "total_tokens": .int(totalTokens)
            ],
            "stream": .bool(stream)
        ]
    }
}

/// Every request the gateway received, kept in memory and, when a path is set, appended as JSONL.
public final class Ledger: Sendable {
    private let entries = Mutex<(list: [LedgerEntry], count: Int)>(([], 0))
    /// Written only while `entries`' lock is held, so ledger lines never interleave.
    private let file: FileHandle?
    private let inMemory: Bool

    init(path: String?, inMemory: Bool) throws(FakeGatewayError) {
        self.inMemory = inMemory
        guard let path else {
            file = nil
            return
        }
        guard FileManager.default.createFile(atPath: path, contents: nil, attributes: [.posixPermissions: 0o600]),
            let handle = FileHandle(forWritingAtPath: path)
        else {
            throw FakeGatewayError(code: "ledger_unwritable", message: "cannot create ledger file \(path)")
        }
        file = handle
    }

    func record(_ make: (Int) -> LedgerEntry) {
        entries.withLock { state in
            state.count += 1
            let entry = make(state.count)
            if inMemory { state.list.append(entry) }
            if let file {
                var bytes = [UInt8]()
                entry.json.write(to: &bytes)
                bytes.append(0x0A)
                file.write(Data(bytes))
            }
        }
    }

    /// Forces the ledger file to disk (entries are written as they happen; this makes them durable).
    public func flush() {
        entries.withLock { _ in try? file?.synchronize() }
    }

    /// A copy of every entry so far, in the order the requests finished.
    public func snapshot() -> [LedgerEntry] { entries.withLock { $0.list } }

    /// Requests recorded so far (kept even when entries are not).
    public var count: Int { entries.withLock { $0.count } }

    /// Billed requests per client request id (the custom_id): the double-billing proof counts these.
    public func billedCounts() -> [String: Int] {
        var counts: [String: Int] = [:]
        for e in snapshot() where e.billed { counts[e.clientRequestID ?? "", default: 0] += 1 }
        return counts
    }
}
