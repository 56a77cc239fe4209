import ChatBatchCore
import NIOCore

extension GatewayHandler {
    /// Answers an admitted `/v1/embeddings` request after the gateway's latency, or with the fault its admission
    /// drew: a reset or a stall as for chat, an answer without usage, or any other corrupt answer cut short (not
    /// JSON).
    func answerEmbeddings(
        context: ChannelHandlerContext, admission: Admission, entry: LedgerEntry, key: String,
        requestID: String, keepAlive: Bool, body: JSON
    ) {
        var entry = entry
        switch admission {
        case .fail:
            return
        case .reset, .stall:
            entry.outcome = admission == .reset ? "reset" : "stall"
            open = Open(key: key, entry: entry, scheduled: nil)
            if admission == .reset { context.close(promise: nil) }
        case .answer(let corrupt):
            entry.outcome = "ok"
            entry.status = 200
            open = Open(key: key, entry: entry, scheduled: nil)
            let respond = { [self] in
                finishOpen()
                if corrupt == .noUsage {
                    var bare = body
                    bare["usage"] = nil
                    sendJSON(context: context, status: 200, body: bare, requestID: requestID, keepAlive: keepAlive)
                } else if corrupt != nil {
                    var bytes = [UInt8]()
                    body.write(to: &bytes)
                    sendRaw(
                        context: context, status: 200, contentType: "application/json", extra: [],
                        body: Array(bytes.prefix(40)), requestID: requestID, keepAlive: keepAlive)
                } else {
                    sendJSON(context: context, status: 200, body: body, requestID: requestID, keepAlive: keepAlive)
                }
            }
            let delay = core.state.latencyNanoseconds(completionTokens: 0)
            if delay > 0 {
                open?.scheduled = context.eventLoop.assumeIsolated().scheduleTask(in: .nanoseconds(delay)) { respond() }
            } else {
                respond()
            }
        }
    }
}
